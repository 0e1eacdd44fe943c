"""Start-up: wait until Discord answers, so an outage at start is one log line per attempt, not a traceback.

discord.py's ``login`` raises on the first network failure, and its first gateway connection
retries every 5 s with a traceback each time. Easel asks first what ``login`` and ``connect``
need (``/gateway/bot`` with the token, then a websocket handshake with the gateway) and only
starts the client once both answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import aiohttp
import discord
import yarl

from bot.config import TOKEN_HELP, DiscordSettings
from bot.errors import ConfigError
from bot.retry import Sleep, backoff

log = logging.getLogger(__name__)

# 1 s doubling to a minute: back at once after a blip, one try a minute through a long outage.
BASE_DELAY_S = 1.0
MAX_DELAY_S = 60.0
# A host that drops packets never refuses: an attempt gives up after this long.
ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
# Discord asks every bot for a User-Agent of this form; Cloudflare may block others.
USER_AGENT = f"DiscordBot (https://github.com/Rapptz/discord.py {discord.__version__}) Easel"


class Unreachable(Exception):
    """One attempt failed the way an outage does (DNS, refused, timeout, 5xx)."""

    def __init__(self, endpoint: str, cause: str) -> None:
        super().__init__(f"{endpoint}: {cause}")
        self.endpoint = endpoint
        self.cause = cause


async def wait_for_discord(
    settings: DiscordSettings, *, sleep: Sleep = asyncio.sleep, jitter: Callable[[], float] = random.random
) -> None:
    """Return once Discord's REST API and gateway both answer; retry outages without end.

    Raise ConfigError when Discord answers but refuses: a wrong token (401) or a wrong
    ``api_base`` (any other 4xx). Cancelling (Ctrl-C, SIGTERM) stops the wait at once.
    """
    async with aiohttp.ClientSession(timeout=ATTEMPT_TIMEOUT, headers={"User-Agent": USER_AGENT}) as http:
        attempt = 1
        while True:
            try:
                await _reach(http, settings)
            except Unreachable as failed:
                delay = backoff(attempt, base_delay=BASE_DELAY_S, max_delay=MAX_DELAY_S, jitter=jitter)
                log.warning(
                    "Discord is unreachable at %s (%s); attempt %d failed, retrying in %.1f s",
                    failed.endpoint,
                    failed.cause,
                    attempt,
                    delay,
                )
                await sleep(delay)
                attempt += 1
            else:
                if attempt > 1:
                    log.info("Discord answered after %d failed attempts; logging in", attempt - 1)
                return


async def _reach(http: aiohttp.ClientSession, settings: DiscordSettings) -> None:
    """Ask ``/gateway/bot`` with the token, then open and close a gateway websocket."""
    endpoint = f"{settings.api_base}/gateway/bot"
    try:
        async with http.get(endpoint, headers={"Authorization": f"Bot {settings.token.reveal()}"}) as answer:
            if answer.status == 401:
                raise ConfigError(f"Discord refused the token (401 from {endpoint}): {TOKEN_HELP}")
            if answer.status == 429 or answer.status >= 500:
                raise Unreachable(endpoint, f"HTTP {answer.status} {answer.reason or ''}".rstrip())
            if answer.status >= 400:
                raise ConfigError(
                    f"{endpoint} answered HTTP {answer.status}: check [discord] api_base "
                    "(Discord's own is https://discord.com/api/v10)"
                )
            announced = (await answer.json(content_type=None))["url"]
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
        raise Unreachable(endpoint, _cause(exc)) from None
    # The configured gateway wins, as it does for the client (see bot/endpoints.py).
    gateway = str(yarl.URL(settings.gateway_url or announced).with_query(v="10", encoding="json"))
    try:
        async with http.ws_connect(gateway, autoclose=True):
            pass  # the handshake is the answer; no IDENTIFY, so no session start is spent
    except aiohttp.WSServerHandshakeError as exc:
        raise Unreachable(gateway, f"HTTP {exc.status} to the websocket upgrade") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unreachable(gateway, _cause(exc)) from None


def _cause(exc: BaseException) -> str:
    """Describe a network failure in one line (a timeout's own text is empty)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {ATTEMPT_TIMEOUT.total:.0f} s"
    return str(exc) or type(exc).__name__
