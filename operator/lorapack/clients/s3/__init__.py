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

Modules: `settings` (S3Settings and the values: ObjectInfo, DownloadItem, PresignedItem),
`errors` (map_s3_error, map_disk_error), `client` (S3Client over boto3 and s3transfer, with
its blocking `listing` and `reads` and its bulk downloads in `transfers`), `presigned`
(download_presigned over httpx) and `upload` (S3Uploader: checksummed uploads for
`lorapack model push`). Every public name is re-exported here.
"""

from __future__ import annotations

from lorapack.clients.s3.client import S3Client
from lorapack.clients.s3.errors import map_disk_error, map_s3_error
from lorapack.clients.s3.presigned import _plan_ranges as _plan_ranges  # unit-tested
from lorapack.clients.s3.presigned import download_presigned
from lorapack.clients.s3.settings import (
    DownloadItem,
    ObjectInfo,
    PresignedItem,
    S3Settings,
)
from lorapack.clients.s3.settings import MiB as MiB
from lorapack.clients.s3.upload import ChecksumMode, S3Uploader, UploadItem, UploadResult

__all__ = [
    "ChecksumMode",
    "DownloadItem",
    "ObjectInfo",
    "PresignedItem",
    "S3Client",
    "S3Settings",
    "S3Uploader",
    "UploadItem",
    "UploadResult",
    "download_presigned",
    "map_disk_error",
    "map_s3_error",
]
