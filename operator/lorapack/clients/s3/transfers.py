"""Bulk downloads of adapter files through one shared s3transfer TransferManager.

Used by lorapack.clients.s3.client.S3Client.download: the TransferManager is a bounded thread
pool doing concurrent, multipart ranged GETs, and each transfer's completion is signalled back
to the event loop, so a download of hundreds of objects holds no event-loop thread. Every GET
is pinned to the listed ETag (If-Match), and the first failure cancels the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from s3transfer.exceptions import CancelledError as TransferCancelledError
from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferManager
from s3transfer.subscribers import BaseSubscriber

from lorapack.clients.s3.errors import map_s3_error
from lorapack.clients.s3.settings import DownloadItem

__all__ = ["PinnedTransferManager", "download_all"]


class _Completion(BaseSubscriber):
    """Feeds s3transfer's bookkeeping (size, ETag: no HEAD per object) and hands the outcome
    of one transfer back to the event loop."""

    def __init__(
        self,
        item: DownloadItem,
        loop: asyncio.AbstractEventLoop,
        waiter: asyncio.Future[None],
    ) -> None:
        self._item = item
        self._loop = loop
        self._waiter = waiter

    def on_queued(self, future: TransferFuture, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._item.size)
        if self._item.etag:
            bare = self._item.etag.strip('"')
            future.meta.provide_object_etag(f'"{bare}"')

    def on_done(self, future: TransferFuture, **kwargs: Any) -> None:
        error: BaseException | None = None
        try:
            future.result()
        except BaseException as exc:  # handed to the awaiting task, which maps and raises it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(_settle, self._waiter, error)


def _settle(waiter: asyncio.Future[None], error: BaseException | None) -> None:
    if waiter.done():
        return
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error)


class PinnedTransferManager(TransferManager):
    """A TransferManager that accepts IfMatch for every download: s3transfer adds it to ranged
    GETs by itself, but sends objects under multipart_threshold as one GET without it."""

    ALLOWED_DOWNLOAD_ARGS = [*TransferManager.ALLOWED_DOWNLOAD_ARGS, "IfMatch"]  # noqa: RUF012


async def download_all(
    transfers: Callable[[], TransferManager],
    items: Sequence[DownloadItem],
    *,
    create_folders: bool = True,
) -> None:
    """Download every item concurrently through the manager `transfers()` returns (objects
    above multipart_threshold as concurrent ranged GETs). The first failure cancels the rest
    and is raised once every transfer has stopped writing, so the caller may delete the
    destination folder right away.
    `create_folders=False`: the caller made the destinations' folders (saves syscalls on
    the event loop)."""
    if not items:
        return
    loop = asyncio.get_running_loop()
    waiters: list[asyncio.Future[None]] = [loop.create_future() for _ in items]
    futures: list[TransferFuture] = []

    try:
        # Inline, not in a thread: the submission queue is unbounded (S3Client.__init__), so
        # TransferManager.download only enqueues; with hundreds of adapters syncing at once
        # a thread hop per call would queue behind fsyncs in the default executor.
        manager = transfers()
        for folder in {i.dest.parent for i in items} if create_folders else ():
            folder.mkdir(parents=True, exist_ok=True)
        for item, waiter in zip(items, waiters, strict=True):
            extra = {"VersionId": item.version_id} if item.version_id else {}
            if item.etag:  # a swapped small object fails with 412, not written to disk
                extra["IfMatch"] = f'"{item.etag.strip(chr(34))}"'
            futures.append(
                manager.download(
                    item.bucket,
                    item.key,
                    str(item.dest),
                    extra_args=extra,
                    subscribers=[_Completion(item, loop, waiter)],
                )
            )
    except Exception as exc:
        await _stop_transfers(futures, waiters)
        raise map_s3_error(exc, items[0].bucket, items[0].key) from exc
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_EXCEPTION)
        failed = [(w, i) for w, i in zip(waiters, items, strict=True) if _failed(w)]
        if failed:
            error, item = _first_real_failure(failed)
            raise map_s3_error(error, item.bucket, item.key) from error
    finally:
        await _stop_transfers(futures, waiters)


async def _stop_transfers(
    futures: list[TransferFuture], waiters: list[asyncio.Future[None]]
) -> None:
    """Cancel what still runs and wait until it stopped writing (a cancelled transfer
    finishes its current chunk first), so callers may delete the destinations at once."""
    started = len(futures)
    for future in futures:
        if not future.done():
            future.cancel()
    live = waiters[:started]
    if any(not w.done() for w in live):
        await asyncio.shield(asyncio.gather(*live, return_exceptions=True))
    for waiter in waiters[started:]:
        waiter.cancel()
    for waiter in live:  # every outcome retrieved: no "exception never retrieved" noise
        if not waiter.cancelled():
            waiter.exception()


def _failed(waiter: asyncio.Future[None]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.exception() is not None


def _first_real_failure(
    failed: list[tuple[asyncio.Future[None], DownloadItem]],
) -> tuple[BaseException, DownloadItem]:
    # Transfers cancelled because a sibling failed report CancelledError: report the cause.
    errors = [(w.exception(), i) for w, i in failed]
    for error, item in errors:
        if error is not None and not isinstance(error, TransferCancelledError):
            return error, item
    error, item = errors[0]
    return error or RuntimeError("transfer failed"), item
