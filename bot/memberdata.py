"""Members' data: everything Easel keeps about a member in a server, exported or removed. No Discord here.

``/mydata export`` reads it as a JSON document and zip files of the member's images, each zip small
enough for the server's upload limit; ``/mydata delete`` and ``/settings purge member`` remove it
through ``MemberData.delete``, the one code path for both.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import NotAllowed, NotFound
from bot.jobs import Job, JobStatus, utcnow

if TYPE_CHECKING:  # bot.store imports the values below from here
    from bot.files import ImageFiles
    from bot.lifecycle import JobLifecycle
    from bot.store import Store

log = logging.getLogger(__name__)

# The widest quota window is a week (bot.quotas): for that long after a deletion the member's charges
# keep their member id, so deleting one's data does not reset one's quota. A day more covers a
# server's time zone moving the week's start.
QUOTA_HOLD = timedelta(days=8)
# ZIP_STORED: what a zip adds per file besides the name (local header 30 bytes, central directory
# entry 46, with room for extra fields) and once (end of central directory 22, with room to spare).
ZIP_PER_FILE = 30 + 46 + 64
ZIP_FIXED = 22 + 1024
DOCUMENT_NAME = "easel-data.json"


@dataclass(frozen=True)
class Charge:
    """One job's charge against quotas and budgets, as a member's export shows it."""

    job_id: int
    backend: str
    cost: int
    images: int
    usd: float
    state: str
    created_at: datetime


@dataclass(frozen=True)
class Removed:
    """What one removal took away; ``files`` are the image paths (under the image root) to delete."""

    jobs: int
    entries: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class Deletion:
    """What a member's deletion did, for the reply."""

    jobs: int  # jobs whose prompts and images were removed
    entries: int  # challenge entries removed
    cancelled: int  # queued or rendering jobs cancelled first
    posted: int  # results still posted on Discord, for the member to delete with 🗑️
    in_flight: int  # results being posted at that moment: kept, a second deletion removes them


@dataclass(frozen=True)
class ZipPart:
    """The images of one zip file: (name in the zip, path under the image root, size)."""

    files: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class Export:
    """A member's export: the JSON document, and how their images split into zip files."""

    document: bytes
    document_name: str
    parts: tuple[ZipPart, ...]
    too_large: tuple[str, ...]  # images larger than the upload limit on their own, left out
    jobs: int
    entries: int


