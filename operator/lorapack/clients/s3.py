"""The S3 client: listing, small reads, presigning and bulk downloads of adapter files.

Called by the operator (pre-flight listing, adapter_config.json reads, presigned URLs for agents)
and by the agent's cache (lorapack.agent.cache), which downloads into its own temporary folders.

boto3 blocks, so every call runs in a worker thread (`asyncio.to_thread`), except downloads:
they go through one shared s3transfer TransferManager (a bounded thread pool doing concurrent,
multipart ranged GETs) whose completion is signalled back to the event loop, so a download of
hundreds of objects holds no event-loop thread. Presigned URLs (the agent's default: team
credentials never leave the operator) are fetched with httpx in `download_presigned`.

Every failure leaves this module as a lorapack.errors error:

    NoSuchBucket / NoSuchKey / 404              -> ArtifactNotFound   (names s3://bucket/key)
    AccessDenied / InvalidAccessKeyId / 403 ... -> AccessDenied       (check the Secret / policy)
    no credentials anywhere                     -> AccessDenied       (reason CredentialsNotFound)
    SlowDown / 503 / 429 / 5xx / network        -> StorageUnavailable (retryable), after botocore's
                                                   own retries ("standard" mode, backoff + jitter)
    object changed while being downloaded       -> StorageUnavailable (reason ObjectChanged)
    wrong region / endpoint                     -> InvalidSpec
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ResponseStreamingError,
)
from s3transfer.exceptions import CancelledError as TransferCancelledError
from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError
from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from lorapack.api import conditions
from lorapack.errors import (
    AccessDenied,
    ArtifactNotFound,
    ArtifactRejected,
    CapacityExceeded,
    InvalidSpec,
    LorapackError,
    StorageUnavailable,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as Boto3S3Client

__all__ = [
    "DownloadItem",
    "ObjectInfo",
    "PresignedItem",
    "S3Client",
    "S3Settings",
    "download_presigned",
    "map_disk_error",
    "map_s3_error",
]

MiB: Final = 2**20
_SECRET_KEYS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_NOT_FOUND: Final = frozenset({"NoSuchBucket", "NoSuchKey", "NoSuchVersion", "NotFound", "404"})
_DENIED: Final = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
        "403",
    }
)
_WRONG_PLACE: Final = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "InvalidBucketName", "301"}
)
_THROTTLED: Final = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503", "429"}
)
_RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})


# -- settings and values ------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Settings:
    """How to reach one S3 (or S3-compatible) endpoint. All credentials None means boto3's
    default chain: environment, IRSA / EKS pod identity web-identity tokens, instance profile."""

    endpoint: str | None = None
    """Endpoint URL for MinIO/Ceph/SeaweedFS and friends; None means AWS."""
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """"path" for most S3-compatible stores (bucket in the path, not the host name)."""
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    max_attempts: int = 5
    """Attempts per request, first one included (botocore retry config)."""
    max_concurrency: int = 8
    """Concurrent GETs of one download() call, ranged parts included."""
    multipart_threshold: int = 8 * MiB
    """Objects at least this large are fetched as concurrent ranged GETs."""
    multipart_chunksize: int = 8 * MiB
    retry_mode: Literal["standard", "adaptive"] = "standard"
    """botocore retry mode; "adaptive" adds client-side rate limiting after throttling."""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise InvalidSpec(
                f"S3 endpoint {self.endpoint!r} must start with http:// or https:// "
                "(for example https://minio.storage.svc:9000)"
            )
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise InvalidSpec(
                f"S3 addressingStyle {self.addressing_style!r} must be auto, path or virtual"
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise InvalidSpec(
                "S3 credentials need both an access key id and a secret access key; "
                "set both, or neither to use the pod's identity (IRSA / pod identity)"
            )
        if self.session_token is not None and self.access_key_id is None:
            raise InvalidSpec("an S3 session token needs an access key id and secret key too")
        for name in ("max_attempts", "max_concurrency"):
            if getattr(self, name) < 1:
                raise InvalidSpec(f"S3 setting {name} must be >= 1, got {getattr(self, name)}")
        for name in ("multipart_threshold", "multipart_chunksize"):
            if getattr(self, name) < 64 * 1024:
                raise InvalidSpec(
                    f"S3 setting {name} must be >= 65536 bytes, got {getattr(self, name)}"
                )

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str], **kw: Any) -> S3Settings:
        """Settings from a credentials Secret's (already base64-decoded) data.

        AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are required, AWS_SESSION_TOKEN optional.
        Values are stripped: a Secret made with `echo key | base64` carries a newline that
        would otherwise surface much later as SignatureDoesNotMatch.
        """
        values = {k: (data.get(k) or "").strip() for k in _SECRET_KEYS}
        for key in _SECRET_KEYS[:2]:
            if not values[key]:
                present = ", ".join(sorted(data)) or "none"
                raise InvalidSpec(
                    f"the credentials Secret (spec.source.s3.credentialsSecretRef) has no "
                    f"non-empty key {key} (keys present: {present}); add {key}, or remove "
                    "credentialsSecretRef to use the pool's identity"
                )
        return cls(
            access_key_id=values["AWS_ACCESS_KEY_ID"],
            secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
            session_token=values["AWS_SESSION_TOKEN"] or None,
            **kw,
        )

    def __repr__(self) -> str:
        # Never print secrets (settings end up in logs and exception reports).
        shown = replace(
            self,
            secret_access_key="***" if self.secret_access_key else None,
            session_token="***" if self.session_token else None,
        )
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(shown).items())
        return f"S3Settings({fields})"


@dataclass(frozen=True)
class ObjectInfo:
    """One object from a listing."""

    key: str
    size: int
    etag: str
    """Quotes stripped. Single-part uploads: the MD5 hex of the content (unless SSE-KMS/SSE-C);
    multipart uploads: "<md5 of part md5s>-<parts>"."""
    version_id: str | None
    server_side_encryption: str | None = None
    """Only from head(): "AES256", "aws:kms", ... (SSE-KMS ETags are not content MD5s)."""


@dataclass(frozen=True)
class DownloadItem:
    """One object to download to `dest` (its folder is created)."""

    bucket: str
    key: str
    version_id: str | None
    dest: Path
    size: int
    etag: str | None = None
    """The listing's ETag: saves a HEAD per object and makes ranged GETs If-Match it, so an
    object replaced mid-download fails instead of mixing two versions."""


@dataclass(frozen=True)
class PresignedItem:
    """One presigned GET URL to download to `dest`."""

    url: str
    dest: Path
    size: int


# -- error mapping ------------------------------------------------------------------------------


def _where(bucket: str | None, key: str | None) -> str:
    if bucket is None:
        return "S3"
    return f"s3://{bucket}/{key or ''}"


def map_s3_error(exc: BaseException, bucket: str | None, key: str | None = None) -> LorapackError:
    """Translate a botocore / s3transfer exception into the lorapack error a user can act on."""
    where = _where(bucket, key)
    if isinstance(exc, LorapackError):
        return exc
    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        return StorageUnavailable(
            f"reading {where} kept failing ({exc.last_exception}); will retry",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    if isinstance(exc, S3DownloadFailedError):
        return StorageUnavailable(
            f"{where} changed while it was being downloaded (its ETag no longer matches the "
            "listing); the adapter is listed again and fetched anew",
            reason="ObjectChanged",
            retry_after=1.0,
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = str(error.get("Message", "") or code)
        if code in _NOT_FOUND or status == 404:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return ArtifactNotFound(
                f"no such {what} at {where} ({code or status}); check spec.source.s3.uri",
                reason=conditions.ARTIFACT_NOT_FOUND,
            )
        if code in _DENIED or status == 403:
            return AccessDenied(
                f"S3 refused access to {where} ({code or status}: {message}); check the "
                "credentials Secret (spec.source.s3.credentialsSecretRef) and the bucket policy",
                reason=conditions.ACCESS_DENIED,
            )
        if code in _WRONG_PLACE or status == 301:
            return InvalidSpec(
                f"S3 answered {code or status} for {where} ({message}); check the bucket name, "
                "the region and the endpoint (spec.source.s3 / the pool's s3 settings)"
            )
        if code == "PreconditionFailed" or status == 412:
            return StorageUnavailable(
                f"{where} changed since it was listed; it is listed again and fetched anew",
                reason="ObjectChanged",
                retry_after=1.0,
            )
        what = "throttled" if code in _THROTTLED or status in (429, 503) else "failed"
        return StorageUnavailable(
            f"S3 {what} requests for {where} ({code or status}: {message}) and retries did not "
            "help; will retry later",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AccessDenied(
            f"no usable S3 credentials for {where} ({exc}); set "
            "spec.source.s3.credentialsSecretRef, or give the pool's ServiceAccount an identity "
            "(IRSA / EKS pod identity) that can read the bucket",
            reason=conditions.CREDENTIALS_NOT_FOUND,
        )
    if isinstance(exc, ParamValidationError):
        return InvalidSpec(f"invalid S3 request for {where}: {exc}; check spec.source.s3.uri")
    if isinstance(
        exc, ConnectionError | HTTPClientError | ResponseStreamingError | IncompleteReadError
    ):
        return StorageUnavailable(
            f"could not reach S3 for {where} ({exc}); will retry",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    if isinstance(exc, OSError):
        return map_disk_error(exc, where)
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(
            f"S3 request for {where} failed ({exc}); will retry",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    return StorageUnavailable(
        f"unexpected failure reading {where} ({type(exc).__name__}: {exc}); will retry",
        reason=conditions.STORAGE_UNAVAILABLE,
    )


def map_disk_error(exc: OSError, where: str) -> LorapackError:
    """A local write failure while saving `where`: a full volume is a capacity problem."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CapacityExceeded(
            f"the adapter cache volume is full while writing {where} ({exc.strerror}); raise "
            "spec.adapters.cacheSize on the pool or place fewer adapters per pod"
        )
    return StorageUnavailable(
        f"writing {where} to the local disk failed ({exc}); will retry",
        reason=conditions.STORAGE_UNAVAILABLE,
    )


# -- the boto3 client ---------------------------------------------------------------------------


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
                self._manager = TransferManager(self._client, self._transfer_config)
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
        self, bucket: str, prefix: str, *, with_versions: bool = False, page_size: int = 1000
    ) -> list[ObjectInfo]:
        """Every object under `prefix` (all pages), sorted by key; folder markers (keys ending
        in "/") skipped. `with_versions` lists versions instead (needs s3:ListBucketVersions)
        and returns the current version id of each key, so downloads can pin it."""
        try:
            return await asyncio.to_thread(self._list, bucket, prefix, with_versions, page_size)
        except Exception as exc:
            raise map_s3_error(exc, bucket, prefix) from exc

    def _list(
        self, bucket: str, prefix: str, with_versions: bool, page_size: int
    ) -> list[ObjectInfo]:
        paging: Any = {"PageSize": page_size}
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


# -- presigned downloads (httpx) ----------------------------------------------------------------


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
