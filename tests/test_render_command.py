"""`python -m bot render`: one image from a backend without Discord, with the time of each stage."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.__main__ import main, render_once
from bot.config import load_settings
from tests.fakeopenai import FakeOpenAI
from tests.harness import OPENAI_KEY


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[discord]\ntoken = "t"\n{body}', encoding="utf-8")
    return path


def test_render_with_the_local_backend_writes_the_image_and_prints_each_stage(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, f'[local]\nmodel = "{tiny_model}"\nsteps = 4\n')
    out = tmp_path / "fox.png"
    assert main(["render", "--config", str(cfg), "--backend", "local", "a fox", "--out", str(out)]) == 0
    assert Image.open(io.BytesIO(out.read_bytes())).size == (64, 64)
    printed = capsys.readouterr().out
    for stage in ("load", "warm-up", "render"):
        assert f"  {stage}" in printed
    assert f"written to {out}" in printed


def test_render_refuses_a_backend_that_is_not_configured_or_a_missing_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, "")
    assert main(["render", "--config", str(cfg), "--backend", "local", "a fox"]) == 2
    assert "set [local] model" in capsys.readouterr().err
    assert main(["render", "--config", str(cfg), "--backend", "local"]) == 2
    assert "needs a prompt" in capsys.readouterr().err


def test_render_reports_a_model_that_does_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, f'[local]\nmodel = "{tmp_path / "missing"}"\n')
    assert main(["render", "--config", str(cfg), "--backend", "local", "a fox"]) == 1
    assert "could not be loaded" in capsys.readouterr().err


async def test_render_with_the_openai_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeOpenAI(api_key=OPENAI_KEY)
    await server.start()
    try:
        cfg = config(tmp_path, f'[openai]\napi_key = "{OPENAI_KEY}"\nbase_url = "{server.base_url}"\n')
        out = tmp_path / "fox.png"
        await render_once(load_settings(cfg, {}), "openai", "a fox", out, seed=0)
    finally:
        await server.close()
    assert Image.open(io.BytesIO(out.read_bytes())).size == (1024, 1024)
    printed = capsys.readouterr().out
    assert "  render" in printed
    assert OPENAI_KEY not in printed