class MemberData:
    """Exports and removes what Easel keeps about one member in one server."""

    def __init__(
        self,
        store: Store,
        files: ImageFiles,
        lifecycle: JobLifecycle,
        *,
        stop_render: Callable[[int], bool],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._files = files
        self._lifecycle = lifecycle
        self._stop_render = stop_render
        self._clock = clock

    async def export(self, guild_id: int, user_id: int, part_limit: int) -> Export:
        """Read everything about the member here; plan zip files of at most ``part_limit`` bytes."""
        members = self._store.members
        async with self._store.transaction():  # one consistent snapshot
            jobs = await members.jobs(guild_id, user_id)
            entries = await members.entries(guild_id, user_id)
            votes = await members.votes(guild_id, user_id)
            charges = await members.charges(guild_id, user_id)
            points = await members.season_points(guild_id, user_id)
            prefs = await self._store.preferences.get(guild_id, user_id)
        images = [(zip_name(job, n), path) for job in jobs for n, path in enumerate(job.images, start=1)]
        sizes = await asyncio.to_thread(_sizes, self._files.root, [path for _, path in images])
        present = [(name, path, size) for (name, path), size in zip(images, sizes, strict=True) if size >= 0]
        parts, too_large = plan_parts(present, part_limit)
        document: dict[str, Any] = {
            "exported_at": self._clock().isoformat(),
            "server_id": str(guild_id),
            "member_id": str(user_id),
            "jobs": [_job_record(job) for job in jobs],
            "challenge_entries": [
                {
                    **_plain(asdict(entry), drop=("user_id",)),
                    "challenge_theme": theme,
                }
                for entry, theme in entries
            ],
            "votes": [
                {"entry_id": vote.entry_id, "challenge_id": challenge, "at": vote.at.isoformat()}
                for vote, challenge in votes
            ],
            "quota_usage": [_plain(asdict(charge)) for charge in charges],
            "season_points": [
                {"challenge_id": challenge, "points": gained, "won": won} for challenge, gained, won in points
            ],
            "preferences": None if prefs is None else asdict(prefs),
            "images_left_out": list(too_large),
        }
        name, text = await asyncio.to_thread(_document, document, part_limit)
        return Export(text, name, parts, too_large, jobs=len(jobs), entries=len(entries))

    async def zip_part(self, part: ZipPart) -> bytes:
        """Build one zip file of the export (off the event loop: it reads every image in it)."""
        return await asyncio.to_thread(_zip, self._files.root, part)

    async def delete(self, guild_id: int, user_id: int) -> Deletion:
        """Cancel the member's waiting and rendering jobs here, then remove their stored data.

        Results already posted stay on Discord, with the member still their requester so that
        their 🗑️ Delete button works; the reply tells the member so.
        """
        cancelled = 0
        for job in await self._store.jobs.active_jobs(guild_id):
            if job.user_id != user_id:
                continue
            try:
                ended = await self._lifecycle.cancel(job.id, guild_id, user_id)
            except (NotAllowed, NotFound):
                continue  # it ended meanwhile: removed below like any ended job
            if ended.status is JobStatus.RUNNING:
                self._stop_render(job.id)
            cancelled += 1
        now = self._clock()
        removed = await self._store.members.forget_member(guild_id, user_id, now, now - QUOTA_HOLD)
        await self._files.remove_all(removed.files)
        posted, in_flight = await self._store.members.leftovers(guild_id, user_id)
        log.info(
            "guild %d: member %d's data removed (%d jobs, %d entries, %d files; %d cancelled first)",
            guild_id,
            user_id,
            removed.jobs,
            removed.entries,
            len(removed.files),
            cancelled,
        )
        return Deletion(removed.jobs, removed.entries, cancelled, posted, in_flight)


def zip_name(job: Job, n: int) -> str:
    """The name of image ``n`` of a job inside the export's zip files."""
    return f"job-{job.id}-{n}{Path(job.images[n - 1]).suffix}"


def plan_parts(
    images: Sequence[tuple[str, str, int]], limit: int
) -> tuple[tuple[ZipPart, ...], tuple[str, ...]]:
    """Pack (name, path, size) images, in order, into zip files of at most ``limit`` bytes each.

    An image that cannot fit a zip of its own is left out and named in the second value.
    """
    parts: list[ZipPart] = []
    current: list[tuple[str, str, int]] = []
    used = ZIP_FIXED
    too_large = []
    for name, path, size in images:
        cost = size + ZIP_PER_FILE + 2 * len(name.encode())
        if ZIP_FIXED + cost > limit:
            too_large.append(name)
            continue
        if used + cost > limit:
            parts.append(ZipPart(tuple(current)))
            current, used = [], ZIP_FIXED
        current.append((name, path, size))
        used += cost
    if current:
        parts.append(ZipPart(tuple(current)))
    return tuple(parts), tuple(too_large)


def _job_record(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "public_id": job.public_id,
        "kind": job.kind.value,
        "backend": job.backend,
        "status": job.status.value,
        "created_at": job.created_at.isoformat(),
        "parameters": asdict(job.params),
        "parent_job_id": job.parent_id,
        "parent_image": job.parent_index,
        "images": [zip_name(job, n) for n in range(1, len(job.images) + 1)],
        "made_by": job.made_by,
        "error": job.error,
        "channel_id": str(job.channel_id),
        "posted_message_id": None if job.message_id is None else str(job.message_id),
        "posted_channel_id": None if job.posted_channel_id is None else str(job.posted_channel_id),
        "deleted_at": None if job.deleted_at is None else job.deleted_at.isoformat(),
        "flagged": job.flagged,
    }


def _plain(record: dict[str, Any], drop: Sequence[str] = ()) -> dict[str, Any]:
    """A dataclass's fields as JSON values: times as ISO 8601 text, without ``drop``."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in record.items()
        if key not in drop
    }


def _document(document: dict[str, Any], limit: int) -> tuple[str, bytes]:
    """The JSON file, deflated into a zip when it is too large to upload as it is."""
    text = json.dumps(document, ensure_ascii=False, indent=2).encode()
    if len(text) <= limit:
        return DOCUMENT_NAME, text
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(DOCUMENT_NAME, text)
    return f"{DOCUMENT_NAME}.zip", buffer.getvalue()


def _sizes(root: Path, paths: Sequence[str]) -> list[int]:
    """Each stored image's size in bytes, -1 for one that is gone."""
    sizes = []
    for path in paths:
        try:
            sizes.append((root / path).stat().st_size)
        except FileNotFoundError:
            sizes.append(-1)
    return sizes


def _zip(root: Path, part: ZipPart) -> bytes:
    buffer = io.BytesIO()
    # Stored, not deflated: the images are PNG, JPEG or WebP, compressed already.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, path, _ in part.files:
            try:
                archive.write(root / path, name)
            except FileNotFoundError:
                log.info("export: image %s was removed while its zip was built", path)
    return buffer.getvalue()
