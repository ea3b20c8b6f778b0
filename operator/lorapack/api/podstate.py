"""The wire contract between the operator and the agent inside each pool pod.

* `DesiredState`: what the pool's placement loop wants one pod to hold. Written by the operator
  (the single writer) as JSON under `desired.json` in the Secret `<pod>-adapters` in the pool's
  namespace. It is a Secret because entries may carry presigned S3 URLs. The same objects are
  the persisted assignment: after an operator restart the loop reads them back, so nothing is
  reshuffled, and a re-created pod finds its adapters waiting for it.
* `ObservedState`: what the pod really holds, written by the agent as JSON in its own Pod's
  `lorapack.io/observed` annotation after checking the engine's /v1/models. Status, routing and
  readiness are derived from it, never from DesiredState.

Both carry `schema` so either side can refuse a payload from an incompatible version.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from lorapack.api.loraadapter import PlacementState
from lorapack.api.meta import ApiModel

__all__ = [
    "SCHEMA_VERSION",
    "DesiredAdapter",
    "DesiredState",
    "FileSpec",
    "ObservedAdapter",
    "ObservedState",
    "S3Location",
    "desired_from_secret",
]

SCHEMA_VERSION = 1


class WireModel(ApiModel):
    """Lenient on read (a newer writer may add fields), camelCase like the CRDs."""

    model_config = ApiModel.model_config | {"extra": "ignore"}


class FileSpec(WireModel):
    """One adapter file to fetch and verify."""

    path: Annotated[str, Field(min_length=1, max_length=512)]
    """File name relative to the adapter folder (validated again by the agent: never a path
    outside the folder)."""
    size: Annotated[int, Field(ge=0)]
    """Expected size in bytes, from the S3 listing."""
    etag: str = ""
    """S3 ETag from the listing (quotes stripped)."""
    version_id: str | None = None
    """S3 version id to fetch, when pinned."""
    sha256: str | None = None
    """Expected "sha256:<hex>" from the adapter's spec.digests, when given."""
    url: str | None = None
    """Presigned GET URL (access=presigned)."""
    key: str | None = None
    """S3 object key (access=pool)."""


class S3Location(WireModel):
    """Where the files are, for agents that fetch with the pool's own credentials."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"


class DesiredAdapter(WireModel):
    """One adapter a pod should hold."""

    served_name: str
    """vLLM lora_name."""
    adapter: str
    """namespace/name of the LoraAdapter."""
    uid: str = ""
    """UID of the LoraAdapter (a re-created adapter is a new one)."""
    digest: str
    """Manifest digest naming this version; the cache folder and the loaded path derive from
    it, so a new version never overwrites files the engine may re-read."""
    files: list[FileSpec]
    access: Literal["presigned", "pool"] = "pool"
    """presigned: fetch FileSpec.url (team credentials stay with the operator); pool: fetch
    FileSpec.key with the pool's credentials or the pod's ambient identity."""
    s3: S3Location | None = None
    """Bucket and endpoint for access=pool."""
    urls_expire_at: str | None = None
    """When the presigned URLs expire (RFC 3339); the operator refreshes them before."""


class DesiredState(WireModel):
    """Everything one pod should hold."""

    schema_version: int = SCHEMA_VERSION
    pool: str
    """namespace/name of the pool."""
    pod: str
    """Pod name."""
    revision: Annotated[int, Field(ge=0)] = 0
    """Increases with every change; the agent echoes the last revision it fully applied."""
    max_lora_rank: int = 64
    """The engine's --max-lora-rank (the agent refuses larger adapters without calling it)."""
    allow_pickle: bool = False
    """Whether .bin/.pt weights without safetensors are acceptable."""
    cache_quota_bytes: int | None = None
    """Disk quota of the adapter cache."""
    adapters: list[DesiredAdapter] = Field(default_factory=list)


class ObservedAdapter(WireModel):
    """One adapter on a pod, as the agent saw it."""

    served_name: str
    digest: str
    state: PlacementState
    since: str
    """When state last changed (RFC 3339)."""
    message: str = ""
    attempts: int = 0
    """Failed attempts since the last success."""
    download_ms: int | None = None
    """How long fetching and verifying the files took for this version (0: already cached)."""
    load_ms: int | None = None
    """How long the engine's load call (and the /v1/models check) took."""


class ObservedState(WireModel):
    """What a pod really holds, reported by its agent."""

    schema_version: int = SCHEMA_VERSION
    revision: int = -1
    """Last DesiredState.revision fully applied (-1: none yet)."""
    engine_healthy: bool = False
    """The engine's /health answered 200 on the last pass."""
    engine_restarts: int = 0
    """Times the agent saw the engine lose its adapters (restart) since the agent started."""
    updated_at: str = ""
    """When the agent wrote this report (RFC 3339)."""
    adapters: list[ObservedAdapter] = Field(default_factory=list)

    def loaded(self) -> dict[str, str]:
        """served name -> digest of adapters in state Loaded."""
        return {a.served_name: a.digest for a in self.adapters if a.state == "Loaded"}


def desired_from_secret(
    secret: Mapping[str, Any], key: str = "desired.json"
) -> DesiredState | None:
    """The DesiredState inside a desired-state Secret's data (None if absent or unreadable)."""
    data = secret.get("data") or {}
    raw = data.get(key) if isinstance(data, Mapping) else None
    if not raw:
        return None
    try:
        return DesiredState.model_validate_json(base64.b64decode(str(raw)))
    except (ValueError, binascii.Error, ValidationError):
        return None
