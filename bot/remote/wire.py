"""What travels through Redis between the bot and its workers: key names and entry encodings.

One stream per compatibility key (model × size) carries batches, one entry per batch; workers of a
model read only that model's streams in the ``workers`` group. Results come back on one
completions stream, read by the bot's own group. Payloads carry plain request data, never a secret.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bot.errors import RenderFailed
from bot.renderers.base import Capabilities, Operation, Progress, RenderRequest, RenderResult

PREFIX = "easel"
WORKERS_GROUP = "workers"
BOT_GROUP = "bot"
COMPLETIONS = f"{PREFIX}:done"
WORKERS = f"{PREFIX}:workers"  # set of every worker name that ever announced itself
INFLIGHT = f"{PREFIX}:inflight"  # hash: batch id -> its jobs and stream, until its completion is taken
CANCEL_CHANNEL = f"{PREFIX}:cancel"
# A batch delivered this many times without a completion crashes every worker that takes it.
MAX_DELIVERIES = 3


def stream(model: str, width: int, height: int) -> str:
    """The stream that carries batches of ``model`` at one size."""
    return f"{PREFIX}:jobs:{model}:{width}x{height}"


def lease(stream_key: str, entry_id: str) -> str:
    """The key naming the worker that holds a batch; it expires unless renewed."""
    return f"{PREFIX}:lease:{stream_key}:{entry_id}"


def announcement(name: str) -> str:
    """A worker's announcement (model, capabilities), kept after it goes."""
    return f"{PREFIX}:worker:{name}"


def heartbeat(name: str) -> str:
    """A worker's heartbeat key: present (with a TTL of one lease) while the worker lives."""
    return f"{PREFIX}:alive:{name}"


def cancelled(job_id: int) -> str:
    """A key a cancel leaves for a worker that missed the pub/sub message."""
    return f"{PREFIX}:cancelled:{job_id}"


def progress_channel(job_id: int) -> str:
    """The lossy, latest-wins channel of one job's progress."""
    return f"{PREFIX}:progress:{job_id}"


PROGRESS_PATTERN = f"{PREFIX}:progress:*"


@dataclass(frozen=True)
class Entry:
    """One stream entry as XREADGROUP returns it (with a client that does not decode responses)."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]


def entries(read: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply (a list of [stream, [[id, fields], ...]])."""
    return [
        Entry(stream.decode(), entry_id.decode(), dict(fields))
        for stream, batch in read or ()
        for entry_id, fields in batch
    ]


def text(value: bytes | str | None) -> str:
    """A reply value as text (the client is used without decode_responses: images are bytes)."""
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def encode_batch(batch_id: str, requests: Sequence[RenderRequest]) -> dict[str, bytes]:
    """One stream entry for a batch: the requests as JSON, source images inline (base64)."""
    rows = []
    for request in requests:
        row = asdict(request)
        row["operation"] = request.operation.value
        row["source"] = base64.b64encode(request.source).decode() if request.source else None
        rows.append(row)
    return {"batch": batch_id.encode(), "requests": json.dumps(rows).encode()}


def decode_batch(fields: Mapping[bytes, bytes]) -> tuple[str, list[RenderRequest]]:
    """The batch id and requests of a stream entry; raises ValueError on a malformed entry."""
    try:
        rows = json.loads(fields[b"requests"])
        requests = []
        for row in rows:
            row["operation"] = Operation(row["operation"])
            row["source"] = base64.b64decode(row["source"]) if row["source"] else None
            requests.append(RenderRequest(**row))
        return fields[b"batch"].decode(), requests
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed batch entry: {exc}") from exc


def encode_inflight(job_ids: Sequence[int], stream_key: str) -> str:
    """The bot's record of a batch it sent: which jobs, on which stream."""
    return json.dumps({"jobs": list(job_ids), "stream": stream_key})


