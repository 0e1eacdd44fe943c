"""Security: tokens and keys never reach a log or a repr, stored tokens are forgotten, data files are private."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sqlite3
import stat
import tomllib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from bot.__main__ import main, operator_logging
from bot.config import parse_settings
from bot.errors import ConfigError, RenderFailed
from bot.jobs import Interaction, JobParams
from bot.redact import scrub_secrets
from bot.renderers.base import Operation, RenderRequest
from bot.renderers.openai import OpenAIRenderer, build_client
from bot.retry import RetryPolicy
from bot.store import Store
from tests.factories import new_job
from tests.fakediscord import Interaction as FakeInteraction
from tests.fakeopenai import FakeOpenAI, error_body, invalid_api_key_body
from tests.harness import ALICE, BOB, CHANNEL_A, GUILD_A, OPENAI_KEY, Harness, running

ROOT = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.01)
# A key with characters that URL-encoding changes, so its encoded form differs from it.
ODD_KEY = "sk-proj-Ab/Cd+Ef=Gh_Q7x9Lm2Pz4wxyz"
LIBRARIES = ("discord", "aiosqlite", "openai", "httpx", "httpcore", "aiohttp", "PIL", "urllib3", "asyncio")


def forms(secret: str) -> list[str]:
    """The ways a secret gets echoed: whole, without its prefix, cut in half, URL-encoded."""
    return [
        secret,
        secret[3:],
        secret[: len(secret) // 2],
        secret[len(secret) // 2 :],
        quote(secret, safe=""),
        quote_plus(secret),
    ]


def leaks(text: str, secret: str) -> list[str]:
    """Return every run of 8 characters of ``secret`` (in any echoed form) that ``text`` contains."""
    found = []
    for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
        found += [form[i : i + 8] for i in range(len(form) - 7) if form[i : i + 8] in text]
    return found


def job_tokens(path: Path) -> dict[int, str | None]:
    """Read every job's stored interaction token straight from the database file."""
    with sqlite3.connect(path) as db:
        return {int(r[0]): r[1] for r in db.execute("SELECT id, token FROM jobs")}


@contextlib.asynccontextmanager
async def operator_log(easel: Harness) -> AsyncIterator[io.StringIO]:
    """Restart the bot with logging set up as ``python -m bot`` sets it up, into a buffer."""
    await easel.stop_bot()
    out = io.StringIO()
    with operator_logging(easel.settings, out):
        await easel.start_bot()
        yield out
        await easel.stop_bot()  # its closing lines too


async def imagine_then_fail(easel: Harness) -> list[FakeInteraction]:
    """A posted /imagine, then one that OpenAI refuses with a 401 echoing the key in its other forms."""
    first = await easel.imagine("a lighthouse", count=2)
    await easel.result_of(first)
    easel.openai.fail_next(
        401,
        error_body(
            f"Incorrect API key {OPENAI_KEY[3:]} (url {quote_plus(OPENAI_KEY)}, tail {OPENAI_KEY[-12:]})",
            code="invalid_api_key",
        ),
    )
    second = await easel.imagine("a windmill", user=BOB)
    await easel.discord.wait_for(lambda: second.original is not None and "failed" in second.original.content)
    return [first, second]


# -- 4: logs -------------------------------------------------------------------------------------


async def test_everything_at_debug_logs_no_token_and_no_key(tmp_path: Path) -> None:
    everything = {"level": "DEBUG", "library_level": "DEBUG"}
    async with running(tmp_path, logging=everything) as easel, operator_log(easel) as out:
        inters = await imagine_then_fail(easel)
    text = out.getvalue()

    # The libraries did log the traffic that carries the tokens, so the absence below means redaction.
    assert "WebSocket Event" in text  # discord.py's gateway payloads (INTERACTION_CREATE has "token")
    assert "/webhooks/" in text  # discord.py's webhook URLs
    assert "executing" in text  # aiosqlite's statements and their arguments
    assert "OpenAI refused the credentials" in text
    assert "[redacted]" in text
    for inter in inters:
        assert inter.token not in text
        assert inter.token[16:40] not in text  # nor a part of it past the well-known prefix
    assert easel.discord.token not in text
    assert not leaks(text, OPENAI_KEY)


async def test_library_loggers_stay_at_info_when_easel_logs_at_debug(tmp_path: Path) -> None:
    async with running(tmp_path, logging={"level": "DEBUG"}) as easel, operator_log(easel) as out:
        await imagine_then_fail(easel)
        assert logging.getLogger("bot.worker").isEnabledFor(logging.DEBUG)
        for name in LIBRARIES:
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    library_debug = [
        line
        for line in out.getvalue().splitlines()
        if re.match(rf"\S+ \S+ DEBUG\s+({'|'.join(LIBRARIES)})[.:]", line)
    ]
    assert library_debug == []
    assert "OpenAI refused the credentials" in out.getvalue()


