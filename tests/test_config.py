"""Config loading: defaults, validation messages that name the key and the fix, secrets that never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.__main__ import check_openai, main
from bot.config import Secret, load_settings, parse_settings
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_config_loads_through_the_real_loader() -> None:
    settings = load_settings(ROOT / "config.example.toml", env={"DISCORD_TOKEN": "t"})
    assert settings.discord.api_base == "https://discord.com/api/v10"
    assert settings.openai.model == "gpt-image-1-mini"
    assert not settings.openai.enabled
    check_openai(settings)


def test_a_missing_token_says_where_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"discord\.token is missing.*developers/applications"):
        load_settings(write(tmp_path, "[discord]\n"), env={})


def test_environment_overrides_the_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "file"\n[openai]\napi_key = "file-key"\n')
    settings = load_settings(path, env={"DISCORD_TOKEN": "env", "OPENAI_API_KEY": "env-key"})
    assert settings.discord.token.reveal() == "env"
    assert settings.openai.api_key.reveal() == "env-key"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[queue]\nmax_per_member = "three"', r"queue\.max_per_member must be a whole number"),
        ("[queue]\nmax_per_member = 0", r"queue\.max_per_member = 0: must be greater than 0"),
        ('[images]\noutput_format = "bmp"', r"images\.output_format = 'bmp': must be one of png, jpeg, webp"),
        ("[queue]\nposition_update_s = 0.2", r"at least 1"),
        ('[discord]\napi_base = "discord.com"', r"discord\.api_base .* full URL"),
        ('[discord]\ndev_guild_ids = ["abc"]', r"dev_guild_ids must be a list of server ids"),
        ("[queue]\nmax_per_membr = 3", r"\[queue\] has unknown key\(s\) max_per_membr"),
        ("[imagez]\n", r"\[config\] has unknown key\(s\) imagez"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(toml: str, message: str) -> None:
    import tomllib

    with pytest.raises(ConfigError, match=message):
        parse_settings(tomllib.loads(toml), {"DISCORD_TOKEN": "t"}, base_dir=Path("."))


def test_a_retired_openai_model_is_refused_at_start(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "t"\n[openai]\napi_key = "k"\nmodel = "dall-e-3"\n')
    with pytest.raises(ConfigError, match="retired"):
        check_openai(load_settings(path, env={}))


def test_secrets_never_print(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "super-secret-token"\n[openai]\napi_key = "sk-live-abcdef"\n')
    settings = load_settings(path, env={})
    text = repr(settings) + str(settings)
    assert "super-secret-token" not in text
    assert "sk-live-abcdef" not in text
    assert "super-secret-token" not in f"{Secret('super-secret-token')}"


def test_relative_storage_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "t"\n[storage]\npath = "db/easel.sqlite3"\n')
    assert load_settings(path, env={}).storage.path == tmp_path / "db" / "easel.sqlite3"


def test_check_config_exits_non_zero_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[discord]\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "discord.token is missing" in capsys.readouterr().err


def test_check_config_accepts_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    path = write(tmp_path, '[discord]\ntoken = "t"\n[openai]\napi_key = "k"\n')
    assert main(["check-config", "--config", str(path)]) == 0
    assert "config OK" in capsys.readouterr().out


def test_a_missing_config_file_says_to_copy_the_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "copy config.example.toml" in capsys.readouterr().err
