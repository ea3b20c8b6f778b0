"""The local control plane is a real Kubernetes and is useful for lorapack (integration tier).

Proves, against etcd + kube-apiserver + controller-manager + scheduler + kwok built from Go
modules (the test world's devcluster): lorapack's CRDs install; valid objects are accepted and
invalid ones are refused by the API server with messages naming the field; the scheduler does
real GPU accounting on the simulated nodes; kwok runs pods like a kubelet (documentation-range IPs,
graceful deletion, readiness gates honoured); kubectl, helm and the Python client work; every
listener is on 127.0.0.1 and stopping leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lorapack.labels import SYNCED_CONDITION
from lorapack_testworld.devcluster import (
    POD_CIDR,
    SERVICE_CIDR,
    ClusterError,
    DevCluster,
    NodeShape,
    parse_node_spec,
)
from lorapack_testworld.devcluster.processes import listening_sockets
from lorapack_testworld.devcluster.tools import cache_root
from tests.builders import deep_merge, make_adapter, make_pool

L20_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-L20"}
IMAGE = "vllm/vllm-openai:v0.33.0"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def create(cluster: DevCluster, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("create", "-f", "-", input=json.dumps(obj), check=False)


def created(cluster: DevCluster, obj: dict[str, Any]) -> None:
    result = create(cluster, obj)
    assert result.returncode == 0, f"creating {obj['kind']} failed: {result.stderr}"


def pod(name: str, namespace: str, gpus: int = 1, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "engine",
                    "image": IMAGE,
                    "resources": {"limits": {"nvidia.com/gpu": gpus}},
                }
            ]
        },
    }
    return deep_merge(base, {"spec": spec})


def deployment(name: str, namespace: str, replicas: int, gpus: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": L20_SELECTOR,
                    "containers": [
                        {
                            "name": "engine",
                            "image": IMAGE,
                            "resources": {"limits": {"nvidia.com/gpu": gpus}},
                        }
                    ],
                },
            },
        },
    }


def find_condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return None


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = find_condition(obj, kind)
    assert found is not None, f"no {kind} condition in {obj.get('status')}"
    return found


# ------------------------------------------------------------------------- the control plane


@pytest.mark.integration
def test_server_reports_the_stamped_kubernetes_version(devcluster: DevCluster) -> None:
    version = json.loads(devcluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"
    assert version["clientVersion"]["gitVersion"] == "v1.37.2"
    assert devcluster.server.startswith("https://127.0.0.1:")


@pytest.mark.integration
def test_every_listener_is_on_loopback(devcluster: DevCluster) -> None:
    sockets = devcluster.listening()
    by_name = {r.pid: r.name for r in devcluster.processes}
    listeners = sorted((by_name[pid or 0], addr, port) for pid, addr, port in sockets)
    assert {name for name, _, _ in listeners} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }, listeners
    assert all(addr == "127.0.0.1" for _, addr, _ in listeners), listeners
    declared = {port for r in devcluster.processes for port in r.ports}
    assert {port for _, _, port in listeners} == declared


@pytest.mark.integration
def test_default_nodes_are_ready_gpu_nodes_without_routed_addresses(
    devcluster: DevCluster,
) -> None:
    nodes = {n["metadata"]["name"]: n for n in devcluster.get_json("nodes")["items"]}
    assert sorted(nodes) == ["h100-0", "h100-1", "l20-0", "l20-1", "l20-2", "l20-3"]
    expected = {
        "l20": ("NVIDIA-L20", "46068", "1", "ada-lovelace"),
        "h100": ("NVIDIA-H100-80GB-HBM3", "81559", "8", "hopper"),
    }
    for name, node in nodes.items():
        product, memory, count, family = expected[name.split("-")[0]]
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.product"] == product
        assert labels["nvidia.com/gpu.memory"] == memory
        assert labels["nvidia.com/gpu.count"] == count
        assert labels["nvidia.com/gpu.family"] == family
        assert labels["nvidia.com/gpu.present"] == "true"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == count
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == count
        assert condition(node, "Ready")["status"] == "True"
        # Nothing may ever dial a fake node's address: it has no IP, and its Hostname and
        # kubelet port lead to kwok's server on loopback.
        assert node["status"]["addresses"] == [{"type": "Hostname", "address": "localhost"}]
        endpoint = node["status"]["daemonEndpoints"]["kubeletEndpoint"]
        assert endpoint["Port"] == devcluster.kubelet_port
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"


@pytest.mark.integration
@pytest.mark.slow
def test_nodes_keep_heartbeating(devcluster: DevCluster) -> None:
    """Leases renew and Ready heartbeats refresh, so nodes stay Ready for long runs."""

    def snapshot() -> tuple[dict[str, str], dict[str, str]]:
        leases = devcluster.get_json("leases", "-n", "kube-node-lease")["items"]
        nodes = devcluster.get_json("nodes")["items"]
        return (
            {lease["metadata"]["name"]: lease["spec"]["renewTime"] for lease in leases},
            {n["metadata"]["name"]: condition(n, "Ready")["lastHeartbeatTime"] for n in nodes},
        )

    leases, beats = snapshot()
    assert set(leases) == set(beats)
    wait_for(
        "every node lease to be renewed",
        lambda: all(snapshot()[0][n] != leases[n] for n in leases),
        timeout=30,
    )
    # kwok's heartbeat stage fires every 20-30 s: within the 50 s node-monitor grace period.
    wait_for(
        "every node's Ready heartbeat to refresh",
        lambda: all(snapshot()[1][n] != beats[n] for n in beats),
        timeout=40,
    )
    nodes = devcluster.get_json("nodes")["items"]
    assert all(condition(n, "Ready")["status"] == "True" for n in nodes)


# ----------------------------------------------------------------------------- lorapack's CRDs


@pytest.mark.integration
def test_lorapack_crds_are_established(devcluster: DevCluster, lorapack_crds: Path) -> None:
    for name in ("basemodelpools.lorapack.io", "loraadapters.lorapack.io"):
        crd = devcluster.get_json("crd", name)
        assert condition(crd, "Established")["status"] == "True"
        assert condition(crd, "NamesAccepted")["status"] == "True"
    resources = devcluster.kubectl("api-resources", "--api-group=lorapack.io", "-o", "name").stdout
    assert set(resources.split()) == {"basemodelpools.lorapack.io", "loraadapters.lorapack.io"}


@pytest.mark.integration
def test_valid_pool_and_adapter_are_accepted_and_defaulted(
    devcluster: DevCluster, lorapack_crds: Path, namespace: str
) -> None:
    pool = make_pool(namespace=namespace)
    adapter = make_adapter(namespace=namespace)
    for obj in (pool, adapter):
        created(devcluster, obj)
    stored_pool = devcluster.get_json("basemodelpool", "llama3-8b", "-n", namespace)
    assert stored_pool["spec"]["engine"]["maxLoraRank"] == 64
    # Defaults come from the CRD schema, applied by the API server.
    assert stored_pool["spec"]["engine"]["image"] == IMAGE
    assert stored_pool["spec"]["gpu"]["resourceName"] == "nvidia.com/gpu"
    stored_adapter = devcluster.get_json("loraadapter", "support-bot", "-n", namespace)
    assert stored_adapter["spec"]["replicas"] == {"min": 1, "max": 1}
    assert stored_adapter["spec"]["priority"] == 0
    # Short names and printer columns from the CRDs work in kubectl.
    table = devcluster.kubectl("get", "bmp,lora", "-n", namespace).stdout
    assert "llama3-8b" in table
    assert "support-bot" in table


SHA = "sha256:" + "a" * 64

# (object, field the server's message must name, fragment of the reason)
INVALID_OBJECTS = [
    pytest.param(
        make_pool(engine={"maxLoraRank": 24}),
        "spec.engine.maxLoraRank",
        'Unsupported value: 24: supported values: "1", "8", "16", "32", "64"',
        id="pool-maxLoraRank-not-a-vllm-rank",
    ),
    pytest.param(
        make_pool(engine={"maxLoras": "eight"}),
        "spec.engine.maxLoras",
        "must be of type integer",
        id="pool-maxLoras-wrong-type",
    ),
    pytest.param(
        make_pool(engine={"maxLoras": 0}),
        "spec.engine.maxLoras",
        "should be greater than or equal to 1",
        id="pool-maxLoras-below-minimum",
    ),
    pytest.param(
        make_pool(engine={"maxLoras": 8, "maxCpuLoras": 4}),
        "spec.engine",
        "engine.maxCpuLoras must be >= engine.maxLoras",
        id="pool-cel-maxCpuLoras-below-maxLoras",
    ),
    pytest.param(
        make_pool(replicas={"min": 5, "max": 2}),
        "spec.replicas",
        "replicas.min must be <= replicas.max",
        id="pool-cel-replicas-min-above-max",
    ),
    pytest.param(
        make_pool(replicas={"min": 5, "max": None}),
        "spec.replicas",
        "replicas.min must be <= replicas.max",
        id="pool-cel-replicas-min-above-defaulted-max",
    ),
    pytest.param(
        make_pool(baseModel=None),
        "spec.baseModel",
        "Required value",
        id="pool-missing-baseModel",
    ),
    pytest.param(
        make_pool(baseModel={"source": None}),
        "spec.baseModel.source",
        "Required value",
        id="pool-missing-baseModel-source",
    ),
    pytest.param(
        {k: v for k, v in make_pool().items() if k != "spec"},
        "spec",
        "Required value",
        id="pool-missing-spec",
    ),
    pytest.param(
        make_pool(baseModel={"source": {"pvc": {"claimName": "weights"}}}),
        "spec.baseModel.source",
        "set exactly one of source.s3 or source.pvc",
        id="pool-cel-both-s3-and-pvc",
    ),
    pytest.param(
        make_pool(baseModel={"source": {"s3": {"uri": "https://models/llama"}}}),
        "spec.baseModel.source.s3.uri",
        "should match '^s3://",
        id="pool-s3-uri-pattern",
    ),
    pytest.param(
        make_pool(engine={"dtype": "fp8"}),
        "spec.engine.dtype",
        'Unsupported value: "fp8"',
        id="pool-dtype-enum",
    ),
    pytest.param(
        make_pool(engine={"gpuMemoryUtilization": "1.5"}),
        "spec.engine.gpuMemoryUtilization",
        "should match",
        id="pool-gpuMemoryUtilization-pattern",
    ),
    pytest.param(
        make_pool(adapters={"allowedNamespaces": ["*", "team-a"]}),
        "spec.adapters",
        "'*' (all namespaces) must be the only entry",
        id="pool-cel-star-not-alone",
    ),
    pytest.param(
        make_pool(gpu={"count": 17}),
        "spec.gpu.count",
        "should be less than or equal to 16",
        id="pool-gpu-count-above-maximum",
    ),
    pytest.param(
        make_pool(gpu={"tolerations": [{"key": "gpu", "operator": "Maybe"}]}),
        "spec.gpu.tolerations[0].operator",
        'Unsupported value: "Maybe"',
        id="pool-toleration-operator-enum",
    ),
    pytest.param(
        make_pool(adapters={"cacheSize": "lots"}),
        "spec.adapters.cacheSize",
        "should match",
        id="pool-cacheSize-quantity-pattern",
    ),
    pytest.param(
        make_pool(engine={"maxLora": 8}),
        "spec.engine.maxLora",
        "unknown field",
        id="pool-unknown-field-strict-decoding",
    ),
    pytest.param(
        make_adapter(source=None),
        "spec.source",
        "Required value",
        id="adapter-missing-source",
    ),
    pytest.param(
        make_adapter(baseModel=None),
        "spec.baseModel",
        "Required value",
        id="adapter-missing-baseModel",
    ),
    pytest.param(
        make_adapter(rank=1024),
        "spec.rank",
        "should be less than or equal to 512",
        id="adapter-rank-above-maximum",
    ),
    pytest.param(
        make_adapter(replicas={"min": 0}),
        "spec.replicas.min",
        "should be greater than or equal to 1",
        id="adapter-replicas-min-zero",
    ),
    pytest.param(
        make_adapter(replicas={"min": 3, "max": 2}),
        "spec.replicas",
        "replicas.min must be <= replicas.max",
        id="adapter-cel-replicas-min-above-max",
    ),
    pytest.param(
        make_adapter(digests={"../adapter_model.safetensors": SHA}),
        "spec",
        "digests keys must be file names relative to source.s3.uri",
        id="adapter-cel-digest-key-escapes",
    ),
    pytest.param(
        make_adapter(digests={"adapter_model.safetensors": "md5:abc"}),
        "spec.digests",
        "should match '^sha256:",
        id="adapter-digest-value-pattern",
    ),
    pytest.param(
        make_adapter(source={"s3": {"versionIds": {"/etc/passwd": "v1"}}}),
        "spec.source.s3",
        "source.s3.versionIds keys must be file names relative to the URI",
        id="adapter-cel-versionIds-key-absolute",
    ),
    pytest.param(
        make_adapter(servedName="bad name!"),
        "spec.servedName",
        "should match",
        id="adapter-servedName-pattern",
    ),
    pytest.param(
        make_adapter(priority=5000),
        "spec.priority",
        "should be less than or equal to 1000",
        id="adapter-priority-above-maximum",
    ),
    pytest.param(
        make_adapter(source={"s3": {"addressingStyle": "dns"}}),
        "spec.source.s3.addressingStyle",
        'Unsupported value: "dns"',
        id="adapter-addressingStyle-enum",
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(("obj", "field", "reason"), INVALID_OBJECTS)
def test_api_server_rejects_invalid_objects_naming_the_field(
    devcluster: DevCluster,
    lorapack_crds: Path,
    namespace: str,
    obj: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    obj = deep_merge(obj, {"metadata": {"namespace": namespace}})
    result = create(devcluster, obj)
    assert result.returncode != 0, f"the API server accepted an invalid object: {obj}"
    message = result.stderr
    assert "Error from server" in message or "is invalid" in message, message
    assert field in message, message
    assert reason in message, message
    kind = obj["kind"].lower()
    assert devcluster.kubectl("get", kind, "-n", namespace, "-o", "name").stdout == ""


# --------------------------------------------------------------------- scheduling and kwok pods


def wait_until_l20_gpus_are_free(cluster: DevCluster) -> None:
    """Tests that count L20 GPUs first wait for pods of earlier tests (other tiers share the
    session's cluster) to release theirs."""

    def holders() -> list[str]:
        pods = cluster.get_json("pods", "-A")["items"]
        return [
            f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in pods
            if (p["spec"].get("nodeName") or "").startswith("l20-")
            and p["status"].get("phase") not in ("Succeeded", "Failed")
        ]

    wait_for("L20 GPUs held by other pods to be released", lambda: not holders(), timeout=60)


def pods_of(cluster: DevCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]
    return items


@pytest.mark.integration
def test_gpu_deployment_runs_on_l20_nodes_with_documentation_range_ips(
    devcluster: DevCluster, namespace: str
) -> None:
    wait_until_l20_gpus_are_free(devcluster)
    created(devcluster, deployment("engine", namespace, replicas=3))
    wait_for(
        "3 available replicas",
        lambda: (
            devcluster.get_json("deployment", "engine", "-n", namespace)["status"].get(
                "availableReplicas"
            )
            == 3
        ),
        timeout=60,
    )
    running = pods_of(devcluster, namespace, "app=engine")
    summary = [
        (
            p["metadata"]["name"],
            p["spec"].get("nodeName"),
            p["status"].get("phase"),
            p["status"].get("podIP"),
        )
        for p in running
    ]
    assert len(running) == 3, summary
    nodes = sorted(p["spec"]["nodeName"] for p in running)
    # One GPU per L20 node: three pods need three distinct L20 nodes.
    assert len(set(nodes)) == 3, summary
    assert all(n.startswith("l20-") for n in nodes), summary
    ips = []
    for p in running:
        assert p["status"]["phase"] == "Running", summary
        assert condition(p, "Ready")["status"] == "True", p["status"]
        ip = ipaddress.ip_address(p["status"]["podIP"])
        assert ip in ipaddress.ip_network(POD_CIDR), summary
        assert not ip.is_loopback
        ips.append(str(ip))
    assert len(set(ips)) == 3, summary

    # Pod IPs are valid endpoint addresses (loopback ones would be rejected by the API server).
    devcluster.kubectl(
        "create", "service", "clusterip", "engine", "--tcp=8000:8000", "-n", namespace
    )
    service = devcluster.get_json("service", "engine", "-n", namespace)
    assert ipaddress.ip_address(service["spec"]["clusterIP"]) in ipaddress.ip_network(SERVICE_CIDR)

    def endpoint_ips() -> set[str]:
        slices = devcluster.get_json(
            "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=engine"
        )["items"]
        return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}

    wait_for("EndpointSlice with the pod IPs", lambda: endpoint_ips() == set(ips))


