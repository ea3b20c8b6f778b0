"""Which S3 endpoint and identity an adapter's files are read with, and whether it may be.

One home for two rules every layer needs:

* The effective S3 target of an adapter: its own `source.s3` endpoint/region/addressing where
  set, else the pool's `spec.s3` (used by pre-flight, the pods' desired state and the base-model
  fetch alike).
* Tenant isolation: an adapter that names its own `credentialsSecretRef` reads with its team's
  keys (through presigned URLs); one that does not reads with the *pool's* identity, which is
  allowed only for the folders the pool grants its namespace (`spec.adapters.s3Access`) and
  only at the pool's own endpoint (the pool's keys are never sent to a host a team chose).
  The operator's own cloud identity is used only within those grants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lorapack.api import conditions as c
from lorapack.issues import Issue

__all__ = ["Grant", "S3Target", "effective_target", "location_issue"]

Addressing = Literal["auto", "path", "virtual"]


@dataclass(frozen=True, slots=True)
class Grant:
    """One spec.adapters.s3Access entry, as plain data."""

    namespaces: frozenset[str]
    prefixes: tuple[str, ...]

    def covers(self, namespace: str, uri: str) -> bool:
        allowed = "*" in self.namespaces or namespace in self.namespaces
        return allowed and any(uri.startswith(prefix) for prefix in self.prefixes)


@dataclass(frozen=True, slots=True)
class S3Target:
    """Where an adapter's (or base model's) files are read from."""

    endpoint: str | None
    region: str | None
    addressing_style: Addressing


def effective_target(
    endpoint: str | None,
    region: str | None,
    addressing_style: Addressing | None,
    pool_endpoint: str | None,
    pool_region: str | None,
    pool_addressing: Addressing,
) -> S3Target:
    """The source's own settings where set, else the pool's."""
    return S3Target(
        endpoint=endpoint or pool_endpoint,
        region=region or pool_region,
        addressing_style=addressing_style or pool_addressing,
    )


def _folder(uri: str) -> str:
    return uri if uri.endswith("/") else f"{uri}/"


def location_issue(
    namespace: str,
    uri: str,
    endpoint: str | None,
    pool_key: str,
    pool_endpoint: str | None,
    grants: Sequence[Grant],
) -> Issue | None:
    """Why an adapter of `namespace` may not read `uri` (at `endpoint`) with pool `pool_key`'s
    identity, or None. Only for adapters without their own credentials."""
    if endpoint and endpoint.rstrip("/") != (pool_endpoint or "").rstrip("/"):
        where = f"its endpoint {pool_endpoint}" if pool_endpoint else "AWS S3"
        return Issue(
            c.S3_LOCATION_NOT_ALLOWED,
            f"spec.source.s3.endpoint {endpoint} is not pool {pool_key}'s S3 endpoint and the "
            f"adapter names no credentials: the pool's identity is used only at {where}. Set "
            "spec.source.s3.credentialsSecretRef to your team's Secret, or remove the endpoint",
        )
    folder = _folder(uri)
    if any(g.covers(namespace, folder) for g in grants):
        return None
    granted = sorted({p for g in grants if namespace in g.namespaces or "*" in g.namespaces
                      for p in g.prefixes})  # fmt: skip
    scope = f" (it grants {namespace}: {', '.join(granted)})" if granted else ""
    return Issue(
        c.S3_LOCATION_NOT_ALLOWED,
        f"spec.source.s3.uri {uri} is not a location pool {pool_key} lets namespace "
        f"{namespace} read with the pool's credentials{scope}: set "
        "spec.source.s3.credentialsSecretRef to a Secret with your team's S3 keys, or ask the "
        "platform team to add the folder to the pool's spec.adapters.s3Access",
    )
