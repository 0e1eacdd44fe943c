"""The fake gateway: websocket sessions, zlib-stream frames, IDENTIFY, RESUME, heartbeats and dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .payloads import PRIVILEGED_INTENTS
from .records import GatewayEvent

if TYPE_CHECKING:
    from .server import FakeDiscord

HEARTBEAT_INTERVAL_MS = 41250
# GATEWAY_MESSAGE_CONTENT_LIMITED | APPLICATION_COMMAND_BADGE: an unverified bot with slash commands.
APPLICATION_FLAGS = (1 << 19) | (1 << 23)
TRACE = ['["fakediscord",{"micros":0}]']


@dataclass
class Session:
    """A gateway session: survives its socket so that the bot can RESUME it."""

    id: str
    shard_id: int
    shard_count: int
    intents: int
    seq: int = 0
    conn: Connection | None = None


@dataclass
class Connection:
    """One websocket from the bot."""

    ws: web.WebSocketResponse
    deflate: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: Session | None = None
    ready: bool = False

    @property
    def live(self) -> bool:
        """Return whether READY/RESUMED went out and the socket is still open."""
        return self.ready and not self.ws.closed


class Gateway:
    """Serve /gateway for one FakeDiscord, recording frames on it."""

    def __init__(self, fake: FakeDiscord) -> None:
        self._fake = fake
        self.connections: list[Connection] = []
        self.sessions: dict[str, Session] = {}
        self.refusals = 0
        self.refused = 0
        self.accepting = asyncio.Event()
        self.accepting.set()

    def live_session(self, shard_id: int) -> Session | None:
        """Return the session of a shard whose socket is up and ready."""
        for conn in self.connections:
            if conn.live and conn.session is not None and conn.session.shard_id == shard_id:
                return conn.session
        return None

    def connected(self) -> bool:
        """Return whether every shard has a live session."""
        return all(self.live_session(shard) is not None for shard in range(self._fake.shard_count))

    async def dispatch(self, session: Session, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) event on a session's socket."""
        conn = session.conn
        if conn is None or not conn.live:
            raise ConnectionError(f"shard {session.shard_id} is not connected; cannot send {event}")
        await self._send(conn, 0, data, event)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every socket from the server side."""
        for conn in list(self.connections):
            await self._close(conn, code, reason)

    async def handle(self, raw: web.Request) -> web.StreamResponse:
        """Run one websocket connection from HELLO to close."""
        if self.refusals > 0:
            # What a load balancer in front of a gateway that is down answers to the upgrade.
            self.refusals -= 1
            self.refused += 1
            self._fake._notify()
            return web.Response(status=503, text="503 Service Unavailable")
        # A paused gateway leaves the handshake unanswered, as an unreachable Discord would.
        await self.accepting.wait()
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(raw)
        self._fake.gateway_queries.append(dict(raw.query))
        # zlib-stream: one zlib context per connection, every frame ending in a Z_SYNC_FLUSH marker.
        # Other compressions (zstd-stream) get plain text frames, which discord.py accepts too.
        conn = Connection(ws, zlib.compressobj() if raw.query.get("compress") == "zlib-stream" else None)
        self.connections.append(conn)
        try:
            await self._send(conn, 10, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "_trace": TRACE})
            async for frame in ws:
                if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_frame(conn, json.loads(frame.data))
        except (ConnectionError, RuntimeError):
            pass  # the bot went away mid-send; its reconnect logic takes it from here
        finally:
            conn.ready = False
            self.connections.remove(conn)
            self._fake._notify()
        return ws

    async def _on_frame(self, conn: Connection, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        shown = {**data, "token": "<redacted>"} if isinstance(data, dict) and "token" in data else data
        shard = conn.session.shard_id if conn.session else None
        self._fake.gateway_events.append(
            GatewayEvent("recv", int(op or 0), None, None, shown, time.monotonic(), shard)
        )
        self._fake._notify()
        if op == 1:
            await self._send(conn, 11, None)
        elif op == 2:
            await self._identify(conn, data)
        elif op == 6:
            await self._resume(conn, data)
        elif op not in (3, 4, 8):  # presence, voice state, request members: recorded, nothing to answer
            await self._close(conn, 4001, "Unknown opcode.")

    async def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        fake = self._fake
        if conn.session is not None:
            return await self._close(conn, 4005, "Already authenticated.")
        if data.get("token") != fake.token:
            return await self._close(conn, 4004, "Authentication failed.")
        intents = data.get("intents")
        if not isinstance(intents, int):
            return await self._close(conn, 4013, "Invalid intent(s).")
        if intents & PRIVILEGED_INTENTS & ~fake.privileged_intents:
            # discord.py turns this close code into PrivilegedIntentsRequired.
            return await self._close(conn, 4014, "Disallowed intent(s).")
        shard_id, shard_count = data.get("shard", [0, 1])
        if shard_count != fake.shard_count or not 0 <= shard_id < shard_count:
            return await self._close(conn, 4010, "Invalid shard.")
        fake.identify_intents.append(intents)
        fake.identifies.append({**data, "token": "<redacted>"})
        session = Session(secrets.token_hex(16), shard_id, shard_count, intents, conn=conn)
        self.sessions[session.id] = session
        conn.session = session
        guilds = [g for g in fake.guilds.values() if fake._shard_for(g.id) == shard_id]
        ready = {
            "v": 10,
            "user": fake._bot_user(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": fake.gateway_url,
            "shard": [shard_id, shard_count],
            "application": {"id": str(fake.application_id), "flags": APPLICATION_FLAGS},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["us-east", "us-central"],
            "auth": {},
            "user_settings": {},
            "_trace": TRACE,
        }
        await self._send(conn, 0, ready, "READY")
        # Guilds arrive as GUILD_CREATE after READY, which lists them as unavailable.
        for guild in guilds:
            await self._send(conn, 0, fake._guild_create(guild), "GUILD_CREATE")
        conn.ready = True
        fake._notify()
        return None

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        session = self.sessions.get(data.get("session_id") or "")
        if session is None or data.get("token") != self._fake.token:
            # Not resumable: discord.py waits a few seconds, then IDENTIFYs afresh.
            return await self._send(conn, 9, False)
        if session.conn is not None and session.conn is not conn:
            session.conn.session = None
            session.conn.ready = False
        session.conn = conn
        conn.session = session
        self._fake.resumes += 1
        # Nothing is replayed: events are only dispatched while a socket is live.
        await self._send(conn, 0, {"_trace": TRACE}, "RESUMED")
        conn.ready = True
        self._fake._notify()
        return None

    async def _send(self, conn: Connection, op: int, data: Any, event: str | None = None) -> None:
        async with conn.lock:  # sequence numbers and the zlib stream must follow socket order
            seq = None
            if op == 0 and conn.session is not None:
                conn.session.seq += 1
                seq = conn.session.seq
            text = json.dumps({"op": op, "d": data, "s": seq, "t": event}, separators=(",", ":"))
            if conn.deflate is not None:
                await conn.ws.send_bytes(
                    conn.deflate.compress(text.encode()) + conn.deflate.flush(zlib.Z_SYNC_FLUSH)
                )
            else:
                await conn.ws.send_str(text)
            shard = conn.session.shard_id if conn.session else None
            self._fake.gateway_events.append(
                GatewayEvent("send", op, event, seq, data, time.monotonic(), shard)
            )
        self._fake._notify()

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        conn.ready = False
        self._fake._notify()
        with contextlib.suppress(Exception):
            await conn.ws.close(code=code, message=reason.encode())
