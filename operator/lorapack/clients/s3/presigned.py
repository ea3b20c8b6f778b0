"""Downloads of presigned GET URLs over httpx: the agent's default way to fetch adapter files.

Team credentials never leave the operator: it presigns the URLs, and the agent fetches them
here with at most `concurrency` GETs in flight, large objects as concurrent ranged GETs
written at their offsets, every GET pinned to the listed ETag (If-Match) and capped at the
listed size, retrying 429/5xx and connection failures with jittered exponential
backoff. The query string of a presigned URL is a credential and never appears in messages.
Called by the agent's cache through `lorapack.clients.s3.download_presigned`.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httpx

from lorapack.api import conditions
from lorapack.clients.s3.settings import MiB, PresignedItem
from lorapack.errors import (
    AccessDenied,
    ArtifactNotFound,
    ArtifactRejected,
    InvalidSpec,
    StorageUnavailable,
)

__all__ = ["download_presigned"]

_RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})


@dataclass
class _Backoff:
    attempts: int = 5
    base: float = 0.2
    cap: float = 10.0
    _rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.cap)
        # "Full jitter" exponential backoff, as botocore's standard retry mode does.
        return self._rng.uniform(0, min(self.cap, self.base * 2**attempt))


def _safe_url(url: str) -> str:
    # The query string of a presigned URL is a credential: never put it in messages or logs.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _plan_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """(start, end inclusive) byte ranges; one whole-object request for small objects."""
    if size <= part_size:
        return [(0, size - 1)] if size else []
    return [(start, min(start + part_size, size) - 1) for start in range(0, size, part_size)]


async def download_presigned(
    items: Sequence[PresignedItem],
    *,
    concurrency: int = 8,
    part_size: int = 8 * MiB,
    max_attempts: int = 5,
    backoff_base: float = 0.2,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Download presigned URLs with at most `concurrency` GETs in flight; objects larger than
    part_size as concurrent ranged GETs. Retries 429/5xx and connection failures with jittered
    exponential backoff (Retry-After honoured), then raises StorageUnavailable."""
    if concurrency < 1 or part_size < 1:
        raise InvalidSpec("download_presigned needs concurrency >= 1 and part_size >= 1")
    if not items:
        return
    backoff = _Backoff(attempts=max_attempts, base=backoff_base)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(60.0, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport) as http:
        # Create every destination first (empty or preallocated to its size) so ranged parts
        # can be written at their offsets in any order.
        await asyncio.to_thread(_prepare_files, items)
        jobs = [
            _fetch_range(http, gate, backoff, item, start, end)
            for item in items
            for start, end in _plan_ranges(item.size, part_size)
        ]
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _prepare_files(items: Iterable[PresignedItem]) -> None:
    for item in items:
        item.dest.parent.mkdir(parents=True, exist_ok=True)
        with open(item.dest, "wb") as f:
            f.truncate(item.size)


async def _fetch_range(
    http: httpx.AsyncClient,
    gate: asyncio.Semaphore,
    backoff: _Backoff,
    item: PresignedItem,
    start: int,
    end: int,
) -> None:
    where = _safe_url(item.url)
    whole = start == 0 and end == item.size - 1
    headers = {} if whole else {"Range": f"bytes={start}-{end}"}
    if item.etag:  # pins the version pre-flight validated: a swapped object answers 412
        headers["If-Match"] = f'"{item.etag.strip(chr(34))}"'

    last = ""
    body = ""
    for attempt in range(backoff.attempts):
        retry_after: str | None = None
        async with gate:
            try:
                async with http.stream("GET", item.url, headers=headers) as response:
                    status = response.status_code
                    if status in (200, 206) and (whole or status == 206):
                        await _write_body(response, item, start, end)
                        return
                    body = (await response.aread())[:2048].decode("utf-8", "replace")
                    retry_after = response.headers.get("retry-after")
            except (httpx.TransportError, _ShortBody) as exc:
                last = f"{type(exc).__name__}: {exc}"
                status = 0
        if status:
            _raise_for_status(status, body, where, whole)
            last = f"HTTP {status}"
        if attempt + 1 < backoff.attempts:
            await asyncio.sleep(backoff.delay(attempt, retry_after))
    raise StorageUnavailable(
        f"downloading {where} failed {backoff.attempts} times (last: {last}); will retry",
        reason=conditions.STORAGE_UNAVAILABLE,
    )


class _ShortBody(Exception):
    """The server closed the connection before sending the whole range."""


async def _write_body(response: httpx.Response, item: PresignedItem, start: int, end: int) -> None:
    want = end - start + 1
    offset = start
    fd = await asyncio.to_thread(os.open, item.dest, os.O_WRONLY)
    try:
        async for chunk in response.aiter_bytes(1 * MiB):
            if offset + len(chunk) > end + 1:
                raise ArtifactRejected(
                    f"{_safe_url(item.url)} is larger than the {item.size} bytes listed",
                    reason=conditions.DIGEST_MISMATCH,
                )
            await asyncio.to_thread(os.pwrite, fd, chunk, offset)
            offset += len(chunk)
    finally:
        await asyncio.to_thread(os.close, fd)
    if offset - start != want:
        raise _ShortBody(f"got {offset - start} of {want} bytes")


def _raise_for_status(status: int, body: str, where: str, whole: bool) -> None:
    if status in _RETRYABLE_STATUS:
        return
    if status == 412:
        raise StorageUnavailable(
            f"{where} changed since it was listed (If-Match failed); the adapter is validated "
            "and published again",
            reason="ObjectChanged",
            retry_after=1.0,
        )
    if status == 403 and "expired" in body.lower():
        raise StorageUnavailable(
            f"the presigned URL for {where} has expired; the operator refreshes it",
            reason="PresignedUrlExpired",
            retry_after=2.0,
        )
    if status == 403:
        raise AccessDenied(
            f"S3 refused the presigned URL for {where} (403); check that the operator's "
            "credentials (spec.source.s3.credentialsSecretRef) can read the object",
            reason=conditions.ACCESS_DENIED,
        )
    if status == 404:
        raise ArtifactNotFound(
            f"no object at {where} (404); check spec.source.s3.uri",
            reason=conditions.ARTIFACT_NOT_FOUND,
        )
    if status in (200, 416) and not whole:
        raise StorageUnavailable(
            f"{where} did not honour a ranged GET (HTTP {status}); will retry",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    raise StorageUnavailable(
        f"S3 answered HTTP {status} for {where}: {body[:200]}; will retry",
        reason=conditions.STORAGE_UNAVAILABLE,
    )
