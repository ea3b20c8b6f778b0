"""Fixtures of the end-to-end tier: the operator and the simulated pods, as real processes.

* `adapter_bucket` (session): a bucket on the loopback S3 server holding the test adapters
  (`<name>/` prefixes: lora_r8, lora_r16, lora_r64, lora_r128, broken ones), uploaded once.
* `world` (session): `python -m lorapack_testworld.world` — the pod simulator (engine double +
  agent per running pool pod, agents with their pool's ServiceAccount) and the gateway.
* `operator` (session): `lorapack run --standalone` against the cluster, restartable.
* `e2e` (function): a namespace with the pool's S3 credentials Secret, plus helpers to apply
  objects and wait for conditions.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.devcluster import DevCluster
from lorapack_testworld.s3server import S3Server

ROOT = Path(__file__).resolve().parents[2]
BASE_MODEL = "lorapack/tiny-llama"


def _python_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORAPACK_", "AWS_"))}
    env["PYTHONPATH"] = str(ROOT / "operator")
    env.update(extra)
    return env


class Proc:
    """A background Python process with its log file, restartable."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def adapter_bucket(s3_server: S3Server, artifacts: ArtifactIndex) -> str:
    """A bucket with every test adapter under `<adapter name>/`."""
    bucket = "lorapack-e2e"
    s3_server.create_bucket(bucket)
    for adapter in artifacts.adapters.values():
        s3_server.upload_folder(bucket, f"{adapter.name}/", adapter.path)
    return bucket


def start_world(kubeconfig: Path, artifacts: ArtifactIndex, workdir: Path) -> dict[str, Any]:
    """Start the pod simulator and the gateway for a cluster; world.json plus the process."""
    proc = Proc(
        [
            sys.executable,
            "-m",
            "lorapack_testworld.world",
            "--kubeconfig",
            str(kubeconfig),
            "--workdir",
            str(workdir),
            "--model-dir",
            str(artifacts.model.path),
            # Pods of pools named "real-vllm" run the real vLLM CPU engine (test_real_vllm.py).
            "--real-engine-pool",
            "real-vllm",
        ],
        _python_env({}),
        workdir / "world.log",
    )
    proc.start()
    info_file = workdir / "world.json"
    deadline = time.monotonic() + 60
    while not info_file.exists():
        assert proc.process is not None
        if proc.process.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            pytest.fail(f"the pod simulator did not start:\n{proc.tail()}")
        time.sleep(0.2)
    info = json.loads(info_file.read_text())
    return {**info, "proc": proc, "workdir": workdir}


def start_operator(
    kubeconfig: Path,
    workdir: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = ("--standalone",),
    log_name: str = "operator.log",
) -> Proc:
    """`lorapack run --standalone` (or `args`) against a cluster, with short periods for tests."""
    proc = Proc(
        [sys.executable, "-m", "lorapack.cli", "run", *args],
        _python_env(
            {
                "KUBECONFIG": str(kubeconfig),
                "LORAPACK_METRICS_PORT": "0",
                "LORAPACK_RESYNC_SECONDS": "5",
                "LORAPACK_POD_LOST_SECONDS": "30",
                "LORAPACK_DELETE_TIMEOUT_SECONDS": "30",
                "LORAPACK_AGENT_IMAGE": "lorapack:dev",
                **(env or {}),
            }
        ),
        workdir / log_name,
    )
    proc.start()
    time.sleep(1.0)
    assert proc.process is not None and proc.process.poll() is None, proc.tail()
    return proc


