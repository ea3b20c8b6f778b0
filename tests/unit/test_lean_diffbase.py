"""The operator's kopf diff base builds exactly kopf's essence, without copying the rest.

kopf builds the essence of every event of a resource with change handlers; its own build deep
copies the whole body (status, managedFields) and drops most of it. `LeanDiffBase` must give
the same essence, or kopf would see changes that did not happen (or miss real ones).
"""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest

from lorapack import labels
from lorapack.handlers.startup import LeanDiffBase

BODIES: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"}},
    {
        "apiVersion": "lorapack.io/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {
            "name": "chat",
            "namespace": "team-a",
            "uid": "u",
            "resourceVersion": "7",
            "generation": 3,
            "labels": {"team": "a"},
            "annotations": {
                f"{labels.GROUP}/last-handled-configuration": "{}",
                f"{labels.GROUP}/adapter_deleted": "{}",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "owner": "ml",
            },
            "finalizers": [labels.FINALIZER],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"baseModel": "llama", "source": {"s3": {"uri": "s3://b/p/"}}, "x": [1, {}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "artifact": {}},
    },
    {
        "apiVersion": "v1",
        "kind": "X",
        "metadata": {"name": "b", "labels": {}, "annotations": {}},
        "spec": {},
        "data": {"k": "v"},
        "status": {"a": 1},
    },
]


@pytest.mark.parametrize("body", BODIES)
def test_lean_essence_is_kopfs_essence(body: dict[str, Any]) -> None:
    ours = LeanDiffBase(prefix=labels.GROUP, key="last-handled-configuration")
    theirs = kopf.AnnotationsDiffBaseStorage(prefix=labels.GROUP, key="last-handled-configuration")
    kbody = kopf.Body(cast(kopf.RawBody, body))
    assert ours.build(body=kbody) == theirs.build(body=kbody)
    fields = ["status.conditions"]
    assert ours.build(body=kbody, extra_fields=fields) == theirs.build(
        body=kbody, extra_fields=fields
    )


def test_the_essence_is_a_copy() -> None:
    body = BODIES[1]
    essence = LeanDiffBase().build(body=kopf.Body(cast(kopf.RawBody, body)))
    cast(dict[str, Any], essence)["spec"]["x"][1]["changed"] = True
    assert body["spec"]["x"][1] == {}


def test_adapters_keep_no_diff_base_and_pools_keep_kopfs() -> None:
    storage = LeanDiffBase(
        stateless=[labels.ADAPTER_KIND], prefix=labels.GROUP, key="last-handled-configuration"
    )
    adapter = kopf.Body(cast(kopf.RawBody, BODIES[1]))  # it carries an old essence annotation
    patch = kopf.Patch()
    essence = storage.build(body=adapter)
    storage.store(body=adapter, patch=patch, essence=essence)
    assert storage.fetch(body=adapter) is None
    assert not patch  # no PATCH per adapter created or changed
    pool_body = dict(BODIES[1], kind=labels.POOL_KIND)
    pool = kopf.Body(cast(kopf.RawBody, pool_body))
    essence = storage.build(body=pool)
    assert essence["spec"] == pool_body["spec"]
    storage.store(body=pool, patch=patch, essence=essence)
    stored = patch["metadata"]["annotations"][f"{labels.GROUP}/last-handled-configuration"]
    assert '"baseModel"' in stored
