"""The whole local stack in one object: control plane, S3 server, pod simulator + gateway, operator.

Used by the benchmarks (`with Stack.start(...) as stack:`) and by `make demo` (detached: the
processes outlive the command and `Stack.attach` + `stop` tear them down later). Every process
listens on 127.0.0.1 only; their logs stay in the work folder.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapack_testworld.artifacts import ArtifactIndex, load_index
from lorapack_testworld.basemodels import stage_base_models
from lorapack_testworld.devcluster import DEFAULT_CRDS_DIR, SERVICE_CIDR, DevCluster
from lorapack_testworld.paths import REPO_ROOT
from lorapack_testworld.s3server import S3Server, start_s3_server

__all__ = ["Stack", "StackError"]

ROOT = REPO_ROOT


class StackError(RuntimeError):
    """A part of the stack did not start."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _stop_pid(pid: int, grace: float = 15.0) -> None:
    if not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            os.kill(pid, signal.SIGKILL)


@dataclass
class Stack:
    """A running stack; `pids` are the processes this stack started (besides the cluster)."""

    workdir: Path
    cluster: DevCluster
    s3: S3Server | None
    s3_endpoint: str
    s3_keys: tuple[str, str]
    world: dict[str, Any]
    artifacts: ArtifactIndex
    pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        detach: bool = False,
        operator_env: Mapping[str, str] | None = None,
        real_engine_pools: tuple[str, ...] = (),
        log: Any = None,
        service_cidr: str = SERVICE_CIDR,
    ) -> Stack:
        """Start everything; `log(text)` reports progress."""
        say = log or (lambda _text: None)
        workdir.mkdir(parents=True, exist_ok=True)
        say("starting the local Kubernetes control plane with simulated GPU nodes")
        cluster = DevCluster.start(
            workdir=workdir / "cluster",
            crds_dir=DEFAULT_CRDS_DIR,
            detach=detach,
            service_cidr=service_cidr,
        )
        stack = cls(workdir, cluster, None, "", ("", ""), {}, load_index())
        try:
            say("starting the S3 server")
            s3 = start_s3_server(workdir / "s3")
            if detach:  # the server stops itself at interpreter exit unless told otherwise
                atexit.unregister(s3.stop)
            stack.s3, stack.s3_endpoint = s3, s3.endpoint
            stage_base_models(s3, stack.artifacts)  # the pools' base model, staged in S3
            stack.s3_keys = (s3.access_key, s3.secret_key)
            if s3._process is not None:
                stack.pids["s3"] = s3._process.pid
            stack._save()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("LORAPACK_", "AWS_"))}
            env["PYTHONPATH"] = str(ROOT / "operator")
            say("starting the pod simulator (agent + engine per pool pod) and the gateway")
            world_dir = workdir / "world"
            world_dir.mkdir(exist_ok=True)
            (world_dir / "world.json").unlink(missing_ok=True)
            argv = [
                sys.executable, "-m", "lorapack_testworld.world",
                "--kubeconfig", str(cluster.kubeconfig), "--workdir", str(world_dir),
                "--model-dir", str(stack.artifacts.model.path),
            ]  # fmt: skip
            for pool in real_engine_pools:
                argv += ["--real-engine-pool", pool]
            stack.pids["world"] = stack._spawn(argv, world_dir / "world.log", env, detach)
            stack._save()
            deadline = time.monotonic() + 90
            while not (world_dir / "world.json").exists():
                if time.monotonic() > deadline or not _alive(stack.pids["world"]):
                    raise StackError(f"the pod simulator did not start: see {world_dir}/world.log")
                time.sleep(0.2)
            stack.world = json.loads((world_dir / "world.json").read_text())
            say("starting the lorapack operator")
            op_env = {
                **env,
                "KUBECONFIG": str(cluster.kubeconfig),
                "LORAPACK_METRICS_PORT": "0",
                "LORAPACK_AGENT_IMAGE": "ghcr.io/lorapack/lorapack:local",
                **(operator_env or {}),
            }
            stack.pids["operator"] = stack._spawn(
                [sys.executable, "-m", "lorapack.cli", "run", "--standalone"],
                workdir / "operator.log",
                op_env,
                detach,
            )
            stack._save()
        except BaseException:
            stack.stop()
            raise
        return stack

    @staticmethod
    def _spawn(argv: list[str], log: Path, env: dict[str, str], detach: bool) -> int:
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own: stopped as a whole
            )
        del detach  # the group outlives us either way; stop() ends it
        return process.pid

    def _save(self) -> None:
        (self.workdir / "stack.json").write_text(
            json.dumps(
                {
                    "cluster": str(self.cluster.workdir),
                    "kubeconfig": str(self.cluster.kubeconfig),
                    "s3": self.s3_endpoint,
                    "world": self.world,
                    "pids": self.pids,
                }
            )
        )

    @staticmethod
    def attached_state(workdir: Path) -> dict[str, Any] | None:
        """What a detached stack recorded (None if nothing is recorded)."""
        try:
            data: dict[str, Any] = json.loads((workdir / "stack.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    @staticmethod
    def stop_recorded(workdir: Path) -> list[str]:
        """Stop a detached stack recorded in `workdir`; returns what was stopped."""
        state = Stack.attached_state(workdir)
        stopped: list[str] = []
        if state is None:
            return stopped
        for name in ("operator", "world", "s3"):
            pid = state.get("pids", {}).get(name)
            if pid and _alive(pid):
                _stop_pid(pid)
                stopped.append(f"{name} (pid {pid})")
        cluster_dir = Path(state["cluster"])
        if (cluster_dir / "cluster.json").exists():
            DevCluster.attach(cluster_dir).stop()
            stopped.append("the control plane")
        (workdir / "stack.json").unlink(missing_ok=True)
        return stopped

    def alive(self) -> dict[str, bool]:
        return {name: _alive(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        for name in ("operator", "world", "s3"):
            pid = self.pids.get(name)
            if pid:
                _stop_pid(pid)
        self.cluster.stop()
        (self.workdir / "stack.json").unlink(missing_ok=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
