"""The pool pass makes the engine's key Secret and NetworkPolicy (issue 11, item 3).

The key is random and written once: a later pass (a new pool generation, a restarted operator,
each with a fresh random candidate) never replaces it, so a pod's engine and agent never end up
with different keys. A same-named Secret that is not the pool's is never taken over. The
NetworkPolicy admits the pool's own pods and the configured gateway namespaces.
"""

from __future__ import annotations

import base64
from dataclasses import replace

from lorapack.reconcilers.pool import reconcile_pool
from lorapack.reconcilers.poolworld import PoolSettings
from tests.component.test_pool_reconciler import D1, SETTINGS, Cluster, adapter, pool
from tests.fakes.writers import FakeClaims

FIRST, SECOND, THIRD = ("a" * 43, "b" * 43, "c" * 43)
KEY = ("Secret", "ml-platform", "llama3-8b-engine-key")
POLICY = ("NetworkPolicy", "ml-platform", "llama3-8b-engine")


def _key(cluster: Cluster) -> str:
    return base64.b64decode(cluster.writer.objects[KEY]["data"]["api-key"]).decode()


async def _pass(cluster: Cluster, candidate: str, settings: PoolSettings = SETTINGS) -> None:
    world = replace(cluster.world(), new_engine_key=candidate)
    outcome = await reconcile_pool(
        world, cluster.writer, cluster.presigner, settings, cluster.claims
    )
    if outcome.owned_applied:
        cluster.owned = cluster.pool.metadata.generation
    if outcome.statefulset_applied:
        cluster.replicas = outcome.desired_replicas


async def test_the_key_is_made_once_and_never_replaced() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1)])
    await _pass(cluster, FIRST)
    assert _key(cluster) == FIRST
    assert cluster.writer.objects[KEY]["immutable"] is True
    # A new generation and a restarted operator (no claims): fresh candidates, same key.
    cluster.owned = None
    await _pass(cluster, SECOND)
    cluster.claims = FakeClaims()
    cluster.owned = None
    await _pass(cluster, THIRD)
    assert _key(cluster) == FIRST
    writes = [c for c in cluster.writer.calls if c[1:] == KEY]
    assert all(kind == "create" for kind, *_ in writes), writes


async def test_a_foreign_secret_of_that_name_is_not_taken_over() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1)])
    foreign = {"apiVersion": "v1", "kind": "Secret", "data": {"api-key": "Zm9yZWlnbg=="},
               "metadata": {"name": KEY[2], "namespace": KEY[1]}}  # fmt: skip
    cluster.writer.objects[KEY] = foreign
    await _pass(cluster, FIRST)
    assert cluster.writer.objects[KEY] is foreign
    assert ("apply", *KEY) not in cluster.writer.calls


async def test_the_policy_admits_the_pool_and_the_gateway_only() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1)])
    gateway = {"kubernetes.io/metadata.name": "gateway-system"}
    await _pass(cluster, FIRST, replace(SETTINGS, gateway_namespaces=gateway))
    rule = cluster.writer.objects[POLICY]["spec"]["ingress"]
    assert rule[0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert rule[0]["from"] == [
        {"podSelector": {"matchLabels": {"lorapack.io/pool": "llama3-8b"}}},
        {"namespaceSelector": {"matchLabels": gateway}},
    ]


async def test_no_policy_when_turned_off() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1)])
    await _pass(cluster, FIRST, replace(SETTINGS, network_policy=False))
    assert POLICY not in cluster.writer.objects
    assert KEY in cluster.writer.objects
