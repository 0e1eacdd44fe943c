"""End to end: the real bot as its own process, driven through the Discord and OpenAI test servers.

The test servers and the driver run in this process; the bot runs as ``python -m bot`` in a
subprocess, so its CPU time (utime + stime from /proc, threads included) is the bot's alone.
The renderer is the OpenAI test server with no delay. The driver keeps ``window`` /imagine in
flight from many guilds until ``jobs`` results are posted, and counts the acknowledgements that
missed Discord's 3 s deadline. The same run measures the floor (bench/floorbot.py), a bare
discord.py bot that defers and posts a fixed image, so the ratio of the two holds across
machines where absolute figures do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fakediscord import FakeDiscord, Interaction
from tests.fakeopenai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
GUILDS = 100
BASE_GUILD = 400_000_000_000_000_000
BASE_USER = 300_000_000_000_000_000
OPENAI_KEY = "sk-bench-e2e-0123456789abcdef"
ACK_DEADLINE_S = 3.0
START_TIMEOUT_S = 60.0
IDLE_SAMPLE_S = 2.0
# The run ends early, and reports what it measured, when no result arrives for this long.
STALL_S = 30.0
# Render slots of the OpenAI backend, as the throughput part has always used.
CONCURRENCY = 4
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
# What discord.py's ``speed`` extra installs (and aiohttp picks up); hidden from the bot to measure without it.
SPEED_MODULES = ("orjson", "zstandard", "aiodns", "brotli", "brotlicffi")
WITHOUT_SPEED = (
    "import runpy, sys; sys.modules.update(dict.fromkeys({modules!r})); "
    "sys.argv[0] = 'bot'; runpy.run_module('bot', run_name='__main__', alter_sys=True)"
)


@dataclass(frozen=True)
class Run:
    """What one bot did with ``jobs`` /imagine: results, time, its own CPU and memory."""

    name: str
    jobs: int
    posted: int = 0
    late_acks: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    main_thread_cpu_s: float = 0.0
    idle_cpu_per_s: float = 0.0
    peak_rss_bytes: int = 0
    servers_cpu_s: float = 0.0
    failure: str = ""
    profile: str = ""

    @property
    def jobs_per_s(self) -> float:
        """Results posted per second, first /imagine sent to last result posted."""
        return self.posted / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_job(self) -> float:
        """The bot process's CPU per posted result, idle CPU subtracted."""
        return self.cpu_s * 1000 / self.posted if self.posted else 0.0


def speed_extra_installed() -> bool:
    """Whether orjson, discord.py's main ``speed`` dependency, can be imported here."""
    import importlib.util

    return importlib.util.find_spec("orjson") is not None


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """Return a process's (or one of its threads') user + system CPU time so far (Linux /proc)."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


@contextlib.asynccontextmanager
async def sampling(pid: int, profile: Path | None) -> AsyncIterator[str]:
    """Record the process with py-spy into ``profile`` while the block runs; yield where it goes, or why not.

    Only the thread holding the GIL is sampled (``--gil``): Python's own work, without SQLite's
    C code in its thread or waits in system calls. Sampling without pausing keeps the CPU
    figures close to an unprofiled run's.
    """
    if profile is None:
        yield ""
        return
    # A virtual environment's scripts sit beside its python, whether or not it is on PATH.
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        yield "not profiled: py-spy is not installed (pip install py-spy)"
        return
    profile.parent.mkdir(parents=True, exist_ok=True)
    argv = [spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--rate", "200"]
    argv += ["--format", "raw", "--output", str(profile)]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield f"profile (py-spy raw, summarise with python -m bench.hotspots): {profile}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def peak_rss(pid: int) -> int:
    """Return a process's peak resident memory in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def easel_config(folder: Path, discord: FakeDiscord, openai: FakeOpenAI) -> Path:
    """Write an operator's config pointing Easel at the test servers, with no queue limits in the way."""
    values = {
        "discord": {"token": discord.token, "api_base": discord.api_base, "dev_guild_ids": []},
        "openai": {"api_key": OPENAI_KEY, "base_url": openai.base_url, "concurrency": CONCURRENCY},
        "storage": {"path": str(folder / "easel.sqlite3")},
        "queue": {"max_per_member": 10_000, "max_per_guild": 100_000, "max_total": 100_000},
    }
    lines = []
    for section, keys in values.items():
        lines.append(f"[{section}]")
        # JSON strings, numbers and lists of numbers are also valid TOML values.
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def done(interaction: Interaction) -> bool:
    """Whether the job's result (a message with an attachment) is on the interaction's response."""
    message = interaction.original
    return message is not None and bool(message.attachments)


