"""A local fake of Discord's REST API, CDN and gateway that the real discord.py client runs against."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import mimetypes
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from .gateway import APPLICATION_FLAGS, Gateway
from .payloads import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_MEMBER_PERMISSIONS,
    GUILD_MESSAGES_INTENT,
    ApiError,
    attachment_payload,
    channel_payload,
    command_payload,
    guild_payload,
    member_payload,
    message_payload,
    number_components,
    role_payload,
    unknown,
    user_payload,
    validate_message,
)
from .records import (
    COMPONENTS_V2,
    EPHEMERAL,
    LOADING,
    SUPPRESS_EMBEDS,
    Attachment,
    Callback,
    Edit,
    File,
    GatewayEvent,
    Guild,
    Interaction,
    Message,
    Request,
    iso,
    snowflake,
    utcnow,
)

API_PREFIX = "/api/v10"
# How long Discord remembers an enforce_nonce nonce ("the past few minutes").
NONCE_WINDOW = 300.0
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
SUPPRESS_NOTIFICATIONS = 1 << 12
# Pinning needs Manage Messages, or since 2025 the separate Pin Messages permission.
MANAGE_MESSAGES = 1 << 13
PIN_MESSAGES = 1 << 51
MAX_PINS = 250  # per channel, since Discord raised it from 50 in 2025
# Callback types Discord accepts per interaction type (2 command, 3 component, 4 autocomplete, 5 modal).
CALLBACK_TYPES = {2: {4, 5, 9, 12}, 3: {4, 5, 6, 7, 9, 12}, 4: {8}, 5: {4, 5, 6, 7}}
FAILURE_BODIES: dict[int, dict[str, Any]] = {
    403: {"message": "Missing Permissions", "code": 50013},
    404: {"message": "404: Not Found", "code": 0},
    413: {"message": "Request entity too large", "code": 40005},
    500: {"message": "500: Internal Server Error", "code": 0},
    502: {"message": "502: Bad Gateway", "code": 0},
    503: {"message": "503: Service Unavailable", "code": 0},
}


@dataclass
class _Upload:
    index: int
    filename: str
    data: bytes
    content_type: str | None


@dataclass
class _Call:
    request: Request
    params: dict[str, str]
    body: Any
    uploads: list[_Upload]


@dataclass
class _FailRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str]
    remaining: int
    results: bool


class Hold:
    """A result upload the fake keeps waiting on, so a test can act at that moment (see hold_result)."""

    def __init__(self, job_id: int | None, *, applied: bool) -> None:
        self.job_id = job_id
        self.applied = applied
        self.arrived = asyncio.Event()
        self.request: Request | None = None
        self._verdict: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def matches(self, request: Request, *, applied: bool) -> bool:
        """Whether this unused hold takes ``request`` at this stage (before or after Discord acted)."""
        job = request.result_job
        return (
            self.request is None
            and self.applied == applied
            and job is not None
            and self.job_id in (None, job)
        )

    def release(self) -> None:
        """Let the request go on as Discord would handle it."""
        if not self._verdict.done():
            self._verdict.set_result(True)

    def drop(self) -> None:
        """Never answer: before Discord acted, nothing happens; after, the effect stays unreported."""
        if not self._verdict.done():
            self._verdict.set_result(False)

    async def wait(self, request: Request) -> bool:
        """Take ``request``, signal its arrival and wait for the test's verdict (True: release)."""
        self.request = request
        self.arrived.set()
        return await self._verdict


Handler = Callable[[_Call], Awaitable[web.StreamResponse]]


def _check_choices(data: dict[str, Any]) -> None:
    """Refuse autocomplete choices as Discord does: at most 25, names and values 1 to 100 characters."""
    choices = data.get("choices")
    errors: dict[str, Any] = {}
    if not isinstance(choices, list) or len(choices) > 25:
        errors["choices"] = "Must be a list of 25 or fewer in length."
    else:
        for i, choice in enumerate(choices):
            for key in ("name", "value"):
                value = choice.get(key)
                if isinstance(value, str) and not 1 <= len(value) <= 100:
                    errors[f"choices.{i}.{key}"] = "Must be between 1 and 100 in length."
    if errors:
        raise ApiError(400, "Invalid Form Body", 50035, errors=errors)


def _did(call: _Call, outcome: str, msg: Message) -> None:
    """Record on the request what it did to which message."""
    call.request.outcome, call.request.message_id = outcome, msg.id


def _mentions(value: Any) -> dict[str, Any] | None:
    """Return allowed_mentions with user and role ids as strings, Discord's snowflake form."""
    if not isinstance(value, dict):
        return None
    return {
        k: [str(i) for i in v] if k in ("users", "roles") and isinstance(v, list) else v
        for k, v in value.items()
    }


