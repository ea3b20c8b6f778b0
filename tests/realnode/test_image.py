"""The image users deploy, run under a real runtime (podman + runc) the way the chart runs it.

Read-only root, a tmpfs on /tmp, uid/gid 65532, every capability dropped. Proves: the CLI
entry points work, every `lorapack` module imports with only the runtime dependencies installed
(no dev extra, no test world, no pip), and the operator starts from the image against the local
control plane and writes status.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import lorapack
from lorapack_testworld.devcluster import DevCluster
from lorapack_testworld.realnode.images import PRODUCT, Podman, image_ref
from tests.builders import make_adapter

REF = image_ref(PRODUCT, lorapack.__version__)

pytestmark = [pytest.mark.slow]

# Run inside the image: every module of the package imports; what else is installed.
_PROBE = """
import importlib, importlib.metadata as md, importlib.util, json, os, pkgutil, lorapack
mods = [m.name for m in pkgutil.walk_packages(lorapack.__path__, "lorapack.")]
failed = {}
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as exc:
        failed[m] = repr(exc)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "modules": len(mods), "failed": failed,
    "dists": sorted(d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()),
    "testworld": importlib.util.find_spec("lorapack_testworld") is not None,
    "tests": importlib.util.find_spec("tests") is not None,
}))
"""


def _run(podman: Podman, *args: str, entrypoint: str | None = None) -> str:
    flags = Podman.restricted(["--rm", "--network=none"])
    if entrypoint:
        flags += ["--entrypoint", entrypoint]
    return podman("run", *flags, REF, *args).stdout


def test_image_runs_as_65532_by_default(podman: Podman) -> None:
    config = json.loads(podman("image", "inspect", REF).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["lorapack"]
    # No --user: the image's own user, as a pod without runAsUser gets.
    out = podman(
        "run",
        "--rm",
        "--read-only",
        "--network=none",
        "--entrypoint",
        "python3",
        REF,
        "-c",
        "import os; print(os.getuid(), os.getgid())",
    ).stdout
    assert out.split() == ["65532", "65532"]


def test_lorapack_version_read_only(podman: Podman) -> None:
    out = _run(podman, "version")
    assert lorapack.__version__ in out and "lorapack.io/v1alpha1" in out, out


def test_lorapack_agent_help_read_only(podman: Podman) -> None:
    out = _run(podman, "agent", "--help")
    assert "--fetch-model" in out, out


def test_every_module_imports_with_runtime_dependencies_only(podman: Podman) -> None:
    report: dict[str, Any] = json.loads(_run(podman, "-c", _PROBE, entrypoint="python3"))
    assert report["failed"] == {}
    assert report["modules"] > 50, report["modules"]
    assert (report["uid"], report["gid"]) == (65532, 65532)
    assert not report["testworld"] and not report["tests"]
    dists = set(report["dists"])
    for dev_only in ("pytest", "mypy", "ruff", "hypothesis", "cryptography", "lorapack-testworld"):
        assert dev_only not in dists, f"{dev_only} is in the image"
    assert "pip" not in dists and "setuptools" not in dists
    assert {"lorapack", "kopf", "boto3", "pydantic", "kubernetes-asyncio"} <= dists


def test_operator_starts_from_the_image_against_the_control_plane(
    podman: Podman, devcluster: DevCluster, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    # The kubeconfig (certificates inlined) readable by uid 65532, mounted read-only.
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig.read_text())
    config.chmod(0o644)
    name = f"lorapack-operator-{namespace}"[:60]
    podman(
        "run", "--detach", "--name", name, *Podman.restricted(), "--network=host",
        "-v", f"{config}:/etc/lorapack/kubeconfig:ro",
        "-e", "KUBECONFIG=/etc/lorapack/kubeconfig",
        "-e", "LORAPACK_METRICS_PORT=0",
        "-e", f"LORAPACK_NAMESPACES={namespace}",
        REF, "run", "--standalone",
    )  # fmt: skip
    try:
        devcluster.apply_objects(
            [make_adapter("image-check", namespace, baseModel="no/such-model")]
        )
        cond = _wait_for_ready_condition(devcluster, namespace, "image-check", podman, name)
        assert cond["status"] == "False" and cond.get("reason"), cond
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["Running"], state
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def _wait_for_ready_condition(
    cluster: DevCluster, namespace: str, adapter: str, podman: Podman, container: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        obj = cluster.get_json("loraadapter", adapter, "-n", namespace)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == "Ready":
                return dict(cond)
        time.sleep(1)
    logs = podman("logs", "--tail", "40", container, check=False)
    pytest.fail(f"no Ready condition from the operator in the image:\n{logs.stdout}{logs.stderr}")
