"""The agent's content-addressed adapter cache on the pod's shared volume.

Called by the agent loop (lorapack.agent) for every adapter its pod should hold:
`ensure(adapter)` returns a folder the engine can load, downloading it first when needed;
`remove_unused(keep)` is the garbage collector.

Layout, under `root` (an emptyDir shared with the vLLM container):

    sha256-<hex>/            one verified adapter version, named by DesiredAdapter.digest
        adapter_config.json  ... the adapter's files, read-only
        .lorapack-verified.json   what was verified (written last, before the rename)
    .tmp-<random>/           a download in progress (or left over by a crash: GC removes it)

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
import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from lorapack.api import conditions
from lorapack.api.podstate import DesiredAdapter, FileSpec
from lorapack.clients.s3 import (
    DownloadItem,
    PresignedItem,
    S3Client,
    download_presigned,
    map_disk_error,
)
from lorapack.errors import (
    ArtifactNotFound,
    ArtifactRejected,
    CapacityExceeded,
    InvalidSpec,
    LorapackError,
)
from lorapack.planning.artifact import file_path_problem

__all__ = ["MANIFEST_NAME", "AdapterCache", "quota_headroom", "validate_file_path"]

MANIFEST_NAME: Final = ".lorapack-verified.json"
UNSAFE_PATH: Final = conditions.UNSAFE_PATH
_TMP_PREFIX: Final = ".tmp-"
_DIR_PREFIX: Final = "sha256-"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_WEIGHTS_SAFE: Final = "adapter_model.safetensors"
# What vLLM falls back to when adapter_model.safetensors is missing: both are read with
# torch.load (pickle, even if restricted to weights_only).
_WEIGHTS_PICKLE: Final = ("adapter_model.bin", "adapter_model.pt")
_HASH_BLOCK: Final = 4 * 2**20
_PARALLEL_HASH_BYTES: Final = 64 * 2**20
_FLUSH_WHILE_DOWNLOADING_BYTES: Final = 64 * 2**20
_FLUSH_INTERVAL: Final = 0.25
_RO_FILE: Final = 0o444
_RO_DIR: Final = 0o555

PresignedFetcher = Callable[[Sequence[PresignedItem]], Awaitable[None]]
"""Downloads presigned URLs to their destinations (clients.s3.download_presigned; tests
inject fakes)."""


def quota_headroom(quota_bytes: int) -> int:
    """Bytes of the quota never promised to adapters: the quota is the emptyDir's sizeLimit,
    which the kubelet measures in disk blocks (a 1-byte file takes 4 KiB, folders and the
    manifests take more), and reaching it evicts the GPU pod. 1/16 of it, at most 1 GiB."""
    return min(quota_bytes // 16, 1 << 30)


def validate_file_path(path: str, *, adapter: str = "") -> PurePosixPath:
    """A FileSpec.path as a safe relative path, or ArtifactRejected naming what is wrong.

    Refused: empty, absolute ("/x", "C:x"), any "", "." or ".." component, backslashes (a
    path separator elsewhere), control characters, components over 255 bytes, and the
    cache's own manifest name.
    """
    who = f"adapter {adapter}: " if adapter else ""

    def refuse(why: str) -> ArtifactRejected:
        return ArtifactRejected(
            f"{who}file name {path!r} {why}; adapter files must be plain names relative to "
            "spec.source.s3.uri (rename the object in S3)",
            reason=UNSAFE_PATH,
        )

    why = file_path_problem(path)
    if why is not None:
        raise refuse(why)
    if path == MANIFEST_NAME:
        raise refuse("is reserved by lorapack")
    return PurePosixPath(path)


@dataclass(frozen=True)
class _Planned:
    spec: FileSpec
    rel: PurePosixPath


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
        match = _DIGEST.match(digest)
        if match is None:
            raise InvalidSpec(
                f"adapter digest {digest!r} must be 'sha256:' followed by 64 lowercase hex digits"
            )
        return self.root / f"{_DIR_PREFIX}{match.group(1)}"

    def is_verified(self, digest: str) -> bool:
        """A completed, verified folder exists with every file at its verified size (a stat per
        file: cheap, and it notices files deleted or truncated behind the agent's back)."""
        folder = self.path_for(digest)
        manifest = _read_manifest(folder)
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
            if entry.name.startswith(_DIR_PREFIX):
                digest = "sha256:" + entry.name[len(_DIR_PREFIX) :]
                if _DIGEST.match(digest) and self.is_verified(digest):
                    found.add(digest)
        return found

    def usage_bytes(self) -> int:
        """Bytes of every file under root: verified versions, downloads in flight, leftovers."""
        return sum(_tree_size(entry) for entry in self._entries())

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
            if name.startswith(_TMP_PREFIX) and name not in self._tmp_owned:
                _remove_tree(entry)
            elif name.startswith(_DIR_PREFIX):
                digest = "sha256:" + name[len(_DIR_PREFIX) :]
                if digest not in keep and digest not in self._inflight:
                    _remove_tree(entry)
                    removed.append(digest)
        self._disk_bytes = sum(
            _tree_size(e) for e in self._entries() if e.name not in self._tmp_owned
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
        planned = _plan(adapter, allow_pickle=allow_pickle)
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
        self, adapter: DesiredAdapter, planned: list[_Planned], folder: Path, *, s3: S3Client | None
    ) -> None:
        digest = adapter.digest
        tmp = self.root / f"{_TMP_PREFIX}{self._names.getrandbits(64):016x}"
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
                    async with _flushing(tmp):
                        await self._download(adapter, planned, tmp, s3)
                else:
                    await self._download(adapter, planned, tmp, s3)
                self._disk_bytes += await _verify_and_publish(adapter, planned, tmp, folder, s3)
                published = True
            finally:
                self._reserved.pop(digest, None)
        except OSError as exc:
            raise map_disk_error(exc, f"adapter {adapter.adapter}") from exc
        finally:
            if not published:
                await asyncio.to_thread(_remove_tree, tmp)
            self._tmp_owned.discard(tmp.name)

    async def _download(
        self, adapter: DesiredAdapter, planned: list[_Planned], tmp: Path, s3: S3Client | None
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
        # Everything on the volume counts (leftovers of a crash too, until GC removes them);
        # downloads in flight count with the full size they promised.
        used = self._disk_bytes
        in_flight = sum(self._reserved.values())
        headroom = quota_headroom(self.quota_bytes)
        free = self.quota_bytes - headroom - used - in_flight
        if need > free:
            raise CapacityExceeded(
                f"adapter {adapter.adapter} needs {_human(need)} ({need} bytes) but the "
                f"adapter cache has {_human(max(free, 0))} free of its "
                f"{_human(self.quota_bytes)} quota ({_human(used)} on disk, {_human(in_flight)} "
                f"promised to downloads in flight, {_human(headroom)} kept free); raise "
                "spec.adapters.cacheSize on the pool, or lower spec.adapters.maxPerReplica so "
                "fewer adapters share a pod",
            )

    def _entries(self) -> list[Path]:
        try:
            return [e for e in self.root.iterdir() if e.is_dir() and not e.is_symlink()]
        except FileNotFoundError:
            return []


# -- planning and checks (before any byte is downloaded) -----------------------------------------


def _plan(adapter: DesiredAdapter, *, allow_pickle: bool) -> list[_Planned]:
    name = adapter.adapter
    if not adapter.files:
        raise ArtifactNotFound(
            f"adapter {name} lists no files; check spec.source.s3.uri",
            reason=conditions.ARTIFACT_NOT_FOUND,
        )
    planned = [_Planned(f, validate_file_path(f.path, adapter=name)) for f in adapter.files]
    seen: set[PurePosixPath] = set()
    for p in planned:
        if p.rel in seen:
            raise ArtifactRejected(
                f"adapter {name}: file {p.spec.path!r} is listed twice",
                reason=UNSAFE_PATH,
            )
        seen.add(p.rel)
    for p in planned:  # "a" and "a/b" cannot both be created
        for parent in p.rel.parents:
            if parent in seen:
                raise ArtifactRejected(
                    f"adapter {name}: {str(parent)!r} is both a file and a folder",
                    reason=UNSAFE_PATH,
                )
    top = {str(p.rel) for p in planned}
    if "adapter_config.json" not in top:
        raise ArtifactNotFound(
            f"adapter {name} has no adapter_config.json at the top of its folder; check that "
            "spec.source.s3.uri points at the folder PEFT saved",
            reason=conditions.ARTIFACT_NOT_FOUND,
        )
    pickled = [w for w in _WEIGHTS_PICKLE if w in top]
    if _WEIGHTS_SAFE not in top and not pickled:
        raise ArtifactRejected(
            f"adapter {name} has no {_WEIGHTS_SAFE} (nor .bin / .pt weights); save the adapter "
            "with PEFT's save_pretrained",
            reason=conditions.NO_WEIGHTS,
        )
    if _WEIGHTS_SAFE not in top and not allow_pickle:
        raise ArtifactRejected(
            f"adapter {name} has only pickle weights ({', '.join(pickled)}); convert them to "
            f"{_WEIGHTS_SAFE} (save_pretrained(safe_serialization=True)), or set "
            "spec.adapters.allowPickle on the pool",
            reason=conditions.PICKLE_NOT_ALLOWED,
        )
    if adapter.access == "presigned":
        missing = [p.spec.path for p in planned if not p.spec.url]
        if missing:
            raise InvalidSpec(f"adapter {name}: presigned access but no URL for {missing}")
    else:
        missing = [p.spec.path for p in planned if not p.spec.key]
        if adapter.s3 is None or missing:
            raise InvalidSpec(
                f"adapter {name}: pool access needs an S3 location and a key for every file "
                f"(missing keys: {missing})"
            )
    return planned


# -- verification -------------------------------------------------------------------------------


async def _verify_and_publish(
    adapter: DesiredAdapter, planned: list[_Planned], tmp: Path, folder: Path, s3: S3Client | None
) -> int:
    """Verify every file, then seal tmp and rename it to `folder`.

    Checked: the size of every file; its sha256 where the spec gave a digest, else the MD5 that
    a single-part ETag is. A multipart ETag ("<hex>-<parts>") is not a content hash: size only.
    Returns the bytes the published folder holds.
    """
    order = sorted(planned, key=lambda p: -p.spec.size)
    if sum(p.spec.size for p in planned) < _PARALLEL_HASH_BYTES:
        # Small adapters: checks, seal and rename in one thread hop. With hundreds of adapters
        # syncing at once, hops through the shared default executor cost more than the work.
        results = await asyncio.to_thread(_check_then_publish, order, tmp, folder, adapter.digest)
        if isinstance(results, int):
            return results
    else:
        # Large ones hash in parallel threads (hashlib releases the GIL), largest first.
        results = await asyncio.gather(*(asyncio.to_thread(_check_file, tmp, p) for p in order))
    for p, problem in zip(order, results, strict=True):
        if problem is None:
            continue
        if problem.startswith("md5") and await _etag_is_not_md5(adapter, p, s3):
            continue
        raise ArtifactRejected(
            f"adapter {adapter.adapter}: file {p.spec.path!r} {problem}; the file in S3 "
            "changed or is corrupt (spec.digests and the S3 listing must describe the same "
            "content)",
            reason=conditions.DIGEST_MISMATCH,
        )
    return await asyncio.to_thread(_seal_and_publish, planned, tmp, folder, adapter.digest)


def _check_then_publish(
    order: list[_Planned], tmp: Path, folder: Path, digest: str
) -> list[str | None] | int:
    """Check every file; when all pass, publish and return the bytes published, else return
    the problems."""
    results = [_check_file(tmp, p) for p in order]
    if any(r is not None for r in results):
        return results
    return _seal_and_publish(order, tmp, folder, digest)


def _check_file(tmp: Path, planned: _Planned) -> str | None:
    spec = planned.spec
    path = tmp / planned.rel
    size = path.stat().st_size
    if size != spec.size:
        return f"is {size} bytes, expected {spec.size}"
    etag = spec.etag.strip('"').lower()
    if spec.sha256:
        # sha256 covers what the ETag MD5 would: hash once, with the stronger function.
        got = _hash_file(path, "sha256")
        want = spec.sha256.removeprefix("sha256:").lower()
        return None if got == want else f"has sha256 {got}, expected {want}"
    if _MD5_ETAG.match(etag):
        got = _hash_file(path, "md5")
        return None if got == etag else f"md5 {got} differs from its ETag {etag}"
    return None


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_HASH_BLOCK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


async def _etag_is_not_md5(adapter: DesiredAdapter, planned: _Planned, s3: S3Client | None) -> bool:
    # SSE-KMS and SSE-C objects have ETags that are not the MD5 of their content; only a HEAD
    # tells. (Presigned access cannot HEAD with a GET URL: there the mismatch stands.)
    if adapter.access != "pool" or s3 is None or adapter.s3 is None or not planned.spec.key:
        return False
    try:
        head = await s3.head(
            adapter.s3.bucket, planned.spec.key, version_id=planned.spec.version_id
        )
    except LorapackError:
        return False
    return head.server_side_encryption in ("aws:kms", "aws:kms:dsse", "SSE-C")


# -- durability ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _flushing(tmp: Path) -> AsyncIterator[None]:
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


# -- sealing and publishing (blocking; run in threads) -------------------------------------------


def _verified_or_prepare(
    cache: AdapterCache, digest: str, planned: Iterable[_Planned], tmp: Path
) -> bool:
    """True if `digest` is verified on disk already; else create tmp and its sub-folders."""
    if cache.is_verified(digest):
        return True
    tmp.mkdir()
    for folder in {p.rel.parent for p in planned if p.rel.parent != PurePosixPath(".")}:
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    return False


def _seal(planned: Iterable[_Planned], tmp: Path, digest: str) -> int:
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


def _seal_and_publish(planned: Iterable[_Planned], tmp: Path, folder: Path, digest: str) -> int:
    written = _seal(planned, tmp, digest)
    _publish(tmp, folder)
    return written


def _publish(tmp: Path, folder: Path) -> None:
    """Rename tmp to its final name (atomic). A folder already there (a previous, broken copy:
    a complete one would have been found by is_verified) is moved aside first."""
    if folder.exists():
        aside = folder.with_name(f"{_TMP_PREFIX}broken-{secrets.token_hex(4)}")
        folder.rename(aside)
        _remove_tree(aside)
    tmp.rename(folder)


def _read_manifest(folder: Path) -> dict[str, int] | None:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
        files = data["files"]
        if not isinstance(files, dict):
            return None
        return {str(k): int(v) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _remove_tree(path: Path) -> None:
    """rmtree of a sealed folder: give back the write permission its folders lack first
    (unlinking a file needs write access to its folder; root does not care, agents do)."""
    for folder, dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(folder, stat.S_IRWXU)
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(folder, d), stat.S_IRWXU)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
