"""`S3Client`: listing, small reads, presigning and bulk downloads over boto3 and s3transfer.

boto3 blocks, so every call runs in a worker thread (`asyncio.to_thread`), except downloads:
they go through one shared s3transfer TransferManager (a bounded thread pool doing concurrent,
multipart ranged GETs) whose completion is signalled back to the event loop, so a download of
hundreds of objects holds no event-loop thread. Failures leave as lorapack errors
(`errors.map_s3_error`). Used by the operator (pre-flight listing, adapter_config.json reads,
presigned URLs for agents) and by the agent's cache, through `lorapack.clients.s3`.

The blocking calls are in `listing` (a prefix, all pages) and `reads` (HEAD, small and ranged
GETs), the bulk downloads in `transfers`; this module holds the client, its configuration
and the async methods callers use.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from s3transfer.manager import TransferConfig, TransferManager

from lorapack.clients.s3.errors import map_s3_error
from lorapack.clients.s3.listing import list_objects
from lorapack.clients.s3.reads import head_object, read_range, read_small
from lorapack.clients.s3.settings import DownloadItem, MiB, ObjectInfo, S3Settings
from lorapack.clients.s3.transfers import PinnedTransferManager, download_all
from lorapack.errors import InvalidSpec

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as Boto3S3Client

__all__ = ["S3Client"]


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
                self._manager = PinnedTransferManager(self._client, self._transfer_config)
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
                list_objects, self._client, bucket, prefix, with_versions, page_size, limit
            )
        except Exception as exc:
            raise map_s3_error(exc, bucket, prefix) from exc

    async def head(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectInfo:
        """One object's size, ETag, version and server-side encryption."""
        try:
            return await asyncio.to_thread(head_object, self._client, bucket, key, version_id)
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
        try:
            return await asyncio.to_thread(
                read_small, self._client, bucket, key, version_id, max_bytes
            )
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
        try:
            return await asyncio.to_thread(
                read_range, self._client, bucket, key, start, length, version_id, etag
            )
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
        await download_all(self._transfers, items, create_folders=create_folders)
