"""The composition root: `python -m bot` loads the config, opens every resource and runs the bot."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit

import aiohttp
import discord
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bot import images
from bot.app import EaselBot, Services
from bot.challenge_board import DiscordBoard
from bot.channels import can_post
from bot.config import TOKEN_HELP, Settings, check_local_model, check_storage, load_settings
from bot.contests import ChallengeService
from bot.delivery import Delivery
from bot.endpoints import point_at
from bot.errors import ConfigError, EaselError
from bot.files import ImageFiles
from bot.generation import Generation
from bot.health import HealthServer, backends_check, gateway_check, listen_error, store_check
from bot.jobs import utcnow
from bot.lifecycle import LocalLifecycle
from bot.memberdata import MemberData
from bot.metrics import Metrics
from bot.moderation import Moderation
from bot.ratelimit import RateLimiter
from bot.redact import RedactingFilter
from bot.remote import worker as remote_worker
from bot.remote.renderer import RemoteRenderer
from bot.renderers import openai as openai_renderer
from bot.renderers.base import Operation, Renderer, RenderRequest
from bot.renderers.local import LocalRenderer
from bot.renderers.upscale import LanczosUpscaler
from bot.retention import Retention
from bot.retry import RetryPolicy
from bot.startup import wait_for_discord
from bot.store import Store
from bot.worker import Worker

log = logging.getLogger("bot")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Easel's own loggers follow [logging] level; every other logger (the libraries) inherits the
# root's level, [logging] library_level.
OWN_LOGGERS = ("bot", "cogs")


@contextmanager
def operator_logging(settings: Settings, stream: TextIO | None = None) -> Iterator[None]:
    """Log to ``stream`` (stderr) through one handler that redacts secrets from every record, until the block ends.

    Undone on exit, so a caller of ``main()`` (a test, an embedding program) keeps its own logging.
    """
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *OWN_LOGGERS)}
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(
        RedactingFilter(
            settings.discord.token.reveal(),
            settings.openai.api_key.reveal(),
            settings.redis.url.reveal(),
            unquote(urlsplit(settings.redis.url.reveal()).password or ""),
        )
    )
    root.addHandler(handler)
    root.setLevel(settings.library_log_level)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(settings.log_level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def check_openai(settings: Settings) -> list[str]:
    """Validate the OpenAI settings against the model table; raise on errors, return warnings."""
    if not settings.openai.enabled:
        return []
    result = openai_renderer.validate_settings(
        settings.openai.model, settings.openai.quality, settings.images.output_format
    )
    if result.errors:
        raise ConfigError("; ".join(result.errors))
    return list(result.warnings)


def open_openai(settings: Settings) -> openai_renderer.OpenAIRenderer:
    """Build the OpenAI renderer; close it with ``close()``."""
    client = openai_renderer.build_client(
        settings.openai.api_key.reveal(), settings.openai.base_url, settings.openai.timeout_s
    )
    return openai_renderer.OpenAIRenderer(
        client,
        settings.openai.model,
        quality=settings.openai.quality,
        output_format=settings.images.output_format,
        retry=RetryPolicy(attempts=settings.openai.retries),
    )


@asynccontextmanager
async def open_app(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> AsyncIterator[EaselBot]:
    """Open the store and renderers, build the bot around them, and close everything in reverse order.

    ``clock`` tells quotas, challenge deadlines and the data sweep the time (tests move it).
    """
    async with AsyncExitStack() as stack:
        point_at(settings.discord)
        store = await stack.enter_async_context(Store.open(settings.storage.path))
        # Tokens of jobs answered or expired while Easel was down; later ones go as they are answered.
        await store.jobs.clear_expired_tokens(clock())
        files = ImageFiles(settings.storage.images_dir)
        await files.make_private()
        # Its own registry, not prometheus_client's global one: two apps in one process (tests)
        # must not share counts. Recorded whether or not [metrics] serves them: it costs little.
        metrics = Metrics(CollectorRegistry())
        renderers: dict[str, Renderer] = {}
        concurrency: dict[str, int] = {}
        offline: dict[str, str] = {}
        if settings.redis.enabled:
            # The local backend's renders go to remote workers; this process loads no model.
            client = await stack.enter_async_context(Redis.from_url(settings.redis.url.reveal()))
            remote = RemoteRenderer(
                client, store, max_pixels=settings.images.upscale_max_pixels, metrics=metrics
            )
            await remote.start()
            stack.push_async_callback(remote.close)
            renderers[remote.name] = remote
        elif settings.local.enabled:
            try:
                local, _ = await LocalRenderer.load(settings.local)
            except ConfigError as exc:
                # The bot still serves its other backends; the operator reads why in the log.
                log.error("the local backend is off: %s", exc)
                offline["local"] = "the model failed to load (the operator's log says why)"
            else:
                stack.push_async_callback(local.close)
                renderers[local.name] = local
                concurrency[local.name] = 1  # one thread owns the pipeline; batches give the throughput
        openai = open_openai(settings) if settings.openai.enabled else None
        if openai is not None:
            stack.push_async_callback(openai.close)
            renderers[openai.name] = openai
            concurrency[openai.name] = settings.openai.concurrency
        upscaler = LanczosUpscaler(max_pixels=settings.images.upscale_max_pixels)
        renderers[upscaler.name] = upscaler
        # Lanczos on 2 cores: one upscale at a time keeps a core free for the event loop.
        concurrency[upscaler.name] = 1
        metrics.expect([*renderers, *offline])
        if settings.local.enabled and not settings.redis.enabled:
            metrics.workers_live("local", 0 if "local" in offline else 1)
        lifecycle = LocalLifecycle(store, files, settings.queue, metrics)
        metrics.watch_queues(lifecycle)

        generating = [
            name for name, r in renderers.items() if Operation.GENERATE in r.capabilities.operations
        ]

        def services(bot: EaselBot) -> Services:
            delivery = Delivery(bot, store, lifecycle, files, output_format=settings.images.output_format)
            moderation = Moderation(
                store,
                backends=generating,
                prices=settings.prices,
                priced_models={"openai": settings.openai.model} if settings.openai.enabled else {},
                moderate=openai.moderate if openai is not None else None,
                audit=delivery.audit,
                channels=lambda guild_id, channel_id: can_post(bot, guild_id, channel_id),
                clock=clock,
            )
            board = DiscordBoard(bot, store, files, output_format=settings.images.output_format)
            contests = ChallengeService(store, moderation, board, clock=clock)
            worker = Worker(
                lifecycle,
                store,
                files,
                renderers,
                delivery,
                concurrency=concurrency,
                tick_s=settings.queue.position_update_s,
                moderation=moderation,
                metrics=metrics,
            )
            generation = Generation(
                store,
                lifecycle,
                files,
                renderers,
                upscaler=upscaler.name,
                images=settings.images,
                moderation=moderation,
                offline=offline,
            )
            return Services(
                settings=settings,
                generation=generation,
                delivery=delivery,
                worker=worker,
                moderation=moderation,
                contests=contests,
                actions=RateLimiter(settings.limits.burst, settings.limits.refill_s),
                members=MemberData(store, files, lifecycle, stop_render=worker.cancel_running, clock=clock),
                # Started by cogs.mydata once Discord has said which servers Easel is still in.
                retention=Retention(
                    store,
                    files,
                    purge_after=timedelta(days=settings.storage.purge_after_days),
                    clock=clock,
                ),
            )

        bot = EaselBot(services)
        if settings.metrics.enabled:
            # Stopped after the bot closes (its /healthz then says so) and before the store does.
            checks = {
                "gateway": gateway_check(bot),
                "store": store_check(store),
                "backends": backends_check(renderers, offline),
            }
            try:
                await stack.enter_async_context(
                    HealthServer.serving(*settings.metrics.address, metrics.registry, checks)
                )
            except OSError as exc:
                raise listen_error(settings.metrics.listen, exc) from None
        stack.push_async_callback(bot.close)
        yield bot


def check_listen(settings: Settings) -> None:
    """Refuse a metrics address that is taken or not this machine's, before waiting for Discord."""
    if not settings.metrics.enabled:
        return
    host, port = settings.metrics.address
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        raise listen_error(settings.metrics.listen, exc) from None


