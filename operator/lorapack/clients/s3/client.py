"""`S3Client`: listing, small reads, presigning and bulk downloads over boto3 and s3transfer.

boto3 blocks, so every call runs in a worker thread (`asyncio.to_thread`), except downloads:
they go through one shared s3transfer TransferManager (a bounded thread pool doing concurrent,
multipart ranged GETs) whose completion is signalled back to the event loop, so a download of
hundreds of objects holds no event-loop thread. Failures leave as lorapack errors
(`errors.map_s3_error`). Used by the operator (pre-flight listing, adapter_config.json reads,
presigned URLs for agents) and by the agent's cache, through `lorapack.clients.s3`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from s3transfer.exceptions import CancelledError as TransferCancelledError
from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from lorapack.api import conditions
from lorapack.clients.s3.errors import map_s3_error
from lorapack.clients.s3.settings import DownloadItem, MiB, ObjectInfo, S3Settings
from lorapack.errors import ArtifactRejected, InvalidSpec

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as Boto3S3Client

__all__ = ["S3Client"]


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


class _PinnedTransferManager(TransferManager):
    """A TransferManager that accepts IfMatch for every download: s3transfer adds it to ranged
    GETs by itself, but sends objects under multipart_threshold as one GET without it."""

    ALLOWED_DOWNLOAD_ARGS = [*TransferManager.ALLOWED_DOWNLOAD_ARGS, "IfMatch"]  # noqa: RUF012


class S3Client:
    """One endpoint, one credential set; safe to share between tasks."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        config = Config(
            region_name=settings.region,
            signature_version="s3v4",
            s3={"addressing_style": settings.addressing_style},
            retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            # Every concurrent GET holds a pooled connection; the rest serve list/head calls.
            max_pool_connections=settings.max_concurrency + 4,
            tcp_keepalive=True,
        )
        # A private session: boto3.client() would share (and race on) the module default one.
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            aws_session_token=settings.session_token,
            region_name=settings.region,
        )
        self._client: Boto3S3Client = session.client(
            "s3", endpoint_url=settings.endpoint, config=config
        )
        self._transfer_config = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=settings.multipart_chunksize,
            max_request_concurrency=settings.max_concurrency,
            max_submission_concurrency=max(2, settings.max_concurrency // 2),
            # Never block download()'s caller (the event loop) on a full submission queue.
            max_submission_queue_size=2**31 - 1,
            num_download_attempts=settings.max_attempts,
            io_chunksize=1 * MiB,
        )
        self._manager: TransferManager | None = None
        self._manager_lock = threading.Lock()

    @property
    def boto3_client(self) -> Boto3S3Client:
        """The underlying boto3 client (tests and tooling; lorapack code uses the methods)."""
        return self._client

    def _transfers(self) -> TransferManager:
        with self._manager_lock:
            if self._manager is None:
                self._manager = _PinnedTransferManager(self._client, self._transfer_config)
            return self._manager

    def close(self) -> None:
        """Stop the transfer threads (cancelling running downloads) and close connections."""
        with self._manager_lock:
            manager, self._manager = self._manager, None
        if manager is not None:
            manager.shutdown(cancel=True, cancel_msg="S3 client closed")
        self._client.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- small calls ----------------------------------------------------------------------------

    async def list_prefix(
        self,
        bucket: str,
        prefix: str,
        *,
        with_versions: bool = False,
        page_size: int = 1000,
        limit: int | None = None,
    ) -> list[ObjectInfo]:
        """Every object under `prefix` (all pages), sorted by key; folder markers (keys ending
        in "/") skipped. `with_versions` lists versions instead (needs s3:ListBucketVersions)
        and returns the current version id of each key, so downloads can pin it. `limit`
        stops after about that many entries (the first pages' keys): a caller that refuses
        more than N objects passes N + 1 and never holds a huge listing in memory."""
        try:
            return await asyncio.to_thread(
                self._list, bucket, prefix, with_versions, page_size, limit
            )
        except Exception as exc:
            raise map_s3_error(exc, bucket, prefix) from exc

    def _list(
        self, bucket: str, prefix: str, with_versions: bool, page_size: int, limit: int | None
    ) -> list[ObjectInfo]:
        paging: Any = {"PageSize": min(page_size, limit) if limit else page_size}
        if limit is not None:
            paging["MaxItems"] = limit
        found = self._list_versions(bucket, prefix, paging) if with_versions else []
        if not with_versions:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, PaginationConfig=paging
            )
            for page in pages:
                for o in page.get("Contents", []):
                    key = o.get("Key", "")
                    if key and not key.endswith("/"):
                        etag = o.get("ETag", "").strip('"')
                        found.append(ObjectInfo(key, int(o.get("Size", 0)), etag, None))
        return sorted(found, key=lambda o: o.key)

    def _list_versions(self, bucket: str, prefix: str, paging: Any) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        pages = self._client.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig=paging
        )
        for page in pages:
            for v in page.get("Versions", []):
                key = v.get("Key", "")
                # A key whose newest entry is a delete marker has no IsLatest version: skipped.
                if v.get("IsLatest") and key and not key.endswith("/"):
                    etag = v.get("ETag", "").strip('"')
                    version = _version(v.get("VersionId"))
                    found.append(ObjectInfo(key, int(v.get("Size", 0)), etag, version))
        return found

    async def head(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectInfo:
        """One object's size, ETag, version and server-side encryption."""

        def call() -> ObjectInfo:
            args: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if version_id:
                args["VersionId"] = version_id
            r = self._client.head_object(**args)
            return ObjectInfo(
                key=key,
                size=int(r.get("ContentLength", 0)),
                etag=r.get("ETag", "").strip('"'),
                version_id=_version(r.get("VersionId")),
                server_side_encryption=_encryption(r),
            )

        try:
            return await asyncio.to_thread(call)
        except Exception as exc:
            raise map_s3_error(exc, bucket, key) from exc

    async def get_bytes(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        max_bytes: int = 1 << 20,
    ) -> bytes:
        """A small object's content (adapter_config.json); refuses objects above max_bytes
        without reading them."""

        def call() -> bytes:
            args: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if version_id:
                args["VersionId"] = version_id
            r = self._client.get_object(**args)
            body = r["Body"]
            try:
                size = int(r.get("ContentLength", 0))
                if size > max_bytes:
                    raise ArtifactRejected(
                        f"s3://{bucket}/{key} is {size} bytes, more than the {max_bytes} bytes "
                        "lorapack reads for this file; is it the right file?",
                        reason=conditions.UNSUPPORTED_ADAPTER,
                    )
                data = body.read(max_bytes + 1)
            finally:
                body.close()
            if len(data) > max_bytes:  # a server that sent no Content-Length
                raise ArtifactRejected(
                    f"s3://{bucket}/{key} is larger than {max_bytes} bytes",
                    reason=conditions.UNSUPPORTED_ADAPTER,
                )
            return data

        try:
            return await asyncio.to_thread(call)
        except Exception as exc:
            raise map_s3_error(exc, bucket, key) from exc

    async def get_range(
        self,
        bucket: str,
        key: str,
        start: int,
        length: int,
        *,
        version_id: str | None = None,
        etag: str | None = None,
    ) -> bytes:
        """Bytes [start, start + length) of an object (fewer at its end), never more: one
        ranged GET whose body is read up to `length` bytes. `etag` pins the version read
        (If-Match: an object replaced since it was listed fails as ObjectChanged)."""
        if start < 0 or length <= 0:
            raise ValueError(f"byte range start {start}, length {length}")

        def call() -> bytes:
            args: dict[str, Any] = {
                "Bucket": bucket,
                "Key": key,
                "Range": f"bytes={start}-{start + length - 1}",
            }
            if version_id:
                args["VersionId"] = version_id
            if etag:
                args["IfMatch"] = f'"{etag.strip(chr(34))}"'
            r = self._client.get_object(**args)
            body = r["Body"]
            try:
                return bytes(body.read(length))
            finally:
                body.close()

        try:
            return await asyncio.to_thread(call)
        except Exception as exc:
            raise map_s3_error(exc, bucket, key) from exc

    def presign_get(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        expires_in: int = 3600,
    ) -> str:
        """A GET URL for one object, valid `expires_in` seconds (SigV4 allows up to 7 days).
        Signing is local: no request is made, so no network error can occur here."""
        if not 1 <= expires_in <= 7 * 24 * 3600:
            raise InvalidSpec(f"presigned URL lifetime {expires_in}s must be 1s..7 days")
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            return self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_in
            )
        except Exception as exc:
            raise map_s3_error(exc, bucket, key) from exc

    # -- bulk download ---------------------------------------------------------------------------

    async def download(self, items: Sequence[DownloadItem], *, create_folders: bool = True) -> None:
        """Download every item concurrently (objects above multipart_threshold as concurrent
        ranged GETs). The first failure cancels the rest and is raised once every transfer has
        stopped writing, so the caller may delete the destination folder right away.
        `create_folders=False`: the caller made the destinations' folders (saves syscalls on
        the event loop)."""
        if not items:
            return
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[None]] = [loop.create_future() for _ in items]
        futures: list[TransferFuture] = []

        try:
            # Inline, not in a thread: the submission queue is unbounded (see __init__), so
            # TransferManager.download only enqueues; with hundreds of adapters syncing at once
            # a thread hop per call would queue behind fsyncs in the default executor.
            manager = self._transfers()
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
            await self._stop_transfers(futures, waiters)
            raise map_s3_error(exc, items[0].bucket, items[0].key) from exc
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_EXCEPTION)
            failed = [(w, i) for w, i in zip(waiters, items, strict=True) if _failed(w)]
            if failed:
                error, item = _first_real_failure(failed)
                raise map_s3_error(error, item.bucket, item.key) from error
        finally:
            await self._stop_transfers(futures, waiters)

    @staticmethod
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


def _encryption(head: Mapping[str, Any]) -> str | None:
    if head.get("SSECustomerAlgorithm"):
        return "SSE-C"
    value = head.get("ServerSideEncryption")
    return str(value) if value else None


def _version(value: str | None) -> str | None:
    # Unversioned buckets report the version id "null".
    return None if value in (None, "", "null") else value