@pytest.fixture(scope="session")
def world(
    kubeconfig: Path, artifacts: ArtifactIndex, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The pod simulator and the gateway; yields world.json plus the process."""
    info = start_world(kubeconfig, artifacts, tmp_path_factory.mktemp("world"))
    yield info
    info["proc"].stop()


@pytest.fixture(scope="session")
def operator(
    kubeconfig: Path, world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proc]:
    """`lorapack run --standalone` with short periods for tests."""
    proc = start_operator(kubeconfig, tmp_path_factory.mktemp("operator"))
    yield proc
    proc.stop()


@dataclass
class E2E:
    """One test's namespace and helpers over the shared cluster, S3 and processes."""

    cluster: DevCluster
    namespace: str
    s3: S3Server
    bucket: str
    world: dict[str, Any]
    operator: Proc

    def apply(self, *objects: dict[str, Any]) -> None:
        self.cluster.apply_objects(list(objects))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = self.cluster.get_json(kind, name, "-n", namespace or self.namespace)
        return data

    def try_get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        result = self.cluster.kubectl(
            "get", kind, name, "-n", namespace or self.namespace, "-o", "json", check=False
        )
        return json.loads(result.stdout) if result.returncode == 0 else None

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Poll `check` until it returns something truthy; fail with logs otherwise."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (KeyError, IndexError, TypeError):
                last = None
            if last:
                return last
            time.sleep(0.25)
        pytest.fail(
            f"timed out after {timeout:.0f} s waiting for {what}\n"
            f"--- operator log ---\n{self.operator.tail(60)}\n"
            f"--- world log ---\n{self.world['proc'].tail(30)}"
        )

    def condition(self, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == kind:
                return dict(cond)
        return {}

    def pool(self, name: str, **spec: Any) -> dict[str, Any]:
        """A pool for the tiny model, with S3 defaults pointing at the loopback server."""
        body: dict[str, Any] = {
            "apiVersion": "lorapack.io/v1alpha1",
            "kind": "BaseModelPool",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "baseModel": {
                    "name": BASE_MODEL,
                    "source": {"s3": {"uri": "s3://models/tiny-llama/"}},
                },
                "engine": {"maxLoras": 2, "maxLoraRank": 64, "maxCpuLoras": 4},
                "gpu": {
                    "type": "L20",
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L20"},
                },
                "replicas": {"min": 1, "max": 1},
                "adapters": {"allowedNamespaces": [self.namespace]},
                "s3": {
                    "endpoint": self.s3.endpoint,
                    "region": self.s3.region,
                    "addressingStyle": "path",
                    "credentialsSecretRef": {"name": "pool-s3"},
                },
            },
        }
        for key, value in spec.items():
            body["spec"][key] = value
        # Adapters without their own credentials read the test bucket with the pool's keys.
        body["spec"].setdefault("adapters", {}).setdefault(
            "s3Access", [{"namespaces": ["*"], "uriPrefixes": [f"s3://{self.bucket}/"]}]
        )
        return body

    def adapter(
        self, name: str, artifact: str, namespace: str | None = None, **spec: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "lorapack.io/v1alpha1",
            "kind": "LoraAdapter",
            "metadata": {"name": name, "namespace": namespace or self.namespace},
            "spec": {
                "baseModel": BASE_MODEL,
                "source": {"s3": {"uri": f"s3://{self.bucket}/{artifact}/"}},
            },
        }
        body["spec"].update(spec)
        return body

    def s3_secret(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        data = {
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
        }
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace or self.namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    def ready(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        obj = self.try_get("lora", name, namespace)
        if obj and self.condition(obj, "Ready").get("status") == "True":
            return obj
        return None

    def chat(
        self, name: str, namespace: str | None = None, model: str | None = None
    ) -> httpx.Response:
        """A chat completion through the gateway to the adapter's Service."""
        url = f"{self.world['gateway']}/{namespace or self.namespace}/{name}/v1/chat/completions"
        return httpx.post(
            url,
            json={
                "model": model or name,
                "messages": [{"role": "user", "content": "The capital of France is"}],
                "max_tokens": 8,
                "temperature": 0,
            },
            timeout=60,
        )

    def admin(self, path: str) -> httpx.Response:
        return httpx.post(f"{self.world['admin']}{path}", timeout=60)

    def new_namespace(self, stem: str) -> str:
        name = f"{stem}-{self.namespace[-6:]}"
        self.cluster.kubectl("create", "namespace", name)
        self.extra_namespaces.append(name)
        return name

    extra_namespaces: list[str]


@pytest.fixture
def e2e(
    devcluster: DevCluster,
    namespace: str,
    s3_server: S3Server,
    adapter_bucket: str,
    world: dict[str, Any],
    operator: Proc,
) -> Iterator[E2E]:
    env = E2E(devcluster, namespace, s3_server, adapter_bucket, world, operator, [])
    env.apply(env.s3_secret("pool-s3"))
    yield env
    for extra in env.extra_namespaces:
        devcluster.kubectl("delete", "namespace", extra, "--wait=false", check=False)