class FakeDiscord:
    """Serve Discord's REST routes and gateway on 127.0.0.1, record what the bot does, inject interactions."""

    def __init__(
        self, token: str = "fake-bot-token", *, shard_count: int = 1, privileged_intents: int = 0
    ) -> None:
        self.token = token
        self.application_id = snowflake(dt.datetime(2023, 5, 1, tzinfo=dt.UTC))
        self.bot_user_id = snowflake(dt.datetime(2023, 5, 1, 0, 0, 5, tzinfo=dt.UTC))
        self.owner_id = snowflake(dt.datetime(2019, 3, 1, tzinfo=dt.UTC))
        self.bot_name = "Easel"
        self.shard_count = shard_count
        self.privileged_intents = privileged_intents
        self.bot_permissions = DEFAULT_BOT_PERMISSIONS
        # Discord's rules, adjustable so a test can exercise them without sleeping for real.
        self.ack_deadline = 3.0
        self.token_lifetime = dt.timedelta(minutes=15)
        self.api_base = ""
        self.gateway_url = ""
        self.http_base = ""
        self.guilds: dict[int, Guild] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.messages: dict[int, Message] = {}
        self.interactions: dict[int, Interaction] = {}
        self.requests: list[Request] = []
        self.cdn_requests: list[Request] = []
        self.unhandled: list[Request] = []
        self.gateway_events: list[GatewayEvent] = []
        self.identify_intents: list[int] = []
        self.identifies: list[dict[str, Any]] = []
        self.gateway_queries: list[dict[str, str]] = []
        self.resumes = 0
        self._by_token: dict[str, Interaction] = {}
        self._blobs: dict[int, tuple[bytes, str | None]] = {}
        self._nonces: dict[tuple[int, str], tuple[float, int]] = {}
        self._fail_rules: list[_FailRule] = []
        self._holds: list[Hold] = []
        self._gateway = Gateway(self)
        self._waiters: set[asyncio.Future[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[frozenset[str], re.Pattern[str], Handler, bool]] = []
        for methods, pattern, handler, auth in (
            ("GET", r"/gateway", self._get_gateway, False),
            ("GET", r"/gateway/bot", self._get_gateway_bot, True),
            ("GET", r"/users/@me", self._get_me, True),
            ("GET", r"/oauth2/applications/@me", self._get_application, True),
            ("GET PUT", r"/applications/(?P<app>\d+)/commands", self._commands_route, True),
            (
                "GET PUT",
                r"/applications/(?P<app>\d+)/guilds/(?P<guild>\d+)/commands",
                self._commands_route,
                True,
            ),
            (
                "POST",
                r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback",
                self._interaction_callback,
                False,
            ),
            ("POST", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", self._followup, False),
            (
                "GET PATCH DELETE",
                r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)",
                self._webhook_message,
                False,
            ),
            ("POST", r"/channels/(?P<cid>\d+)/messages", self._create_channel_message, True),
            ("GET", r"/channels/(?P<cid>\d+)/messages", self._history, True),
            (
                "GET PATCH DELETE",
                r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)",
                self._channel_message,
                True,
            ),
            # discord.py 2.7 pins under /messages/pins; the older route is still served by Discord.
            ("PUT DELETE", r"/channels/(?P<cid>\d+)/messages/pins/(?P<mid>\d+)", self._pin, True),
            ("PUT DELETE", r"/channels/(?P<cid>\d+)/pins/(?P<mid>\d+)", self._pin, True),
            ("GET", r"/channels/(?P<cid>\d+)", self._get_channel, True),
            ("POST", r"/channels/(?P<cid>\d+)/typing", self._typing, True),
            ("GET", r"/guilds/(?P<gid>\d+)", self._get_guild, True),
            ("GET", r"/guilds/(?P<gid>\d+)/members/(?P<uid>\d+)", self._get_member, True),
        ):
            self._routes.append((frozenset(methods.split()), re.compile(pattern), handler, auth))

    # ----------------------------------------------------------------- lifecycle

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1 (``port``, or a free one) and set api_base, gateway_url and http_base."""
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        app.router.add_get("/gateway", self._gateway.handle)
        app.router.add_get("/cdn/{tail:.*}", self._cdn)
        app.router.add_get("/media/{tail:.*}", self._cdn)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        port = self._runner.addresses[0][1]
        self.http_base = f"http://127.0.0.1:{port}"
        self.api_base = self.http_base + API_PREFIX
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"

    async def close(self) -> None:
        """Close open websockets and stop the server."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for hold in self._holds:
            hold.drop()
        self.resume_gateway()
        await self._gateway.close_all(1001, "fakediscord closing")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----------------------------------------------------------------- test-facing API

    def add_guild(
        self,
        guild_id: int,
        *,
        name: str | None = None,
        channels: list[tuple[int, str]] | None = None,
        nsfw_channels: Collection[int] = (),
        filesize_limit: int = 10 * 1024 * 1024,
        premium_tier: int = 0,
        member_count: int = 2,
    ) -> None:
        """Put the bot in a guild; sent as GUILD_CREATE after READY, or right away if already connected."""
        guild = Guild(
            id=guild_id,
            name=name or f"Guild {guild_id}",
            channels=dict(channels) if channels is not None else {snowflake(): "general"},
            nsfw_channels=set(nsfw_channels),
            filesize_limit=filesize_limit,
            premium_tier=premium_tier,
            member_count=member_count,
            bot_role_id=snowflake(),
        )
        self.guilds[guild_id] = guild
        session = self._gateway.live_session(self._shard_for(guild_id))
        if session is not None:
            # A guild joined while connected arrives as a lone GUILD_CREATE, like an invite accepted live.
            self._spawn(self._gateway.dispatch(session, "GUILD_CREATE", self._guild_create(guild)))

    def remove_guild(self, guild_id: int) -> None:
        """Take the bot out of a guild (kicked): a GUILD_DELETE without ``unavailable`` if connected."""
        del self.guilds[guild_id]
        session = self._gateway.live_session(self._shard_for(guild_id))
        if session is not None:
            self._spawn(self._gateway.dispatch(session, "GUILD_DELETE", {"id": str(guild_id)}))

    async def add_role(self, guild_id: int, name: str) -> int:
        """Create a role in a guild (GUILD_ROLE_CREATE when connected) and return its id."""
        guild = self.guilds[guild_id]
        role_id = snowflake()
        guild.roles[role_id] = name
        session = self._gateway.live_session(self._shard_for(guild_id))
        if session is not None:
            role = role_payload(role_id, name, 0, len(guild.roles) + 1)
            await self._gateway.dispatch(
                session, "GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role}
            )
        return role_id

    async def add_channel(
        self,
        guild_id: int,
        name: str,
        *,
        nsfw: bool = False,
        overwrites: list[dict[str, Any]] | None = None,
        bot_denied: int = 0,
    ) -> int:
        """Create a text channel in a guild (CHANNEL_CREATE when connected) and return its id.

        ``overwrites`` are its permission overwrites as Discord sends them, e.g. a staff-only
        channel: ``[{"id": str(guild_id), "type": 0, "allow": "0", "deny": str(VIEW_CHANNEL)}, ...]``.
        ``bot_denied`` adds one denying the bot's role those bits (which posting there checks).
        """
        guild = self.guilds[guild_id]
        channel_id = snowflake()
        guild.channels[channel_id] = name
        if nsfw:
            guild.nsfw_channels.add(channel_id)
        if bot_denied:
            overwrites = [*(overwrites or []), {"id": guild.bot_role_id, "type": 0, "deny": bot_denied}]
        if overwrites:
            guild.overwrites[channel_id] = [
                {**o, "id": str(o["id"]), "allow": str(o.get("allow", 0)), "deny": str(o.get("deny", 0))}
                for o in overwrites
            ]
        session = self._gateway.live_session(self._shard_for(guild_id))
        if session is not None:
            await self._gateway.dispatch(session, "CHANNEL_CREATE", channel_payload(guild, channel_id))
        return channel_id

    def attachment(self, data: bytes, filename: str, content_type: str | None = None) -> Attachment:
        """Register bytes served by this server's CDN, for use as a slash command attachment option."""
        if not self.http_base:
            raise RuntimeError("call FakeDiscord.start() before attachment()")
        attachment_id = snowflake()
        content_type = content_type or mimetypes.guess_type(filename)[0]
        # Command option uploads live under ephemeral-attachments on Discord's CDN.
        path = f"ephemeral-attachments/{self.application_id}/{attachment_id}/{quote(filename)}"
        self._blobs[attachment_id] = (data, content_type)
        return Attachment(
            id=attachment_id,
            filename=filename,
            url=f"{self.http_base}/cdn/{path}",
            proxy_url=f"{self.http_base}/media/{path}",
            content_type=content_type,
            size=len(data),
            data=data,
        )

    def channel_messages(self, channel_id: int) -> list[Message]:
        """Return the live messages the bot posted through the channel endpoint, oldest first."""
        return [m for m in self.visible_messages(channel_id) if m.created_via == "channel"]

    def visible_messages(self, channel_id: int) -> list[Message]:
        """Return every live message anyone sees in a channel (interaction responses included), oldest first."""
        return sorted(
            (
                m
                for m in self.messages.values()
                if m.channel_id == channel_id and not m.deleted and not m.ephemeral
            ),
            key=lambda m: m.id,
        )

    def find_requests(self, method: str, path_regex: str) -> list[Request]:
        """Return the recorded REST requests whose method and path match."""
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method.upper() and pattern.search(r.path)]

    def result_requests(self, job_id: int) -> list[Request]:
        """Return every request that uploaded job ``job_id``'s result, whatever Discord answered."""
        return [r for r in self.requests if r.result_job == job_id]

    def result_posts(self, job_id: int) -> list[Request]:
        """Return the requests that made a message show job ``job_id``'s result: accepted creates and edits.

        A repeat that Discord de-duplicated by its nonce, a refused request and one dropped
        before Discord acted are not posts (see ``result_requests`` for all of them).
        """
        return [r for r in self.result_requests(job_id) if r.outcome in ("created", "edited")]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
        results: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests (method or "*", regex searched in the path) with ``status``.

        ``results``: match only requests that upload a job's result (see ``result_requests``).
        """
        rule = _FailRule(
            method.upper(), re.compile(path_regex), status, body, dict(headers or {}), times, results
        )
        self._fail_rules.append(rule)

    def hold_result(self, job_id: int | None = None, *, applied: bool) -> Hold:
        """Keep the next upload of a job's result (of ``job_id``, or any) waiting until the test decides.

        ``applied=False`` holds it before Discord acts on it; ``applied=True`` lets Discord post
        or edit the message, then withholds the answer, as a process killed in between sees it.
        """
        hold = Hold(job_id, applied=applied)
        self._holds.append(hold)
        return hold

    def expire_token(self, token: str) -> None:
        """Make an interaction token invalid now, as if its 15 minutes had passed."""
        self._by_token[token].expired = True

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Wait until ``predicate()`` holds, re-checking after every request and gateway frame."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                code = getattr(predicate, "__code__", None)
                where = f" ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})" if code else ""
                what = getattr(predicate, "__qualname__", repr(predicate)) + where
                raise TimeoutError(f"fakediscord: {what} still false after {timeout}s\n{self.dump()}")
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                # Also poll: a predicate may look at bot state that changes without any traffic.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, min(remaining, 0.05))
            finally:
                self._waiters.discard(waiter)

    def connected(self) -> bool:
        """Return whether every shard has a live gateway session (READY or RESUMED sent)."""
        return self._gateway.connected()

    async def wait_connected(self, timeout: float = 10) -> None:
        """Wait until every shard identified (or resumed) and was sent READY and all its GUILD_CREATEs."""
        await self.wait_for(self.connected, timeout)

    def refuse_gateway(self, times: int) -> None:
        """Answer the next ``times`` gateway websocket upgrades with HTTP 503 instead of HELLO."""
        self._gateway.refusals = times

    @property
    def gateway_refused(self) -> int:
        """How many websocket upgrades refuse_gateway has refused so far."""
        return self._gateway.refused

    async def disconnect_bot(self, code: int = 4000) -> None:
        """Close the bot's gateway sockets from the server side; 4000 lets discord.py RESUME."""
        await self._gateway.close_all(code, "fakediscord: disconnect_bot")

    def pause_gateway(self) -> None:
        """Leave new gateway connections (the bot's reconnects) waiting until ``resume_gateway``."""
        self._gateway.accepting.clear()

    def resume_gateway(self) -> None:
        """Let waiting and new gateway connections through again."""
        self._gateway.accepting.set()

    async def slash(
        self,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        name: str,
        options: dict[str, object] | None = None,
        attachments: dict[str, Attachment] | None = None,
        permissions: int = DEFAULT_MEMBER_PERMISSIONS,
        roles: list[int] | None = None,
        created_at: dt.datetime | None = None,
    ) -> Interaction:
        """Send an APPLICATION_COMMAND interaction for a registered command ("group sub" names subcommands)."""
        words = name.split()
        command, scope = self._find_command(words[0], guild_id)
        resolved: dict[str, dict[str, Any]] = {}
        values = {**(options or {}), **(attachments or {})}
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": command.get("type", 1),
            "options": self._build_options(
                command.get("options") or [], words[1:], values, resolved, guild_id
            ),
        }
        if scope is not None:
            # discord.py looks guild commands up in its tree by this key.
            data["guild_id"] = str(scope)
        if resolved:
            data["resolved"] = resolved
        return await self._send_interaction(
            2, guild_id, channel_id, user_id, data, permissions, roles, created_at, name=name
        )

    async def autocomplete(
        self,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        name: str,
        focused: str,
        options: dict[str, object] | None = None,
        permissions: int = DEFAULT_MEMBER_PERMISSIONS,
        roles: list[int] | None = None,
    ) -> Interaction:
        """Send an APPLICATION_COMMAND_AUTOCOMPLETE interaction: ``focused`` names the option being typed.

        Its text in ``options`` is sent as typed (a string, whatever the option's type); the other
        options are sent as the slash command would send them, and required ones may be missing.
        """
        words = name.split()
        command, scope = self._find_command(words[0], guild_id)
        resolved: dict[str, dict[str, Any]] = {}
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": command.get("type", 1),
            "options": self._build_options(
                command.get("options") or [], words[1:], dict(options or {}), resolved, guild_id, focused
            ),
        }
        if scope is not None:
            data["guild_id"] = str(scope)
        if resolved:
            data["resolved"] = resolved
        return await self._send_interaction(
            4, guild_id, channel_id, user_id, data, permissions, roles, None, name=name
        )

    async def click(
        self,
        message: Message,
        custom_id: str,
        *,
        user_id: int,
        permissions: int = DEFAULT_MEMBER_PERMISSIONS,
        created_at: dt.datetime | None = None,
        values: list[str] | None = None,
        roles: list[int] | None = None,
    ) -> Interaction:
        """Send a MESSAGE_COMPONENT interaction for a component of one of the bot's messages."""
        msg = self.messages[message.id]
        if msg.deleted or msg.guild_id is None:
            raise ValueError(f"message {msg.id} is deleted or not in a guild; nobody can click it")
        component = next((c for c in msg.walk_components() if c.get("custom_id") == custom_id), None)
        if component is None:
            raise ValueError(f"message {msg.id} has no component {custom_id!r}; it has {msg.custom_ids()}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled; Discord clients cannot click it")
        data: dict[str, Any] = {
            "custom_id": custom_id,
            "component_type": component["type"],
            "id": component["id"],
        }
        if values is not None:
            data["values"] = values
        return await self._send_interaction(
            3,
            msg.guild_id,
            msg.channel_id,
            user_id,
            data,
            permissions,
            roles,
            created_at,
            name=custom_id,
            message=msg,
        )

    async def message_command(
        self, message: Message, name: str, *, user_id: int, permissions: int = DEFAULT_MEMBER_PERMISSIONS
    ) -> Interaction:
        """Send the APPLICATION_COMMAND of a message context menu (right-click, Apps, ``name``) on ``message``."""
        msg = self.messages[message.id]
        assert msg.guild_id is not None
        command, scope = self._find_command(name, msg.guild_id, kind=3)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": 3,
            "target_id": str(msg.id),
            "resolved": {"messages": {str(msg.id): self._payload(msg)}},
        }
        if scope is not None:
            data["guild_id"] = str(scope)
        return await self._send_interaction(
            2, msg.guild_id, msg.channel_id, user_id, data, permissions, None, None, name=name
        )

    async def submit_modal(
        self,
        opened: Interaction,
        message: Message,
        values: dict[str, str],
        *,
        permissions: int = DEFAULT_MEMBER_PERMISSIONS,
    ) -> Interaction:
        """Send the MODAL_SUBMIT of the modal the bot opened in answer to ``opened`` (a click on ``message``).

        ``values`` gives the text of each text input by its label; inputs left out keep their default.
        """
        if opened.callback is None or opened.callback.type != 9 or opened.callback.data is None:
            raise ValueError(f"interaction {opened.id} was not answered with a modal")
        modal = opened.callback.data
        rows = []
        for row in modal.get("components", []):
            inputs = row["components"] if row["type"] == 1 else [row["component"]]
            label = row.get("label")
            for text_input in inputs:
                name = text_input.get("label", label)
                value = values.get(name, text_input.get("value") or "")
                rows.append(
                    {
                        "type": 1,
                        "components": [{"type": 4, "custom_id": text_input["custom_id"], "value": value}],
                    }
                )
        msg = self.messages[message.id]
        assert msg.guild_id is not None
        return await self._send_interaction(
            5,
            msg.guild_id,
            msg.channel_id,
            opened.user_id,
            {"custom_id": modal["custom_id"], "components": rows},
            permissions,
            None,
            None,
            name=modal["custom_id"],
            message=msg,
        )

    def dump(self) -> str:
        """Return a readable summary of recent traffic, for failure messages."""
        lines = ["recent REST requests:"]
        lines += [f"  {r}" for r in self.requests[-25:]]
        lines.append("recent gateway frames (heartbeats omitted):")
        lines += [f"  {e}" for e in [e for e in self.gateway_events if e.op not in (1, 11)][-15:]]
        lines.append("messages:")
        for m in list(self.messages.values())[-15:]:
            names = [f.filename for f in m.attachments]
            lines.append(
                f"  {m.id} ch={m.channel_id} via={m.created_via} flags={m.flags} edits={m.edits} "
                f"deleted={m.deleted} content={m.content[:60]!r} files={names} buttons={m.custom_ids()}"
            )
        lines.append("interactions:")
        for i in list(self.interactions.values())[-10:]:
            cb = i.callback.type if i.callback else None
            lines.append(f"  {i.id} {i.name!r} callback={cb} original={i.original and i.original.id}")
        if self.unhandled:
            lines.append("UNHANDLED ROUTES: " + ", ".join(f"{r.method} {r.path}" for r in self.unhandled))
        return "\n".join(lines)

    # ----------------------------------------------------------------- internals: shared

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shard_for(self, guild_id: int) -> int:
        return (guild_id >> 22) % self.shard_count

    def _bot_user(self) -> dict[str, Any]:
        return user_payload(self.bot_user_id, name=self.bot_name, bot=True)

    def _payload(self, msg: Message) -> dict[str, Any]:
        interaction = self.interactions.get(msg.interaction_id) if msg.interaction_id else None
        return message_payload(
            msg, bot_user=self._bot_user(), application_id=self.application_id, interaction=interaction
        )

    def _guild_create(self, guild: Guild) -> dict[str, Any]:
        return guild_payload(
            guild,
            bot_user=self._bot_user(),
            owner_id=self.owner_id,
            bot_permissions=self.bot_permissions,
            gateway=True,
        )

    def _find_channel(self, channel_id: int) -> Guild:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild
        raise unknown("Channel", 10003)

    def _check_sizes(self, guild_id: int | None, uploads: list[_Upload]) -> None:
        limit = self.guilds[guild_id].filesize_limit if guild_id in self.guilds else 10 * 1024 * 1024
        if any(len(u.data) > limit for u in uploads):
            raise ApiError(413, "Request entity too large", 40005)

    # ----------------------------------------------------------------- internals: messages

    def _store_upload(self, channel_id: int, upload: _Upload, entry: dict[str, Any] | None) -> File:
        attachment_id = snowflake()
        filename = str((entry or {}).get("filename") or upload.filename)
        sent_type = upload.content_type if upload.content_type != "application/octet-stream" else None
        # discord.py labels every upload application/octet-stream; Discord derives the type from the file.
        content_type = mimetypes.guess_type(filename)[0] or sent_type or "application/octet-stream"
        path = f"attachments/{channel_id}/{attachment_id}/{quote(filename)}"
        self._blobs[attachment_id] = (upload.data, content_type)
        return File(
            filename=filename,
            data=upload.data,
            content_type=content_type,
            id=attachment_id,
            url=f"{self.http_base}/cdn/{path}",
            proxy_url=f"{self.http_base}/media/{path}",
            description=(entry or {}).get("description"),
        )

    def _resolve_files(
        self,
        channel_id: int,
        existing: list[File],
        entries: list[dict[str, Any]] | None,
        uploads: list[_Upload],
    ) -> list[File]:
        if entries is None:
            # Without an attachments array Discord keeps what is there and appends the uploads.
            return existing + [self._store_upload(channel_id, u, None) for u in uploads]
        kept = {f.id: f for f in existing}
        by_index = {u.index: u for u in uploads}
        out: list[File] = []
        for entry in entries:
            try:
                entry_id = int(entry["id"])
            except (KeyError, TypeError, ValueError):
                raise ApiError(
                    400, "Invalid Form Body", 50035, errors={"attachments": "id required"}
                ) from None
            if entry_id in kept:
                out.append(kept[entry_id])
            elif entry_id in by_index:
                out.append(self._store_upload(channel_id, by_index.pop(entry_id), entry))
            else:
                raise ApiError(
                    400, "Invalid Form Body", 50035, errors={"attachments": f"unknown id {entry_id}"}
                )
        return out + [self._store_upload(channel_id, u, None) for u in by_index.values()]

    def _create_message(
        self,
        *,
        channel_id: int,
        guild_id: int | None,
        body: dict[str, Any],
        uploads: list[_Upload],
        created_via: str,
        flags: int,
        interaction: Interaction | None = None,
        message_type: int = 0,
        check: bool = True,
    ) -> Message:
        content = str(body.get("content") or "")
        embeds = list(body.get("embeds") or [])
        components = list(body.get("components") or [])
        files = self._resolve_files(channel_id, [], body.get("attachments"), uploads)
        if check:
            validate_message(content, embeds, components, files, flags)
        msg = Message(
            id=snowflake(),
            channel_id=channel_id,
            guild_id=guild_id,
            author_id=self.bot_user_id,
            content=content,
            embeds=embeds,
            components=number_components(components),
            attachments=files,
            allowed_mentions=_mentions(body.get("allowed_mentions")),
            nonce=body.get("nonce"),
            flags=flags,
            interaction_id=interaction.id if interaction else None,
            webhook_id=self.application_id if interaction else None,
            created_via=created_via,
            type=message_type,
            tts=bool(body.get("tts")),
            reference=body.get("message_reference"),
        )
        self.messages[msg.id] = msg
        return msg

    def _edit_message(
        self, msg: Message, body: dict[str, Any], uploads: list[_Upload], *, count: bool = True
    ) -> None:
        content = msg.content if "content" not in body else str(body["content"] or "")
        embeds = msg.embeds if "embeds" not in body else list(body["embeds"] or [])
        components = (
            msg.components if "components" not in body else number_components(body["components"] or [])
        )
        files = msg.attachments
        if "attachments" in body or uploads:
            files = self._resolve_files(msg.channel_id, msg.attachments, body.get("attachments"), uploads)
        flags = msg.flags & ~LOADING
        if body.get("flags") is not None:
            # Only these flags can change on edit; ephemerality is fixed at creation.
            editable = SUPPRESS_EMBEDS | COMPONENTS_V2
            flags = (flags & ~editable) | (int(body["flags"]) & editable)
        validate_message(content, embeds, components, files, flags)
        msg.content, msg.embeds, msg.components, msg.attachments, msg.flags = (
            content,
            embeds,
            components,
            files,
            flags,
        )
        if "allowed_mentions" in body:
            msg.allowed_mentions = _mentions(body["allowed_mentions"])
        if count:
            msg.edits += 1
            msg.edit_times.append(time.monotonic())
            msg.history.append(Edit(time.monotonic(), content, [f.filename for f in files]))
            msg.edited_at = utcnow()

    async def _emit_message(self, event: str, msg: Message) -> None:
        # Discord only sends guild message events to bots that asked for GUILD_MESSAGES.
        if msg.guild_id is None or msg.ephemeral:
            return
        session = self._gateway.live_session(self._shard_for(msg.guild_id))
        if session is None or not session.intents & GUILD_MESSAGES_INTENT:
            return
        if event == "MESSAGE_DELETE":
            data = {"id": str(msg.id), "channel_id": str(msg.channel_id), "guild_id": str(msg.guild_id)}
        else:
            data = self._payload(msg)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._gateway.dispatch(session, event, data)

    # ----------------------------------------------------------------- internals: interactions

    def _find_command(self, name: str, guild_id: int, kind: int = 1) -> tuple[dict[str, Any], int | None]:
        for scope in (guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == kind:
                    return command, scope
        registered = {k: [c["name"] for c in v] for k, v in self.commands.items()}
        raise LookupError(
            f"/{name} is not registered for guild {guild_id} or globally (registered: {registered})"
        )

    def _build_options(
        self,
        schema: list[dict[str, Any]],
        path: list[str],
        values: dict[str, object],
        resolved: dict[str, dict[str, Any]],
        guild_id: int,
        focused: str | None = None,
    ) -> list[dict[str, Any]]:
        if path:
            sub = next((o for o in schema if o["name"] == path[0] and o.get("type") in (1, 2)), None)
            if sub is None:
                raise LookupError(f"no subcommand {path[0]!r}; options are {[o['name'] for o in schema]}")
            inner = self._build_options(
                sub.get("options") or [], path[1:], values, resolved, guild_id, focused
            )
            return [{"name": sub["name"], "type": sub["type"], "options": inner}]
        if any(o.get("type") in (1, 2) for o in schema):
            raise ValueError(f"this command has subcommands {[o['name'] for o in schema]}; name one")
        by_name = {o["name"]: o for o in schema}
        if extra := set(values) - set(by_name):
            raise ValueError(f"unknown options {sorted(extra)}; the command has {sorted(by_name)}")
        if focused is not None:
            if not by_name.get(focused, {}).get("autocomplete"):
                raise ValueError(f"option {focused!r} has no autocomplete (the client would not ask)")
            values.setdefault(focused, "")
        elif missing := [o["name"] for o in schema if o.get("required") and o["name"] not in values]:
            raise ValueError(f"required options missing: {missing} (the Discord client would not send this)")
        return [
            {"name": key, "type": by_name[key]["type"], "value": str(v), "focused": True}
            if key == focused
            else {
                "name": key,
                "type": by_name[key]["type"],
                "value": self._option_value(by_name[key], v, resolved, guild_id),
            }
            for key, v in values.items()
        ]

    def _option_value(
        self, spec: dict[str, Any], value: object, resolved: dict[str, dict[str, Any]], guild_id: int
    ) -> object:
        kind = spec["type"]
        if kind == 11:
            if not isinstance(value, Attachment):
                raise TypeError(f"option {spec['name']!r} takes an Attachment from FakeDiscord.attachment()")
            resolved.setdefault("attachments", {})[str(value.id)] = {
                **attachment_payload(value),
                "ephemeral": True,
            }
            return str(value.id)
        if kind in (3, 4, 10) and spec.get("choices"):
            allowed = [c["value"] for c in spec["choices"]]
            if value not in allowed:
                raise ValueError(f"option {spec['name']!r} must be one of {allowed}")
        converters: dict[int, Callable[[Any], object]] = {3: str, 4: int, 5: bool, 10: float}
        if kind in converters:
            return converters[kind](value)
        object_id = int(getattr(value, "id", value))  # type: ignore[call-overload]
        guild = self.guilds[guild_id]
        if kind in (6, 9):
            user = user_payload(object_id)
            resolved.setdefault("users", {})[str(object_id)] = user
            member = member_payload(
                user, roles=[], joined_at=iso(guild.joined_at), permissions=DEFAULT_MEMBER_PERMISSIONS
            )
            del member["user"]
            resolved.setdefault("members", {})[str(object_id)] = member
        elif kind == 7:
            channel = {**channel_payload(guild, object_id), "permissions": str(DEFAULT_MEMBER_PERMISSIONS)}
            resolved.setdefault("channels", {})[str(object_id)] = channel
        elif kind == 8:
            name = "@everyone" if object_id == guild_id else f"role{object_id % 1000}"
            role = role_payload(object_id, guild.roles.get(object_id, name), 0, 1)
            resolved.setdefault("roles", {})[str(object_id)] = role
        return str(object_id)

    async def _send_interaction(
        self,
        kind: int,
        guild_id: int,
        channel_id: int,
        user_id: int,
        data: dict[str, Any],
        permissions: int,
        roles: list[int] | None,
        created_at: dt.datetime | None,
        *,
        name: str,
        message: Message | None = None,
    ) -> Interaction:
        guild = self.guilds.get(guild_id)
        if guild is None or channel_id not in guild.channels:
            raise ValueError(f"guild {guild_id} / channel {channel_id} were not added with add_guild()")
        await self.wait_connected()
        interaction_id = snowflake(created_at)
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        user = user_payload(user_id)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": str(guild_id),
            "channel_id": str(channel_id),
            "channel": {**channel_payload(guild, channel_id), "permissions": str(permissions)},
            "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "locale": "en-US",
            "member": member_payload(
                user, roles=roles or [], joined_at=iso(guild.joined_at), permissions=permissions
            ),
            "app_permissions": str(self.bot_permissions | DEFAULT_MEMBER_PERMISSIONS),
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": guild.filesize_limit,
            "data": data,
        }
        if message is not None:
            payload["message"] = self._payload(message)
        interaction = Interaction(
            id=interaction_id,
            token=token,
            type=kind,
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            name=name,
            payload=payload,
            message_id=message.id if message else None,
        )
        self.interactions[interaction_id] = interaction
        self._by_token[token] = interaction
        session = self._gateway.live_session(self._shard_for(guild_id))
        if session is None:
            raise ConnectionError(f"no live gateway connection for guild {guild_id}")
        # Stamp before writing: the bot may answer before this coroutine resumes.
        interaction.sent_at = time.monotonic()
        await self._gateway.dispatch(session, "INTERACTION_CREATE", payload)
        return interaction

    def _token_interaction(self, call: _Call) -> Interaction:
        interaction = self._by_token.get(call.params["token"])
        if interaction is None or int(call.params["app"]) != self.application_id:
            raise unknown("Webhook", 10015)
        if interaction.expired or utcnow() - interaction.created_at > self.token_lifetime:
            raise ApiError(401, "Invalid Webhook Token", 50027)
        return interaction

    # ----------------------------------------------------------------- REST plumbing

    async def _rest(self, raw: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        path = "/" + raw.match_info["tail"]
        body: Any = None
        uploads: list[_Upload] = []
        parse_error: ApiError | None = None
        try:
            body, uploads = await self._read_body(raw)
        except (ValueError, UnicodeDecodeError):
            parse_error = ApiError(400, "The request body contains invalid JSON.", 50109)
        request = Request(
            method=raw.method,
            path=path,
            query=dict(raw.query),
            json=body,
            files=[File(u.filename, u.data, u.content_type) for u in uploads],
            received_at=received,
            headers=dict(raw.headers),
        )
        self.requests.append(request)
        if not await self._held(request, applied=False):
            return self._abandon(raw)
        try:
            if parse_error is not None:
                raise parse_error
            response = self._injected_failure(request) or await self._route(raw, request, body, uploads)
        except ApiError as error:
            response = self._json(error.body, status=error.status)
        request.status = response.status
        self._notify()
        if response.status < 400 and not await self._held(request, applied=True):
            return self._abandon(raw)
        return response

    async def _held(self, request: Request, *, applied: bool) -> bool:
        """Wait out a hold that takes this request; False when the test dropped it."""
        hold = next((h for h in self._holds if h.matches(request, applied=applied)), None)
        if hold is None:
            return True
        self._notify()
        return await hold.wait(request)

    @staticmethod
    def _abandon(raw: web.Request) -> web.Response:
        """Hang up without an answer, as a connection to a killed client ends."""
        if raw.transport is not None:
            raw.transport.close()
        return web.Response(status=499)

    async def _read_body(self, raw: web.Request) -> tuple[Any, list[_Upload]]:
        if raw.content_type != "multipart/form-data":
            text = await raw.text()
            return (json.loads(text) if text else None), []
        body: dict[str, Any] = {}
        uploads: list[_Upload] = []
        reader = await raw.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # discord.py never nests multiparts
            name = part.name or ""
            data = await part.read()
            if name == "payload_json":
                body = json.loads(data.decode())
            elif match := re.fullmatch(r"files\[(\d+)\]", name):
                content_type = part.headers.get("Content-Type")
                uploads.append(
                    _Upload(int(match[1]), part.filename or f"file{match[1]}", bytes(data), content_type)
                )
            else:
                body[name] = data.decode()
        return body, uploads

    def _injected_failure(self, request: Request) -> web.Response | None:
        for rule in self._fail_rules:
            if (
                rule.remaining <= 0
                or rule.method not in ("*", request.method)
                or not rule.pattern.search(request.path)
                or (rule.results and request.result_job is None)
            ):
                continue
            rule.remaining -= 1
            headers = dict(rule.headers)
            if rule.status == 429:
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": 0.05,
                    "global": False,
                    **(rule.body or {}),
                }
                # discord.py treats a 429 without Via as a Cloudflare ban and raises instead of retrying.
                headers.setdefault("Via", "1.1 google")
                headers.setdefault("Retry-After", str(body["retry_after"]))
                headers.setdefault("X-RateLimit-Scope", "user")
            else:
                body = rule.body or FAILURE_BODIES.get(rule.status, {"message": f"{rule.status}", "code": 0})
            return self._json(body, status=rule.status, headers=headers)
        return None

    async def _route(
        self, raw: web.Request, request: Request, body: Any, uploads: list[_Upload]
    ) -> web.StreamResponse:
        path_matched = False
        for methods, pattern, handler, auth in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            path_matched = True
            if request.method not in methods:
                continue
            if auth and raw.headers.get("Authorization") != f"Bot {self.token}":
                raise ApiError(401, "401: Unauthorized", 0)
            return await handler(_Call(request, match.groupdict(), body, uploads))
        if path_matched:
            raise ApiError(405, "405: Method Not Allowed", 0)
        self.unhandled.append(request)
        raise ApiError(404, f"fakediscord has no route for {request.method} {request.path}", 0)

    async def _cdn(self, raw: web.Request) -> web.StreamResponse:
        request = Request(
            raw.method, raw.path, dict(raw.query), None, [], time.monotonic(), dict(raw.headers)
        )
        self.cdn_requests.append(request)
        parts = raw.match_info["tail"].split("/")
        blob = self._blobs.get(int(parts[-2])) if len(parts) >= 2 and parts[-2].isdigit() else None
        if blob is None:
            response = web.Response(status=404, text="Not Found")
        else:
            response = web.Response(body=blob[0], content_type=blob[1] or "application/octet-stream")
        request.status = response.status
        self._notify()
        return response

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # discord.py only decodes bodies whose Content-Type is exactly application/json, so no charset suffix.
        body = json.dumps(data).encode()
        return web.Response(
            body=body, status=status, headers={**(headers or {}), "Content-Type": "application/json"}
        )

    # ----------------------------------------------------------------- REST routes

    async def _get_gateway(self, call: _Call) -> web.StreamResponse:
        return self._json({"url": self.gateway_url})

    async def _get_gateway_bot(self, call: _Call) -> web.StreamResponse:
        limit = {
            "total": 1000,
            "remaining": 1000 - len(self.identifies),
            "reset_after": 86_400_000,
            "max_concurrency": 1,
        }
        return self._json({"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limit})

    async def _get_me(self, call: _Call) -> web.StreamResponse:
        return self._json(self._bot_user())

    async def _get_application(self, call: _Call) -> web.StreamResponse:
        return self._json(
            {
                "id": str(self.application_id),
                "name": self.bot_name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": APPLICATION_FLAGS,
                "owner": user_payload(self.owner_id),
                "team": None,
                "bot": self._bot_user(),
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
                "install_params": {
                    "scopes": ["bot", "applications.commands"],
                    "permissions": str(self.bot_permissions),
                },
                "integration_types_config": {"0": {}},
                "tags": [],
            }
        )

    async def _commands_route(self, call: _Call) -> web.StreamResponse:
        scope = int(call.params["guild"]) if call.params.get("guild") else None
        if int(call.params["app"]) != self.application_id or (scope is not None and scope not in self.guilds):
            raise ApiError(403, "Missing Access", 50001)
        if call.request.method == "GET":
            return self._json(self.commands.get(scope, []))
        body = call.body
        if not isinstance(body, list):
            raise ApiError(400, "Invalid Form Body", 50035, errors={"_errors": "expected a list of commands"})
        errors: dict[str, Any] = {}
        seen: set[tuple[str, int]] = set()
        for i, command in enumerate(body):
            name, kind = command.get("name", ""), command.get("type", 1)
            if kind == 1 and (not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower()):
                errors[f"{i}.name"] = "APPLICATION_COMMAND_INVALID_NAME"
            if kind == 1 and not 1 <= len(command.get("description") or "") <= 100:
                errors[f"{i}.description"] = "BASE_TYPE_BAD_LENGTH"
            if (name, kind) in seen:
                errors[f"{i}.name"] = "APPLICATION_COMMANDS_DUPLICATE_NAME"
            seen.add((name, kind))
        if errors:
            raise ApiError(400, "Invalid Form Body", 50035, errors=errors)
        # Re-registering a command keeps its id, as Discord does for an unchanged name and type.
        old = {(c["name"], c.get("type", 1)): int(c["id"]) for c in self.commands.get(scope, [])}
        self.commands[scope] = [
            command_payload(
                c,
                command_id=old.get((c["name"], c.get("type", 1))) or snowflake(),
                application_id=self.application_id,
                guild_id=scope,
            )
            for c in body
        ]
        return self._json(self.commands[scope])

    async def _interaction_callback(self, call: _Call) -> web.StreamResponse:
        interaction = self.interactions.get(int(call.params["iid"]))
        if interaction is None or interaction.token != call.params["token"]:
            raise unknown("interaction", 10062)
        if interaction.callback is not None:
            raise ApiError(400, "Interaction has already been acknowledged.", 40060)
        if interaction.expired or call.request.received_at - interaction.sent_at > self.ack_deadline:
            raise unknown("interaction", 10062)
        body = call.body if isinstance(call.body, dict) else {}
        kind = body.get("type")
        data = body.get("data") or {}
        if kind not in CALLBACK_TYPES.get(interaction.type, set()):
            raise ApiError(
                400, "Invalid Form Body", 50035, errors={"type": f"callback {kind} not valid here"}
            )
        if kind == 8:
            _check_choices(data)
        self._check_sizes(interaction.guild_id, call.uploads)
        message: Message | None = None
        # Responses to slash commands are CHAT_INPUT_COMMAND messages; others are DEFAULT.
        message_type = 20 if interaction.type == 2 else 0
        common = {
            "channel_id": interaction.channel_id,
            "guild_id": interaction.guild_id,
            "interaction": interaction,
        }
        if kind == 4:
            flags = int(data.get("flags") or 0) & (
                EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | COMPONENTS_V2
            )
            message = self._create_message(
                **common,
                body=data,
                uploads=call.uploads,
                created_via="interaction",
                flags=flags,
                message_type=message_type,
            )
            interaction.original = message
            _did(call, "created", message)
        elif kind == 5:
            # A "thinking" defer creates a loading placeholder message right away.
            flags = (int(data.get("flags") or 0) & EPHEMERAL) | LOADING
            message = self._create_message(
                **common,
                body={},
                uploads=[],
                created_via="interaction",
                flags=flags,
                message_type=message_type,
                check=False,
            )
            interaction.original = message
        elif kind in (6, 7) and interaction.message_id is not None:
            # @original of a component interaction is the message the component is on.
            target = self.messages[interaction.message_id]
            if kind == 7:
                self._edit_message(target, data, call.uploads)
                message = target
                _did(call, "edited", message)
            interaction.original = target
        interaction.callback = Callback(kind, body.get("data"), call.request.received_at, call.request.files)
        interaction.responded.set()
        if message is not None:
            await self._emit_message("MESSAGE_UPDATE" if kind == 7 else "MESSAGE_CREATE", message)
        if call.request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        meta: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "activity_instance_id": None,
        }
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            meta.update(
                response_message_id=str(message.id),
                response_message_loading=kind == 5,
                response_message_ephemeral=message.ephemeral,
            )
            resource["message"] = self._payload(message)
        return self._json({"interaction": meta, "resource": resource})

    async def _followup(self, call: _Call) -> web.StreamResponse:
        interaction = self._token_interaction(call)
        if interaction.callback is None:
            # Followups only exist once the interaction was acknowledged.
            raise unknown("Webhook", 10015)
        self._check_sizes(interaction.guild_id, call.uploads)
        body = call.body if isinstance(call.body, dict) else {}
        original = interaction.original
        if (
            interaction.callback.type == 5
            and original is not None
            and original.flags & LOADING
            and not original.deleted
        ):
            # The first followup after a thinking defer replaces the placeholder and keeps the defer's ephemerality.
            self._edit_message(
                original, {k: v for k, v in body.items() if k != "flags"}, call.uploads, count=False
            )
            msg = original
            _did(call, "edited", msg)
            await self._emit_message("MESSAGE_UPDATE", msg)
        else:
            flags = int(body.get("flags") or 0) & (
                EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | COMPONENTS_V2
            )
            msg = self._create_message(
                channel_id=interaction.channel_id,
                guild_id=interaction.guild_id,
                interaction=interaction,
                body=body,
                uploads=call.uploads,
                created_via="followup",
                flags=flags,
            )
            _did(call, "created", msg)
            await self._emit_message("MESSAGE_CREATE", msg)
        interaction.followups.append(msg)
        if call.request.query.get("wait") in ("1", "true", "True"):
            return self._json(self._payload(msg))
        return web.Response(status=204)

    async def _webhook_message(self, call: _Call) -> web.StreamResponse:
        interaction = self._token_interaction(call)
        mid = call.params["mid"]
        if mid == "@original":
            msg = interaction.original
        else:
            msg = self.messages.get(int(mid))
            if msg is not interaction.original and msg not in interaction.followups:
                msg = None
        if msg is None or msg.deleted:
            raise unknown("Message", 10008)
        return await self._message_action(call, msg, interaction.guild_id)

    async def _message_action(self, call: _Call, msg: Message, guild_id: int | None) -> web.StreamResponse:
        """Answer GET, PATCH or DELETE on one existing message, for both the webhook and channel routes."""
        if call.request.method == "DELETE":
            msg.deleted = True
            await self._emit_message("MESSAGE_DELETE", msg)
            return web.Response(status=204)
        if call.request.method == "PATCH":
            self._check_sizes(guild_id, call.uploads)
            self._edit_message(msg, call.body if isinstance(call.body, dict) else {}, call.uploads)
            _did(call, "edited", msg)
            await self._emit_message("MESSAGE_UPDATE", msg)
        return self._json(self._payload(msg))

    async def _create_channel_message(self, call: _Call) -> web.StreamResponse:
        channel_id = int(call.params["cid"])
        guild = self._find_channel(channel_id)
        denied = guild.bot_denied(channel_id)
        if denied & VIEW_CHANNEL:
            raise ApiError(403, "Missing Access", 50001)
        if denied & SEND_MESSAGES:
            raise ApiError(403, "Missing Permissions", 50013)
        self._check_sizes(guild.id, call.uploads)
        body = call.body if isinstance(call.body, dict) else {}
        nonce = body.get("nonce")
        if isinstance(nonce, str) and len(nonce) > 25:
            # Discord caps nonces at 25 characters: a UUID does not fit.
            errors = {
                "nonce": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 25 or fewer."}]}
            }
            raise ApiError(400, "Invalid Form Body", 50035, errors=errors)
        now = time.monotonic()
        if nonce is not None and body.get("enforce_nonce"):
            # enforce_nonce: a nonce reused within a few minutes returns the earlier message instead of a new one.
            seen = self._nonces.get((channel_id, str(nonce)))
            if seen is not None and now - seen[0] < NONCE_WINDOW:
                _did(call, "deduplicated", self.messages[seen[1]])
                return self._json(self._payload(self.messages[seen[1]]))
        msg = self._create_message(
            channel_id=channel_id,
            guild_id=guild.id,
            body=body,
            uploads=call.uploads,
            created_via="channel",
            flags=int(body.get("flags") or 0) & (SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | COMPONENTS_V2),
            message_type=19 if body.get("message_reference") else 0,
        )
        if nonce is not None:
            self._nonces[(channel_id, str(nonce))] = (now, msg.id)
        _did(call, "created", msg)
        await self._emit_message("MESSAGE_CREATE", msg)
        return self._json(self._payload(msg))

    async def _history(self, call: _Call) -> web.StreamResponse:
        channel_id = int(call.params["cid"])
        self._find_channel(channel_id)
        query = call.request.query
        limit = max(1, min(100, int(query.get("limit", 50))))
        found = list(reversed(self.visible_messages(channel_id)))
        if "before" in query:
            found = [m for m in found if m.id < int(query["before"])]
        if "after" in query:
            found = [m for m in found if m.id > int(query["after"])][-limit:]
        return self._json([self._payload(m) for m in found[:limit]])

    async def _channel_message(self, call: _Call) -> web.StreamResponse:
        channel_id = int(call.params["cid"])
        guild = self._find_channel(channel_id)
        msg = self.messages.get(int(call.params["mid"]))
        if msg is None or msg.channel_id != channel_id or msg.deleted or msg.ephemeral:
            raise unknown("Message", 10008)
        return await self._message_action(call, msg, guild.id)

    async def _pin(self, call: _Call) -> web.StreamResponse:
        channel_id = int(call.params["cid"])
        self._find_channel(channel_id)
        msg = self.messages.get(int(call.params["mid"]))
        if msg is None or msg.channel_id != channel_id or msg.deleted or msg.ephemeral:
            raise unknown("Message", 10008)
        if not self.bot_permissions & (MANAGE_MESSAGES | PIN_MESSAGES):
            raise ApiError(403, "Missing Permissions", 50013)
        pinning = call.request.method == "PUT"
        if (
            pinning
            and not msg.pinned
            and sum(m.pinned for m in self.messages.values() if m.channel_id == channel_id) >= MAX_PINS
        ):
            raise ApiError(400, f"Maximum number of pins reached ({MAX_PINS})", 30003)
        # Not modelled: the "pinned a message" system message and CHANNEL_PINS_UPDATE (Easel asks
        # for neither message events nor reads system messages).
        msg.pinned = pinning
        return web.Response(status=204)

    async def _get_channel(self, call: _Call) -> web.StreamResponse:
        channel_id = int(call.params["cid"])
        return self._json(channel_payload(self._find_channel(channel_id), channel_id))

    async def _typing(self, call: _Call) -> web.StreamResponse:
        self._find_channel(int(call.params["cid"]))
        return web.Response(status=204)

    async def _get_guild(self, call: _Call) -> web.StreamResponse:
        guild = self.guilds.get(int(call.params["gid"]))
        if guild is None:
            raise unknown("Guild", 10004)
        return self._json(
            guild_payload(
                guild,
                bot_user=self._bot_user(),
                owner_id=self.owner_id,
                bot_permissions=self.bot_permissions,
                gateway=False,
            )
        )

    async def _get_member(self, call: _Call) -> web.StreamResponse:
        guild = self.guilds.get(int(call.params["gid"]))
        if guild is None:
            raise unknown("Guild", 10004)
        user_id = int(call.params["uid"])
        if user_id == self.bot_user_id:
            return self._json(
                member_payload(self._bot_user(), roles=[guild.bot_role_id], joined_at=iso(guild.joined_at))
            )
        if not any(i.user_id == user_id and i.guild_id == guild.id for i in self.interactions.values()):
            raise unknown("Member", 10007)
        return self._json(member_payload(user_payload(user_id), roles=[], joined_at=iso(guild.joined_at)))