def lost(interaction: Interaction, now: float) -> bool:
    """Whether the interaction went unacknowledged past Discord's deadline (it can never succeed now)."""
    return interaction.callback is None and now - interaction.sent_at > ACK_DEADLINE_S + 1


class Bot:
    """A bot subprocess: its pid, its log, and a stop that is polite first."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 8) -> str:
        """The last lines the bot logged, for a failure note."""
        text = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " / ".join(text[-lines:])

    async def stop(self) -> None:
        """Stop as Ctrl-C does; kill after 15 s."""
        if self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def started(argv: Sequence[str], folder: Path, env: dict[str, str]) -> AsyncIterator[Bot]:
    """Start a bot process logging to a file in ``folder``; stop it on exit."""
    log = folder / "bot.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    bot = Bot(process, log)
    try:
        yield bot
    finally:
        await bot.stop()


async def ready(discord: FakeDiscord, bot: Bot) -> None:
    """Wait until the bot is connected and its commands are synced, or raise with its log."""

    async def connected_and_synced() -> None:
        await discord.wait_connected(timeout=START_TIMEOUT_S)
        # Global commands (no dev guilds): the sync lands under the key None.
        await discord.wait_for(lambda: None in discord.commands, timeout=START_TIMEOUT_S)

    waiting = asyncio.create_task(connected_and_synced())
    exited = asyncio.create_task(bot.process.wait())
    await asyncio.wait((waiting, exited), return_when=asyncio.FIRST_COMPLETED)
    exited.cancel()
    if not waiting.done():
        waiting.cancel()
        raise RuntimeError(f"exited with status {bot.process.returncode}: {bot.log_tail()}")
    if waiting.exception() is not None:
        raise RuntimeError(f"not ready after {START_TIMEOUT_S:.0f} s: {bot.log_tail()}")


async def drive(
    discord: FakeDiscord, jobs: int, window: int, limit_s: float
) -> tuple[int, float, list[Interaction]]:
    """Keep ``window`` /imagine in flight until ``jobs`` were sent and answered; return (posted, wall, sent)."""
    slots = asyncio.Semaphore(window)
    flying: dict[int, Interaction] = {}
    sent: list[Interaction] = []
    posted = 0
    last = started = time.monotonic()

    async def send_all() -> None:
        for i in range(jobs):
            await slots.acquire()
            guild = BASE_GUILD + 10 * (i % GUILDS)
            inter = await discord.slash(
                guild_id=guild,
                channel_id=guild + 1,
                user_id=BASE_USER + i,
                name="imagine",
                options={"prompt": "a fox in the snow"},
            )
            sent.append(inter)
            flying[inter.id] = inter

    sender = asyncio.create_task(send_all(), name="bench-e2e-send")
    try:
        while not (sender.done() and not flying):
            now = time.monotonic()
            if now - last > STALL_S or now - started > limit_s:
                break

            def answered() -> bool:
                now = time.monotonic()
                return any(done(i) or lost(i, now) for i in flying.values())

            with contextlib.suppress(TimeoutError):
                await discord.wait_for(answered, timeout=1.0)
            now = time.monotonic()
            for inter in [i for i in flying.values() if done(i) or lost(i, now)]:
                del flying[inter.id]
                slots.release()
                if done(inter):
                    posted += 1
                    last = now
            if sender.done() and (error := sender.exception()) is not None:
                raise error
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return posted, last - started, sent


async def measure(
    name: str,
    argv: Sequence[str],
    *,
    jobs: int,
    window: int,
    limit_s: float,
    easel: bool,
    profile: Path | None = None,
) -> Run:
    """Start fresh test servers and one bot, sample its idle CPU, drive the jobs, and read its CPU."""
    discord = FakeDiscord()
    openai = FakeOpenAI(api_key=OPENAI_KEY)
    await discord.start()
    await openai.start()
    try:
        for g in range(GUILDS):
            guild = BASE_GUILD + 10 * g
            discord.add_guild(guild, channels=[(guild + 1, "art")])
        with tempfile.TemporaryDirectory(prefix="easel-bench-e2e-") as tmp:
            folder = Path(tmp)
            if easel:
                argv = [*argv, "--config", str(easel_config(folder, discord, openai))]
            else:
                argv = [*argv, "--api-base", discord.api_base, "--gateway-url", discord.gateway_url]
            async with started(argv, folder, {"DISCORD_TOKEN": discord.token}) as bot:
                try:
                    await ready(discord, bot)
                except RuntimeError as exc:
                    return Run(name, jobs, failure=str(exc))
                await asyncio.sleep(1.0)  # start-up work that follows READY (recovery, first tick)
                idle0 = cpu_seconds(bot.pid)
                await asyncio.sleep(IDLE_SAMPLE_S)
                cpu0, main0, t0 = cpu_seconds(bot.pid), cpu_seconds(bot.pid, bot.pid), time.monotonic()
                idle_rate = (cpu0 - idle0) / IDLE_SAMPLE_S
                servers0 = time.process_time()
                async with sampling(bot.pid, profile) as profiled:
                    try:
                        posted, wall, sent = await drive(discord, jobs, window, limit_s)
                    except (ConnectionError, RuntimeError) as exc:
                        return Run(name, jobs, failure=f"the drive failed: {exc}; {bot.log_tail()}")
                    idle = idle_rate * (time.monotonic() - t0)
                    cpu = cpu_seconds(bot.pid) - cpu0 - idle
                    main = cpu_seconds(bot.pid, bot.pid) - main0
                    servers = time.process_time() - servers0
                rss = peak_rss(bot.pid)
                failure = f"{jobs - posted} of {jobs} results not posted in time" if posted < jobs else ""
                late = sum(
                    1
                    for i in sent
                    if i.callback is None or i.callback.received_at - i.sent_at > ACK_DEADLINE_S
                )
                return Run(
                    name,
                    jobs,
                    posted,
                    late,
                    wall,
                    max(cpu, 0.0),
                    main,
                    idle_rate,
                    rss,
                    servers,
                    failure,
                    profiled,
                )
    finally:
        await openai.close()
        await discord.close()


async def e2e(jobs: int, window: int, limit_s: float, profile: Path | None = None) -> list[Run]:
    """Measure the floor, Easel, and Easel without the ``speed`` extra, one after another.

    With ``profile``, Easel runs once more under py-spy, which writes its samples there; the
    unprofiled runs keep their figures clean.
    """
    python = sys.executable
    easel = [python, "-m", "bot"]
    bots = [("floor", [python, "-m", "bench.floorbot"], False, None), ("easel", easel, True, None)]
    if speed_extra_installed():
        hidden = [python, "-c", WITHOUT_SPEED.format(modules=SPEED_MODULES)]
        bots.append(("easel, speed extra hidden", hidden, True, None))
    if profile is not None:
        bots.append(("easel, profiled", easel, True, profile))
    return [
        await measure(name, argv, jobs=jobs, window=window, limit_s=limit_s, easel=is_easel, profile=path)
        for name, argv, is_easel, path in bots
    ]
