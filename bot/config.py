"""Typed settings: loaded once from TOML, validated, with secrets that never print."""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from bot.errors import ConfigError
from bot.quotas import PriceTable

T = TypeVar("T")

DISCORD_API_BASE = "https://discord.com/api/v10"
TOKEN_HELP = (
    "create a bot at https://discord.com/developers/applications (Bot → Reset Token), "
    "then put it in [discord] token or the DISCORD_TOKEN environment variable"
)


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself, for the one call that needs it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class DiscordSettings:
    """How Easel reaches Discord."""

    token: Secret
    api_base: str = DISCORD_API_BASE
    gateway_url: str = ""
    dev_guild_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class OpenAISettings:
    """The OpenAI Images backend; enabled when an API key is set."""

    api_key: Secret = field(default_factory=lambda: Secret(""))
    base_url: str = ""
    model: str = "gpt-image-1-mini"
    quality: str = "auto"
    timeout_s: float = 120.0
    retries: int = 3
    concurrency: int = 2

    @property
    def enabled(self) -> bool:
        """Whether the OpenAI backend is configured."""
        return bool(self.api_key)


@dataclass(frozen=True)
class LocalSettings:
    """The local diffusers backend; enabled when a model is set. Empty and negative numbers mean "auto"."""

    model: str = ""
    model_config: str = ""
    allow_download: bool = False
    device: str = "auto"
    dtype: str = "auto"
    scheduler: str = ""
    steps: int = 0
    guidance: float = -1.0
    resolution: int = 0
    max_batch: int = 4
    max_batch_by_size: tuple[tuple[tuple[int, int], int], ...] = ()
    attention: str = "sdpa"
    compile: bool = False
    channels_last: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    safety_checker: str = ""
    upscaler: str = ""
    hires_strength: float = 0.35
    warmup: bool = True
    progress_interval_s: float = 2.0

    @property
    def enabled(self) -> bool:
        """Whether the local backend is configured."""
        return bool(self.model)


DB_NAME = "easel.sqlite3"


@dataclass(frozen=True)
class RedisSettings:
    """Where remote render workers meet the bot; off (everything in-process) when ``url`` is empty."""

    url: Secret = field(default_factory=lambda: Secret(""))  # its password may be in the URL

    @property
    def enabled(self) -> bool:
        """Whether jobs for the local backend go to remote workers."""
        return bool(self.url.reveal())


@dataclass(frozen=True)
class WorkerSettings:
    """This machine as a remote render worker (``python -m bot worker``)."""

    name: str = ""  # empty: the host name
    lease_s: float = 30.0


@dataclass(frozen=True)
class StorageSettings:
    """Where jobs and images live."""

    path: Path = Path("data") / DB_NAME
    # Days after a server removes Easel until its data (jobs, images, settings, challenges) is removed.
    purge_after_days: int = 30

    @property
    def images_dir(self) -> Path:
        """The directory beside the database that holds rendered images."""
        return self.path.parent / "images"


@dataclass(frozen=True)
class MetricsSettings:
    """Where Prometheus metrics (/metrics) and the health check (/healthz) are served; off when empty."""

    listen: str = ""

    @property
    def enabled(self) -> bool:
        """Whether the metrics and health server runs."""
        return bool(self.listen)

    @property
    def address(self) -> tuple[str, int]:
        """The host and port of ``listen`` (brackets dropped from an IPv6 host)."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class QueueSettings:
    """Limits on waiting work; over a limit the request is refused, nothing is enqueued."""

    max_per_member: int = 3
    max_per_guild: int = 20
    max_total: int = 500
    position_update_s: float = 3.0


@dataclass(frozen=True)
class LimitSettings:
    """How fast one member may act (commands and buttons): a burst, then one action per refill."""

    burst: int = 5
    refill_s: float = 3.0


@dataclass(frozen=True)
class ImageSettings:
    """Output encoding and input limits."""

    output_format: str = "png"
    default_count: int = 1
    max_upload_mb: float = 8.0
    max_input_pixels: int = 4096 * 4096
    upscale_max_pixels: int = 4096 * 4096
    variation_strength: float = 0.6
    vary_subtle_strength: float = 0.35
    vary_strong_strength: float = 0.75

    @property
    def max_upload_bytes(self) -> int:
        """The upload size cap in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


