"""`helm install` of charts/lorapack into the real local control plane, then the operator running
with exactly the chart's rights.

kwok runs the chart's Deployment as pods that become Ready but execute nothing, so the operator
process runs here: the Deployment's own command, arguments and environment (read back from the
API server), with a kubeconfig whose user is a token of the chart's ServiceAccount (TokenRequest
API, `kubectl create token`). Whatever the operator does therefore passes through the chart's
RBAC, and any missing rule shows up as a 403 in its log or a pool that never reconciles.

Each mode (namespaced, the chart's default: pool and team namespaces listed; or clusterWide)
installs a release, waits for the Deployment to become Available, runs the operator, applies a
BaseModelPool and a LoraAdapter and checks:
* the StatefulSet `<pool>` exists with the pool's GPU request, and the agents' Role (which the
  operator may create only because it holds every right it grants);
* both statuses carry Ready/Reconciling/Stalled and the current observedGeneration, the adapter's
  Stalled reason proving the operator read its credentials Secret in the team namespace;
* the operator wrote no `spec` field (managedFields), took its peering keep-alive, served
  /healthz and /metrics, and logged no Forbidden error;
* `kubectl auth can-i` for the ServiceAccount: no Secret outside the chosen namespaces, and in
  the team namespace only `get` (test_access_matrix.py asks about every cell);
* objects are deleted first (finalizers need the operator), then `helm uninstall` keeps CRDs.

This module starts its own control plane: an operator started by another test in the shared
session cluster would reconcile these pools with admin rights and hide missing RBAC rules.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapack_testworld.devcluster import DevCluster, Tools, ToolsMissing
from lorapack_testworld.devcluster.processes import free_port
from tests.builders import make_adapter, make_pool

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lorapack"
DEVCLUSTER_MANAGER = "lorapack-devcluster"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """A control plane of this module's own, without lorapack's CRDs: the chart brings them."""
    try:
        tools = Tools.locate()
    except ToolsMissing as exc:
        if os.environ.get("LORAPACK_REQUIRE_CLUSTER"):
            pytest.fail(f"LORAPACK_REQUIRE_CLUSTER is set, but {exc}", pytrace=False)
        pytest.skip(f"local control plane unavailable: {exc}")
    devcluster = DevCluster.start(
        workdir=tmp_path_factory.mktemp("helm-devcluster"), crds_dir=None, tools=tools
    )
    try:
        yield devcluster
    finally:
        devcluster.stop()


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    tail = "\n".join(log.read_text().splitlines()[-60:]) if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n--- operator log ---\n{tail}")


def try_get(cluster: DevCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status), resp.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def service_account_kubeconfig(cluster: DevCluster, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster (server, CA) with the ServiceAccount's token as user."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": "chart-sa", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "chart-sa",
                        "context": {"cluster": admin["clusters"][0]["name"], "user": "chart-sa"},
                    }
                ],
                "current-context": "chart-sa",
            }
        )
    )
    return path


def operator_process(
    deployment: dict[str, Any], kubeconfig: Path, pod_id: str
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the Deployment's container, as a kubelet would run them here."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    argv = [*container.get("command", []), *container.get("args", [])]
    env = {
        # `lorapack` and `python` (the priority draw) resolve to this virtualenv's.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HOME": os.environ.get("HOME", "/tmp"),
        "KUBECONFIG": str(kubeconfig),
    }
    for item in container["env"]:
        if "valueFrom" not in item:  # the API server drops `value: ""`
            env[item["name"]] = item.get("value", "")
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_id
        else:
            raise AssertionError(f"the test cannot provide env {item}")
    return argv, env


def can_i(cluster: DevCluster, sa: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, "--as", sa, check=False)
    return result.stdout.strip() == "yes"


def spec_writers(obj: dict[str, Any]) -> list[str]:
    """Field managers other than the applier that own anything under spec."""
    return [
        f"{m['manager']} ({m.get('operation')}, {m.get('subresource', 'main')})"
        for m in obj["metadata"].get("managedFields") or []
        if m["manager"] != DEVCLUSTER_MANAGER and "f:spec" in (m.get("fieldsV1") or {})
    ]


@pytest.mark.parametrize("mode", ["namespaced", "clusterwide"])
def test_helm_install_runs_the_operator_with_the_charts_rbac(
    cluster: DevCluster, mode: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:5]
    release = f"lp-{suffix}"
    fullname = f"{release}-lorapack"
    release_ns, pools_ns, team_ns, other_ns = (
        f"lorapack-{suffix}",
        f"ml-platform-{suffix}",
        f"team-a-{suffix}",
        f"other-{suffix}",
    )
    for ns in (pools_ns, team_ns, other_ns):
        cluster.kubectl("create", "namespace", ns)
    probe_port, metrics_port = free_port(), free_port()
    values: dict[str, Any] = {
        "image": {"repository": "lorapack", "tag": "dev"},
        "probes": {"port": probe_port},
        "metrics": {"port": metrics_port},
        "config": {"resyncSeconds": 2},
        "grafanaDashboard": {"enabled": True},
    }
    if mode == "namespaced":
        values |= {"poolNamespaces": [pools_ns], "teamNamespaces": [team_ns]}
    else:
        values |= {"clusterWide": True}
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    sa = f"system:serviceaccount:{release_ns}:{fullname}"

    installed = cluster.helm(
        "install", release, str(CHART), "-n", release_ns, "--create-namespace",
        "-f", str(values_file), "--wait", "--timeout", "120s", timeout=180,
    )  # fmt: skip
    assert f"is installed as release {release}" in installed.stdout, installed.stdout  # NOTES.txt
    log = tmp_path / "operator.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        # 1. The chart's objects exist; kwok made the Deployment's pods Ready.
        cluster.kubectl(
            "wait", "--for=condition=Available", f"deployment/{fullname}", "-n", release_ns,
            "--timeout=90s", timeout=100,
        )  # fmt: skip
        for crd in ("basemodelpools.lorapack.io", "loraadapters.lorapack.io"):
            cluster.kubectl("get", "crd", crd)
        peering_kind = "kopfpeering" if mode == "namespaced" else "clusterkopfpeering"
        peering_ns = [pools_ns] if mode == "namespaced" else []
        peering = ["-n", *peering_ns] if peering_ns else []
        cluster.kubectl("get", peering_kind, "lorapack", *peering)

        # 2. The operator, exactly as the Deployment runs it, as the chart's ServiceAccount.
        token = cluster.kubectl(
            "create", "token", fullname, "-n", release_ns, "--duration=1h"
        ).stdout.strip()
        kubeconfig = service_account_kubeconfig(cluster, token, tmp_path / "sa.kubeconfig")
        deployment = cluster.get_json("deployment", fullname, "-n", release_ns)
        pod_id = f"{fullname}-local-{suffix}"
        argv, env = operator_process(deployment, kubeconfig, pod_id)
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(
            "the operator's /healthz",
            lambda: (
                process is not None
                and process.poll() is None
                and http_get(f"http://127.0.0.1:{probe_port}/healthz")[0] == 200
            ),
            60,
            log,
        )

        # 3. A pool and an adapter whose credentials Secret lacks a key.
        pool = make_pool(
            name="llama3-8b",
            namespace=pools_ns,
            replicas={"min": 1, "max": 2},
            adapters={"allowedNamespaces": [team_ns]},
        )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-creds", "namespace": team_ns},
            "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(b"team-a").decode()},
        }
        adapter = make_adapter(
            name="support-bot",
            namespace=team_ns,
            source={
                "s3": {
                    "uri": "s3://adapters/team-a/support-bot/",
                    "credentialsSecretRef": {"name": "s3-creds"},
                }
            },
        )
        cluster.apply_objects([pool, secret, adapter])

        statefulset = wait_for(
            "StatefulSet llama3-8b",
            lambda: try_get(cluster, "statefulset", "llama3-8b", pools_ns),
            60,
            log,
        )
        engine = statefulset["spec"]["template"]["spec"]["containers"][0]
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert engine["resources"]["requests"]["nvidia.com/gpu"] == "1"
        # The API server kept the pod template's token settings (only the agent mounts one).
        assert statefulset["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        assert try_get(cluster, "role", "llama3-8b-agent", pools_ns) is not None
        assert try_get(cluster, "secret", "llama3-8b-0-adapters", pools_ns) is not None

        def reconciled(kind: str, name: str, ns: str) -> dict[str, Any] | None:
            obj = try_get(cluster, kind, name, ns)
            if not obj:
                return None
            status = obj.get("status") or {}
            if status.get("observedGeneration") != obj["metadata"]["generation"]:
                return None
            types = [c["type"] for c in status.get("conditions") or []]
            return obj if types == ["Ready", "Reconciling", "Stalled"] else None

        pool_obj = wait_for(
            "the pool's status", lambda: reconciled("basemodelpool", "llama3-8b", pools_ns), 60, log
        )
        assert "lorapack.io/cleanup" in pool_obj["metadata"]["finalizers"]
        adapter_obj = wait_for(
            "the adapter's status",
            lambda: reconciled("loraadapter", "support-bot", team_ns),
            60,
            log,
        )
        stalled = adapter_obj["status"]["conditions"][2]
        # Read (not forbidden): the message lists the keys the Secret does have.
        assert stalled["status"] == "True" and stalled["reason"] == "CredentialsNotFound", stalled
        assert "keys present: AWS_ACCESS_KEY_ID" in stalled["message"]

        # 4. No controller writes spec (GitOps tools own it), the peering keep-alive is there,
        # metrics flow, and nothing was forbidden.
        assert spec_writers(pool_obj) == [] and spec_writers(adapter_obj) == []
        peering_obj = cluster.get_json(peering_kind, "lorapack", *peering)
        assert pod_id in (peering_obj.get("status") or {}), peering_obj
        code, text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert code == 200
        assert 'lorapack_reconcile_total{kind="BaseModelPool",result="ok"}' in text
        output = log.read_text()
        for symptom in ("Forbidden", "Not enough permissions", "Pausing"):
            assert symptom not in output, f"{symptom!r} in the operator log:\n{output[-4000:]}"

        # 5. What the ServiceAccount may do, as the API server's authorizer sees it.
        assert can_i(cluster, sa, "get", "secrets", "-n", team_ns)
        assert can_i(cluster, sa, "create", "statefulsets.apps", "-n", pools_ns)
        assert not can_i(cluster, sa, "update", "loraadapters.lorapack.io", "-n", team_ns)
        assert not can_i(cluster, sa, "delete", "statefulsets.apps", "-n", pools_ns)
        if mode == "namespaced":
            assert not can_i(cluster, sa, "get", "secrets", "-n", other_ns)
            assert not can_i(cluster, sa, "list", "secrets", "--all-namespaces")
            assert not can_i(cluster, sa, "list", "secrets", "-n", team_ns)
            assert not can_i(cluster, sa, "watch", "secrets", "-n", team_ns)
            assert can_i(cluster, sa, "list", "secrets", "-n", pools_ns)
            assert not can_i(cluster, sa, "create", "statefulsets.apps", "-n", team_ns)
            assert not can_i(cluster, sa, "create", "secrets", "-n", team_ns)
        else:  # the documented price of serving every namespace
            assert can_i(cluster, sa, "list", "secrets", "--all-namespaces")

        # 6. Uninstall order: objects first, while the operator still removes finalizers.
        cluster.kubectl("delete", "loraadapter", "support-bot", "-n", team_ns, "--wait=false")
        cluster.kubectl("delete", "basemodelpool", "llama3-8b", "-n", pools_ns, "--wait=false")
        wait_for(
            "the pool and the adapter to be deleted",
            lambda: (
                try_get(cluster, "loraadapter", "support-bot", team_ns) is None
                and try_get(cluster, "basemodelpool", "llama3-8b", pools_ns) is None
            ),
            60,
            log,
        )
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        cluster.helm("uninstall", release, "-n", release_ns, "--wait", check=False, timeout=120)
        for ns in (pools_ns, team_ns, other_ns, release_ns):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    # Helm keeps CRDs (deleting them would delete every pool and adapter); RBAC is gone.
    cluster.kubectl("get", "crd", "basemodelpools.lorapack.io", "kopfpeerings.kopf.dev")
    assert cluster.kubectl("get", "clusterrole", fullname, check=False).returncode != 0
