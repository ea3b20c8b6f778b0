"""Using a running dev cluster: kubectl and helm with its kubeconfig, objects, CRDs, nodes.

`ClusterClient` is the part of `DevCluster` (lorapack_testworld.devcluster.cluster) that talks to
the API server through the built CLI tools; the rest of DevCluster runs the processes. Tests,
the demo and the benchmarks call these methods on the DevCluster they were given.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorapack_testworld.devcluster.nodes import NodeShape, node_manifests
from lorapack_testworld.devcluster.tools import Tools

__all__ = ["ClusterClient", "ClusterError"]

log = logging.getLogger("lorapack_testworld.devcluster")


class ClusterError(RuntimeError):
    """The control plane failed to start or stop; the message names the component and its log."""


class ClusterClient:
    """kubectl and helm against one cluster (its kubeconfig and tools, caches in its folder)."""

    workdir: Path
    tools: Tools
    kubeconfig: Path
    kubelet_port: int

    def env(self) -> dict[str, str]:
        """This process's environment plus KUBECONFIG and PATH (built kubectl and helm first),
        with kubectl's and helm's caches kept inside the work folder."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join([*self.tools.path_dirs(), env.get("PATH", "")])
        env["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(self.workdir / "helm" / kind.lower())
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; `check` raises ClusterError on failure."""
        return self._run([str(self.tools.kubectl), *args], input, check, timeout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this cluster; `check` raises ClusterError on failure."""
        return self._run([str(self.tools.helm), *args], input, check, timeout)

    def get_json(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply_objects(self, objects: Sequence[dict[str, Any]]) -> None:
        """Create or update objects (server-side apply as the devcluster field manager)."""
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=lorapack-devcluster",
            "-f",
            "-",
            input=json.dumps(doc),
        )

    def install_crds(self, crds_dir: Path) -> None:
        """Apply every CRD in `crds_dir` and wait until the API server serves them."""
        files = sorted(crds_dir.glob("*.yaml"))
        if not files:
            raise ClusterError(f"no CRD files (*.yaml) in {crds_dir}")
        args = [a for f in files for a in ("-f", str(f))]
        self.kubectl("apply", "--server-side", "--field-manager=lorapack-devcluster", *args)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *args)

    def add_nodes(self, shapes: Sequence[NodeShape], timeout: float = 60.0) -> list[str]:
        """Create more fake nodes (numbered after the existing ones); wait until they are Ready.

        Returns the new node names.
        """
        existing = [n["metadata"]["name"] for n in self.get_json("nodes")["items"]]
        version = json.loads(self.kubectl("version", "-o", "json").stdout)["serverVersion"]
        manifests = node_manifests(
            shapes, existing, kubelet_port=self.kubelet_port, kubelet_version=version["gitVersion"]
        )
        if not manifests:
            return []
        doc = {"apiVersion": "v1", "kind": "List", "items": manifests}
        self.kubectl("create", "-f", "-", input=json.dumps(doc))
        names = [m["metadata"]["name"] for m in manifests]
        self.kubectl(
            "wait",
            "--for=condition=Ready",
            f"--timeout={int(timeout)}s",
            *(f"node/{n}" for n in names),
            timeout=timeout + 10,
        )
        log.info("nodes Ready: %s", ", ".join(names))
        return names

    def _run(
        self, argv: list[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        env = self.env()
        argv = [*argv[:1], f"--kubeconfig={self.kubeconfig}", *argv[1:]]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"{Path(argv[0]).name} {' '.join(argv[2:])} failed (exit {result.returncode}):"
                f" {result.stderr.strip() or result.stdout.strip()}"
            )
        return result
