"""The engine's state: the three adapter tiers, request scheduling, metrics and death.

`EngineState` holds what vLLM's engine keeps (vllm-lora-contract.md section 4): an unbounded
name registry, a CPU LRU cache of max-cpu-loras adapters and max-loras GPU slots; unload only
forgets the name (the weights keep their cache entry until LRU eviction, so an unloaded adapter
can push a registered one out), and an adapter evicted from the CPU cache, or loaded with
load_inplace, is re-read from disk on its next request (if its folder has vanished the engine
dies like a dead EngineCore). It schedules requests as section 4.2 says (at most max-loras
distinct adapters among running requests, the others wait) and publishes the Prometheus
gauges. `Faults` is the injected misbehaviour.

`EngineState` is the base class of the routes (`routes.OpenAIRoutes`) and of `EngineDouble`
(`app`), which sets the configuration attributes declared here and implements `crash`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from lorapack_testworld.enginedouble.adapters import (
    AdapterFiles,
    AdapterInvalid,
    AdapterNotFound,
    ModelDims,
    read_adapter,
)

__all__ = ["EngineDied", "EngineState", "Faults", "InFlight", "Registered"]


@dataclass
class Faults:
    """Injected misbehaviour; every field can be set by POST /_double/faults."""

    #: Seconds each load sleeps before it is processed (a slow engine or a big adapter).
    load_delay_s: float = 0.0
    #: The next N loads answer 500 although the adapter is fine.
    fail_next_loads: int = 0
    #: Seconds each completion stays in flight (lets drain tests observe running requests).
    completion_delay_s: float = 0.0
    #: /health answers 503 while set.
    unhealthy: bool = False
    #: Loads of these adapter names are refused (400 invalid_adapter, as vLLM refuses weights it
    #: cannot use): an engine-side failure that lorapack's pre-flight cannot foresee.
    refuse_names: list[str] = field(default_factory=list)
    #: The next N unloads answer 200 but leave the name registered and served (an unload that
    #: does not take: a frontend that never drops it, or a resolver that registers it again).
    ignore_next_unloads: int = 0


@dataclass
class Registered:
    """An adapter in the name registry (what /v1/models lists) and the files it was read from."""

    name: str
    int_id: int
    path: str
    base_model_name: str | None
    files: AdapterFiles
    #: vLLM 0.32 keeps the load's load_inplace on the request it serves the adapter with
    #: (vllm#33791), so the worker re-reads the folder on every request that uses it.
    load_inplace: bool = False


@dataclass
class InFlight:
    """One completion request: running, or waiting for a LoRA slot."""

    lora_name: str | None
    int_id: int | None
    task: asyncio.Task[Any] | None
    running: bool = False


class EngineDied(Exception):
    """The EngineCore died while a request was in flight: that request answers 500."""


class EngineState:
    """The engine behind the HTTP routes; see the module docstring."""

    # Configuration, set by EngineDouble.__init__ before _reset_engine runs.
    served_names: list[str]
    enable_lora: bool
    max_loras: int
    max_lora_rank: int
    max_cpu_loras: int
    faults: Faults
    dead_shutdown_delay_s: float
    dead: bool
    _dims: ModelDims | None
    _tasks: set[asyncio.Task[None]]

    def crash(self) -> None:
        """Stop answering at once (EngineDouble stops its server)."""
        raise NotImplementedError

    def _drop_inflight(self) -> None:
        # Cancelling a handler makes aiohttp drop its connection: the client sees the same
        # disconnect a dying engine process would cause.
        for flight in self._inflight.values():
            if flight.task is not None and flight.task is not asyncio.current_task():
                flight.task.cancel()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reset_engine(self) -> None:
        self._registry: dict[str, Registered] = {}
        self._cpu_cache: OrderedDict[int, AdapterFiles] = OrderedDict()
        self._gpu_slots: OrderedDict[int, None] = OrderedDict()
        self._id_counter = 0
        self._name_locks: dict[str, asyncio.Lock] = {}
        self._inflight: dict[int, InFlight] = {}
        self._request_counter = 0
        self._scheduler = asyncio.Condition()
        self._death = asyncio.Event()
        self._prom = CollectorRegistry(auto_describe=True)
        labels = {"engine": "0", "model_name": self.served_names[0]}
        self._running_gauge = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            list(labels),
            registry=self._prom,
        ).labels(**labels)
        self._waiting_gauge = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            list(labels),
            registry=self._prom,
        ).labels(**labels)
        by_reason = Gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
            "scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, "
            "KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
            [*labels, "reason"],
            registry=self._prom,
        )
        by_reason.labels(**labels, reason="capacity").set(0)
        self._deferred_gauge = by_reason.labels(**labels, reason="deferred")
        self._lora_info: Gauge | None = None
        if self.enable_lora:
            self._lora_info = Gauge(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
                registry=self._prom,
            )

    def state(self) -> dict[str, Any]:
        """Registry, caches (LRU order, oldest first) and in-flight work, for tests."""
        by_id = {reg.int_id: reg.name for reg in self._registry.values()}
        return {
            "registry": {
                reg.name: {"id": reg.int_id, "path": reg.path, "digest": reg.files.digest}
                for reg in self._registry.values()
            },
            "cpu_cache": [{"id": i, "name": by_id.get(i)} for i in self._cpu_cache],
            "gpu_slots": [{"id": i, "name": by_id.get(i)} for i in self._gpu_slots],
            "running": sorted(str(f.lora_name) for f in self._inflight.values() if f.running),
            "waiting": sorted(str(f.lora_name) for f in self._inflight.values() if not f.running),
            "faults": asdict(self.faults),
            "dead": self.dead,
        }

    def _next_id(self) -> int:
        self._id_counter += 1
        return self._id_counter

    def _engine_add_lora(self, path: str, int_id: int) -> AdapterFiles:
        """The worker side: validate and read, insert into the CPU LRU, activate a GPU slot."""
        if self.faults.fail_next_loads > 0:
            self.faults.fail_next_loads -= 1
            raise AdapterInvalid("injected load failure (lorapack engine double)")
        if not self.enable_lora:
            raise AdapterInvalid("LoRA is not enabled. Use --enable-lora to enable LoRA.")
        files = read_adapter(path, max_lora_rank=self.max_lora_rank, dims=self._dims)
        self._cache_insert(int_id, files)
        self._activate(int_id)
        return files

    def _cache_insert(self, int_id: int, files: AdapterFiles) -> None:
        self._cpu_cache[int_id] = files
        self._cpu_cache.move_to_end(int_id)
        while len(self._cpu_cache) > self.max_cpu_loras:
            evicted, _ = self._cpu_cache.popitem(last=False)
            # Eviction from the CPU cache frees the GPU slot as well (section 4.3).
            self._gpu_slots.pop(evicted, None)

    def _activate(self, int_id: int) -> None:
        if int_id in self._gpu_slots:
            self._gpu_slots.move_to_end(int_id)
            return
        running = {f.int_id for f in self._inflight.values() if f.running}
        while len(self._gpu_slots) >= self.max_loras:
            # Evict the least recently used slot that no running request is using.
            victim = next((i for i in self._gpu_slots if i not in running), None)
            if victim is None:
                break
            del self._gpu_slots[victim]
        self._gpu_slots[int_id] = None

    async def _admit(self, flight: InFlight, adapter: Registered) -> None:
        """Wait for a LoRA slot (section 4.2), then make sure the weights are resident."""
        async with self._scheduler:
            await self._scheduler.wait_for(lambda: self.dead or self._can_run(adapter.int_id))
        if self.dead:
            raise EngineDied
        if adapter.int_id not in self._cpu_cache or adapter.load_inplace:
            # Evicted from the CPU cache, or loaded with load_inplace (which sticks): the worker
            # re-reads the folder inside the model step; a failure there is fatal to the
            # EngineCore (section 4.3; a sticky adapter dies with its folder even while cached).
            try:
                files = read_adapter(
                    adapter.path, max_lora_rank=self.max_lora_rank, dims=self._dims
                )
            except (AdapterNotFound, AdapterInvalid, OSError) as exc:
                self._die()
                raise EngineDied from exc
            adapter.files = files
            self._cache_insert(adapter.int_id, files)
        else:
            self._cpu_cache.move_to_end(adapter.int_id)
        self._activate(adapter.int_id)

    def _can_run(self, int_id: int) -> bool:
        running = {f.int_id for f in self._inflight.values() if f.running and f.int_id is not None}
        return int_id in running or len(running) < self.max_loras

    def _die(self) -> None:
        """A dead EngineCore: vLLM 0.32 answers 500, then the API server shuts itself down."""
        self.dead = True
        self._death.set()
        self._spawn(self._wake_scheduler())
        loop = asyncio.get_running_loop()
        loop.call_later(self.dead_shutdown_delay_s, self.crash)

    async def _wake_scheduler(self) -> None:
        async with self._scheduler:
            self._scheduler.notify_all()

    def _publish(self) -> None:
        running = sum(1 for f in self._inflight.values() if f.running)
        waiting = len(self._inflight) - running
        self._running_gauge.set(running)
        self._waiting_gauge.set(waiting)
        self._deferred_gauge.set(waiting)
        if self._lora_info is None:
            return
        # vLLM keys both labels by the adapters that have any request in flight, in order of
        # arrival; every scheduler update writes the current combination's timestamp.
        names = list(dict.fromkeys(f.lora_name for f in self._inflight.values() if f.lora_name))
        joined = ",".join(names)
        self._lora_info.labels(
            max_lora=str(self.max_loras),
            waiting_lora_adapters=joined,
            running_lora_adapters=joined,
        ).set(time.time())
