"""Start-up and operations: Discord unreachable at start, a wrong token, storage and model checks."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main
from bot.config import load_settings
from bot.startup import wait_for_discord
from tests.fakediscord import FakeDiscord
from tests.harness import CHANNEL_A, CHANNEL_B, GUILD_A, GUILD_B, REPO, config_for, settings_for, toml_text

UNREACHABLE = "Discord is unreachable at "


class Easel:
    """``python -m bot run`` as its own process, its log in a file."""

    def __init__(self, fake: FakeDiscord, data_dir: Path) -> None:
        self.fake = fake
        self.data_dir = data_dir
        self.log = data_dir / "easel.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *, token: str | None = None, **sections: Any) -> asyncio.subprocess.Process:
        config = config_for(self.fake, None, self.data_dir, **sections)
        env = {**os.environ, "DISCORD_TOKEN": token or config["discord"].pop("token")}
        config["discord"].pop("token", None)
        path = self.data_dir / "easel.toml"
        path.write_text(toml_text(config), encoding="utf-8")
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", "--config", str(path), cwd=REPO, env=env, stderr=log
            )
        return self.process

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8") if self.log.exists() else ""

    def unreachable(self) -> list[str]:
        """The log lines that each report one failed attempt to reach Discord."""
        return [line for line in self.text().splitlines() if UNREACHABLE in line]

    async def until(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        """Wait until ``predicate()`` holds, re-reading the log; fail early if Easel exited."""
        assert self.process is not None
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.process.returncode is not None:
                    raise AssertionError(f"Easel exited with {self.process.returncode}:\n{self.text()}")
                await asyncio.sleep(0.05)

    async def connected(self) -> None:
        """Wait until Easel is on the gateway with its commands synced."""
        await self.until(
            lambda: self.fake.connected() and {GUILD_A, GUILD_B} <= self.fake.commands.keys(), timeout=60
        )


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    add_guilds(server)
    yield server
    await server.close()


@pytest.fixture
async def easel(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Easel]:
    process = Easel(fake, tmp_path)
    yield process
    if process.process is not None and process.process.returncode is None:
        process.process.kill()
        await process.process.wait()


def add_guilds(fake: FakeDiscord) -> None:
    """The two servers the harness's config names as development guilds."""
    fake.add_guild(GUILD_A, channels=[(CHANNEL_A, "art")])
    fake.add_guild(GUILD_B, channels=[(CHANNEL_B, "art")])


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (yet): connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_start_retries_until_the_gateway_endpoint_and_the_gateway_accept(
    fake: FakeDiscord, easel: Easel
) -> None:
    fake.fail_next("GET", r"^/gateway/bot$", 503, times=2)
    fake.refuse_gateway(1)
    process = await easel.start()
    await easel.connected()
    # docker stop: SIGTERM closes the connected bot as Ctrl-C does.
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    await fake.wait_for(lambda: not fake.connected())

    lines = easel.unreachable()
    assert len(lines) == 3, easel.text()  # one line per failed attempt
    for line in lines[:2]:
        assert f"{UNREACHABLE}{fake.api_base}/gateway/bot (HTTP 503 Service Unavailable)" in line
    assert (
        f"{UNREACHABLE}{fake.gateway_url}?v=10&encoding=json (HTTP 503 to the websocket upgrade)" in lines[2]
    )
    assert fake.gateway_refused == 1
    text = easel.text()
    assert "Traceback" not in text
    assert fake.token not in text
    assert "Discord answered after 3 failed attempts" in text


async def test_start_retries_a_refused_connection_until_discord_listens(tmp_path: Path) -> None:
    port = free_port()
    fake = FakeDiscord()
    # The config points at the port before anything listens there.
    fake.api_base = f"http://127.0.0.1:{port}/api/v10"
    easel = Easel(fake, tmp_path)
    try:
        await easel.start()
        await easel.until(lambda: len(easel.unreachable()) >= 2)
        await fake.start(port)
        add_guilds(fake)
        await easel.connected()
    finally:
        if easel.process is not None and easel.process.returncode is None:
            easel.process.kill()
            await easel.process.wait()
        await fake.close()
    first = easel.unreachable()[0]
    assert f"{UNREACHABLE}http://127.0.0.1:{port}/api/v10/gateway/bot (Cannot connect to host" in first
    assert "Traceback" not in easel.text()


async def test_sigterm_stops_the_waiting_bot_at_once(fake: FakeDiscord, easel: Easel) -> None:
    fake.fail_next("GET", r"^/gateway/bot$", 503, times=1000)
    process = await easel.start()
    await easel.until(lambda: len(easel.unreachable()) >= 1)
    process.send_signal(signal.SIGTERM)
    # The next attempt is at most 2 s away; stopping must not wait for it, nor retry for ever.
    assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    assert "Traceback" not in easel.text()


