"""The pod simulator: gives kwok's fake pool pods real containers, as loopback processes.

kwok makes pool pods Running on fake GPU nodes, but nothing runs in them. For every running pool
pod this simulator starts what the pod template describes, on 127.0.0.1:
* the engine: the engine double (`lorapack_testworld.enginedouble`) with the pod's own `vllm serve`
  flags, or a real vLLM CPU engine for pods of the pools named in `real_engine_pools`;
* the agent: `lorapack agent` with the pod's environment (POD_NAME, the pool's S3 credentials
  resolved from the Secret the pod references), a cache folder that survives agent restarts but
  not pod re-creation (an emptyDir), and by default the pool's own ServiceAccount token, so the
  agent runs with exactly the RBAC lorapack gives it in a real cluster.
When a pod is deleted or re-created (new UID) both processes stop and a fresh pair starts. The
pod-IP -> engine URL map lets `lorapack_testworld.gateway` route by EndpointSlices as kube-proxy
would. Used by the integration tier, the benchmarks and `make demo`. What the kubelet would
read from the pod spec is in `lorapack_testworld.podenv`, the process handling in
`lorapack_testworld.podprocs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapack import labels
from lorapack.clients.kube import POD, KubeClient
from lorapack_testworld.podenv import container_env, engine_flags, service_account_kubeconfig
from lorapack_testworld.podprocs import post_faults, terminate, wait_http

__all__ = ["PodRuntime", "PodSimulator", "free_port"]

log = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PodRuntime:
    """The processes standing in for one pod's containers."""

    namespace: str
    name: str
    uid: str
    ip: str
    engine_port: int
    folder: Path
    """Where the pod's processes keep their logs (and the cache, in `cache`)."""
    engine: asyncio.subprocess.Process | Any | None = None
    agent: asyncio.subprocess.Process | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.engine_port}"

    @property
    def cache_dir(self) -> Path:
        """The adapter cache (an emptyDir: it survives agent restarts, not a new pod)."""
        return self.folder / "cache"


EngineStarter = Callable[["PodRuntime", Mapping[str, Any], str, list[str], Mapping[str, str]], Any]


