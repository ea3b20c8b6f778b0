"""One object's failure never stops a pool pass for the others (issue 11, finding 0).

The pool pass against fakes whose writes fail on purpose: a refused Service, a foreign object
with an owned object's name, an EndpointSlice that cannot be removed, a full Service IP range,
a renamed adapter reaching for a served name in use, a pool name Kubernetes cannot derive
objects from. Each failure lands on its subject only; the healthy adapters keep being placed,
routed and reported. On the code before the executor (HEAD 6202934) the first failed write
raised out of the pass and nothing after it was written.
"""

from __future__ import annotations

import dataclasses

from lorapack.api import conditions as c
from lorapack.api.loraadapter import LoraAdapterStatus
from lorapack.errors import InvalidSpec, RetryableError
from lorapack.reconcilers.poolworld import PoolSettings
from tests.component.test_pool_reconciler import D1, D2, Cluster, adapter, converge, pool

D3 = "sha256:" + "3" * 64


async def test_a_refused_adapter_service_leaves_the_other_adapters_placed_and_routed() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1), adapter("bad", D2), adapter("sql", D3)])
    cluster.writer.fail[("Service", "team-a", "bad")] = InvalidSpec(
        'Service "bad" is invalid: metadata.name: Invalid value'
    )
    outcome = await converge(cluster)
    served = {a.served_name for a in cluster.writer.desired()[0].adapters}
    assert served == {"chat", "bad", "sql"}  # placement is not hostage to routing
    assert set(cluster.writer.services()) == {"team-a/chat", "team-a/sql"}
    assert set(cluster.writer.slices()) == {
        "team-a/chat-llama3-8b", "team-a/bad-llama3-8b", "team-a/sql-llama3-8b",
    }  # fmt: skip
    bad = outcome.placements["team-a/bad"].problem
    assert bad is not None and bad.reason == c.WRITE_REFUSED
    assert "Service team-a/bad" in bad.message and "Invalid value" in bad.message
    assert outcome.placements["team-a/chat"].problem is None
    assert outcome.placements["team-a/sql"].serving == ("llama3-8b-0",)
    ready = next(x for x in outcome.status.conditions if x.type == "Ready")
    assert ready.status == "True" and "1 with refused writes" in ready.message


async def test_a_foreign_object_with_an_owned_name_is_never_taken_over() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1), adapter("sql", D2)])
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "chat", "namespace": "team-a", "labels": {"team": "web"}},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80}]},
    }
    cluster.writer.objects[("Service", "team-a", "chat")] = foreign
    outcome = await converge(cluster)
    assert cluster.writer.objects[("Service", "team-a", "chat")] is foreign  # untouched
    problem = outcome.placements["team-a/chat"].problem
    assert problem is not None and problem.reason == c.OWNED_OBJECT_CONFLICT
    assert "Service team-a/chat already exists and is not lorapack's" in problem.message
    assert outcome.placements["team-a/sql"].problem is None
    assert "team-a/sql" in cluster.writer.services()


async def test_a_foreign_pool_object_is_reported_on_the_pool() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1)])
    cluster.writer.objects[("Service", "ml-platform", "llama3-8b-pods")] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "llama3-8b-pods", "namespace": "ml-platform"},
        "spec": {},
    }
    outcome = await cluster.step()
    stalled = next(x for x in outcome.status.conditions if x.type == "Stalled")
    assert stalled.status == "True" and stalled.reason == c.OWNED_OBJECT_CONFLICT
    assert "llama3-8b-pods" in stalled.message
    # Everything else of the pool is still written: its pods, their desired states.
    assert cluster.writer.replicas() == 1
    assert [a.served_name for a in cluster.writer.desired()[0].adapters] == ["chat"]
    assert not outcome.owned_applied  # tried again next pass


