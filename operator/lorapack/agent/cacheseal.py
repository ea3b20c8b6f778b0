"""Making a downloaded adapter version durable and read-only, and publishing it.

Used by lorapack.agent.cache (flushing while a large download runs) and
lorapack.agent.cacheverify (sealing and renaming once every file passed its checks).

This is where the cache's first two invariants (lorapack.agent.cache) are kept: a version
folder appears only by an atomic rename of a complete, verified and fsynced temporary folder,
and nothing under it is writable afterwards.

Everything but `flushing` blocks on the disk and runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Final

from lorapack.agent.cachefiles import Planned
from lorapack.agent.cachelayout import MANIFEST_NAME, TMP_PREFIX, remove_tree

__all__ = ["flushing", "seal_and_publish"]

_FLUSH_INTERVAL: Final = 0.25
_RO_FILE: Final = 0o444
_RO_DIR: Final = 0o555


@contextlib.asynccontextmanager
async def flushing(tmp: Path) -> AsyncIterator[None]:
    """Write downloaded bytes to disk while the download runs.

    Sealing fsyncs every file; for a large adapter that alone took ~0.5 s per 300 MB here,
    a third of the download. Flushing every _FLUSH_INTERVAL in a thread overlaps that disk
    write with the network transfer, so the final fsync only has the last moments left.
    """
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await asyncio.to_thread(_flush_tree, tmp)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _FLUSH_INTERVAL)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            await task


def _flush_tree(tmp: Path) -> None:
    for folder, _dirs, files in os.walk(tmp):
        for name in files:
            # s3transfer writes to temporary names and renames them: a file may vanish here.
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)


def seal_and_publish(planned: Iterable[Planned], tmp: Path, folder: Path, digest: str) -> int:
    """Seal tmp and rename it to `folder`; returns the bytes the published folder holds."""
    written = _seal(planned, tmp, digest)
    _publish(tmp, folder)
    return written


def _seal(planned: Iterable[Planned], tmp: Path, digest: str) -> int:
    """Make the files durable and read-only and write the manifest; returns the bytes sealed.

    Crash safety needs one order only: file data and the folder's entries on disk before the
    rename can be. The syncs are kept to that (each forces a journal commit, and with hundreds
    of adapters syncing at once extra ones stalled the downloads' own file creation):
    * the manifest is not synced: torn or missing after a crash, it makes the folder "not
      verified", which means a download again, never a broken adapter served;
    * the rename is not synced: lost in a crash, it also only means a download again.
    """
    files = {str(p.rel): p.spec.size for p in planned}
    folders: set[Path] = {tmp}
    for name in files:
        path = tmp / name
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        path.chmod(_RO_FILE)
        folders.update(path.parents)
    manifest = {"digest": digest, "files": files, "verifiedAt": time.time()}
    written = (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, sort_keys=True))
    (tmp / MANIFEST_NAME).chmod(_RO_FILE)
    for folder in sorted((f for f in folders if f.is_relative_to(tmp)), reverse=True):
        _fsync_dir(folder)
        folder.chmod(_RO_DIR)
    return written + sum(files.values())


def _publish(tmp: Path, folder: Path) -> None:
    """Rename tmp to its final name (atomic). A folder already there (a previous, broken copy:
    a complete one would have been found by is_verified) is moved aside first."""
    if folder.exists():
        aside = folder.with_name(f"{TMP_PREFIX}broken-{secrets.token_hex(4)}")
        folder.rename(aside)
        remove_tree(aside)
    tmp.rename(folder)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
