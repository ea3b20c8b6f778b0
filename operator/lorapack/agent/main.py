"""`lorapack agent`: wires the agent loop to the real engine, cache, S3 and Kubernetes.

Also `lorapack agent --fetch-model DIR`, the pool pods' init container that downloads the base
model's weights from S3 before vLLM starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import random
import signal
from pathlib import Path

from lorapack import labels
from lorapack.agent.cache import AdapterCache
from lorapack.agent.loop import Agent
from lorapack.agent.reporter import PodReporter
from lorapack.api.podstate import DesiredState, S3Location, desired_from_secret
from lorapack.clients.engine import EngineClient
from lorapack.clients.kube import POD, SECRET, KubeClient
from lorapack.clients.s3 import DownloadItem, S3Client, S3Settings
from lorapack.config import AgentConfig
from lorapack.errors import InvalidSpec, LorapackError

__all__ = ["WATCH_PROBLEM_ANNOTATION", "decode_desired", "fetch_model", "run_agent"]

log = logging.getLogger(__name__)


def decode_desired(secret: dict[str, object]) -> DesiredState | None:
    """The DesiredState inside a desired-state Secret (None if absent or unreadable)."""
    state = desired_from_secret(secret, labels.DESIRED_KEY)
    if state is None and secret.get("data"):
        log.error("Ignored an unreadable desired state in Secret %s", secret.get("metadata"))
    return state


class _S3Clients:
    """One S3 client per (endpoint, region, addressing style), using the pod's own credentials
    (the pool's Secret in the environment, or the ambient identity)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str | None, str | None, str], S3Client] = {}

    def __call__(self, location: S3Location) -> S3Client:
        key = (location.endpoint, location.region, location.addressing_style)
        if key not in self._clients:
            self._clients[key] = S3Client(
                S3Settings(
                    endpoint=location.endpoint,
                    region=location.region,
                    addressing_style=location.addressing_style,
                )
            )
        return self._clients[key]


#: Annotation on the agent's Pod saying why the desired state is not being followed (absent:
#: it is). The operator and `kubectl describe pod` show it; the agent keeps serving the last
#: desired state it read meanwhile (dropping every adapter would be worse than a stale list).
WATCH_PROBLEM_ANNOTATION = "lorapack.io/desired-state-problem"
WATCH_BACKOFF_FIRST = 1.0
WATCH_BACKOFF_CAP = 60.0


class _WatchProblem:
    """Writes and clears WATCH_PROBLEM_ANNOTATION; a failed write is logged, never raised."""

    def __init__(self, kube: KubeClient, config: AgentConfig) -> None:
        self._kube = kube
        self._config = config
        self.current: str | None = None

    async def set(self, message: str | None) -> None:
        if message == self.current:
            return
        try:
            await self._kube.patch(
                POD,
                self._config.pod_namespace,
                self._config.pod_name,
                {"metadata": {"annotations": {WATCH_PROBLEM_ANNOTATION: message}}},
                kind="merge",
                field_manager=labels.AGENT_FIELD_MANAGER,
            )
            self.current = message
        except Exception as err:  # the report is best effort: the watch retries regardless
            log.warning("Could not report the desired-state problem on the Pod: %s", err)


async def _follow_desired(
    kube: KubeClient,
    config: AgentConfig,
    agent: Agent,
    *,
    first_delay: float = WATCH_BACKOFF_FIRST,
    max_delay: float = WATCH_BACKOFF_CAP,
    stop: asyncio.Event | None = None,
) -> None:
    """Follow the desired-state Secret forever: a watch that ends or fails (403 after an RBAC
    change, a Secret the agent may no longer read, a broken API server) is restarted with
    jittered exponential backoff and reported on the Pod; the agent keeps its last state."""
    problem = _WatchProblem(kube, config)
    secret = f"{config.pod_namespace}/{config.desired_secret}"
    delay = first_delay
    rng = random.Random()
    while stop is None or not stop.is_set():
        try:
            async for event in kube.watch(
                SECRET,
                config.pod_namespace,
                field_selector=f"metadata.name={config.desired_secret}",
            ):
                delay = first_delay
                if problem.current is not None:
                    log.info("Following the desired state in Secret %s again", secret)
                    await problem.set(None)
                if event.type == "DELETED":
                    agent.set_desired(None)
                    continue
                state = decode_desired(event.object)
                if state is not None:
                    agent.set_desired(state)
            why = "the watch ended"
        except asyncio.CancelledError:
            raise
        except LorapackError as err:
            why = f"{err.reason}: {err.message}"
        except Exception as err:  # never let the follower die: it is the agent's only input
            why = f"{type(err).__name__}: {err}"
        log.error(
            "Desired state in Secret %s not followed (%s); keeping the last one, retrying in "
            "%.1f s",
            secret,
            why,
            delay,
        )
        await problem.set(
            f"watching Secret {secret} failed ({why}); serving the last desired state read; "
            "check the agent's Role (get/list/watch on that Secret)"
        )
        await asyncio.sleep(rng.uniform(delay / 2, delay))
        delay = min(delay * 2, max_delay)


async def run_agent(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop`)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(
            max_workers=max(8, 2 * config.max_parallel), thread_name_prefix="agent-io"
        )
    )
    kube = await KubeClient.connect(config.kubeconfig)
    engine = EngineClient(config.engine_url, api_key=config.engine_api_key)
    cache = AdapterCache(Path(config.cache_dir))
    agent = Agent(
        engine=engine,
        cache=cache,
        reporter=PodReporter(kube, config.pod_namespace, config.pod_name),
        s3_factory=_S3Clients(),
        drain_timeout=config.drain_timeout_seconds,
        poll_seconds=config.engine_poll_seconds,
        resync_seconds=config.resync_seconds,
        max_parallel=config.max_parallel,
    )
    log.info(
        "Agent started for pod %s/%s (engine %s, cache %s)",
        config.pod_namespace,
        config.pod_name,
        config.engine_url,
        config.cache_dir,
    )
    follower = asyncio.ensure_future(_follow_desired(kube, config, agent))
    try:
        await agent.run(stop)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follower
        await engine.aclose()
        await kube.close()


async def fetch_model(dest: Path) -> int:
    """Download the base model (LORAPACK_MODEL_BUCKET/PREFIX) into `dest`; returns file count."""
    bucket = os.environ.get("LORAPACK_MODEL_BUCKET")
    prefix = os.environ.get("LORAPACK_MODEL_PREFIX", "")
    if not bucket:
        raise InvalidSpec("LORAPACK_MODEL_BUCKET is not set (the pool template sets it)")
    client = S3Client(
        S3Settings(
            endpoint=os.environ.get("LORAPACK_S3_ENDPOINT"), region=os.environ.get("AWS_REGION")
        )
    )
    objects = [o for o in await client.list_prefix(bucket, prefix) if not o.key.endswith("/")]
    items = []
    for obj in objects:
        relative = obj.key[len(prefix) :]
        if not relative or relative.startswith("/") or ".." in Path(relative).parts:
            raise InvalidSpec(f"refusing to write object key {obj.key!r} outside {dest}")
        items.append(
            DownloadItem(
                bucket=bucket, key=obj.key, version_id=None, dest=dest / relative, size=obj.size
            )
        )
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    await client.download(items)
    return len(items)
