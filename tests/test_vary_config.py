"""The strengths of Vary (Subtle) and Vary (Strong) come from [images], checked when the config loads."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.config import ImageSettings, parse_settings
from bot.errors import ConfigError


def test_vary_strengths_are_configurable_and_subtle_must_stay_below_strong() -> None:
    def images(section: str) -> ImageSettings:
        raw = tomllib.loads(f"[discord]\ntoken = 't'\n[images]\n{section}")
        return parse_settings(raw, {}, base_dir=Path(".")).images

    assert (images("").vary_subtle_strength, images("").vary_strong_strength) == (0.35, 0.75)
    assert images("vary_subtle_strength = 0.2").vary_subtle_strength == 0.2
    with pytest.raises(ConfigError, match="vary_subtle_strength"):
        images("vary_subtle_strength = 0.8")
    with pytest.raises(ConfigError, match="vary_strong_strength"):
        images("vary_strong_strength = 1.5")