async def test_an_invalid_token_exits_at_once_saying_where_to_get_one(
    fake: FakeDiscord, easel: Easel
) -> None:
    wrong = "not-the-bot-token-0123456789"
    process = await easel.start(token=wrong)
    assert await asyncio.wait_for(process.wait(), timeout=20) == 2
    text = easel.text()
    assert "Discord refused the token (401 from" in text
    assert "https://discord.com/developers/applications" in text
    assert "DISCORD_TOKEN" in text
    assert wrong not in text
    assert "Traceback" not in text
    assert not easel.unreachable()  # a refusal is not an outage: no retries


@pytest.mark.parametrize("delays", [[1, 2, 4, 8, 16, 32, 60, 60]])
async def test_the_backoff_doubles_from_1_s_to_a_minute(
    fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture, delays: list[float]
) -> None:
    fake.fail_next("GET", r"^/gateway/bot$", 502, times=len(delays))
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    settings = settings_for(fake, None, tmp_path)
    with caplog.at_level(logging.INFO, logger="bot.startup"):
        await wait_for_discord(settings.discord, sleep=sleep, jitter=lambda: 1.0)
    assert slept == delays
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(delays)
    assert all(f"{fake.api_base}/gateway/bot (HTTP 502 Bad Gateway)" in r.getMessage() for r in warnings)

    # Full jitter: each wait is a random part of the doubling ceiling.
    fake.fail_next("GET", r"^/gateway/bot$", 503, times=3)
    slept.clear()
    await wait_for_discord(settings.discord, sleep=sleep, jitter=lambda: 0.25)
    assert slept == [0.25, 0.5, 1.0]


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[discord]\ntoken = "t"\n' + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_an_unwritable_storage_path_is_a_clear_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    cfg = write_config(tmp_path, '[storage]\npath = "/dev/null/easel.sqlite3"\n')
    assert main([command, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert (
        "easel: config error: storage.path = '/dev/null/easel.sqlite3': Easel cannot create or write" in err
    )
    assert "/dev/null" in err


def test_a_database_that_is_a_folder_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data" / "easel.sqlite3").mkdir(parents=True)
    cfg = write_config(tmp_path, "")
    assert main(["check-config", "--config", str(cfg)]) == 2
    assert "cannot open the database for writing" in capsys.readouterr().err


def test_check_config_creates_the_data_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "")
    assert main(["check-config", "--config", str(cfg)]) == 0
    assert "config OK" in capsys.readouterr().out
    assert (tmp_path / "data" / "images").is_dir()
    assert not list((tmp_path / "data").glob("tmp*"))  # the write check leaves nothing behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_data_folder_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    data.chmod(0o555)
    try:
        assert main(["check-config", "--config", str(write_config(tmp_path, ""))]) == 2
    finally:
        data.chmod(0o755)
    assert f"cannot create or write the folder {data} (Permission denied)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model", ["/no/such/model", "./models/missing", "models/sd/missing", "missing.safetensors"]
)
def test_check_config_refuses_a_model_folder_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str
) -> None:
    extra = '\nmodel_config = "."' if model.endswith(".safetensors") else ""
    cfg = write_config(tmp_path, f'[local]\nmodel = "{model}"{extra}\n')
    assert main(["check-config", "--config", str(cfg)]) == 2
    assert "local.model = " in capsys.readouterr().err


def test_check_config_leaves_a_hub_model_id_to_the_loader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, '[local]\nmodel = "stabilityai/sdxl-turbo"\n')
    assert main(["check-config", "--config", str(cfg)]) == 0
    assert "local (stabilityai/sdxl-turbo)" in capsys.readouterr().out


def test_easel_data_is_the_default_data_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    cfg = write_config(tmp_path / "conf", "")
    data = tmp_path / "volume"
    assert load_settings(cfg, env={"EASEL_DATA": str(data)}).storage.path == data / "easel.sqlite3"
    # A path the config names itself still wins.
    cfg.write_text('[discord]\ntoken = "t"\n[storage]\npath = "db/e.sqlite3"\n', encoding="utf-8")
    assert load_settings(cfg, env={"EASEL_DATA": str(data)}).storage.path == cfg.parent / "db" / "e.sqlite3"


async def test_discord_failing_the_login_right_after_the_check_is_one_line_and_exit_1(
    fake: FakeDiscord, easel: Easel
) -> None:
    fake.fail_next("GET", r"^/users/@me$", 503)
    process = await easel.start()
    assert await asyncio.wait_for(process.wait(), timeout=20) == 1
    text = easel.text()
    assert "easel: Discord went away while logging in (503 Service Unavailable" in text
    assert "Traceback" not in text


def test_the_dockerfile_installs_the_dependencies_before_copying_the_code() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    install = next(i for i, line in enumerate(lines) if "--requirement" in line)
    copies = [line for line in lines[:install] if line.startswith("COPY")]
    # Only what the dependency list comes from: a change to bot/ or cogs/ keeps this layer.
    assert copies == ["COPY pyproject.toml ./", "COPY scripts/dependencies.py ./scripts/"]
    code = lines.index("COPY bot ./bot")
    assert code > install
    assert "RUN pip install --no-deps --no-build-isolation ." in lines[code:]
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124" in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert any(line.startswith("FROM python:") and "@sha256:" in line for line in lines)
    assert "RUN chmod 0444 /app/config.toml" in lines
