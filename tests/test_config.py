"""Config loading: defaults, validation messages that name the key and the fix, secrets that never print."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.__main__ import check_openai, main
from bot.config import DEFAULT_PRICES, LocalSettings, Secret, load_settings, parse_settings
from bot.errors import ConfigError
from bot.quotas import PriceTable
from bot.renderers.base import Capabilities

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


# -- [local] ---------------------------------------------------------------------------------------


def parse_local(toml: str, base_dir: Path = Path(".")) -> LocalSettings:
    return parse_settings(tomllib.loads(toml), {"DISCORD_TOKEN": "t"}, base_dir=base_dir).local


def batch_limit(local: LocalSettings, width: int, height: int) -> int:
    """The batch limit the local renderer offers for these settings (its capabilities use them as is)."""
    caps = Capabilities(sizes=(), max_batch=local.max_batch, batch_by_size=local.max_batch_by_size)
    return caps.batch_limit(width, height)


def test_the_local_backend_is_off_without_a_model() -> None:
    local = parse_local("[local]\n")
    assert local == LocalSettings()
    assert not local.enabled
    assert local.allow_download is False
    assert local.device == "auto"
    assert batch_limit(local, 512, 512) == 4


def test_a_relative_model_folder_starts_at_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "models" / "sd-turbo").mkdir(parents=True)
    path = write(tmp_path, '[discord]\ntoken = "t"\n[local]\nmodel = "models/sd-turbo"\n')
    local = load_settings(path, env={}).local
    assert local.enabled
    assert local.model == str(tmp_path / "models" / "sd-turbo")


def test_a_model_id_that_is_no_path_is_kept_for_the_hub_cache(tmp_path: Path) -> None:
    path = write(tmp_path, '[discord]\ntoken = "t"\n[local]\nmodel = "stabilityai/sdxl-turbo"\n')
    assert load_settings(path, env={}).local.model == "stabilityai/sdxl-turbo"


def test_batch_limits_per_size() -> None:
    local = parse_local('[local]\nmax_batch = 3\nmax_batch_by_size = { "1024x1024" = 1, "832x1280" = 2 }\n')
    assert local.max_batch_by_size == (((1024, 1024), 1), ((832, 1280), 2))
    assert batch_limit(local, 1024, 1024) == 1
    assert batch_limit(local, 832, 1280) == 2
    assert batch_limit(local, 1280, 832) == 3


def test_a_single_file_checkpoint_loads_with_its_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sd15-config").mkdir()
    path = write(
        tmp_path,
        '[discord]\ntoken = "t"\n[local]\nmodel = "dreamshaper_8.safetensors"\nmodel_config = "sd15-config"\n',
    )
    assert load_settings(path, env={}).local.model_config == str(tmp_path / "sd15-config")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_every_documented_device_is_accepted(device: str) -> None:
    assert parse_local(f'[local]\ndevice = "{device}"\n').device == device


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'max_batch_by_size = { "big" = 1 }',
            r"local\.max_batch_by_size: 'big' = 1 must be \"WIDTHxHEIGHT\"",
        ),
        ('max_batch_by_size = { "1024" = 1 }', r"local\.max_batch_by_size: '1024' = 1"),
        ('max_batch_by_size = { "1024x1024" = 0 }', r"local\.max_batch_by_size: .* at least 1"),
        ('device = "gpu"', r"local\.device = 'gpu': use auto, cpu, cuda or cuda:N .*mps"),
        ('device = "cuda:first"', r"local\.device = 'cuda:first': use auto, cpu, cuda"),
        ('model = "dreamshaper_8.safetensors"', r"single-file checkpoint: set local\.model_config"),
        ('upscaler = "no-such-upscaler"', r"local\.upscaler = '.*no-such-upscaler': no such directory"),
        ('safety_checker = "nope"', r"local\.safety_checker = '.*nope': no such directory"),
        ('modle = "models/sd"', r"\[local\] has unknown key\(s\) modle; known keys are .*model"),
        ("progress_interval_s = 0.2", r"local\.progress_interval_s = 0\.2: must be at least 1"),
        ("steps = 500", r"local\.steps = 500: must be 0 \(auto\) to 200"),
    ],
)
def test_bad_local_values_name_the_key_and_the_fix(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_local(f"[local]\n{toml}\n", base_dir=tmp_path)


def test_the_example_price_table_is_the_built_in_one() -> None:
    settings = load_settings(ROOT / "config.example.toml", env={"DISCORD_TOKEN": "t"})
    assert settings.prices == PriceTable(DEFAULT_PRICES)
    assert settings.prices.price("gpt-image-1-mini", 1024, 1024, "high") == 0.036


def test_a_price_table_replaces_the_default_and_bad_prices_name_the_key(tmp_path: Path) -> None:
    body = '[discord]\ntoken = "t"\n[prices."my-model"."512x512"]\nmedium = 0.002\n'
    settings = load_settings(write(tmp_path, body), env={})
    assert settings.prices.price("my-model", 512, 512, "auto") == 0.002
    assert settings.prices.price("gpt-image-1-mini", 1024, 1024, "low") is None
    bad = '[discord]\ntoken = "t"\n[prices."my-model"."512x512"]\nmedium = "cheap"\n'
    with pytest.raises(ConfigError, match=r"prices\.my-model\.512x512\.medium must be a price in USD"):
        load_settings(write(tmp_path, bad), env={})
