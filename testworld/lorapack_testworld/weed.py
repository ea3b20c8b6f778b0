"""Running SeaweedFS for the test world's S3 server: the binary, its identities, its command.

Used by lorapack_testworld.s3server (start_s3_server), which wraps the process in an S3Server
and waits until it serves objects, and by the pytest fixtures (tests/fixtures/s3.py) to skip
S3 tests when the binary is not built. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lorapack_testworld.paths import REPO_ROOT

__all__ = ["find_weed", "free_ports", "spawn_weed", "weed_command", "write_identities"]


def find_weed() -> Path:
    """The SeaweedFS binary: $LORAPACK_WEED, else the one hack/build-tools.sh cached for the
    pinned wrapper module (its folder name ends with the hash of hack/tools/seaweedfs/go.sum)."""
    override = os.environ.get("LORAPACK_WEED")
    if override:
        return Path(override)
    go_sum = REPO_ROOT / "hack" / "tools" / "seaweedfs" / "go.sum"
    cache = Path(
        os.environ.get("LORAPACK_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lorapack"
    )
    if go_sum.is_file():
        tag = hashlib.sha256(go_sum.read_bytes()).hexdigest()[:12]
        for folder in sorted((cache / "bin").glob(f"seaweedfs-*-{tag}")):
            if (folder / ".complete").exists() and (folder / "weed").is_file():
                return folder / "weed"
    raise FileNotFoundError(
        f"the SeaweedFS binary is not built (looked in {cache}/bin/seaweedfs-*); run "
        "`make tools` (hack/build-tools.sh), or set LORAPACK_WEED to a weed binary"
    )


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on 127.0.0.1 (held together, so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_identities(
    folder: Path, *, admin: tuple[str, str], reader: tuple[str, str], bucket: str
) -> Path:
    """Write SeaweedFS's `-s3.config` identities file into `folder`: `admin` (access key,
    secret key) may do everything, `reader` read and list `bucket` only; returns its path."""
    identities = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": admin[0], "secretKey": admin[1]}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": reader[0], "secretKey": reader[1]}],
                "actions": [f"Read:{bucket}", f"List:{bucket}"],
            },
        ]
    }
    config_path = folder / "s3-identities.json"
    config_path.write_text(json.dumps(identities, indent=2))
    return config_path


def weed_command(
    weed: Path, data: Path, config_path: Path, s3_port: int, ports: Sequence[int]
) -> list[str]:
    """`weed server -s3` on 127.0.0.1 only: S3 on `s3_port`, master, volume and filer on
    ports[1:8], data under `data`, the identities file `config_path`."""
    return [
        str(weed),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports[1]}",
        f"-master.port.grpc={ports[2]}",
        f"-volume.port={ports[3]}",
        f"-volume.port.grpc={ports[4]}",
        "-filer",
        f"-filer.port={ports[5]}",
        f"-filer.port.grpc={ports[6]}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={ports[7]}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config_path}",
        # Nothing leaves the machine; small volumes so a test run does not reserve gigabytes.
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=512",
        # Every bucket is a collection with its own volumes (sparse files): room for hundreds.
        "-volume.max=500",
        "-volume.preStopSeconds=0",
    ]


def spawn_weed(args: Sequence[str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start `args` in its own session (stop signals it alone, by pid), logging to
    `log_path`."""
    env = dict(os.environ)
    # The master grows 7 volumes per new collection (bucket) by default; tests make a bucket
    # each, so grow one at a time (what `weed mini` does for small setups).
    for copies in ("1", "2", "3", "OTHER"):
        env.setdefault(f"WEED_MASTER_VOLUME_GROWTH_COPY_{copies}", "1")
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
