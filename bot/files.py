"""Where image bytes live: files under the data directory, written atomically."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path


class ImageFiles:
    """Saves and loads images by relative path; the store records the paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

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

    def _write_all(self, names: tuple[str, ...], blobs: tuple[bytes, ...]) -> None:
        for name, data in zip(names, blobs, strict=True):
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            # rename is atomic: a crash leaves either no file or the whole file, never half of one
            os.replace(tmp, path)
