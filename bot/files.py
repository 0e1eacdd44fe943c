"""Where image bytes live: files under the data directory, written atomically, readable by Easel's user only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path


class ImageFiles:
    """Saves and loads images by relative path; the store records the paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def make_private(self) -> None:
        """Create the image folder owner-only (0700), or make an existing one so, before anything is written.

        Members' images (private results and uploads among them) stay unreadable to other users of the
        host whatever mode older files inside have.
        """
        await asyncio.to_thread(self._private_root)

    async def save_results(self, job_id: int, images: tuple[bytes, ...], ext: str) -> tuple[str, ...]:
        """Write a job's rendered images; return their paths relative to the root."""
        names = tuple(f"jobs/{job_id}/{i + 1}.{ext}" for i in range(len(images)))
        await asyncio.to_thread(self._write_all, names, images)
        return names

    async def save_source(self, data: bytes) -> str:
        """Write an uploaded source image before its job exists; return its relative path."""
        name = f"sources/{uuid.uuid4().hex}.png"
        await asyncio.to_thread(self._write_all, (name,), (data,))
        return name

    async def read(self, name: str) -> bytes:
        """Return the bytes of a stored image."""
        return await asyncio.to_thread((self.root / name).read_bytes)

    async def remove(self, name: str) -> None:
        """Delete a stored image that no job refers to (an upload whose job was refused)."""
        await asyncio.to_thread((self.root / name).unlink, True)

    async def remove_job(self, job_id: int) -> None:
        """Delete a job's rendered images (a render whose job was cancelled meanwhile)."""
        await asyncio.to_thread(shutil.rmtree, self.root / "jobs" / str(job_id), True)

    async def remove_all(self, names: Iterable[str]) -> None:
        """Delete stored images (and the folders they leave empty) whose rows were removed."""
        await asyncio.to_thread(self._remove_all, tuple(names))

    def _remove_all(self, names: tuple[str, ...]) -> None:
        for name in names:
            path = self.root / name
            path.unlink(missing_ok=True)
            # A job's folder holds only its own images: gone with its last one.
            with contextlib.suppress(OSError):
                if path.parent != self.root and not any(path.parent.iterdir()):
                    path.parent.rmdir()

    def _private_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)

    def _write_all(self, names: tuple[str, ...], blobs: tuple[bytes, ...]) -> None:
        for name, data in zip(names, blobs, strict=True):
            path = self.root / name
            # One level at a time: mkdir(parents=True) would give the parents the umask's mode.
            folder = self.root
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            for part in Path(name).parent.parts:
                folder /= part
                folder.mkdir(mode=0o700, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            # 0600 whatever the process umask (tests and embedders do not set Easel's).
            # No fsync: like SQLite in WAL mode with synchronous = NORMAL (bot/store/connection.py),
            # an image survives a crash of Easel and may be lost only with the machine's power, and
            # then the row that points at it is lost too and the job renders again. An fsync per
            # image cost each render slot several milliseconds of waiting.
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                fh.write(data)
            # rename is atomic: a crash leaves either no file or the whole file, never half of one
            os.replace(tmp, path)
