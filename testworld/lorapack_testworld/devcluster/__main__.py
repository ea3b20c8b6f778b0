"""Command line of the local control plane: `python -m lorapack_testworld.devcluster`.

`make cluster-up` / `make cluster-down` call it. `up` starts a detached cluster, records where
it lives in `$LORAPACK_CACHE/run/devcluster/state.json` and prints the kubeconfig; `down` reads
that record and stops exactly the processes `up` started; `status` reports them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from lorapack_testworld.devcluster.cluster import DEFAULT_CRDS_DIR, ClusterError, DevCluster
from lorapack_testworld.devcluster.nodes import DEFAULT_NODES, parse_node_spec
from lorapack_testworld.devcluster.tools import ToolsMissing, cache_root


def run_dir() -> Path:
    """Where `up` records the running cluster for `down` and `status`."""
    return cache_root() / "run" / "devcluster"


def _pointer() -> Path:
    return run_dir() / "state.json"


def _recorded_workdir() -> Path | None:
    try:
        return Path(json.loads(_pointer().read_text())["workdir"])
    except (OSError, ValueError, KeyError):
        return None


def cmd_up(args: argparse.Namespace) -> int:
    nodes = parse_node_spec(args.nodes) if args.nodes else list(DEFAULT_NODES)
    previous = _recorded_workdir()
    if previous is not None and (previous / "cluster.json").exists():
        cluster = DevCluster.attach(previous)
        if any(cluster.alive().values()):
            print(
                f"a devcluster is already running ({cluster.server}, work folder {previous}): "
                "run `make cluster-down` first",
                file=sys.stderr,
            )
            return 1
    workdir = Path(args.workdir) if args.workdir else run_dir() / "cluster"
    workdir.mkdir(parents=True, exist_ok=True)
    crds: Path | None = DEFAULT_CRDS_DIR if args.crds is None else Path(args.crds)
    if args.crds == "none":
        crds = None
    cluster = DevCluster.start(workdir=workdir, nodes=nodes, crds_dir=crds, detach=True)
    run_dir().mkdir(parents=True, exist_ok=True)
    _pointer().write_text(json.dumps({"workdir": str(cluster.workdir)}))
    print(f"devcluster running at {cluster.server} (logs in {cluster.workdir / 'logs'})")
    print(f"kubeconfig: {cluster.kubeconfig}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"export PATH={':'.join(cluster.tools.path_dirs())}:$PATH   # kubectl, helm")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else _recorded_workdir()
    if workdir is None or not (workdir / "cluster.json").exists():
        print("no devcluster recorded: nothing to stop")
        _pointer().unlink(missing_ok=True)
        return 0
    cluster = DevCluster.attach(workdir)
    try:
        cluster.stop()
    finally:
        _pointer().unlink(missing_ok=True)
    if workdir == run_dir() / "cluster":
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"devcluster stopped: {len(cluster.processes)} processes, no port left listening")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else _recorded_workdir()
    if workdir is None or not (workdir / "cluster.json").exists():
        print("no devcluster running (start one with `make cluster-up`)")
        return 1
    cluster = DevCluster.attach(workdir)
    alive = cluster.alive()
    print(f"server: {cluster.server}\nkubeconfig: {cluster.kubeconfig}")
    for record in cluster.processes:
        state = "running" if alive[record.name] else "NOT RUNNING"
        print(f"  {record.name:<24} pid {record.pid:<8} {state}  log {record.log}")
    if all(alive.values()):
        print(cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product", check=False).stdout)
        return 0
    print("some components are down: `make cluster-down` then `make cluster-up`")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lorapack_testworld.devcluster",
        description="Local Kubernetes control plane with simulated GPU nodes (loopback only).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster and leave it running")
    up.add_argument(
        "--nodes",
        help="node shapes NAME:COUNT[:GPUS],... (default l20:4,h100:2; shapes: l20, h100)",
    )
    up.add_argument(
        "--crds", help=f"folder of CRD files to install (default {DEFAULT_CRDS_DIR}; 'none': none)"
    )
    for name, p in (("up", up), ("down", None), ("status", None)):
        if p is None:
            p = sub.add_parser(name, help=f"{name} the recorded cluster")
        p.add_argument(
            "--workdir",
            help=f"work folder (default {run_dir() / 'cluster'}, recorded in {_pointer()})",
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[devcluster] %(message)s", stream=sys.stderr)
    handlers = {"up": cmd_up, "down": cmd_down, "status": cmd_status}
    try:
        return handlers[args.command](args)
    except (ToolsMissing, ClusterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # DevCluster.start already stopped what it had started
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
