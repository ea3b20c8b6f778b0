"""The images `make image` builds, and podman runs of them in a private storage.

`hack/image/build.sh` writes OCI archives to `$LORAPACK_CACHE/images/<name>-<version>.oci.tar`
(a link to the archive of the current inputs). Tests load an archive into a podman storage of
their own (a temporary folder: nothing shared with the build's storage or other engineers) and
run it the way the chart does: read-only root, an emptyDir-like tmpfs on /tmp, uid/gid 65532,
every capability dropped, no privilege escalation, runc (crun fails on this host's cgroups).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lorapack_testworld.devcluster.tools import cache_root

__all__ = ["PRODUCT", "TESTWORLD", "ImageMissing", "Podman", "image_archive"]

PRODUCT = "lorapack"
TESTWORLD = "lorapack-testworld"
_REFS = {PRODUCT: "ghcr.io/lorapack/lorapack", TESTWORLD: "localhost/lorapack-testworld"}


class ImageMissing(RuntimeError):
    """The archive is not built (or podman is not installed); the message says how to fix it."""


def image_archive(name: str, version: str) -> Path:
    """The OCI archive of image `name` ("lorapack" or "lorapack-testworld") at `version`."""
    path = cache_root() / "images" / f"{name}-{version}.oci.tar"
    if not path.exists():
        target = "image" if name == PRODUCT else "testworld-image"
        raise ImageMissing(f"{path} does not exist: run `make {target}`")
    return path.resolve()


def image_ref(name: str, version: str) -> str:
    """The reference the archive is tagged with (what the chart and pools name)."""
    return f"{_REFS[name]}:{version}"


class Podman:
    """podman with its storage, run folder and config in `workdir` (removed by `close`)."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("podman") is None:
            raise ImageMissing(
                "podman is not installed: run `hack/image/install-packages.sh image`"
            )
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "containers.conf"
        conf.write_text(
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
            "[containers]\n"
            # Root here lacks CAP_SYS_RESOURCE: podman's default rlimits are refused.
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        )
        storage = workdir / "storage.conf"
        storage.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{workdir}/graph"\n'
            f'runroot = "{workdir}/run"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_STORAGE_CONF": str(storage),
            "TMPDIR": str(workdir),
        }

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
            )
        return result

    def load(self, archive: Path) -> None:
        self("load", "--quiet", "-i", str(archive), timeout=300)

    @staticmethod
    def restricted(extra: Sequence[str] = ()) -> list[str]:
        """`podman run` flags matching the chart's restricted securityContext."""
        return [
            "--read-only",
            "--tmpfs",
            "/tmp:rw,size=64m,mode=1777",
            "--user",
            "65532:65532",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            *extra,
        ]

    def close(self) -> None:
        """Remove every container and image of this storage, then the folder."""
        self("rm", "--all", "--force", "--time", "5", check=False, timeout=60)
        # Unmounts the overlay layers before the folder goes.
        self("system", "reset", "--force", check=False, timeout=120)
        shutil.rmtree(self.workdir, ignore_errors=True)