async def run(settings: Settings) -> None:
    """Wait until Discord answers, then run the bot until it is stopped."""
    stop_on_sigterm()
    # Before opening anything: a wrong token or a taken metrics port exits at once, not after
    # waiting for Discord or a minute of loading a model.
    check_listen(settings)
    await wait_for_discord(settings.discord)
    async with open_app(settings) as bot:
        await bot.start(settings.discord.token.reveal())


def stop_on_sigterm() -> None:
    """Make SIGTERM (docker stop, systemd) stop Easel the way Ctrl-C does: cancel the main task."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def render_once(settings: Settings, backend: str, prompt: str, out: Path, seed: int) -> None:
    """Render one image without Discord and print how long each stage took."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    renderer: LocalRenderer | openai_renderer.OpenAIRenderer
    if backend == "local":
        renderer, timings = await LocalRenderer.load(settings.local)
    else:
        renderer = open_openai(settings)
        timings["load"] = time.perf_counter() - started
    try:
        width, height = renderer.capabilities.sizes[0]
        request = RenderRequest(
            job_id=0, operation=Operation.GENERATE, prompt=prompt, width=width, height=height, seed=seed
        )
        started = time.perf_counter()
        result = await renderer.render(request)
        timings["render"] = time.perf_counter() - started
    finally:
        await renderer.close()
    await asyncio.to_thread(out.write_bytes, result.images[0])
    print(f"{backend}: {width}×{height} {images.sniff_extension(result.images[0])} written to {out}")
    print(f"made by: {result.made_by}")
    for stage, seconds in timings.items():
        print(f"  {stage:<8} {seconds:8.2f} s")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="Easel, a Discord image-generation bot."
    )
    parser.add_argument(
        "command", nargs="?", default="run", choices=("run", "check-config", "render", "worker")
    )
    parser.add_argument("prompt", nargs="?", default="", help="render: the prompt")
    parser.add_argument(
        "--config", type=Path, default=Path("config.toml"), help="path to the TOML config file"
    )
    parser.add_argument("--backend", choices=("local", "openai"), help="render: the backend to use")
    parser.add_argument("--out", type=Path, default=Path("easel-render.png"), help="render: output file")
    parser.add_argument("--seed", type=int, default=0, help="render: the seed (local backend)")
    args = parser.parse_intermixed_args(argv)
    # Before anything is created: the database, images and logs Easel writes hold members' prompts,
    # results and interaction tokens, so other users of the host may not read them.
    os.umask(0o077)
    try:
        settings = load_settings(args.config, worker=args.command == "worker")
        warnings = check_openai(settings)
        if args.command in ("run", "check-config"):
            check_storage(settings.storage)
        if args.command == "check-config":
            check_local_model(settings.local)
    except ConfigError as exc:
        print(f"easel: config error: {exc}", file=sys.stderr)
        return 2
    with operator_logging(settings):
        return run_command(args, settings, warnings)


