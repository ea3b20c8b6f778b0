"""A BaseModelPool served on the real node by the shipped chart, image and pod spec.

The chart from charts/lorapack runs the operator as a pod of the real image on the real node;
the pool's pod lands there too (restricted Pod Security enforced on its namespace): fetch-model
pulls the tiny Llama from the S3 server, the agent syncs the adapter, the engine container (the
test-world image: its `vllm` is the engine double) serves it, the readiness gate flips, and a
completion comes back through the per-adapter ClusterIP Service routed by real kube-proxy, and
through the pool Service. Then the engine is killed, the pod deleted and the kubelet restarted:
the adapter comes back each time without the operator's help and status stays truthful.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import lorapack
from lorapack import labels
from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.devcluster import ClusterError, DevCluster
from lorapack_testworld.realnode.bridge import Bridge
from lorapack_testworld.realnode.images import PRODUCT, TESTWORLD, image_ref
from lorapack_testworld.realnode.node import REAL_NODE_LABEL, RealNode
from lorapack_testworld.s3server import S3Server

pytestmark = [pytest.mark.realnode, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
BASE_MODEL = "lorapack/tiny-llama"
POOL = "tiny"
ADAPTER = "support-bot"


@dataclass
class Served:
    cluster: DevCluster
    node: RealNode
    ns: str
    key: str
    s3: S3Server
    endpoint: str
    bucket: str

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (KeyError, IndexError, TypeError, httpx.HTTPError, ClusterError):
                last = None
            if last:
                return last
            time.sleep(1)
        pods = self.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        adapter = svc = ""
        events = self.cluster.kubectl(
            "get", "events", "-n", self.ns, "--sort-by=.lastTimestamp", check=False
        ).stdout
        op = self.cluster.kubectl(
            "logs", "-n", self.ns, "deploy/lorapack", "--tail=40", check=False
        ).stdout
        try:
            adapter = json.dumps(self.get("loraadapter", ADAPTER).get("status"))[-1500:]
            svc = json.dumps(self.get("service", ADAPTER)["spec"])
            reply = self.chat(ADAPTER, ADAPTER)
            answer = f"{reply.status_code} {reply.text[:300]}"
        except Exception as exc:  # diagnostics only
            answer = repr(exc)
        pytest.fail(
            f"timed out after {timeout:.0f} s waiting for {what}\nadapter status: {adapter}\n"
            f"service: {svc}\nchat: {answer}\n{pods}\n{events[-1500:]}\n"
            f"--- operator ---\n{op}\n--- kubelet ---\n{self.node.log_tail('kubelet', 20)}"
        )

    def get(self, kind: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = self.cluster.get_json(kind, name, "-n", self.ns)
        return data

    def ready_condition(self) -> dict[str, Any]:
        for cond in (self.get("loraadapter", ADAPTER).get("status") or {}).get("conditions", []):
            if cond["type"] == "Ready":
                return dict(cond)
        return {}

    def chat(self, service: str, model: str) -> httpx.Response:
        svc = self.get("service", service)
        ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
        return httpx.post(
            f"http://{ip}:{port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=30,
        )

    def served(self) -> bool:
        return self.ready_condition().get("status") == "True" and (
            self.chat(ADAPTER, ADAPTER).status_code == 200
        )


def _helm(cluster: DevCluster, *args: str) -> None:
    result = subprocess.run(
        [str(cluster.tools.helm), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def served(
    real_node: RealNode,
    devcluster: DevCluster,
    s3_server: S3Server,
    artifacts: ArtifactIndex,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    ns = "realnode-pool"
    devcluster.kubectl("create", "namespace", ns)
    devcluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    workdir = tmp_path_factory.mktemp("pool")
    bridge = Bridge(devcluster, real_node.node_ip, workdir)
    try:
        bridge.expose_api()
        s3 = bridge.expose_tcp(int(s3_server.endpoint.rsplit(":", 1)[1]))
        bucket = "realnode-adapters"
        s3_server.create_bucket(bucket)
        s3_server.upload_folder(bucket, f"{ADAPTER}/", artifacts.adapters["r8"].path)
        _install_chart(devcluster, ns, workdir)
        devcluster.apply_objects(_objects(ns, s3_server, f"http://{s3}", bucket))
        env = Served(devcluster, real_node, ns, "", s3_server, f"http://{s3}", bucket)
        env.wait("the engine key Secret", lambda: env.get("secret", f"{POOL}-engine-key"), 120)
        key = env.get("secret", f"{POOL}-engine-key")["data"]["api-key"]
        env.key = base64.b64decode(key).decode()
        yield env
    finally:
        devcluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        bridge.close()


def _install_chart(cluster: DevCluster, ns: str, workdir: Path) -> None:
    values = {
        "image": {
            "repository": image_ref(PRODUCT, lorapack.__version__).rsplit(":", 1)[0],
            "tag": lorapack.__version__,
            "pullPolicy": "Never",
        },
        "replicaCount": 1,
        "poolNamespaces": [ns],
        "adapterServices": {"type": "ClusterIP"},
        "nodeSelector": {REAL_NODE_LABEL: "true"},
        "extraEnv": [
            {"name": "LORAPACK_RESYNC_SECONDS", "value": "5"},
            {"name": "LORAPACK_POD_LOST_SECONDS", "value": "30"},
        ],
    }
    values_file = workdir / "values.json"  # JSON is YAML
    values_file.write_text(json.dumps(values))
    _helm(
        cluster, "install", "lorapack", str(ROOT / "charts" / "lorapack"), "-n", ns,
        "--wait", "--timeout", "3m", "-f", str(values_file),
    )  # fmt: skip


def _objects(ns: str, s3: S3Server, endpoint: str, bucket: str) -> list[dict[str, Any]]:
    creds = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pool-s3", "namespace": ns},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in creds.items()},
    }
    pool = _pool(ns, POOL, {"s3": {"uri": "s3://models/tiny-llama/"}}, s3, endpoint, bucket)
    adapter = {
        "apiVersion": "lorapack.io/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {"name": ADAPTER, "namespace": ns},
        "spec": {"baseModel": BASE_MODEL, "source": {"s3": {"uri": f"s3://{bucket}/{ADAPTER}/"}}},
    }
    return [secret, pool, adapter]


def _pool(
    ns: str, name: str, source: dict[str, Any], s3: S3Server, endpoint: str, bucket: str
) -> dict[str, Any]:
    return {
        "apiVersion": "lorapack.io/v1alpha1",
        "kind": "BaseModelPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "baseModel": {"name": BASE_MODEL, "source": source},
            "engine": {
                "image": image_ref(TESTWORLD, lorapack.__version__),
                "maxLoras": 2,
                "maxLoraRank": 64,
                "maxCpuLoras": 4,
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            },
            "gpu": {
                "type": "L20",
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L20", REAL_NODE_LABEL: "true"},
            },
            "replicas": {"min": 1, "max": 1},
            "adapters": {
                "allowedNamespaces": [ns],
                "s3Access": [{"namespaces": ["*"], "uriPrefixes": [f"s3://{bucket}/"]}],
            },
            "s3": {
                "endpoint": endpoint,
                "region": s3.region,
                "addressingStyle": "path",
                "credentialsSecretRef": {"name": "pool-s3"},
            },
        },
    }


def _pod(env: Served, pool: str = POOL) -> dict[str, Any]:
    return env.get("pod", f"{pool}-0")


def test_pool_pod_on_the_real_node_serves_the_adapter_through_kube_proxy(env: Served) -> None:
    env.wait("the adapter Ready and answering through its ClusterIP Service", env.served, 300)

    def pod_ready() -> dict[str, Any] | None:
        pod = _pod(env)
        gates = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        return pod if gates[labels.SYNCED_CONDITION] == gates["Ready"] == "True" else None

    pod = env.wait("the pool pod Ready with its readiness gate", pod_ready, 120)
    assert pod["spec"]["nodeName"].startswith("realnode")
    reply = env.chat(ADAPTER, ADAPTER)
    assert reply.json()["model"] == ADAPTER
    # The pool Service (base-model traffic), through kube-proxy as well.
    base = env.chat(POOL, BASE_MODEL)
    assert base.status_code == 200, base.text
    statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
    assert statuses["vllm"]["user"]["linux"]["gid"] == 65532


@pytest.fixture
def env(served: Served) -> Served:
    return served


def test_engine_kill_pod_delete_and_kubelet_restart_recover_by_themselves(env: Served) -> None:
    env.wait("the adapter served", env.served, 300)
    # 1. The engine process dies: the kubelet restarts the container, the agent reloads.
    restarts = {c["name"]: c["restartCount"] for c in _pod(env)["status"]["containerStatuses"]}
    subprocess.run(
        [str(env.cluster.tools.kubectl), "--kubeconfig", str(env.cluster.kubeconfig), "exec",
         "-n", env.ns, f"{POOL}-0", "-c", "vllm", "--", "sh", "-c", "kill 1"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    env.wait(
        "the vllm container restarted",
        lambda: (
            {c["name"]: c["restartCount"] for c in _pod(env)["status"]["containerStatuses"]}["vllm"]
            > restarts["vllm"]
        ),
        120,
    )
    env.wait("the adapter served again after the engine restart", env.served, 180)
    # 2. The pod is deleted: the StatefulSet makes a new one, fetch-model and the agent redo it.
    uid = _pod(env)["metadata"]["uid"]
    env.cluster.kubectl("delete", "pod", "-n", env.ns, f"{POOL}-0", "--wait=false")
    env.wait("a new pod", lambda: _pod(env)["metadata"]["uid"] != uid, 120)
    env.wait("the adapter served again on the new pod", env.served, 300)
    # 3. The kubelet restarts (a node reboot of the kubelet): running containers stay.
    env.node.restart("kubelet")
    env.wait("the adapter served after the kubelet restart", env.served, 180)
    assert env.ready_condition()["status"] == "True"


def test_pvc_model_source_is_served_with_its_sub_path(
    env: Served, artifacts: ArtifactIndex
) -> None:
    # The S3 pool goes (the node has one GPU); a pool whose weights are on a PVC takes over.
    env.cluster.kubectl("delete", "basemodelpool", POOL, "-n", env.ns, timeout=120)
    env.wait("the S3 pool's pod gone", lambda: not _pods(env, POOL), 120)
    # A node folder readable by uid 65532 (pytest's own tmp folders are root-only).
    folder = Path(tempfile.mkdtemp(prefix="lorapack-realnode-pv-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        shutil.copytree(artifacts.model.path, folder / "tiny-llama")
        subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
        env.cluster.apply_objects(_local_volume(env.ns, folder))
        pool = "tiny-pvc"
        source = {"pvc": {"claimName": "weights", "subPath": "tiny-llama"}}
        env.cluster.apply_objects([_pool(env.ns, pool, source, env.s3, env.endpoint, env.bucket)])
        env.wait("the PVC pool's key", lambda: env.get("secret", f"{pool}-engine-key"), 120)
        key = env.get("secret", f"{pool}-engine-key")["data"]["api-key"]
        env.key = base64.b64decode(key).decode()
        env.wait("the adapter served from the PVC pool", env.served, 300)
        pod = _pod(env, pool)
        assert pod["spec"]["nodeName"].startswith("realnode")
        # vLLM serves /models/base: the sub folder is what the engine container sees there.
        seen = env.cluster.kubectl(
            "exec", "-n", env.ns, f"{pool}-0", "-c", "vllm", "--", "cat", "/models/base/config.json"
        ).stdout
        assert seen == (folder / "tiny-llama" / "config.json").read_text()
    finally:
        env.cluster.kubectl("delete", "basemodelpool", "tiny-pvc", "-n", env.ns, check=False)
        env.cluster.kubectl("delete", "pv", f"{env.ns}-weights", "--wait=false", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _pods(env: Served, pool: str) -> list[str]:
    out = env.cluster.kubectl("get", "pods", "-n", env.ns, "-l", f"lorapack.io/pool={pool}", "-o",
                              "name").stdout  # fmt: skip
    return out.split()


def _local_volume(ns: str, folder: Path) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume on the node's folder, pre-bound to the claim `weights`."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{ns}-weights"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "realnode-local",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(folder), "type": "Directory"},
            "claimRef": {"namespace": ns, "name": "weights"},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "weights", "namespace": ns},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "realnode-local",
            "volumeName": f"{ns}-weights",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    return [pv, pvc]
