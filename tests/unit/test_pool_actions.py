"""Ordering invariants of a pool pass's actions (`reconcilers.poolplan.ordered_actions`), pure.

Worlds are built by converging the fake cluster of the component tests, then changing one thing
(an adapter deleted, a new version, fewer adapters so pods drain, a pod lost). For each, the
list of actions must satisfy:

* drain before unload: a pod whose desired state drops or switches an adapter has left that
  adapter's routing in an earlier phase;
* a new version is loaded on one pod before the old one leaves the other;
* an adapter with replicas.min >= 2 never has all its serving copies dropped in one pass;
* the pool's own objects come before anything written for adapters;
* a settled world produces no action.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from lorapack.api.podstate import DesiredState
from lorapack.reconcilers.actions import Action, Ensure, Phase, PublishDesired, Remove
from lorapack.reconcilers.poolplan import ordered_actions
from lorapack.reconcilers.poolworld import PoolWorld
from tests.component.test_pool_reconciler import D1, D2, SETTINGS, Cluster, adapter, converge, pool

PAIR = {"replicas": {"min": 2, "max": 2}}


def _slice_after(actions: list[Action], name: str) -> tuple[int, set[str]] | None:
    """(phase, pods) of the action rewriting slice `name`, or None."""
    for action in actions:
        if isinstance(action, Remove) and f"{action.namespace}/{action.name}" == name:
            return action.phase, set()
        if isinstance(action, Ensure) and action.obj.get("kind") == "EndpointSlice":
            meta = action.obj["metadata"]
            if f"{meta['namespace']}/{meta['name']}" == name:
                return action.phase, {e["targetRef"]["name"] for e in action.obj["endpoints"]}
    return None


def check_invariants(world: PoolWorld, actions: list[Action]) -> None:
    phases = [a.phase for a in actions]
    assert phases == sorted(phases)
    first_adapter = next((i for i, a in enumerate(actions) if a.subject), len(actions))
    assert all(a.phase != Phase.OWNED for a in actions[first_adapter:])
    before: dict[int, DesiredState] = dict(world.desired.get("ml-platform/llama3-8b", {}))
    after = dict(before)
    for action in actions:
        if isinstance(action, PublishDesired):
            after[action.ordinal] = action.state
    for ordinal, old in before.items():
        pod = f"llama3-8b-{ordinal}"
        new = {a.adapter: a.digest for a in after[ordinal].adapters} if ordinal in after else {}
        publish = next(
            (a for a in actions if isinstance(a, PublishDesired) and a.ordinal == ordinal), None
        )
        for entry in old.adapters:
            if new.get(entry.adapter) == entry.digest:
                continue  # kept as it was
            name = entry.adapter.split("/")[1]
            slice_key = f"team-a/{name}-llama3-8b"
            routed = {e.pod for e in world.slices.get(slice_key, ())}
            if pod not in routed:
                continue
            rewrite = _slice_after(actions, slice_key)
            assert rewrite is not None, f"{pod} drops {entry.adapter} while still routed"
            phase, pods = rewrite
            assert pod not in pods
            assert publish is None or phase < publish.phase
    for a in world.adapters:
        if a.spec.replicas.min < 2 or a.metadata.deletion_timestamp:
            continue
        key = f"{a.metadata.namespace}/{a.metadata.name}"
        serving = [
            o for o, s in before.items() for e in s.adapters if e.adapter == key
        ]  # fmt: skip
        kept = [
            o
            for o in serving
            if o in after
            and any(e.adapter == key and e.digest == d for e in after[o].adapters
                    for d in [next(x.digest for x in before[o].adapters if x.adapter == key)])
        ]  # fmt: skip
        assert not serving or kept, f"{key} loses every serving copy in one pass"


async def scenario_delete() -> Cluster:
    cluster = Cluster(pool(), [adapter("chat", D1), adapter("sql", D2)])
    await converge(cluster)
    cluster.deleting = frozenset({"team-a/chat"})
    return cluster


async def scenario_new_version() -> Cluster:
    p = pool(replicas={"min": 2, "max": 2}, adapters={"maxPerReplica": 4})
    cluster = Cluster(p, [adapter("chat", D1, **PAIR)])
    await converge(cluster)
    cluster.adapters = [adapter("chat", D2, **PAIR)]
    return cluster


async def scenario_drain() -> Cluster:
    p = pool(replicas={"min": 1, "max": 3}, adapters={"maxPerReplica": 2})
    many = [adapter(f"a{i}", "sha256:" + str(i) * 64) for i in range(5)]
    cluster = Cluster(p, many)
    await converge(cluster)
    cluster.adapters = many[:2]
    return cluster


async def scenario_pair_drain() -> Cluster:
    p = pool(replicas={"min": 1, "max": 4}, adapters={"maxPerReplica": 2})
    many = [adapter(f"p{i}", "sha256:" + str(i) * 64, **PAIR) for i in range(4)]
    cluster = Cluster(p, many)
    await converge(cluster)
    cluster.adapters = many[:1]
    return cluster


SCENARIOS: dict[str, Callable[[], Awaitable[Cluster]]] = {
    "adapter deleted": scenario_delete,
    "new version": scenario_new_version,
    "pods drained": scenario_drain,
    "replicas.min 2 adapters drained": scenario_pair_drain,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_actions_keep_the_ordering_invariants(name: str) -> None:
    cluster = await SCENARIOS[name]()
    for _ in range(6):  # every pass until it settles, not just the first
        world = cluster.world()
        _, actions = ordered_actions(world, cluster.settings)
        check_invariants(world, actions)
        await cluster.step()
        cluster.agents_catch_up()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_a_settled_world_needs_no_action(name: str) -> None:
    cluster = await SCENARIOS[name]()
    await converge(cluster, rounds=8)
    _, actions = ordered_actions(cluster.world(), SETTINGS)
    assert actions == []


def test_pool_objects_come_first_on_a_first_pass() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1)])
    _, actions = ordered_actions(cluster.world(), SETTINGS)
    kinds = [(a.subject, a.obj["kind"]) for a in actions if isinstance(a, Ensure)]
    owned = [k for s, k in kinds if not s]
    assert {"ServiceAccount", "Role", "RoleBinding", "Service", "PodDisruptionBudget",
            "StatefulSet"} <= set(owned)  # fmt: skip
    first_adapter = next(i for i, a in enumerate(actions) if a.subject)
    assert all(not a.subject or a.phase != Phase.OWNED for a in actions[first_adapter:])
