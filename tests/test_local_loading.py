"""The ways an operator points [local] model at weights: a single-file checkpoint, a cached model id."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bot.config import LocalSettings
from bot.renderers.base import Operation, RenderRequest
from bot.renderers.local import LocalRenderer
from tests.tinymodels import build_single_file

REQUEST = RenderRequest(
    job_id=1, operation=Operation.GENERATE, prompt="a red fox", width=64, height=64, seed=42
)


async def render(settings: LocalSettings) -> np.ndarray:
    renderer, _ = await LocalRenderer.load(settings)
    try:
        result = await renderer.render(REQUEST)
    finally:
        await renderer.close()
    return np.asarray(Image.open(io.BytesIO(result.images[0])), dtype=np.int16)


async def test_a_single_file_checkpoint_loads_with_its_config_folder(tmp_path: Path) -> None:
    checkpoint, config = build_single_file(tmp_path / "built")
    # The config folder keeps no weights: everything the pipeline uses comes from the checkpoint.
    configs_only = tmp_path / "configs-only"
    shutil.copytree(config, configs_only, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))

    from_file = await render(LocalSettings(model=str(checkpoint), model_config=str(configs_only), steps=4))
    from_folder = await render(LocalSettings(model=str(config), steps=4))
    assert np.abs(from_file - from_folder).max() <= 2


def test_a_model_id_in_the_hugging_face_cache_is_found_offline(tmp_path: Path, tiny_model: Path) -> None:
    # The hub cache layout: models--{org}--{name}/snapshots/{commit}/ and refs/main naming the commit.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--easel--tiny-sd"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        '[discord]\ntoken = "t"\n[local]\nmodel = "easel/tiny-sd"\nsteps = 4\n', encoding="utf-8"
    )
    out = tmp_path / "out.png"
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "bot", "render", "--config", str(config), "a fox", "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert Image.open(io.BytesIO(out.read_bytes())).size == (64, 64)
