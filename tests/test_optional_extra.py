"""An OpenAI-only install needs neither torch nor diffusers: they load only with a local model."""

from __future__ import annotations

import subprocess
import sys

from bot.app import EXTENSIONS

HEAVY = ("torch", "diffusers", "transformers")


def test_the_bot_and_its_cogs_import_without_torch_or_diffusers() -> None:
    modules = ", ".join(("bot.__main__", *EXTENSIONS))
    code = f"import sys, {modules}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