class PodSimulator:
    """Watches pool pods and runs an engine + agent pair for each running one."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        model_dir: Path | None = None,
        use_pod_identity: bool = True,
        agent_env: Mapping[str, str] | None = None,
        real_engine: EngineStarter | None = None,
        real_engine_pools: Sequence[str] = (),
        double_flags: Sequence[str] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.model_dir = model_dir
        self.use_pod_identity = use_pod_identity
        self.agent_env = dict(agent_env or {})
        self.real_engine = real_engine
        self.real_engine_pools = set(real_engine_pools)
        self.double_flags = list(double_flags)
        self.pods: dict[str, PodRuntime] = {}
        self.engine_faults: dict[str, dict[str, Any]] = {}
        """pod key -> engine-double faults, set again on every engine (re)start of that pod."""
        self._kube: KubeClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._kube = await KubeClient.connect(str(self.kubeconfig))
        self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for key in list(self.pods):
            await self._stop_pod(key)
        if self._kube is not None:
            await self._kube.close()

    async def __aenter__(self) -> PodSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- queries ------------------------------------------------------------------------------

    def engine_for_ip(self, ip: str) -> str | None:
        """The loopback engine URL standing in for the pod with this IP."""
        for runtime in self.pods.values():
            if runtime.ip == ip:
                return runtime.engine_url
        return None

    def runtime(self, namespace: str, name: str) -> PodRuntime | None:
        return self.pods.get(f"{namespace}/{name}")

    async def wait_running(self, count: int, timeout: float = 60.0) -> None:
        """Until at least `count` pods have their processes."""
        async with asyncio.timeout(timeout):
            while len(self.pods) < count:
                self._changed.clear()
                await self._changed.wait()

    def write_podnet(self) -> Path:
        """pod IP -> engine URL, for the gateway running in another process."""
        path = self.workdir / "podnet.json"
        path.write_text(json.dumps({r.ip: r.engine_url for r in self.pods.values()}))
        return path

    # -- fault injection ----------------------------------------------------------------------

    async def restart_agent(self, namespace: str, name: str) -> None:
        """Kill and restart the pod's agent (its cache folder stays)."""
        runtime = self.pods[f"{namespace}/{name}"]
        await terminate(runtime.agent)
        pod = await self._get_pod(namespace, name)
        runtime.agent = await self._start_agent(runtime, pod)

    async def set_engine_faults(self, namespace: str, name: str, faults: dict[str, Any]) -> None:
        """Inject engine-double faults into the pod's engine; they outlive engine restarts."""
        runtime = self.pods[f"{namespace}/{name}"]
        self.engine_faults[f"{namespace}/{name}"] = dict(faults)
        await post_faults(runtime.engine_url, faults)

    async def restart_engine(self, namespace: str, name: str) -> None:
        """Kill and restart the pod's engine double: it comes back with no adapters."""
        runtime = self.pods[f"{namespace}/{name}"]
        await terminate(runtime.engine)
        pod = await self._get_pod(namespace, name)
        runtime.engine = await self._start_engine(runtime, pod)

    # -- internals ----------------------------------------------------------------------------

    async def _get_pod(self, namespace: str, name: str) -> Mapping[str, Any]:
        assert self._kube is not None
        pod = await self._kube.get(POD, namespace, name)
        if pod is None:
            raise LookupError(f"pod {namespace}/{name} is gone")
        return pod

    async def _watch(self) -> None:
        assert self._kube is not None
        async for event in self._kube.watch(POD, label_selector=labels.POOL_LABEL):
            pod = event.object
            meta = pod.get("metadata") or {}
            key = f"{meta.get('namespace')}/{meta.get('name')}"
            status = pod.get("status") or {}
            running = (
                event.type != "DELETED"
                and status.get("phase") == "Running"
                and bool(status.get("podIP"))
                and meta.get("deletionTimestamp") is None
            )
            async with self._lock:
                current = self.pods.get(key)
                if current is not None and (not running or current.uid != meta.get("uid")):
                    await self._stop_pod(key, wipe_cache=current.uid != meta.get("uid"))
                    current = None
                if running and current is None:
                    try:
                        self.pods[key] = await self._start_pod(pod)
                    except Exception:
                        log.exception("Could not start the processes of pod %s", key)
            self.write_podnet()
            self._changed.set()

    async def _start_pod(self, pod: Mapping[str, Any]) -> PodRuntime:
        meta = pod["metadata"]
        folder = self.workdir / meta["namespace"] / meta["name"]
        runtime = PodRuntime(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            ip=pod["status"]["podIP"],
            engine_port=free_port(),
            folder=folder,
        )
        uid_file = folder / "uid"
        if uid_file.exists() and uid_file.read_text() != runtime.uid:
            shutil.rmtree(runtime.cache_dir, ignore_errors=True)  # a new pod: a new emptyDir
        runtime.cache_dir.mkdir(parents=True, exist_ok=True)
        uid_file.write_text(runtime.uid)
        try:
            runtime.engine = await self._start_engine(runtime, pod)
            runtime.agent = await self._start_agent(runtime, pod)
        except BaseException:
            # Cancelled by stop() mid-start, or failed: the runtime is not in self.pods yet, so
            # nothing else would stop what was started (such engines outlived the test run).
            await terminate(runtime.agent)
            await terminate(runtime.engine)
            raise
        log.info(
            "Started pod %s/%s: engine %s", runtime.namespace, runtime.name, runtime.engine_url
        )
        return runtime

    async def _start_engine(self, runtime: PodRuntime, pod: Mapping[str, Any]) -> Any:
        served, flags = engine_flags(pod)
        pool = ((pod.get("metadata") or {}).get("labels") or {}).get(labels.POOL_LABEL)
        # The engine key the vllm container reads (its other env names in-pod paths, which
        # mean nothing on this host).
        pod_env = await self._container_env(runtime, pod, "vllm")
        engine_env = {k: v for k, v in pod_env.items() if k == "VLLM_API_KEY"}
        if self.real_engine is not None and pool in self.real_engine_pools:
            return await self.real_engine(runtime, pod, served, flags, engine_env)
        log_path = runtime.folder / "engine.log"
        runtime.logs.append(log_path)
        argv = [
            sys.executable,
            "-m",
            "lorapack_testworld.enginedouble",
            "serve",
            str(self.model_dir) if self.model_dir else served,
            "--served-model-name",
            served,
            "--host",
            "127.0.0.1",
            "--port",
            str(runtime.engine_port),
            *flags,
            *self.double_flags,
        ]
        env = {**os.environ, **engine_env, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=log_path.open("ab"), stderr=asyncio.subprocess.STDOUT
        )
        try:
            await wait_http(f"{runtime.engine_url}/health", process)
            faults = self.engine_faults.get(f"{runtime.namespace}/{runtime.name}")
            if faults:
                await post_faults(runtime.engine_url, faults)
        except BaseException:
            await terminate(process)
            raise
        return process

    async def _agent_kubeconfig(self, runtime: PodRuntime, pod: Mapping[str, Any]) -> Path:
        """A kubeconfig for the pod's ServiceAccount (its real RBAC), or the admin one."""
        if not self.use_pod_identity:
            return self.kubeconfig
        assert self._kube is not None
        return await service_account_kubeconfig(
            self._kube, self.kubeconfig, runtime.namespace, pod, runtime.folder / "kubeconfig"
        )

    async def _container_env(
        self, runtime: PodRuntime, pod: Mapping[str, Any], container: str = "lorapack-agent"
    ) -> dict[str, str]:
        """The container's env as the kubelet would resolve it (podenv.container_env)."""
        assert self._kube is not None
        return await container_env(self._kube, runtime.namespace, pod, container)

    async def _start_agent(
        self, runtime: PodRuntime, pod: Mapping[str, Any]
    ) -> asyncio.subprocess.Process:
        kubeconfig = await self._agent_kubeconfig(runtime, pod)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "LORAPACK_")) and k != "KUBECONFIG"
        }
        env.update(await self._container_env(runtime, pod))
        env.update(
            {
                "POD_NAME": runtime.name,
                "POD_NAMESPACE": runtime.namespace,
                "KUBECONFIG": str(kubeconfig),
                "LORAPACK_ENGINE_URL": runtime.engine_url,
                "LORAPACK_CACHE_DIR": str(runtime.cache_dir),
                "LORAPACK_ENGINE_POLL_SECONDS": "0.5",
                "LORAPACK_DRAIN_TIMEOUT_SECONDS": "5",
                # Without credentials in the env, boto3 would search the host's files.
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        env.update(self.agent_env)
        log_path = runtime.folder / "agent.log"
        runtime.logs.append(log_path)
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lorapack.cli",
            "agent",
            env=env,
            stdout=log_path.open("ab"),
            stderr=asyncio.subprocess.STDOUT,
        )

    async def _stop_pod(self, key: str, *, wipe_cache: bool = False) -> None:
        runtime = self.pods.pop(key, None)
        if runtime is None:
            return
        await terminate(runtime.agent)
        await terminate(runtime.engine)
        if wipe_cache:
            shutil.rmtree(runtime.cache_dir, ignore_errors=True)
        log.info("Stopped pod %s", key)