# Estimated USD per image (OpenAI's published prices, 2026): (model, "WxH", quality) -> USD.
# Budgets use them; [prices] in the config file replaces the whole table.
DEFAULT_PRICES: dict[tuple[str, str, str], float] = {
    (model, size, quality): usd
    for model, sizes in {
        "gpt-image-1-mini": {
            "1024x1024": {"low": 0.005, "medium": 0.011, "high": 0.036},
            "1024x1536": {"low": 0.006, "medium": 0.015, "high": 0.052},
            "1536x1024": {"low": 0.006, "medium": 0.015, "high": 0.052},
        },
        "gpt-image-1.5": {
            "1024x1024": {"low": 0.009, "medium": 0.034, "high": 0.133},
            "1024x1536": {"low": 0.013, "medium": 0.05, "high": 0.2},
            "1536x1024": {"low": 0.013, "medium": 0.05, "high": 0.2},
        },
    }.items()
    for size, qualities in sizes.items()
    for quality, usd in qualities.items()
}


@dataclass(frozen=True)
class Settings:
    """Everything Easel reads from its config file."""

    discord: DiscordSettings
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    prices: PriceTable = field(default_factory=lambda: PriceTable(DEFAULT_PRICES))
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    log_level: str = "INFO"
    library_log_level: str = "INFO"


OUTPUT_FORMATS = ("png", "jpeg", "webp")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Section:
    """Reads one TOML table, naming ``section.key`` in every error."""

    def __init__(self, name: str, data: Mapping[str, Any], known: set[str]) -> None:
        self.name = name
        self.data = data
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"[{name}] has unknown key(s) {', '.join(unknown)}; "
                f"known keys are {', '.join(sorted(known))} (see config.example.toml)"
            )

    def get(self, key: str, kind: type[T], default: T, check: Callable[[T], str | None] | None = None) -> T:
        """Return ``key`` as ``kind``, or ``default``; raise ConfigError naming the key when it is wrong."""
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"{self.name}.{key} must be {_kind_name(kind)}, not {type(value).__name__} ({value!r})"
            )
        if check is not None and (problem := check(value)):
            raise ConfigError(f"{self.name}.{key} = {value!r}: {problem}")
        return value


def _kind_name(kind: type) -> str:
    return {
        str: "a string",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }.get(kind, kind.__name__)


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _strength(value: float) -> str | None:
    return None if 0.05 <= value <= 1.0 else "must be between 0.05 and 1.0"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _log_level(value: str) -> str | None:
    return None if value.upper() in LOG_LEVELS else f"use one of {', '.join(LOG_LEVELS)}"


def _url(value: str) -> str | None:
    if value and not value.startswith(("http://", "https://", "ws://", "wss://")):
        return "must be a full URL starting with http(s):// or ws(s)://"
    return None


def _host_port(value: str) -> str | None:
    """Check a ``host:port`` listen address: a host name or IP (IPv6 in brackets) and a port 0 to 65535."""
    if not value:
        return None
    example = 'e.g. "127.0.0.1:9108" (this host only), "0.0.0.0:9108" or "[::1]:9108"; empty: off'
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return f"must be host:port, {example}"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return f"an IPv6 host goes in brackets, {example}"
    if host.strip("[]") == "" or any(c.isspace() or c in "/@" for c in host):
        return f"must be host:port, {example}"
    return None


def _redis_url(value: str) -> str | None:
    # Never echo the value: it may hold the password.
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        return "must start with redis://, rediss:// (TLS) or unix://"
    return None