def test_library_level_is_a_documented_validated_key() -> None:
    def settings(**keys: str) -> tuple[str, str]:
        s = parse_settings({"discord": {"token": "t"}, "logging": keys}, {}, base_dir=ROOT)
        return s.log_level, s.library_log_level

    assert settings() == ("INFO", "INFO")
    assert settings(level="debug") == ("DEBUG", "INFO")
    assert settings(level="WARNING") == ("WARNING", "WARNING")
    assert settings(level="DEBUG", library_level="DEBUG") == ("DEBUG", "DEBUG")
    with pytest.raises(ConfigError, match=r"logging\.library_level"):
        settings(library_level="LOUD")
    example = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    assert "library_level" in example["logging"]


def test_the_log_filter_scrubs_secrets_in_messages_arguments_and_tracebacks() -> None:
    bot_token = "MTAxMjM0NTY3ODkwMTIzNDU2Nzg5.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
    settings = parse_settings(
        {"discord": {"token": bot_token}, "openai": {"api_key": ODD_KEY}}, {}, base_dir=ROOT
    )
    out = io.StringIO()
    library = logging.getLogger("discord.http")
    interaction = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OlRoaXNJc0FTZWNyZXQ"
    with operator_logging(settings, out):
        library.info("POST /interactions/123/%s/callback", "not-base64-token-value-123")
        library.info("event %s", {"t": "INTERACTION_CREATE", "d": {"token": "plain-token-value-456"}})
        library.info('payload {"op": 2, "d": {"token": "%s"}}', bot_token)
        library.info("args (%r, %r)", interaction, 42)
        library.info("headers Authorization: Bot %s", bot_token)
        for form in forms(ODD_KEY):
            library.info("echo %s", form)
        try:
            raise RuntimeError(f"request to /webhooks/5/{interaction}/messages failed with {ODD_KEY[3:]}")
        except RuntimeError:
            library.exception("failed")
    text = out.getvalue()
    assert text.count("[redacted]") >= 11
    for secret in ("not-base64-token-value-123", "plain-token-value-456", interaction, bot_token):
        assert secret not in text
    assert not leaks(text, bot_token)
    assert not leaks(text, ODD_KEY)
    assert "RuntimeError" in text  # the traceback itself is kept


# -- 11: one scrubbing function, every form of the key ------------------------------------------


def test_scrubbing_removes_every_form_of_the_key_and_keeps_ordinary_text() -> None:
    for form in forms(ODD_KEY):
        assert not leaks(scrub_secrets(f"error: {form}.", ODD_KEY), ODD_KEY), form
    assert scrub_secrets("job 12345678 took 987654321 ms; task-queue ok", ODD_KEY) == (
        "job 12345678 took 987654321 ms; task-queue ok"
    )
    # A four-character tail such as OpenAI's own "…wxyz" hint identifies no key and stays readable.
    assert scrub_secrets("key ending wxyz", ODD_KEY) == "key ending wxyz"


async def test_the_renderer_scrubs_a_key_echoed_without_its_prefix_or_url_encoded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    async with FakeOpenAI(api_key=ODD_KEY) as fake:
        client = build_client(ODD_KEY, fake.base_url, timeout_s=5)
        try:
            for echoed in (ODD_KEY[3:], quote(ODD_KEY, safe=""), ODD_KEY[8:]):
                fake.fail_next(401, error_body(f"The key {echoed} was revoked.", code="invalid_api_key"))
                with pytest.raises(RenderFailed, match="misconfigured") as caught:
                    await OpenAIRenderer(client, retry=FAST).render(
                        RenderRequest(
                            job_id=1, operation=Operation.GENERATE, prompt="x", width=1024, height=1024
                        )
                    )
                assert not leaks(str(caught.value), ODD_KEY)
            fake.fail_next(401, invalid_api_key_body(ODD_KEY))
            with pytest.raises(RenderFailed):
                await OpenAIRenderer(client, retry=FAST).render(
                    RenderRequest(job_id=2, operation=Operation.GENERATE, prompt="x", width=1024, height=1024)
                )
        finally:
            await client.close()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("bot"))
    assert text.count("OpenAI refused the credentials") == 4
    assert not leaks(text, ODD_KEY)


# -- 4: reprs and stored tokens ------------------------------------------------------------------


def test_an_interaction_and_a_job_print_no_token() -> None:
    it = Interaction(application_id=5, token="aW50ZXJhY3Rpb246secret", created_at=datetime.now(UTC))
    job = new_job(interaction=it)
    assert "aW50ZXJhY3Rpb246secret" not in repr(it)
    assert "aW50ZXJhY3Rpb246secret" not in repr(job)
    assert "application_id=5" in repr(it)


async def test_posted_and_failed_jobs_forget_their_interaction_tokens(tmp_path: Path) -> None:
    async with running(tmp_path) as easel:
        await imagine_then_fail(easel)
        await easel.discord.wait_for(
            lambda: all(t is None for t in job_tokens(easel.settings.storage.path).values())
        )
        tokens = job_tokens(easel.settings.storage.path)
    assert len(tokens) == 2
    assert set(tokens.values()) == {None}