@pytest.mark.integration
def test_scheduler_counts_gpus_and_reports_unschedulable(
    devcluster: DevCluster, namespace: str
) -> None:
    wait_until_l20_gpus_are_free(devcluster)
    # Five single-GPU pods for four L20 GPUs: exactly one must stay Pending.
    created(devcluster, deployment("crowd", namespace, replicas=5))
    # Nine GPUs on one pod: more than any node (H100 nodes have 8).
    created(devcluster, pod("huge", namespace, gpus=9))

    def settled() -> list[dict[str, Any]] | None:
        pods = pods_of(devcluster, namespace, "app=crowd")
        phases = sorted(p["status"].get("phase") for p in pods)
        return pods if phases == ["Pending", "Running", "Running", "Running", "Running"] else None

    pods = wait_for("4 Running and 1 Pending crowd pods", settled)
    pending = next(p for p in pods if p["status"]["phase"] == "Pending")
    scheduled = wait_for(
        "the Unschedulable condition",
        lambda: find_condition(
            devcluster.get_json("pod", pending["metadata"]["name"], "-n", namespace),
            "PodScheduled",
        ),
    )
    assert scheduled["status"] == "False"
    assert scheduled["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    huge = wait_for(
        "the Unschedulable condition of the 9-GPU pod",
        lambda: find_condition(devcluster.get_json("pod", "huge", "-n", namespace), "PodScheduled"),
    )
    assert huge["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in huge["message"]
    events = devcluster.get_json(
        "events", "-n", namespace, "--field-selector", "involvedObject.name=huge"
    )["items"]
    assert any(e["reason"] == "FailedScheduling" for e in events)


@pytest.mark.integration
def test_deleting_a_pod_completes(devcluster: DevCluster, namespace: str) -> None:
    created(devcluster, pod("short-lived", namespace, gpus=1))
    devcluster.kubectl(
        "wait", "--for=condition=Ready", "pod/short-lived", "-n", namespace, "--timeout=30s"
    )
    began = time.monotonic()
    # A graceful delete (30 s grace period): kwok finishes it as the kubelet would.
    devcluster.kubectl("delete", "pod", "short-lived", "-n", namespace, "--timeout=30s")
    assert time.monotonic() - began < 25
    result = devcluster.kubectl("get", "pod", "short-lived", "-n", namespace, check=False)
    assert "NotFound" in result.stderr


@pytest.mark.integration
def test_kubelet_requests_reach_kwok_on_loopback(devcluster: DevCluster, namespace: str) -> None:
    """`kubectl logs` / `exec` go API server -> node's kubelet endpoint -> kwok on 127.0.0.1,
    instead of a DNS lookup of the node name or a dial to a node IP."""
    created(devcluster, pod("talker", namespace, gpus=1))
    devcluster.kubectl(
        "wait", "--for=condition=Ready", "pod/talker", "-n", namespace, "--timeout=30s"
    )
    logs = devcluster.kubectl("logs", "talker", "-n", namespace, check=False)
    # kwok answers: no Logs configuration for this container (there is no real process).
    assert 'no logs found for container "engine"' in logs.stderr, logs.stderr
    exec_ = devcluster.kubectl("exec", "talker", "-n", namespace, "--", "true", check=False)
    assert 'no exec found for container "engine"' in exec_.stderr, exec_.stderr


@pytest.mark.integration
def test_job_pods_complete(devcluster: DevCluster, namespace: str) -> None:
    devcluster.kubectl("create", "job", "once", f"--image={IMAGE}", "-n", namespace, "--", "true")
    devcluster.kubectl(
        "wait",
        "--for=condition=Complete",
        "job/once",
        "-n",
        namespace,
        "--timeout=60s",
        timeout=70,
    )
    (job_pod,) = pods_of(devcluster, namespace, "job-name=once")
    assert job_pod["status"]["phase"] == "Succeeded"


def patch_condition(cluster: DevCluster, namespace: str, name: str, kind: str, status: str) -> None:
    """Set a pod condition through pods/status, as lorapack's agent does."""
    patch = {
        "status": {
            "conditions": [
                {
                    "type": kind,
                    "status": status,
                    "reason": "Synced" if status == "True" else "Syncing",
                    "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            ]
        }
    }
    cluster.kubectl(
        "patch",
        "pod",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps(patch),
    )


@pytest.mark.integration
def test_readiness_gates_decide_ready_like_a_kubelet(
    devcluster: DevCluster, namespace: str
) -> None:
    gated = pod("gated", namespace, readinessGates=[{"conditionType": SYNCED_CONDITION}])
    created(devcluster, gated)

    def get() -> dict[str, Any]:
        result: dict[str, Any] = devcluster.get_json("pod", "gated", "-n", namespace)
        return result

    def ready_is(status: str) -> dict[str, Any] | None:
        current = get()
        ready = find_condition(current, "Ready")
        return current if ready and ready["status"] == status else None

    running = wait_for("the gated pod to run", lambda: get()["status"].get("phase") == "Running")
    assert running
    current = get()
    first_ip = current["status"]["podIP"]
    # The containers run, but the gate's condition does not exist: not Ready, and kwok did not
    # invent the gate condition (its own pod-ready stage would have set it True).
    assert condition(current, "ContainersReady")["status"] == "True"
    ready = condition(current, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "ReadinessGatesNotReady"
    assert SYNCED_CONDITION in ready["message"]
    assert find_condition(current, SYNCED_CONDITION) is None

    # Someone else's condition, set alongside: it must survive every later stage.
    patch_condition(devcluster, namespace, "gated", "example.com/other", "True")
    patch_condition(devcluster, namespace, "gated", SYNCED_CONDITION, "True")
    current = wait_for("Ready=True once the gate is True", lambda: ready_is("True"))
    assert condition(current, SYNCED_CONDITION)["reason"] == "Synced"
    assert condition(current, "example.com/other")["status"] == "True"

    patch_condition(devcluster, namespace, "gated", SYNCED_CONDITION, "False")
    current = wait_for("Ready=False once the gate is False", lambda: ready_is("False"))
    ready = condition(current, "Ready")
    assert ready["reason"] == "ReadinessGatesNotReady"
    assert 'is not "True", but False' in ready["message"]
    assert condition(current, SYNCED_CONDITION)["status"] == "False"
    assert condition(current, "example.com/other")["status"] == "True"

    patch_condition(devcluster, namespace, "gated", SYNCED_CONDITION, "True")
    wait_for("Ready=True again", lambda: ready_is("True"))
    # No pod IP churn: the gate stages never allocate a second address.
    assert get()["status"]["podIP"] == first_ip


# ----------------------------------------------------------------------------- clients and tools


@pytest.mark.integration
def test_helm_installs_a_chart_against_the_cluster(
    devcluster: DevCluster, lorapack_crds: Path, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    # kubeVersion makes helm check the server's /version: it fails on unstamped binaries.
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.37.0-0'\n"
    )
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\n"
        "data:\n  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n"
        '  hasPools: {{ .Capabilities.APIVersions.Has "lorapack.io/v1alpha1/BaseModelPool"'
        " | quote }}\n"
    )
    devcluster.helm("install", "probe", str(chart), "-n", namespace, "--wait", "--timeout=60s")
    data = devcluster.get_json("configmap", "probe-probe", "-n", namespace)["data"]
    assert data == {"kubeVersion": "v1.37.2", "hasPools": "true"}
    releases = json.loads(devcluster.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("probe", "deployed")]
    devcluster.helm("uninstall", "probe", "-n", namespace, "--wait")
    assert devcluster.kubectl(
        "get", "configmap", "probe-probe", "-n", namespace, check=False
    ).returncode


@pytest.mark.integration
def test_kubectl_on_path_uses_the_cluster(devcluster: DevCluster) -> None:
    """`env()` is what a shell gets from `make cluster-up`'s exports."""
    env = devcluster.env()
    result = subprocess.run(
        ["kubectl", "get", "nodes", "-l", "nvidia.com/gpu.product=NVIDIA-L20", "-o", "name"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.split() == [f"node/l20-{i}" for i in range(4)]
    helm = subprocess.run(
        ["helm", "version", "--short"], env=env, capture_output=True, text=True, check=True
    )
    assert helm.stdout.startswith("v3.22.0")


@pytest.mark.integration
async def test_python_kubernetes_client_works_with_the_kubeconfig(kubeconfig: Path) -> None:
    from kubernetes_asyncio import client, config

    api = await config.new_client_from_config(config_file=str(kubeconfig))
    async with api:
        nodes = await client.CoreV1Api(api).list_node(label_selector="nvidia.com/gpu.present=true")
        assert len(nodes.items) == 6
        pools = await client.CustomObjectsApi(api).list_cluster_custom_object(
            "lorapack.io", "v1alpha1", "basemodelpools"
        )
        assert pools["kind"] == "BaseModelPoolList"


# -------------------------------------------------------------------------- lifecycle of clusters


@pytest.mark.integration
@pytest.mark.slow
def test_a_second_cluster_runs_beside_and_stops_without_a_trace(
    devcluster: DevCluster, tmp_path: Path
) -> None:
    shapes = parse_node_spec("l20:1:2")
    with DevCluster.start(workdir=tmp_path / "second", nodes=shapes, crds_dir=None) as second:
        assert second.server != devcluster.server
        (node,) = second.get_json("nodes")["items"]
        assert node["metadata"]["name"] == "l20-0"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
        added = second.add_nodes([NodeShape("a10", "NVIDIA-A10", 23028, "ampere", count=2)])
        assert added == ["a10-0", "a10-1"]
        records = list(second.processes)
        ports = {p for r in records for p in r.ports}
        assert len(ports) == 6
    assert not any(r.alive() for r in records)
    assert not [s for s in listening_sockets() if s[2] in ports]
    # The first cluster is untouched.
    assert all(devcluster.alive().values())
    assert not (tmp_path / "second" / "etcd").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_command_line_up_status_down(devcluster: DevCluster, tmp_path: Path) -> None:
    """`make cluster-up` / `cluster-down`: a detached cluster found again by PID records."""
    # A private cache folder (sharing the built binaries) keeps a developer's cluster safe.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bin").symlink_to(cache_root() / "bin")
    env = dict(os.environ, LORAPACK_CACHE=str(cache))
    command = [sys.executable, "-m", "lorapack_testworld.devcluster"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=100, check=False
        )

    up = run("up", "--nodes", "h100:1", "--crds", "none")
    assert up.returncode == 0, up.stderr
    workdir = cache / "run" / "devcluster" / "cluster"
    kubeconfig = workdir / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout
    state = json.loads((workdir / "cluster.json").read_text())
    pids = [p["pid"] for p in state["processes"]]
    try:
        again = run("up")
        assert again.returncode == 1
        assert "already running" in again.stderr
        status = run("status")
        assert status.returncode == 0, status.stderr
        assert "h100-0" in status.stdout
        assert status.stdout.count("running") >= 5
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    assert "no port left listening" in down.stdout
    assert not any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in pids)
    assert run("status").returncode == 1
    assert not workdir.exists()


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.integration
def test_start_refuses_a_workdir_in_use(devcluster: DevCluster) -> None:
    with pytest.raises(ClusterError, match="already running"):
        DevCluster.start(workdir=devcluster.workdir, crds_dir=None)


# ------------------------------------------------------------------------ --nodes syntax (pure)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("l20:4,h100:2", [("l20", 4, 1), ("h100", 2, 8)], id="default-shape"),
        pytest.param("h100:1", [("h100", 1, 8)], id="one-shape"),
        pytest.param(" l20:2:4 ", [("l20", 2, 4)], id="gpu-override"),
    ],
)
def test_parse_node_spec(spec: str, expected: list[tuple[str, int, int]]) -> None:
    assert [(s.name, s.count, s.gpus) for s in parse_node_spec(spec)] == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("", "--nodes is empty", id="empty"),
        pytest.param("a100:2", "unknown node shape 'a100'; known shapes: h100, l20", id="unknown"),
        pytest.param("l20", "must be NAME:COUNT or NAME:COUNT:GPUS", id="no-count"),
        pytest.param("l20:two", "COUNT must be a whole number", id="count-not-number"),
        pytest.param("l20:1:0", "GPUS must be at least 1", id="zero-gpus"),
        pytest.param("l20:1,l20:2", "names a shape twice", id="duplicate"),
    ],
)
def test_parse_node_spec_errors_say_what_to_fix(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="--nodes") as excinfo:
        parse_node_spec(spec)
    assert message in str(excinfo.value)