def run_command(args: argparse.Namespace, settings: Settings, warnings: list[str]) -> int:
    """Run the command line's command with the loaded settings; return the exit status."""
    for warning in warnings:
        log.warning("%s", warning)
    backends = [
        f"local ({settings.local.model})" if settings.local.enabled else None,
        "openai" if settings.openai.enabled else None,
        "lanczos (upscale)",
    ]
    if args.command == "check-config":
        print(f"config OK: backends {', '.join(b for b in backends if b)}; database {settings.storage.path}")
        return 0
    if args.command == "render":
        return render_command(settings, args.backend, args.prompt, args.out, args.seed)
    if args.command == "worker":
        return worker_command(settings)
    if not settings.openai.enabled and not settings.local.enabled:
        log.warning(
            "no image backend is configured: set [openai] api_key or [local] model so members can generate"
        )
    try:
        asyncio.run(run(settings))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # Ctrl-C or SIGTERM: open_app has closed everything in order
    except discord.LoginFailure:
        print(f"easel: Discord refused the token: {TOKEN_HELP}", file=sys.stderr)
        return 2
    except (aiohttp.ClientError, discord.GatewayNotFound, discord.DiscordServerError) as exc:
        # Discord answered the start-up check, then failed the login right after: start again
        # (a container's restart policy does) rather than run half-started.
        print(f"easel: Discord went away while logging in ({exc}); start Easel again", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"easel: config error: {exc}", file=sys.stderr)
        return 2
    return 0


def worker_command(settings: Settings) -> int:
    """``python -m bot worker``: render the local backend's jobs for a bot elsewhere, through Redis."""
    if not settings.redis.enabled:
        print("easel: a worker needs [redis] url (or REDIS_URL) to find its bot", file=sys.stderr)
        return 2
    if not settings.local.enabled:
        print("easel: a worker needs [local] model, the model it renders with", file=sys.stderr)
        return 2
    try:
        asyncio.run(remote_worker.serve(settings))
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:
        print(f"easel: worker: {exc}", file=sys.stderr)
        return 1
    return 0


def render_command(settings: Settings, backend: str | None, prompt: str, out: Path, seed: int) -> int:
    """``python -m bot render``: check a backend (model, GPU, key) without Discord."""
    backend = backend or ("local" if settings.local.enabled else "openai")
    if not prompt:
        print('easel: render needs a prompt, e.g. python -m bot render "a red fox"', file=sys.stderr)
        return 2
    if backend == "local" and not settings.local.enabled:
        print("easel: the local backend is not configured: set [local] model", file=sys.stderr)
        return 2
    if backend == "openai" and not settings.openai.enabled:
        print("easel: the openai backend is not configured: set [openai] api_key", file=sys.stderr)
        return 2
    try:
        asyncio.run(render_once(settings, backend, prompt, out, seed))
    except (ConfigError, EaselError) as exc:
        print(f"easel: {backend}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
