"""The pool loop's pass against fakes: what it writes, in which order, and that a settled world
writes nothing. Agents are simulated by turning desired states into pod reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactObject, ArtifactStatus, LoraAdapter, LoraAdapterStatus
from lorapack.api.podstate import DesiredState
from lorapack.planning.pods import PodObservation, observe_pod
from lorapack.planning.rollout import Endpoint
from lorapack.reconcilers.pool import PoolOutcome, PoolSettings, PoolWorld, reconcile_pool
from tests.builders import make_adapter, make_pool
from tests.fakes.writers import FakeClaims, FakePresigner, FakeWriter
from tests.podbuilders import make_pod, observed

SETTINGS = PoolSettings(agent_image="lorapack:test")
NOW = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def pool(**spec: Any) -> BaseModelPool:
    body = make_pool(**spec)
    body["metadata"].update({"uid": "pool-uid", "generation": 1})
    return BaseModelPool.model_validate(body)


def adapter(name: str, digest: str, rank: int = 16, **spec: Any) -> LoraAdapter:
    body = make_adapter(name, "team-a", **spec)
    body["metadata"].update({"uid": f"uid-{name}", "generation": 1})
    model = LoraAdapter.model_validate(body)
    return model.model_copy(
        update={
            "status": LoraAdapterStatus(
                artifact=ArtifactStatus(
                    rank=rank,
                    size_bytes=1000,
                    digest=digest,
                    uri=model.spec.source.s3.uri,
                    validated_generation=1,
                    objects=[ArtifactObject(path="adapter_model.safetensors", size=1000)],
                )
            )
        }
    )


class Cluster:
    """The fake world: desired states as written, pods as simulated agents report them."""

    def __init__(self, p: BaseModelPool, adapters: list[LoraAdapter]) -> None:
        self.pool = p
        self.adapters = adapters
        self.writer = FakeWriter()
        self.presigner = FakePresigner()
        self.reported: dict[int, DesiredState] = {}
        self.replicas: int | None = None
        self.owned: int | None = None
        self.deleting: frozenset[str] = frozenset()
        self.claims = FakeClaims()
        self.settings = SETTINGS

    def pods(self) -> list[PodObservation]:
        out = []
        for ordinal in range(self.replicas or 0):
            state = self.reported.get(ordinal)
            report = observed(
                *((a.served_name, a.digest, "Loaded") for a in (state.adapters if state else []))
            )
            pod = observe_pod(make_pod(ordinal=ordinal, node=f"node-{ordinal}", report=report))
            assert pod is not None
            out.append(pod)
        return out

    def world(self) -> PoolWorld:
        key = "ml-platform/llama3-8b"
        return PoolWorld(
            pool=self.pool,
            group=[self.pool],
            adapters=self.adapters,
            deleting=self.deleting,
            pods={key: self.pods()},
            desired={key: self.writer.desired()},
            slices=self._slices(),
            statefulset_replicas=self.replicas,
            owned_applied_generation=self.owned,
            now=NOW,
            services=self.writer.services(),
        )

    def _slices(self) -> dict[str, tuple[Endpoint, ...]]:
        """The EndpointSlices as the index would hold them (read back from the writer)."""
        out = {}
        for name, obj in self.writer.of_kind("EndpointSlice").items():
            eps = [
                Endpoint(
                    ip=e["addresses"][0],
                    pod=e["targetRef"]["name"],
                    namespace=e["targetRef"]["namespace"],
                    node=e.get("nodeName"),
                )
                for e in obj["endpoints"]
            ]
            out[f"{obj['metadata']['namespace']}/{name}"] = tuple(sorted(eps))
        return out

    async def step(self) -> PoolOutcome:
        before = len(self.writer.calls)
        outcome = await reconcile_pool(
            self.world(), self.writer, self.presigner, self.settings, self.claims
        )
        if outcome.statefulset_applied:
            self.replicas = outcome.desired_replicas
        if outcome.owned_applied:
            self.owned = self.pool.metadata.generation
        self.last_writes = self.writer.calls[before:]
        return outcome

    def agents_catch_up(self) -> None:
        self.reported = dict(self.writer.desired())


D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


async def converge(cluster: Cluster, rounds: int = 6) -> PoolOutcome:
    outcome = await cluster.step()
    for _ in range(rounds):
        cluster.agents_catch_up()
        outcome = await cluster.step()
    return outcome


async def test_first_pass_creates_owned_objects_and_places_adapters() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1), adapter("sql", D2)])
    outcome = await cluster.step()
    kinds = {k for k, _, _ in cluster.writer.objects}
    assert {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "PodDisruptionBudget",
        "StatefulSet",
        "Secret",
    } <= kinds
    assert outcome.desired_replicas == 1
    state = cluster.writer.desired()[0]
    assert sorted(a.served_name for a in state.adapters) == ["chat", "sql"]
    assert state.revision == 1 and state.max_lora_rank == 64
    entry = state.adapters[0]
    assert entry.access == "pool" and entry.s3 is not None
    assert entry.files[0].key == "team-a/chat/adapter_model.safetensors"
    assert outcome.placements["team-a/chat"].pool == "ml-platform/llama3-8b"


async def test_settled_world_writes_nothing() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1), adapter("sql", D2)])
    await converge(cluster)
    await cluster.step()
    assert cluster.last_writes == []


async def test_routing_follows_reports() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1)])
    await cluster.step()
    assert cluster.writer.slices() == {}  # placed, not loaded yet: no slice to write
    cluster.agents_catch_up()
    outcome = await cluster.step()
    assert cluster.writer.slices() == {"team-a/chat-llama3-8b": ["llama3-8b-0"]}
    assert outcome.placements["team-a/chat"].serving == ("llama3-8b-0",)


async def test_presigned_access_for_adapters_with_their_own_credentials() -> None:
    secret_ref = {
        "source": {
            "s3": {"uri": "s3://adapters/team-a/chat/", "credentialsSecretRef": {"name": "team-s3"}}
        }
    }
    cluster = Cluster(pool(), [adapter("chat", D1, **secret_ref)])
    await cluster.step()
    entry = cluster.writer.desired()[0].adapters[0]
    assert entry.access == "presigned"
    assert entry.files[0].url is not None and entry.files[0].key is None
    assert entry.urls_expire_at is not None
    calls = cluster.presigner.calls
    await converge(cluster)
    assert cluster.presigner.calls == calls  # URLs reused until they near expiry


async def test_scale_out_and_in_follow_capacity() -> None:
    p = pool(
        replicas={"min": 1, "max": 3},
        adapters={"maxPerReplica": 2, "allowedNamespaces": ["team-a"]},
    )
    adapters = [adapter(f"a{i}", "sha256:" + str(i) * 64) for i in range(5)]
    cluster = Cluster(p, adapters)
    outcome = await converge(cluster)
    assert outcome.desired_replicas == 3
    assert outcome.status.capacity.slots_total == 6
    cluster.adapters = adapters[:1]
    outcome = await converge(cluster)
    assert outcome.desired_replicas == 1
    assert set(cluster.writer.desired()) == {0}  # the removed pods' Secrets are gone


async def test_deleting_adapter_leaves_routing_and_desired_state() -> None:
    cluster = Cluster(pool(), [adapter("chat", D1), adapter("sql", D2)])
    await converge(cluster)
    cluster.deleting = frozenset({"team-a/chat"})
    await cluster.step()
    writes = cluster.last_writes
    slice_write = writes.index(("delete", "EndpointSlice", "team-a", "chat-llama3-8b"))
    secret_write = writes.index(("apply", "Secret", "ml-platform", "llama3-8b-0-adapters"))
    assert slice_write < secret_write  # routing first, then the agent is told
    assert "team-a/chat-llama3-8b" not in cluster.writer.slices()
    assert [a.served_name for a in cluster.writer.desired()[0].adapters] == ["sql"]


async def test_version_change_rolls_one_pod_at_a_time() -> None:
    p = pool(
        replicas={"min": 2, "max": 2},
        adapters={"maxPerReplica": 4, "allowedNamespaces": ["team-a"]},
    )
    cluster = Cluster(p, [adapter("chat", D1, replicas={"min": 2, "max": 2})])
    await converge(cluster)
    cluster.adapters = [adapter("chat", D2, replicas={"min": 2, "max": 2})]
    await cluster.step()
    digests = {o: s.adapters[0].digest for o, s in cluster.writer.desired().items()}
    assert sorted(digests.values()) == [D1, D2]  # exactly one pod switches
    assert len(cluster.writer.slices()["team-a/chat-llama3-8b"]) == 1  # the other keeps serving
    await converge(cluster)
    digests = {o: s.adapters[0].digest for o, s in cluster.writer.desired().items()}
    assert set(digests.values()) == {D2}
    assert len(cluster.writer.slices()["team-a/chat-llama3-8b"]) == 2


async def test_unplaceable_adapter_is_reported_with_the_planners_reason() -> None:
    cluster = Cluster(pool(), [adapter("huge", D1, rank=128)])
    outcome = await cluster.step()
    placement = outcome.placements["team-a/huge"]
    assert placement.unplaceable is not None
    assert placement.unplaceable.reason == "RankTooLarge"
    assert cluster.writer.desired().get(0) is None or not cluster.writer.desired()[0].adapters