async def test_the_start_sweep_forgets_expired_and_answered_tokens_only(store: Store, tmp_path: Path) -> None:
    now = datetime.now(UTC)

    async def job(token: str, age: timedelta) -> int:
        it = Interaction(5, token, now - age, None)
        new = await store.jobs.add_queued(new_job(interaction=it))
        return new.id

    fresh = await job("aW50ZXJhY3Rpb246ZnJlc2g", timedelta(minutes=1))
    expired = await job("aW50ZXJhY3Rpb246b2xk", timedelta(minutes=15, seconds=1))
    answered = await job("aW50ZXJhY3Rpb246YW5zd2VyZWQ", timedelta(minutes=1))
    await store.jobs.mark_cancelled(answered)
    # As an older Easel left it: the cancel notice posted, the token kept.
    with sqlite3.connect(tmp_path / "easel.sqlite3") as db:
        db.execute("UPDATE jobs SET message_id = 7, token = 'aW50ZXJhY3Rpb246YW5z' WHERE id = ?", (answered,))
    assert await store.jobs.clear_expired_tokens(now) == 2
    assert (await store.jobs.get(fresh)).interaction is not None
    assert (await store.jobs.get(expired)).interaction is None
    assert (await store.jobs.get(answered)).interaction is None


async def test_a_token_kept_from_before_a_restart_is_forgotten_and_the_late_result_arrives(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as easel:
        await easel.stop_bot()
        path = easel.settings.storage.path
        old = Interaction(
            easel.discord.application_id, "aW50ZXJhY3Rpb246b2xk", datetime.now(UTC) - timedelta(minutes=20), 1
        )
        async with Store.open(path) as store:
            # A job accepted before an outage longer than its token's 15 minutes.
            late = await store.jobs.add_queued(
                replace(
                    new_job(guild=GUILD_A, user=ALICE, backend="openai"),
                    channel_id=CHANNEL_A,
                    interaction=old,
                    params=JobParams(prompt="a late picture", width=1024, height=1024),
                ),
            )
            answered = await store.jobs.add_queued(
                replace(new_job(guild=GUILD_A, user=BOB), channel_id=CHANNEL_A, interaction=old),
            )
            await store.jobs.mark_cancelled(answered.id)
        with sqlite3.connect(path) as db:
            # As an older Easel left it: the cancel notice posted, the token kept.
            db.execute("UPDATE jobs SET message_id = 7, token = ? WHERE id = ?", (old.token, answered.id))

        await easel.start_bot()
        assert job_tokens(path)[answered.id] is None
        await easel.discord.wait_for(lambda: bool(easel.discord.channel_messages(CHANNEL_A)), timeout=20)
        [posted] = easel.discord.channel_messages(CHANNEL_A)
        assert posted.content.startswith(f"<@{ALICE}>")
        assert f"Job #{late.id}" in posted.embeds[0]["footer"]["text"]
        await easel.discord.wait_for(lambda: job_tokens(path)[late.id] is None)


# -- 12: deployment ------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_database_and_images_are_readable_by_easels_user_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # a typical default, which Easel must not rely on
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / "easel.sqlite3").touch(mode=0o644)  # an existing database, made before this fix
        (data / "images").mkdir(mode=0o755)
        async with running(data) as easel:
            await easel.result_of(await easel.imagine("a private picture"))
            db = easel.settings.storage.path
            images = easel.settings.storage.images_dir
            for file in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                assert mode(file) == 0o600, file
            assert mode(images) == 0o700
            written = [p for p in images.rglob("*")]
            assert any(p.is_file() for p in written)
            for p in written:
                assert mode(p) == (0o600 if p.is_file() else 0o700), p
    finally:
        os.umask(previous)


async def test_a_new_database_folder_is_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        async with Store.open(tmp_path / "fresh" / "easel.sqlite3"):
            pass
    finally:
        os.umask(previous)
    assert mode(tmp_path / "fresh") == 0o700
    assert mode(tmp_path / "fresh" / "easel.sqlite3") == 0o600


def test_the_bot_process_creates_files_owner_only(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[discord]\ntoken = "t"\n', encoding="utf-8")
    handlers = list(logging.getLogger().handlers)
    previous = os.umask(0o022)
    try:
        assert main(["check-config", "--config", str(config)]) == 0
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(previous)
    assert logging.getLogger().handlers == handlers  # main's logging ends with it


def test_the_container_config_is_not_writable_by_the_bot_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    [config_copy] = [
        line for line in dockerfile.splitlines() if "/app/config.toml" in line and "COPY" in line
    ]
    assert "--chown" not in config_copy
    assert re.search(r"chmod 0?444 /app/config\.toml", dockerfile)
    assert dockerfile.index("chmod 0444 /app/config.toml") < dockerfile.index("USER easel")
    [base] = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert re.search(r"@sha256:[0-9a-f]{64}\b", base), "pin the base image by digest"


def test_dependencies_that_break_across_majors_have_upper_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["local"]
    bounded = {
        "discord.py": "<3",
        "openai": "<4",
        "aiohttp": "<4",
        "aiosqlite": "<1",
        "pillow": "<14",
        "torch": "<3",
        "diffusers": "<1",
        "transformers": "<6",
    }
    for name, bound in bounded.items():
        [spec] = [r for r in requirements if re.match(rf"{re.escape(name)}\b", r, re.IGNORECASE)]
        assert bound in spec, spec
