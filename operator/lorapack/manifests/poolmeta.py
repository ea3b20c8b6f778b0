"""Labels, owner reference and metadata shared by every object a BaseModelPool owns.

Used by `manifests.pool` (the pool's workload objects, which re-exports `pool_labels` and
`owner_reference`) and `manifests.network` (its engine key Secret and NetworkPolicy), so that both
label and own their objects the same way: deleting the pool deletes them (garbage collection) and
`kubectl get all -l lorapack.io/pool=<name>` finds them.
"""

from __future__ import annotations

from typing import Any

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool

__all__ = ["owner_reference", "pool_labels", "pool_meta"]

Obj = dict[str, Any]


def pool_labels(pool: BaseModelPool) -> dict[str, str]:
    """Labels on every object of the pool (the selector uses only POOL_LABEL)."""
    return {
        labels.NAME_LABEL: "lorapack",
        labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.POOL_LABEL: pool.metadata.name,
    }


def owner_reference(pool: BaseModelPool) -> Obj:
    """Controller owner reference to the pool."""
    return {
        "apiVersion": labels.API_VERSION,
        "kind": labels.POOL_KIND,
        "name": pool.metadata.name,
        "uid": pool.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pool_meta(pool: BaseModelPool, name: str, extra_labels: dict[str, str] | None = None) -> Obj:
    """metadata of an object named `name` in the pool's namespace, labelled and owned."""
    return {
        "name": name,
        "namespace": pool.metadata.namespace,
        "labels": {**pool_labels(pool), **(extra_labels or {})},
        "ownerReferences": [owner_reference(pool)],
    }