def _worker_name(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        return "must be 1 to 64 letters, digits, dots, dashes or underscores"
    return None


def load_settings(path: Path, env: Mapping[str, str] | None = None, *, worker: bool = False) -> Settings:
    """Load and validate the config file; environment variables override the secrets.

    A render worker (``worker``) never talks to Discord, so it needs no token.
    """
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; copy config.example.toml to {path} and fill in [discord] token"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_settings(raw, env, base_dir=path.parent, worker=worker)


def parse_settings(
    raw: Mapping[str, Any], env: Mapping[str, str], *, base_dir: Path, worker: bool = False
) -> Settings:
    """Build Settings from parsed TOML; every error names the key and the fix."""
    top = _Section(
        "config",
        raw,
        {
            "discord",
            "openai",
            "local",
            "storage",
            "queue",
            "limits",
            "images",
            "prices",
            "logging",
            "metrics",
            "redis",
            "worker",
        },
    )
    for name in top.data:
        if not isinstance(top.data[name], dict):
            raise ConfigError(f"[{name}] must be a table (a [{name}] section), not a plain value")

    d = _Section("discord", raw.get("discord", {}), {"token", "api_base", "gateway_url", "dev_guild_ids"})
    token = env.get("DISCORD_TOKEN") or d.get("token", str, "")
    if not token and not worker:
        raise ConfigError(f"discord.token is missing: {TOKEN_HELP}")
    guild_ids = d.get("dev_guild_ids", list, [])
    if not all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in guild_ids):
        raise ConfigError(
            "discord.dev_guild_ids must be a list of server ids (numbers), e.g. [123456789012345678]"
        )
    discord = DiscordSettings(
        token=Secret(token),
        api_base=d.get("api_base", str, DISCORD_API_BASE, _url).rstrip("/"),
        gateway_url=d.get("gateway_url", str, "", _url),
        dev_guild_ids=tuple(guild_ids),
    )

    o = _Section(
        "openai",
        raw.get("openai", {}),
        {"api_key", "base_url", "model", "quality", "timeout_s", "retries", "concurrency"},
    )
    defaults = OpenAISettings()
    openai = OpenAISettings(
        api_key=Secret(env.get("OPENAI_API_KEY") or o.get("api_key", str, "")),
        base_url=o.get("base_url", str, "", _url),
        model=o.get("model", str, defaults.model, lambda v: None if v else "must not be empty"),
        quality=o.get("quality", str, defaults.quality),
        timeout_s=o.get("timeout_s", float, defaults.timeout_s, _positive),
        retries=o.get(
            "retries", int, defaults.retries, lambda v: None if 1 <= v <= 10 else "must be 1 to 10"
        ),
        concurrency=o.get("concurrency", int, defaults.concurrency, _positive),
    )

    local = _local(_Section("local", raw.get("local", {}), set(LOCAL_KEYS)), base_dir)

    s = _Section("storage", raw.get("storage", {}), {"path", "purge_after_days"})
    # EASEL_DATA (the Docker image sets /data) is the default folder, so a config mounted over
    # the image's keeps the database on the data volume unless it names a path itself.
    data_dir = env.get("EASEL_DATA")
    default_db = Path(data_dir) / DB_NAME if data_dir else StorageSettings().path
    db = Path(s.get("path", str, str(default_db)))
    storage = StorageSettings(
        path=db if db.is_absolute() else base_dir / db,
        purge_after_days=s.get(
            "purge_after_days",
            int,
            StorageSettings.purge_after_days,
            lambda v: None if 1 <= v <= 3650 else "must be 1 to 3650 days",
        ),
    )

    q = _Section(
        "queue", raw.get("queue", {}), {"max_per_member", "max_per_guild", "max_total", "position_update_s"}
    )
    qd = QueueSettings()
    queue = QueueSettings(
        max_per_member=q.get("max_per_member", int, qd.max_per_member, _positive),
        max_per_guild=q.get("max_per_guild", int, qd.max_per_guild, _positive),
        max_total=q.get("max_total", int, qd.max_total, _positive),
        position_update_s=q.get(
            "position_update_s",
            float,
            qd.position_update_s,
            lambda v: None if v >= 1 else "must be at least 1 (Discord rate-limits message edits)",
        ),
    )

    lm = _Section("limits", raw.get("limits", {}), {"burst", "refill_s"})
    ld = LimitSettings()
    limits = LimitSettings(
        burst=lm.get("burst", int, ld.burst, lambda v: None if 1 <= v <= 100 else "must be 1 to 100"),
        refill_s=lm.get(
            "refill_s",
            float,
            ld.refill_s,
            lambda v: None if 0.1 <= v <= 3600 else "must be 0.1 to 3600 seconds",
        ),
    )

    i = _Section(
        "images",
        raw.get("images", {}),
        {
            "output_format",
            "default_count",
            "max_upload_mb",
            "max_input_pixels",
            "upscale_max_pixels",
            "variation_strength",
            "vary_subtle_strength",
            "vary_strong_strength",
        },
    )
    idf = ImageSettings()
    images = ImageSettings(
        output_format=i.get("output_format", str, idf.output_format, _one_of(*OUTPUT_FORMATS)),
        default_count=i.get(
            "default_count", int, idf.default_count, lambda v: None if 1 <= v <= 4 else "must be 1 to 4"
        ),
        max_upload_mb=i.get("max_upload_mb", float, idf.max_upload_mb, _positive),
        max_input_pixels=i.get("max_input_pixels", int, idf.max_input_pixels, _positive),
        upscale_max_pixels=i.get("upscale_max_pixels", int, idf.upscale_max_pixels, _positive),
        variation_strength=i.get("variation_strength", float, idf.variation_strength, _strength),
        vary_subtle_strength=i.get("vary_subtle_strength", float, idf.vary_subtle_strength, _strength),
        vary_strong_strength=i.get("vary_strong_strength", float, idf.vary_strong_strength, _strength),
    )
    if images.vary_subtle_strength >= images.vary_strong_strength:
        raise ConfigError(
            f"images.vary_subtle_strength ({images.vary_subtle_strength:g}) must be below "
            f"images.vary_strong_strength ({images.vary_strong_strength:g}): Subtle stays closer to the image"
        )

    prices = _prices(raw["prices"]) if "prices" in raw else PriceTable(DEFAULT_PRICES)

    rs = _Section("redis", raw.get("redis", {}), {"url"})
    redis = RedisSettings(url=Secret(env.get("REDIS_URL") or rs.get("url", str, "")))
    if problem := _redis_url(redis.url.reveal()):
        # Not _Section's check: its message would print the value, password and all.
        raise ConfigError(f"redis.url (or REDIS_URL) {problem}")
    wk = _Section("worker", raw.get("worker", {}), {"name", "lease_s"})
    workers = WorkerSettings(
        name=wk.get("name", str, "", _worker_name),
        lease_s=wk.get(
            "lease_s", float, WorkerSettings().lease_s, lambda v: None if v >= 1 else "must be at least 1"
        ),
    )

    lg = _Section("logging", raw.get("logging", {}), {"level", "library_level"})
    level = lg.get("level", str, "INFO", _log_level).upper()
    # At DEBUG, libraries log interaction tokens, gateway payloads and every SQL query: they
    # follow ``level`` only up to INFO unless the operator asks for more in library_level.
    library_level = lg.get("library_level", str, "", lambda v: _log_level(v) if v else None).upper()
    if not library_level:
        library_level = level if LOG_LEVELS.index(level) >= LOG_LEVELS.index("INFO") else "INFO"

    mt = _Section("metrics", raw.get("metrics", {}), {"listen"})
    metrics = MetricsSettings(listen=mt.get("listen", str, "", _host_port))
    return Settings(
        discord=discord,
        openai=openai,
        local=local,
        storage=storage,
        queue=queue,
        limits=limits,
        images=images,
        prices=prices,
        metrics=metrics,
        redis=redis,
        worker=workers,
        log_level=level,
        library_log_level=library_level,
    )


