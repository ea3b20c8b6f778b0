"""Checking a downloaded adapter version against its desired state before it is published.

Called by lorapack.agent.cache once every file of a version is in its temporary folder:
`verify_and_publish` checks sizes and content hashes, then seals and renames the folder
(lorapack.agent.cacheseal). A file that does not match refuses the version with
DigestMismatch; nothing unverified is ever published.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Final

from lorapack.agent.cachefiles import Planned
from lorapack.agent.cacheseal import seal_and_publish
from lorapack.api import conditions
from lorapack.api.podstate import DesiredAdapter
from lorapack.clients.s3 import S3Client
from lorapack.errors import ArtifactRejected, LorapackError

__all__ = ["verify_and_publish"]

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_HASH_BLOCK: Final = 4 * 2**20
_PARALLEL_HASH_BYTES: Final = 64 * 2**20


async def verify_and_publish(
    adapter: DesiredAdapter, planned: list[Planned], tmp: Path, folder: Path, s3: S3Client | None
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
    return await asyncio.to_thread(seal_and_publish, planned, tmp, folder, adapter.digest)


def _check_then_publish(
    order: list[Planned], tmp: Path, folder: Path, digest: str
) -> list[str | None] | int:
    """Check every file; when all pass, publish and return the bytes published, else return
    the problems."""
    results = [_check_file(tmp, p) for p in order]
    if any(r is not None for r in results):
        return results
    return seal_and_publish(order, tmp, folder, digest)


def _check_file(tmp: Path, planned: Planned) -> str | None:
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


async def _etag_is_not_md5(adapter: DesiredAdapter, planned: Planned, s3: S3Client | None) -> bool:
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