def decode_inflight(value: bytes | str) -> tuple[list[int], str | None]:
    """A batch's jobs and stream (None in a record from before streams were recorded); ValueError if malformed."""
    try:
        data = json.loads(value)
        if isinstance(data, list):
            return [int(j) for j in data], None
        return [int(j) for j in data["jobs"]], str(data["stream"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed in-flight record: {exc}") from exc


def encode_completion(
    batch_id: str,
    job_ids: Sequence[int],
    outcomes: Sequence[RenderResult | RenderFailed],
    deliveries: int = 1,
) -> dict[bytes, bytes]:
    """One completions entry: a JSON summary per job, each image as its own field of raw bytes.

    ``deliveries``: how many times the batch was delivered to a worker (the bot counts reclaims by it).
    """
    fields: dict[bytes, bytes] = {b"batch": batch_id.encode(), b"deliveries": str(deliveries).encode()}
    summary = []
    for job_id, outcome in zip(job_ids, outcomes, strict=True):
        if isinstance(outcome, RenderFailed):
            summary.append({"job": job_id, "error": str(outcome)})
            continue
        summary.append(
            {
                "job": job_id,
                "images": len(outcome.images),
                "made_by": outcome.made_by,
                "flagged": outcome.flagged,
            }
        )
        for index, data in enumerate(outcome.images):
            fields[f"image:{job_id}:{index}".encode()] = data
    fields[b"results"] = json.dumps(summary).encode()
    return fields


@dataclass(frozen=True)
class Completion:
    """A batch's results as a worker reported them, not yet checked."""

    batch_id: str
    outcomes: dict[int, RenderResult | RenderFailed]
    deliveries: int = 1


def decode_completion(fields: Mapping[bytes, bytes]) -> Completion:
    """Read a completions entry; raises ValueError on a malformed one."""
    try:
        batch_id = fields[b"batch"].decode()
        outcomes: dict[int, RenderResult | RenderFailed] = {}
        for row in json.loads(fields[b"results"]):
            job_id = int(row["job"])
            if "error" in row:
                outcomes[job_id] = RenderFailed(str(row["error"]))
                continue
            pictures = tuple(fields[f"image:{job_id}:{i}".encode()] for i in range(int(row["images"])))
            outcomes[job_id] = RenderResult(
                pictures, made_by=str(row["made_by"]), flagged=bool(row["flagged"])
            )
        return Completion(batch_id, outcomes, max(1, int(fields.get(b"deliveries", b"1"))))
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed completion: {exc}") from exc


def encode_capabilities(caps: Capabilities) -> str:
    """A worker's capabilities as JSON."""
    data = asdict(caps)
    data["operations"] = [op.value for op in caps.operations]
    return json.dumps(data)


def decode_capabilities(text: str | bytes) -> Capabilities:
    """Capabilities from a worker's announcement; raises ValueError on a malformed one."""
    try:
        data: dict[str, Any] = json.loads(text)
        return Capabilities(
            sizes=tuple((int(w), int(h)) for w, h in data["sizes"]),
            max_count=int(data["max_count"]),
            variation=bool(data["variation"]),
            negative_prompt=bool(data["negative_prompt"]),
            seeded=bool(data["seeded"]),
            qualities=tuple(str(q) for q in data["qualities"]),
            max_batch=int(data["max_batch"]),
            batch_by_size=tuple(((int(w), int(h)), int(n)) for (w, h), n in data["batch_by_size"]),
            progress=bool(data["progress"]),
            cancellable=bool(data["cancellable"]),
            operations=tuple(Operation(op) for op in data["operations"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed capabilities: {exc}") from exc


def encode_progress(update: Progress) -> bytes:
    """A progress message: a JSON header line, then the preview's bytes."""
    header = json.dumps({"step": update.step, "total": update.total}).encode()
    return header + b"\n" + (update.preview or b"")


def decode_progress(data: bytes) -> Progress:
    """A progress message; raises ValueError on a malformed one."""
    try:
        header, _, preview = data.partition(b"\n")
        head = json.loads(header)
        return Progress(int(head["step"]), int(head["total"]), preview or None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed progress: {exc}") from exc