def _prices(raw: Mapping[str, Any]) -> PriceTable:
    """Read [prices."model"."WxH"] tables of quality = USD per image."""
    table: dict[tuple[str, str, str], float] = {}
    example = 'e.g. [prices."gpt-image-1-mini"."1024x1024"] with low = 0.005'
    for model, sizes in raw.items():
        if not isinstance(sizes, dict):
            raise ConfigError(f"prices.{model} must be a table of sizes ({example})")
        for size, qualities in sizes.items():
            if not isinstance(qualities, dict):
                raise ConfigError(f"prices.{model}.{size} must be a table of qualities ({example})")
            for quality, usd in qualities.items():
                if isinstance(usd, bool) or not isinstance(usd, (int, float)) or usd < 0:
                    raise ConfigError(f"prices.{model}.{size}.{quality} must be a price in USD, not {usd!r}")
                table[(model, size, quality)] = float(usd)
    try:
        return PriceTable(table)
    except ValueError as exc:
        raise ConfigError(f"[prices]: {exc}") from None


LOCAL_KEYS = tuple(f.name for f in fields(LocalSettings))
DEVICES_HELP = "use auto, cpu, cuda or cuda:N (e.g. cuda:1), or mps on Apple silicon"
DTYPES = ("auto", "float16", "bfloat16", "float32")
SCHEDULERS = ("", "euler", "euler_a", "dpm++_2m", "dpm++_2m_karras", "ddim", "unipc", "lcm", "pndm")
ATTENTION = ("sdpa", "sliced")


