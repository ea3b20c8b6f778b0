"""The operator end to end: real control plane with simulated GPU nodes, real S3 server, agents
and engine doubles as processes for every pool pod, traffic through EndpointSlices.

Each test gets its own namespace (the pool lives there) and cleans up after itself, so the four
simulated L20 GPUs are free for the next test.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from lorapack_testworld.artifacts import ArtifactIndex
from tests.integration.conftest import E2E

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def placements(obj: dict[str, Any]) -> dict[str, str]:
    return {p["pod"]: p["state"] for p in (obj.get("status") or {}).get("placements") or []}


def pool_pods(e: E2E, pool: str) -> list[dict[str, Any]]:
    data = e.cluster.get_json("pods", "-n", e.namespace, "-l", f"lorapack.io/pool={pool}")
    return list(data["items"])


TEAMS = (
    ("team-a", "support-bot", "r8"),
    ("team-b", "summarizer", "r16"),
    ("team-c", "sql-helper", "r64"),
)


def test_three_teams_pack_onto_one_l20_pod_and_are_served(e: E2E, artifacts: ArtifactIndex) -> None:
    teams = [e.new_namespace(team) for team, _, _ in TEAMS]
    e.apply(e.pool("shared", adapters={"allowedNamespaces": [e.namespace, *teams]}))
    # team-a keeps its own S3 credentials: the operator hands its pod presigned URLs instead.
    e.apply(e.s3_secret("team-s3", namespace=teams[0]))
    for ns, (_, name, artifact) in zip(teams, TEAMS, strict=True):
        extra = {}
        if ns == teams[0]:
            extra = {"credentialsSecretRef": {"name": "team-s3"}}
        body = e.adapter(name, artifact, namespace=ns)
        body["spec"]["source"]["s3"].update(extra)
        e.apply(body)
    for ns, (_, name, _) in zip(teams, TEAMS, strict=True):
        e.wait(f"{ns}/{name} Ready", lambda n=name, t=ns: e.ready(n, t), timeout=120)
    pods = pool_pods(e, "shared")
    assert len(pods) == 1  # three adapters, one GPU
    pod = pods[0]
    node = e.cluster.get_json("node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-L20"
    for ns, (_, name, artifact) in zip(teams, TEAMS, strict=True):
        obj = e.ready(name, ns)
        assert obj is not None
        status = obj["status"]
        assert placements(obj) == {pod["metadata"]["name"]: "Loaded"}
        assert status["readyReplicas"] == 1
        assert status["artifact"]["rank"] == int(artifact[1:])
        assert status["endpoint"] == f"http://{name}.{ns}.svc:8000/v1"
        reply = e.chat(name, ns)
        assert reply.status_code == 200, reply.text
        text = reply.json()["choices"][0]["message"]["content"]
        # The double names the adapter and the sha256 of the weights it really loaded.
        assert f"adapter={name}" in text
        assert (artifacts.adapter(artifact).digest or "").removeprefix("sha256:")[:12] in text


def test_served_names_must_be_unique_per_base_model(e: E2E) -> None:
    e.apply(e.pool("names"))
    e.apply(e.adapter("chat", "r8"))
    e.wait("first adapter Ready", lambda: e.ready("chat"))
    e.apply(e.adapter("chat-copy", "r16", servedName="chat"))
    obj = e.wait(
        "the second adapter to be Stalled",
        lambda: (
            (o := e.try_get("lora", "chat-copy"))
            and e.condition(o, "Stalled").get("status") == "True"
            and o
        ),
    )
    stalled = e.condition(obj, "Stalled")
    assert stalled["reason"] == "ServedNameConflict"
    assert f"{e.namespace}/chat" in stalled["message"]
    assert e.ready("chat") is not None  # the first keeps serving


def test_rank_128_on_a_rank_64_pool_explains_itself(e: E2E) -> None:
    e.apply(e.pool("limits"))
    e.apply(e.adapter("too-big", "r128"))
    obj = e.wait(
        "RankTooLarge",
        lambda: (
            (o := e.try_get("lora", "too-big"))
            and e.condition(o, "Stalled").get("reason") == "RankTooLarge"
            and o
        ),
    )
    ready = e.condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "RankTooLarge"
    assert "128" in ready["message"] and "64" in ready["message"]
    assert ready["observedGeneration"] == obj["metadata"]["generation"]
    events = e.cluster.get_json("events", "-n", e.namespace)["items"]
    assert any(ev.get("reason") == "RankTooLarge" for ev in events)


def test_pool_scales_out_for_capacity_and_back_in_when_adapters_go(e: E2E) -> None:
    e.apply(
        e.pool(
            "elastic",
            replicas={"min": 1, "max": 3},
            adapters={"maxPerReplica": 2, "allowedNamespaces": [e.namespace]},
        )
    )
    names = [f"a{i}" for i in range(5)]
    for i, name in enumerate(names):
        e.apply(e.adapter(name, ("r8", "r16")[i % 2]))
    for name in names:
        e.wait(f"{name} Ready", lambda n=name: e.ready(n), timeout=120)
    assert len(pool_pods(e, "elastic")) == 3
    pool = e.get("bmp", "elastic")
    assert pool["status"]["desiredReplicas"] == 3
    assert pool["status"]["capacity"] == {"slotsTotal": 6, "slotsUsed": 5}
    for name in names[1:]:
        e.cluster.kubectl("delete", "lora", name, "-n", e.namespace, "--wait=false")
    e.wait("scale in to 1 pod", lambda: len(pool_pods(e, "elastic")) == 1, timeout=120)
    assert e.ready(names[0]) is not None


def test_pool_without_gpus_left_reports_unschedulable(e: E2E) -> None:
    e.apply(
        e.pool(
            "greedy",
            gpu={
                "type": "L20",
                "count": 2,
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L20"},
            },
        )
    )
    obj = e.wait(
        "Unschedulable",
        lambda: (
            (o := e.try_get("bmp", "greedy"))
            and e.condition(o, "Stalled").get("reason") == "Unschedulable"
            and o
        ),
    )
    message = e.condition(obj, "Stalled")["message"]
    assert "nvidia.com/gpu" in message and "greedy-0" in message


def test_deleted_pod_gets_its_adapters_back(e: E2E) -> None:
    e.apply(e.pool("heal"))
    e.apply(e.adapter("keep-me", "r16"))
    before = e.wait("Ready", lambda: e.ready("keep-me"))
    pod = next(iter(placements(before)))
    uid = e.get("pod", pod)["metadata"]["uid"]
    e.cluster.kubectl("delete", "pod", pod, "-n", e.namespace)
    e.wait(
        "a new pod with the adapter loaded",
        lambda: (
            (p := e.try_get("pod", pod))
            and p["metadata"]["uid"] != uid
            and (o := e.ready("keep-me"))
            and placements(o) == {pod: "Loaded"}
        ),
        timeout=90,
    )
    assert e.chat("keep-me").status_code == 200


def test_operator_restart_changes_no_placement(e: E2E) -> None:
    e.apply(
        e.pool(
            "steady",
            replicas={"min": 2, "max": 2},
            adapters={"maxPerReplica": 2, "allowedNamespaces": [e.namespace]},
        )
    )
    for name, artifact in (("x", "r8"), ("y", "r16"), ("z", "r64")):
        e.apply(e.adapter(name, artifact))
    for name in ("x", "y", "z"):
        e.wait(f"{name} Ready", lambda n=name: e.ready(n), timeout=90)

    def snapshot() -> dict[str, Any]:
        secrets = e.cluster.get_json(
            "secrets", "-n", e.namespace, "-l", "lorapack.io/role=desired-adapters"
        )
        return {
            s["metadata"]["name"]: (s["metadata"]["resourceVersion"], s["data"])
            for s in secrets["items"]
        }

    before = snapshot()
    e.operator.restart()
    time.sleep(8)  # more than a resync period: the loops have run
    assert snapshot() == before
    for name in ("x", "y", "z"):
        assert e.ready(name) is not None


def test_adapter_deletion_unloads_everywhere(e: E2E) -> None:
    e.apply(
        e.pool(
            "cleanup",
            replicas={"min": 2, "max": 2},
            adapters={"maxPerReplica": 4, "allowedNamespaces": [e.namespace]},
        )
    )
    e.apply(e.adapter("gone", "r8", replicas={"min": 2, "max": 2}))
    obj = e.wait(
        "two Loaded copies", lambda: (o := e.ready("gone")) and len(placements(o)) == 2 and o
    )
    pods = sorted(placements(obj))
    e.cluster.kubectl("delete", "lora", "gone", "-n", e.namespace, "--timeout=60s")
    for pod in pods:
        observed = e.get("pod", pod)["metadata"]["annotations"]["lorapack.io/observed"]
        assert '"servedName":"gone"' not in observed.replace(" ", "")
    assert e.try_get("endpointslice", "gone-cleanup") is None


def test_source_change_rolls_without_losing_service(e: E2E, artifacts: ArtifactIndex) -> None:
    e.apply(
        e.pool(
            "rolling",
            replicas={"min": 2, "max": 2},
            adapters={"maxPerReplica": 4, "allowedNamespaces": [e.namespace]},
        )
    )
    e.apply(e.adapter("versioned", "r8", replicas={"min": 2, "max": 2}))
    first = e.wait(
        "v1 on two pods",
        lambda: (o := e.ready("versioned")) and o["status"]["updatedReplicas"] == 2 and o,
    )
    old_digest = first["status"]["artifact"]["digest"]
    samples: list[int] = []
    stop = threading.Event()

    def watch_ready() -> None:
        while not stop.is_set():
            obj = e.try_get("lora", "versioned")
            if obj:
                samples.append(int(obj["status"].get("readyReplicas", 0)))
            slices = e.cluster.get_json(
                "endpointslices", "-n", e.namespace, "-l", "kubernetes.io/service-name=versioned"
            )
            samples.append(sum(len(s.get("endpoints") or []) for s in slices["items"]))

    watcher = threading.Thread(target=watch_ready)
    watcher.start()
    try:
        e.apply(e.adapter("versioned", "r16", replicas={"min": 2, "max": 2}))
        done = e.wait(
            "v2 on both pods",
            lambda: (
                (o := e.ready("versioned"))
                and o["status"]["artifact"]["digest"] != old_digest
                and o["status"]["updatedReplicas"] == 2
                and o
            ),
            timeout=120,
        )
    finally:
        stop.set()
        watcher.join()
    assert samples and min(samples) >= 1, f"zero serving replicas during the rollout: {samples}"
    assert done["status"]["artifact"]["rank"] == 16
    reply = e.chat("versioned").json()["choices"][0]["message"]["content"]
    assert "adapter=versioned" in reply
    assert (artifacts.adapter("r16").digest or "").removeprefix("sha256:")[:12] in reply


def test_engine_restart_is_healed_by_the_agent(e: E2E) -> None:
    e.apply(e.pool("phoenix"))
    e.apply(e.adapter("survivor", "r8"))
    obj = e.wait("Ready", lambda: e.ready("survivor"))
    pod = next(iter(placements(obj)))
    assert e.admin(f"/pods/{e.namespace}/{pod}/restart-engine").status_code == 200
    e.wait(
        "the agent to report the engine restart and reload",
        lambda: (
            '"engineRestarts":1'
            in e.get("pod", pod)["metadata"]["annotations"]["lorapack.io/observed"]
            and e.ready("survivor")
        ),
        timeout=60,
    )
    assert e.chat("survivor").status_code == 200


@pytest.fixture
def e(e2e: E2E) -> E2E:
    return e2e
