"""Shared fixtures: real SQLite stores in temporary directories."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import QueueSettings
from bot.files import ImageFiles
from bot.lifecycle import LocalLifecycle
from bot.store import Store

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real store on a fresh SQLite file."""
    async with Store.open(tmp_path / "easel.sqlite3") as opened:
        yield opened


@pytest.fixture
def files(tmp_path: Path) -> ImageFiles:
    """Image files under the test's temporary directory."""
    return ImageFiles(tmp_path / "images")


@pytest.fixture
def queue(store: Store, files: ImageFiles) -> LocalLifecycle:
    """The embedded fair queue with generous limits."""
    return LocalLifecycle(store, files, QueueSettings(max_per_member=100, max_per_guild=100, max_total=1000))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion pipeline in diffusers format, built once per test session.

    The local backend loads it through the same path as an operator's model directory.
    """
    from tests.tinymodels import build_text2image

    return build_text2image(tmp_path_factory.mktemp("tiny-model"))