def _local(sec: _Section, base_dir: Path) -> LocalSettings:
    d = LocalSettings()

    def path(key: str) -> str:
        value = sec.get(key, str, "")
        if not value:
            return ""
        candidate = Path(value).expanduser()
        candidate = candidate if candidate.is_absolute() else base_dir / candidate
        # A model that is no existing path is a model id, looked up in the Hugging Face cache.
        return str(candidate) if candidate.exists() or key != "model" else value

    sizes = sec.get("max_batch_by_size", dict, {})
    by_size: list[tuple[tuple[int, int], int]] = []
    for key, limit in sizes.items():
        width, _, height = key.partition("x")
        if not (width.isdigit() and height.isdigit()) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(
                f'local.max_batch_by_size: {key!r} = {limit!r} must be "WIDTHxHEIGHT" = a whole number '
                'of at least 1, e.g. { "1024x1024" = 1 }'
            )
        by_size.append(((int(width), int(height)), limit))
    settings = LocalSettings(
        model=path("model"),
        model_config=path("model_config"),
        allow_download=sec.get("allow_download", bool, d.allow_download),
        device=sec.get("device", str, d.device, _device),
        dtype=sec.get("dtype", str, d.dtype, _one_of(*DTYPES)),
        scheduler=sec.get("scheduler", str, d.scheduler, _one_of(*SCHEDULERS)),
        steps=sec.get("steps", int, d.steps, lambda v: None if 0 <= v <= 200 else "must be 0 (auto) to 200"),
        guidance=sec.get(
            "guidance", float, d.guidance, lambda v: None if v <= 30 else "must be at most 30 (-1: auto)"
        ),
        resolution=sec.get(
            "resolution",
            int,
            d.resolution,
            lambda v: (
                None
                if v == 0 or (64 <= v <= 4096 and v % 8 == 0)
                else "must be 0 (auto) or 64 to 4096 and a multiple of 8"
            ),
        ),
        max_batch=sec.get(
            "max_batch", int, d.max_batch, lambda v: None if 1 <= v <= 16 else "must be 1 to 16"
        ),
        max_batch_by_size=tuple(by_size),
        attention=sec.get("attention", str, d.attention, _one_of(*ATTENTION)),
        compile=sec.get("compile", bool, d.compile),
        channels_last=sec.get("channels_last", bool, d.channels_last),
        vae_tiling=sec.get("vae_tiling", bool, d.vae_tiling),
        vae_slicing=sec.get("vae_slicing", bool, d.vae_slicing),
        safety_checker=path("safety_checker"),
        upscaler=path("upscaler"),
        hires_strength=sec.get(
            "hires_strength",
            float,
            d.hires_strength,
            lambda v: None if 0.05 <= v <= 1.0 else "must be between 0.05 and 1.0",
        ),
        warmup=sec.get("warmup", bool, d.warmup),
        progress_interval_s=sec.get(
            "progress_interval_s",
            float,
            d.progress_interval_s,
            lambda v: None if v >= 1 else "must be at least 1 (Discord rate-limits message edits)",
        ),
    )
    for key in ("model_config", "safety_checker", "upscaler"):
        value = getattr(settings, key)
        if value and not Path(value).is_dir():
            raise ConfigError(
                f"local.{key} = {value!r}: no such directory (relative paths start at the config file)"
            )
    if settings.model.endswith((".safetensors", ".ckpt")) and not settings.model_config:
        raise ConfigError(
            f"local.model = {settings.model!r} is a single-file checkpoint: set local.model_config to the "
            "folder of its diffusers config (e.g. a download of the base model without weights), "
            "since loading a checkpoint offline needs it"
        )
    return settings


def check_storage(storage: StorageSettings) -> None:
    """Create the database's folder and the images folder and check that Easel can write both.

    Raise ConfigError naming ``storage.path``: the bot would otherwise fail on its first write.
    """
    for folder in (storage.path.parent, storage.images_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # An unnamed file: nothing is left behind, even when the check is killed halfway.
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise ConfigError(
                f"storage.path = {str(storage.path)!r}: Easel cannot create or write the folder {folder} "
                f"({exc.strerror or exc}); point it at a folder this user can write "
                "(in Docker, one under the /data volume)"
            ) from None
    if storage.path.exists():
        try:
            # Read and write, without changing a byte: what SQLite will need.
            with storage.path.open("r+b"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"storage.path = {str(storage.path)!r}: Easel cannot open the database for writing "
                f"({exc.strerror or exc})"
            ) from None


def check_local_model(local: LocalSettings) -> None:
    """Raise ConfigError when ``[local] model`` names a file or folder that does not exist.

    A bare ``name`` or ``owner/name`` may be a Hugging Face model id, which the loader looks up
    in the hub cache: only values that can only be paths are checked here. The bot itself starts
    without the local backend in that case (its log says why) and serves the others.
    """
    model = local.model
    if not model or Path(model).exists():
        return
    path_like = (
        Path(model).expanduser().is_absolute()
        or model.startswith((".", "~"))
        or model.count("/") > 1
        or "\\" in model
        or model.endswith((".safetensors", ".ckpt"))
    )
    if path_like:
        raise ConfigError(
            f"local.model = {model!r}: no such file or directory (relative paths start at the config "
            "file's folder; a Hugging Face model id looks like owner/name)"
        )


def _device(value: str) -> str | None:
    head, _, index = value.partition(":")
    if (head in ("auto", "cpu", "mps") and not index) or (head == "cuda" and (not index or index.isdigit())):
        return None
    return DEVICES_HELP
