"""What the kubelet would hand a simulated pod's containers, read from the pod's spec.

Used by lorapack_testworld.podsim: the served name and LoRA flags of the vllm container
(`engine_flags`, for the engine double), a container's environment with its secretKeyRefs
resolved as the kubelet does (`container_env`), and a kubeconfig for the pod's own
ServiceAccount (`service_account_kubeconfig`), so the agent runs with lorapack's real RBAC.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lorapack.clients.kube import SECRET, KubeClient

__all__ = ["container_env", "engine_flags", "service_account_kubeconfig"]

_ENGINE_FLAGS = ("--max-loras", "--max-lora-rank", "--max-cpu-loras", "--max-model-len")


def engine_flags(pod: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(served model name, double flags) from the pod's vllm container args."""
    containers = (pod.get("spec") or {}).get("containers") or []
    engine: Mapping[str, Any] = next((c for c in containers if c.get("name") == "vllm"), {})
    args = list(engine.get("args") or [])
    served = "lorapack/tiny-llama"
    flags = ["--enable-lora"]
    for i, arg in enumerate(args):
        if arg == "--served-model-name" and i + 1 < len(args):
            served = args[i + 1]
        if arg in _ENGINE_FLAGS and i + 1 < len(args):
            flags += [arg, args[i + 1]]
    return served, flags


async def container_env(
    kube: KubeClient, namespace: str, pod: Mapping[str, Any], container: str
) -> dict[str, str]:
    """A container's env: literal values and secretKeyRefs resolved. Like the kubelet, a
    reference that is not optional waits for its Secret (bounded: 30 s, then it fails)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    spec: Mapping[str, Any] = next((c for c in containers if c.get("name") == container), {})
    env: dict[str, str] = {}
    secrets: dict[str, Mapping[str, str] | None] = {}
    for item in spec.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = str(item["value"])
            continue
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            continue
        deadline = time.monotonic() + 30.0
        while True:
            if ref["name"] not in secrets:
                secret = await kube.get(SECRET, namespace, ref["name"])
                secrets[ref["name"]] = (secret or {}).get("data")
            data = secrets[ref["name"]] or {}
            if ref["key"] in data or ref.get("optional") or time.monotonic() > deadline:
                break
            secrets.pop(ref["name"])
            await asyncio.sleep(0.5)
        if ref["key"] in data:
            env[name] = base64.b64decode(data[ref["key"]]).decode()
        elif not ref.get("optional"):
            raise LookupError(
                f"{container}: Secret {namespace}/{ref['name']} has no key {ref['key']}"
            )
    return env


async def service_account_kubeconfig(
    kube: KubeClient, admin_kubeconfig: Path, namespace: str, pod: Mapping[str, Any], path: Path
) -> Path:
    """Write to `path` a kubeconfig for the pod's ServiceAccount (a fresh token: its real
    RBAC) on the admin kubeconfig's cluster; returns `path`."""
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    token = await kube.create_token(namespace, account, seconds=3600)
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin.get("current-context"))[
        "context"
    ]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "pod", "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": "pod",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