async def test_failed_unrouting_holds_the_adapter_on_its_pod() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1), adapter("sql", D2)])
    await converge(cluster)
    cluster.deleting = frozenset({"team-a/chat"})
    cluster.writer.fail[("EndpointSlice", "team-a", "chat-llama3-8b")] = RetryableError(
        "etcdserver: request timed out", reason="ApiUnavailable"
    )
    outcome = await cluster.step()
    # The slice still routes to the pod, so the pod must keep the adapter loaded.
    assert {a.served_name for a in cluster.writer.desired()[0].adapters} == {"chat", "sql"}
    assert outcome.retry
    del cluster.writer.fail[("EndpointSlice", "team-a", "chat-llama3-8b")]
    await cluster.step()
    assert {a.served_name for a in cluster.writer.desired()[0].adapters} == {"sql"}
    assert "team-a/chat-llama3-8b" not in cluster.writer.slices()


async def test_a_full_service_ip_range_is_a_condition_on_the_adapter() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1), adapter("sql", D2)])
    cluster.settings = dataclasses.replace(cluster.settings, service_type="ClusterIP")
    cluster.writer.fail[("Service", "team-a", "sql")] = RetryableError(
        "Internal error occurred: failed to allocate a serviceIP: range is full",
        reason="ApiUnavailable",
    )
    outcome = await converge(cluster)
    problem = outcome.placements["team-a/sql"].problem
    assert problem is not None and problem.reason == c.SERVICE_IPS_EXHAUSTED
    assert "Headless" in problem.message
    assert outcome.placements["team-a/chat"].problem is None
    assert not cluster.writer.services()["team-a/chat"].headless


async def test_switching_service_type_recreates_the_services() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1)])
    await converge(cluster)
    assert cluster.writer.services()["team-a/chat"].headless
    cluster.settings = dataclasses.replace(cluster.settings, service_type="ClusterIP")
    await cluster.step()
    assert "team-a/chat" not in cluster.writer.services()  # cluster IPs cannot change in place
    await cluster.step()
    assert not cluster.writer.services()["team-a/chat"].headless


async def test_a_renamed_adapter_cannot_take_a_served_name_in_use() -> None:
    incumbent = adapter("chat-v2", D1, servedName="chat")
    incumbent = incumbent.model_copy(
        update={
            "metadata": incumbent.metadata.model_copy(
                update={"creation_timestamp": "2026-11-20T00:00:00Z"}
            ),
            "status": LoraAdapterStatus(
                served_name="chat", artifact=incumbent.status.artifact if incumbent.status else None
            ),
        }
    )
    older = adapter("legacy", D2)
    older = older.model_copy(
        update={
            "metadata": older.metadata.model_copy(
                update={"creation_timestamp": "2026-01-01T00:00:00Z"}
            ),
            # Renamed onto the incumbent's name after it had been validated as "legacy".
            "spec": older.spec.model_copy(update={"served_name": "chat"}),
            "status": LoraAdapterStatus(
                served_name="legacy", artifact=older.status.artifact if older.status else None
            ),
        }
    )
    cluster = Cluster(pool(), [incumbent, older])
    outcome = await converge(cluster)
    entries = cluster.writer.desired()[0].adapters
    assert [(a.served_name, a.adapter) for a in entries] == [("chat", "team-a/chat-v2")]
    refused = outcome.placements["team-a/legacy"]
    assert refused.pool is None and refused.unplaceable is not None
    assert refused.unplaceable.reason == c.SERVED_NAME_CONFLICT
    assert "team-a/chat-v2" in refused.unplaceable.message


async def test_a_pool_name_kubernetes_cannot_derive_names_from_is_refused_in_status() -> None:
    long_name = "a" * 60
    p = pool()
    p = p.model_copy(update={"metadata": p.metadata.model_copy(update={"name": long_name})})
    cluster = Cluster(p, [adapter("chat", D1)])
    outcome = await cluster.step()
    assert cluster.writer.calls == []
    stalled = next(x for x in outcome.status.conditions if x.type == "Stalled")
    assert stalled.reason == c.INVALID_NAME and "at most 52" in stalled.message


def test_settings_default_to_headless_services() -> None:
    assert PoolSettings(agent_image="x").service_type == "Headless"
