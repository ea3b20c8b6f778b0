"""The agent's content-addressed adapter cache on the pod's shared volume.

Called by the agent loop (lorapack.agent) for every adapter its pod should hold:
`ensure(adapter)` returns a folder the engine can load, downloading it first when needed;
`remove_unused(keep)` is the garbage collector.

The cache's parts, each in its own module: where things lie on the volume
(lorapack.agent.cachelayout), which files a version has and whether they may be written
(cachefiles), the disk quota (cachequota), checking a download (cacheverify) and sealing and
publishing it (cacheseal). This module holds the AdapterCache itself: concurrent ensure()
calls, the bookkeeping of bytes on the volume and garbage collection.

Invariants, and why:
* A version folder appears only by an atomic rename of a fully downloaded, verified and fsynced
  temporary folder, so a folder that exists is complete, also after an agent or node restart.
* Nothing under a version folder is ever modified (files and folders are made read-only):
  vLLM re-reads an evicted adapter from the path it was loaded from, and a new version of an
  adapter is a new digest, hence a new folder.
* Files land at paths derived from FileSpec.path after validation, never from S3 keys or URLs.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Final

from lorapack.agent.cachefiles import Planned, plan_files
from lorapack.agent.cachelayout import (
    DIGEST,
    DIR_PREFIX,
    TMP_PREFIX,
    read_manifest,
    remove_tree,
    tree_size,
)
from lorapack.agent.cachequota import check_quota
from lorapack.agent.cacheseal import flushing
from lorapack.agent.cacheverify import verify_and_publish
from lorapack.api.podstate import DesiredAdapter
from lorapack.clients.s3 import (
    DownloadItem,
    PresignedItem,
    S3Client,
    download_presigned,
    map_disk_error,
)
from lorapack.errors import InvalidSpec

__all__ = ["AdapterCache", "PresignedFetcher"]

_FLUSH_WHILE_DOWNLOADING_BYTES: Final = 64 * 2**20

PresignedFetcher = Callable[[Sequence[PresignedItem]], Awaitable[None]]
"""Downloads presigned URLs to their destinations (clients.s3.download_presigned; tests
inject fakes)."""


class AdapterCache:
    """One cache root; one instance per agent process, used from one event loop."""

    def __init__(
        self,
        root: Path,
        *,
        quota_bytes: int | None = None,
        fetch_presigned: PresignedFetcher = download_presigned,
    ) -> None:
        if quota_bytes is not None and quota_bytes < 0:
            raise InvalidSpec(f"cache quota must be >= 0 bytes, got {quota_bytes}")
        self.root = Path(root)
        self.quota_bytes = quota_bytes
        self._fetch_presigned = fetch_presigned
        self.root.mkdir(parents=True, exist_ok=True)
        # digest -> outcome of the download in flight (True: done; False: owner cancelled).
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self._reserved: dict[str, int] = {}  # digest -> bytes promised to a download in flight
        self._tmp_owned: set[str] = set()
        # Bytes on the volume outside downloads in flight, kept in memory so the quota check
        # does no I/O on the event loop; recounted from disk at start and by remove_unused().
        self._disk_bytes = self.usage_bytes()
        # Temporary folder names without a getrandom() syscall per download (see ensure()).
        self._names = random.Random(os.urandom(16))

    # -- queries --------------------------------------------------------------------------------

    def path_for(self, digest: str) -> Path:
        """root / "sha256-<hex>" for digest "sha256:<hex>"."""
        match = DIGEST.match(digest)
        if match is None:
            raise InvalidSpec(
                f"adapter digest {digest!r} must be 'sha256:' followed by 64 lowercase hex digits"
            )
        return self.root / f"{DIR_PREFIX}{match.group(1)}"

    def is_verified(self, digest: str) -> bool:
        """A completed, verified folder exists with every file at its verified size (a stat per
        file: cheap, and it notices files deleted or truncated behind the agent's back)."""
        folder = self.path_for(digest)
        manifest = read_manifest(folder)
        if manifest is None:
            return False
        try:
            return all((folder / name).stat().st_size == size for name, size in manifest.items())
        except OSError:
            return False

    def digests(self) -> set[str]:
        """Digests of every verified folder."""
        found = set()
        for entry in self._entries():
            if entry.name.startswith(DIR_PREFIX):
                digest = "sha256:" + entry.name[len(DIR_PREFIX) :]
                if DIGEST.match(digest) and self.is_verified(digest):
                    found.add(digest)
        return found

    def usage_bytes(self) -> int:
        """Bytes of every file under root: verified versions, downloads in flight, leftovers."""
        return sum(tree_size(entry) for entry in self._entries())

    # -- garbage collection ---------------------------------------------------------------------

    def remove_unused(self, keep: Collection[str]) -> list[str]:
        """Delete verified folders whose digest is not in `keep` and temporary folders no
        download of this process owns; returns the removed digests, sorted.

        `keep` must hold every digest the engine may still read: the desired ones and the ones
        still loaded (an evicted adapter is re-read from its folder until it is unloaded).
        """
        removed: list[str] = []
        for entry in self._entries():
            name = entry.name
            if name.startswith(TMP_PREFIX) and name not in self._tmp_owned:
                remove_tree(entry)
            elif name.startswith(DIR_PREFIX):
                digest = "sha256:" + name[len(DIR_PREFIX) :]
                if digest not in keep and digest not in self._inflight:
                    remove_tree(entry)
                    removed.append(digest)
        self._disk_bytes = sum(
            tree_size(e) for e in self._entries() if e.name not in self._tmp_owned
        )
        return sorted(removed)

    # -- ensure ---------------------------------------------------------------------------------
    #
    # ensure() does no blocking call on the event loop between its awaits: the download threads
    # hold the GIL most of the time, so each syscall made on the loop (even a stat) costs the
    # loop a wait for the GIL. Profiled with 200 adapters syncing at once, such waits took 2.5 s
    # of a 3.6 s sync. Disk work happens in worker threads, bookkeeping in memory.

    async def ensure(
        self, adapter: DesiredAdapter, *, s3: S3Client | None, allow_pickle: bool
    ) -> Path:
        """The verified folder of `adapter`, downloading it first when missing. Concurrent
        calls for one digest download once; the others wait for that download's outcome.
        The files are validated first, every time (a pool may have stopped allowing pickle)."""
        folder = self.path_for(adapter.digest)
        planned = plan_files(adapter, allow_pickle=allow_pickle)
        while (pending := self._inflight.get(adapter.digest)) is not None:
            # Shielded: a waiter being cancelled must not cancel the owner's download.
            if await asyncio.shield(pending):
                return folder
            # The owner was cancelled before finishing: this caller takes over.
        owner = asyncio.get_running_loop().create_future()
        self._inflight[adapter.digest] = owner
        try:
            await self._fetch(adapter, planned, folder, s3=s3)
        except asyncio.CancelledError:
            owner.set_result(False)
            raise
        except BaseException as exc:
            owner.set_exception(exc)
            owner.exception()  # retrieved here: waiters re-raise it, none may exist
            raise
        else:
            owner.set_result(True)
        finally:
            del self._inflight[adapter.digest]
        return folder

    async def _fetch(
        self, adapter: DesiredAdapter, planned: list[Planned], folder: Path, *, s3: S3Client | None
    ) -> None:
        digest = adapter.digest
        tmp = self.root / f"{TMP_PREFIX}{self._names.getrandbits(64):016x}"
        self._tmp_owned.add(tmp.name)
        published = False
        try:
            # One hop: is it there already (e.g. after an agent restart)? If not, make tmp.
            if await asyncio.to_thread(_verified_or_prepare, self, digest, planned, tmp):
                return
            need = sum(p.spec.size for p in planned)
            self._check_quota(adapter, need)
            self._reserved[digest] = need
            try:
                if need >= _FLUSH_WHILE_DOWNLOADING_BYTES:
                    async with flushing(tmp):
                        await self._download(adapter, planned, tmp, s3)
                else:
                    await self._download(adapter, planned, tmp, s3)
                self._disk_bytes += await verify_and_publish(adapter, planned, tmp, folder, s3)
                published = True
            finally:
                self._reserved.pop(digest, None)
        except OSError as exc:
            raise map_disk_error(exc, f"adapter {adapter.adapter}") from exc
        finally:
            if not published:
                await asyncio.to_thread(remove_tree, tmp)
            self._tmp_owned.discard(tmp.name)

    async def _download(
        self, adapter: DesiredAdapter, planned: list[Planned], tmp: Path, s3: S3Client | None
    ) -> None:
        if adapter.access == "presigned":
            await self._fetch_presigned(
                [
                    PresignedItem(p.spec.url or "", tmp / p.rel, p.spec.size, p.spec.etag)
                    for p in planned
                ]
            )
            return
        if s3 is None or adapter.s3 is None:
            raise InvalidSpec(f"adapter {adapter.adapter}: pool access needs an S3 client")
        bucket = adapter.s3.bucket
        await s3.download(
            create_folders=False,  # made by _verified_or_prepare, off the event loop
            items=[
                DownloadItem(
                    bucket=bucket,
                    key=p.spec.key or "",
                    version_id=p.spec.version_id,
                    dest=tmp / p.rel,
                    size=p.spec.size,
                    etag=p.spec.etag or None,
                )
                for p in planned
            ],
        )

    def _check_quota(self, adapter: DesiredAdapter, need: int) -> None:
        if self.quota_bytes is None:
            return
        check_quota(
            adapter.adapter,
            need,
            quota_bytes=self.quota_bytes,
            used=self._disk_bytes,
            in_flight=sum(self._reserved.values()),
        )

    def _entries(self) -> list[Path]:
        try:
            return [e for e in self.root.iterdir() if e.is_dir() and not e.is_symlink()]
        except FileNotFoundError:
            return []


# -- blocking helpers (run in threads) ---------------------------------------------------------


def _verified_or_prepare(
    cache: AdapterCache, digest: str, planned: Iterable[Planned], tmp: Path
) -> bool:
    """True if `digest` is verified on disk already; else create tmp and its sub-folders."""
    if cache.is_verified(digest):
        return True
    tmp.mkdir()
    for folder in {p.rel.parent for p in planned if p.rel.parent != PurePosixPath(".")}:
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    return False
