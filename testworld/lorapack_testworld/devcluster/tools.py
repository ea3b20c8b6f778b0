"""Where the Go programs of the local control plane are: the cache folders of hack/build-tools.sh.

The build script owns the layout (`$LORAPACK_CACHE/bin/<name>-<version>-<go.sum hash>/`); this
module asks it (`--print-dir`) instead of guessing, and checks each folder is complete. Used by
`lorapack_testworld.devcluster.cluster`, the command line and the test fixtures.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Final

from lorapack_testworld.paths import REPO_ROOT as _REPO_ROOT

__all__ = ["REPO_ROOT", "Tools", "ToolsMissing", "cache_root"]

REPO_ROOT: Final = _REPO_ROOT
_BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-tools.sh"


class ToolsMissing(RuntimeError):
    """The control-plane binaries are not built yet; the message says how to build them."""


def cache_root() -> Path:
    """$LORAPACK_CACHE, or ~/.cache/lorapack as the Makefile and build script default to."""
    if value := os.environ.get("LORAPACK_CACHE"):
        return Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "lorapack"


@dataclasses.dataclass(frozen=True)
class Tools:
    """Absolute paths of every binary the cluster runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    helm: Path

    @classmethod
    def locate(cls) -> Tools:
        """Find the binaries hack/build-tools.sh built; raise ToolsMissing if any is absent."""
        if not _BUILD_SCRIPT.is_file():
            raise ToolsMissing(
                f"{_BUILD_SCRIPT} not found: lorapack_testworld.devcluster needs a source checkout "
                "(pip install -e .) to find the Go tools"
            )
        dirs = {name: _print_dir(name) for name in ("k8s", "etcd", "kwok", "helm")}
        missing = [name for name, d in dirs.items() if not (d / ".complete").is_file()]
        if missing:
            raise ToolsMissing(
                f"control-plane binaries not built ({', '.join(missing)} missing under "
                f"{cache_root() / 'bin'}): run `make tools` (hack/build-tools.sh; a cold "
                "build takes about 20 minutes)"
            )
        k8s = dirs["k8s"]
        return cls(
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            kubectl=k8s / "kubectl",
            etcd=dirs["etcd"] / "etcd",
            kwok=dirs["kwok"] / "kwok",
            helm=dirs["helm"] / "helm",
        )

    def path_dirs(self) -> list[str]:
        """Folders to put first on PATH so `kubectl` and `helm` are the built ones."""
        return sorted({str(self.kubectl.parent), str(self.helm.parent)})


def _print_dir(name: str) -> Path:
    result = subprocess.run(
        ["bash", str(_BUILD_SCRIPT), "--print-dir", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ToolsMissing(
            f"hack/build-tools.sh --print-dir {name} failed: {result.stderr.strip()}"
        )
    return Path(result.stdout.strip())
