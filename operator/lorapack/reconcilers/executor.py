"""Performs a pool pass's actions with bounded concurrency, isolating every failure.

A write the cluster refuses is recorded as an `Issue` on the action's subject (an adapter, or
the pool itself) and the rest of the pass goes on: one team's bad object never stops the
others. Objects are taken over only when they are ours: an `Ensure` of an object this process
has not seen to be ours creates it, and when a same-named object exists it is applied over
only if its owner reference names the expected owner (server-side apply with force would
silently take over a stranger's object).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lorapack.api import conditions as c
from lorapack.api.loraadapter import ArtifactObject
from lorapack.api.podstate import DesiredAdapter, DesiredState
from lorapack.errors import ApiConflict, LorapackError, RetryableError
from lorapack.issues import Issue
from lorapack.manifests import pool as pool_manifests
from lorapack.reconcilers.actions import Action, Ensure, NeedsUrls, PublishDesired, Remove
from lorapack.reconcilers.ports import Presigner, Writer
from lorapack.status.conditions import now_rfc3339

__all__ = ["WRITE_CONCURRENCY", "Claims", "Executor", "Report"]

#: Writes in flight at once in one phase: enough to overlap API round trips, few enough not to
#: crowd out the other loops' requests.
WRITE_CONCURRENCY = 8


class Claims(Protocol):
    """Objects this process has seen to be ours ("Kind namespace/name")."""

    def __contains__(self, ref: object) -> bool: ...
    def add(self, ref: str) -> None: ...


@dataclass
class Report:
    """What the executed actions did."""

    failures: dict[str, list[Issue]] = field(default_factory=dict)
    """subject ("" = the pool) -> what the cluster refused."""
    transient: set[str] = field(default_factory=set)
    """Subjects with a transient failure: run the pass again soon."""
    writes: int = 0
    refused: set[str] = field(default_factory=set)
    """Refs ("Kind namespace/name") of the writes that failed."""
    desired: dict[int, DesiredState | None] = field(default_factory=dict)
    """ordinal -> desired state written (None: its Secret deleted)."""

    def fail(self, subject: str, issue: Issue) -> None:
        self.failures.setdefault(subject, []).append(issue)

    def failed(self, subjects: Iterable[str]) -> frozenset[str]:
        return frozenset(s for s in subjects if s in self.failures)


def _owner_uids(obj: Mapping[str, Any] | None) -> set[str]:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return {str(r.get("uid")) for r in refs}


def issue_for(error: LorapackError, what: str) -> Issue:
    """The Issue a refused write reports (the API server's words kept)."""
    text = error.message
    if "range is full" in text or "failed to allocate a serviceIP" in text:
        return Issue(
            c.SERVICE_IPS_EXHAUSTED,
            f"{what}: the cluster's Service IP range is full ({text}). Use headless adapter "
            "Services (operator setting LORAPACK_ADAPTER_SERVICE_TYPE=Headless, chart value "
            "adapterServices.type) or ask the cluster admins for a larger service range",
        )
    if isinstance(error, OwnedObjectConflict):
        return Issue.of(error)
    if isinstance(error, RetryableError):
        return Issue(error.reason, f"{what}: {text} (retrying)")
    return Issue(c.WRITE_REFUSED, f"{what}: {text}")


class Executor:
    """Runs actions against the Writer and Presigner ports."""

    def __init__(
        self, writer: Writer, presigner: Presigner, claims: Claims, *, presign_ttl: int
    ) -> None:
        self._writer = writer
        self._presigner = presigner
        self._claims = claims
        self._ttl = presign_ttl

    async def run(self, actions: Sequence[Action], report: Report) -> None:
        """Perform `actions` (one phase), at most WRITE_CONCURRENCY at once."""
        if not actions:
            return
        gate = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def one(action: Action) -> None:
            async with gate:
                try:
                    await self._perform(action, report)
                    report.writes += 1
                except LorapackError as err:
                    report.fail(action.subject, issue_for(err, action.ref))
                    report.refused.add(action.ref)
                    if isinstance(err, RetryableError):
                        report.transient.add(action.subject)

        await asyncio.gather(*(one(a) for a in actions))

    async def _perform(self, action: Action, report: Report) -> None:
        if isinstance(action, Ensure):
            await self._ensure(action.obj, action.owner_uid, action.ref, action.create_only)
        elif isinstance(action, Remove):
            await self._writer.delete(
                action.api_version, action.kind, action.namespace, action.name
            )
            if action.kind == "Secret" and action.subject == "":
                ordinal = int(action.name.removesuffix("-adapters").rsplit("-", 1)[-1])
                report.desired[ordinal] = None
        else:
            await self._publish(action, report)

    async def _ensure(
        self, obj: Mapping[str, Any], owner_uid: str, ref: str, create_only: bool = False
    ) -> None:
        if ref in self._claims and not create_only:
            await self._writer.apply(obj)
            return
        try:
            await self._writer.create(obj)
        except ApiConflict:
            meta = obj.get("metadata") or {}
            existing = await self._writer.get(
                str(obj["apiVersion"]), str(obj["kind"]), str(meta.get("namespace", "")),
                str(meta["name"]),
            )  # fmt: skip
            if existing is None:
                raise  # deleted meanwhile: the next pass creates it
            if owner_uid not in _owner_uids(existing):
                raise OwnedObjectConflict(ref) from None
            if not create_only:
                await self._writer.apply(obj)
        self._claims.add(ref)

    async def _sign(self, need: NeedsUrls, report: Report) -> DesiredAdapter | None:
        files = need.entry.files
        objects = [
            (f.key or "", ArtifactObject(path=f.path, size=f.size, etag=f.etag,
                                         version_id=f.version_id))
            for f in files
        ]  # fmt: skip
        try:
            urls, expires = await self._presigner.presign(
                need.adapter, need.pool, need.bucket, objects, self._ttl
            )
        except LorapackError as err:
            report.fail(need.entry.adapter, issue_for(err, "presigning the adapter's files"))
            return need.previous
        signed = [
            f.model_copy(update={"url": url, "key": None})
            for f, url in zip(files, urls, strict=True)
        ]
        return need.entry.model_copy(
            update={"files": signed, "urls_expire_at": now_rfc3339(expires)}
        )

    async def _publish(self, action: PublishDesired, report: Report) -> None:
        entries = list(action.state.adapters)
        for need in action.pending:
            signed = await self._sign(need, report)
            if signed is not None:
                entries.append(signed)
        state = action.state.model_copy(
            update={"adapters": sorted(entries, key=lambda e: e.served_name)}
        )
        secret = Ensure(
            action.phase,
            "",
            pool_manifests.desired_secret(action.pool, action.ordinal, state),
            action.pool.metadata.uid,
        )
        await self._ensure(secret.obj, secret.owner_uid, secret.ref)
        report.desired[action.ordinal] = state


class OwnedObjectConflict(LorapackError):
    """A same-named object exists and is not ours."""

    default_reason = c.OWNED_OBJECT_CONFLICT

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"{ref} already exists and is not lorapack's (no owner reference to the object it "
            "belongs to): remove or rename that object; lorapack never takes over objects it "
            "did not create"
        )
