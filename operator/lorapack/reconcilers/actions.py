"""The typed writes a pool pass decides on, in the order they must happen.

`reconcilers.poolplan` turns (world, placement plan) into a list of these, purely;
`reconcilers.executor` performs them. Each action names its `subject`: the adapter it is for
("namespace/name"), or "" for the pool itself, so a write the cluster refuses is recorded on
that adapter alone and never aborts the pass for the others.

Phases run in order, each with bounded concurrency:

* OWNED: the pool's own objects (agent RBAC, Services, PDB, ...): never starved by adapters'.
* UNROUTE: EndpointSlices that lose a pod or go away. A pod leaves an adapter's routing before
  it is told to drop or switch the adapter (drain before unload).
* DESIRED: per-pod desired states (and deletion of those of pods gone for good).
* SCALE: the StatefulSet's replica count (scale-in only after the plan emptied the pods).
* ROUTE: adapter Services and EndpointSlices that only gain pods (those pods hold the adapter
  already; new placements do not wait behind routing writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.podstate import DesiredAdapter, DesiredState

__all__ = ["Action", "Ensure", "NeedsUrls", "Phase", "PublishDesired", "Remove"]


class Phase(IntEnum):
    """When an action runs within a pass (see the module docstring)."""

    OWNED = 0
    UNROUTE = 1
    DESIRED = 2
    SCALE = 3
    ROUTE = 4


@dataclass(frozen=True)
class Ensure:
    """Make `obj` exist as given. An object this process has not yet seen to be ours is
    created, never applied over: if a same-named object exists, it is taken only when
    `owner_uid` owns it (else the subject gets OwnedObjectConflict). Ours: server-side apply,
    unless `create_only`: then an existing object of ours is left exactly as it is (the pool's
    engine key: a random value written once, never replaced by another random value)."""

    phase: Phase
    subject: str
    obj: Mapping[str, Any]
    owner_uid: str
    create_only: bool = False

    @property
    def ref(self) -> str:
        meta = self.obj.get("metadata") or {}
        return f"{self.obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name', '')}"


@dataclass(frozen=True)
class Remove:
    """Delete an object (gone already counts as done)."""

    phase: Phase
    subject: str
    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class NeedsUrls:
    """A desired entry whose files still need presigned URLs (team credentials stay in the
    operator); `previous` is kept if presigning fails."""

    adapter: LoraAdapter
    pool: BaseModelPool
    entry: DesiredAdapter
    """The entry with `url` unset on every file."""
    bucket: str
    previous: DesiredAdapter | None


@dataclass(frozen=True)
class PublishDesired:
    """Write one pod's desired state: `ready` entries as they are, `pending` ones once their
    URLs are signed; the revision becomes `revision`."""

    pool: BaseModelPool
    ordinal: int
    state: DesiredState
    """Everything but the pending entries, at the new revision."""
    pending: tuple[NeedsUrls, ...] = field(default=())
    phase: Phase = Phase.DESIRED
    subject: str = ""

    @property
    def ref(self) -> str:
        return f"desired state of pod {self.state.pod}"


Action = Ensure | Remove | PublishDesired
