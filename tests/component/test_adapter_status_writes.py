"""The adapter pass's status write against a watch that lags the pass's own writes.

Found by the fault suite: after an engine restart an adapter went Ready -> Loading -> Ready
faster than the watch delivered the Loading write; the pass compared its new Ready with the
watched (still Ready) copy, skipped the write, and the cluster kept saying Loading until the
adapter's resync. The pass must also compare with what it last wrote.
"""

from __future__ import annotations

from typing import Any

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactObject, ArtifactStatus, LoraAdapter, LoraAdapterStatus
from lorapack.reconcilers.adapter import AdapterOutcome, AdapterWorld, reconcile_adapter
from lorapack.reconcilers.poolworld import AdapterPlacement
from lorapack.reconcilers.validation import ValidationResult
from tests.builders import make_adapter, make_pool
from tests.fakes.artifacts import MemoryStore
from tests.fakes.writers import FakeWriter

DIGEST = "sha256:" + "ab" * 32
POD = "pool-a-0"


def _pool() -> BaseModelPool:
    body = make_pool()
    body["metadata"].update({"uid": "pool-uid", "generation": 1})
    return BaseModelPool.model_validate(body)


def _artifact(adapter: LoraAdapter) -> ArtifactStatus:
    return ArtifactStatus(
        rank=16,
        size_bytes=1000,
        digest=DIGEST,
        uri=adapter.spec.source.s3.uri,
        validated_generation=1,
        objects=[ArtifactObject(path="adapter_model.safetensors", size=1000)],
    )


def _adapter(status: dict[str, Any] | None) -> LoraAdapter:
    body = make_adapter("chat-bot", "team-a")
    body["metadata"].update({"uid": "uid-chat", "generation": 1})
    model = LoraAdapter.model_validate(body)
    return model.model_copy(
        update={"status": LoraAdapterStatus.model_validate(status) if status else None}
    )


async def _pass(
    watched: dict[str, Any] | None, serving: bool, last_written: dict[str, Any] | None
) -> tuple[AdapterOutcome, FakeWriter]:
    adapter = _adapter(watched)
    pool = _pool()
    placement = AdapterPlacement(
        pool=f"{pool.metadata.namespace}/{pool.metadata.name}",
        unplaceable=None,
        desired={POD: DIGEST},
        serving=(POD,) if serving else (),
    )
    world = AdapterWorld(
        adapter=adapter,
        pools=[pool],
        others=[],
        last=ValidationResult(1, _artifact(adapter), ()),
        check_due=False,
        placement=placement,
        pods_by_pool={},
        endpoint="http://chat-bot.team-a.svc:8000",
        now="2026-12-03T07:00:00Z",
        last_written=last_written,
    )
    writer = FakeWriter()
    outcome = await reconcile_adapter(world, MemoryStore(), writer)
    return outcome, writer


def _ready(wire: dict[str, Any]) -> str:
    return next(c["status"] for c in wire["conditions"] if c["type"] == "Ready")


async def test_flip_back_is_written_although_the_watch_still_shows_it() -> None:
    first, _ = await _pass(None, serving=True, last_written=None)
    ready = first.status.wire()
    assert first.written and _ready(ready) == "True"
    # The pod drops out of the Service: Loading is written (the watch delivers it later).
    second, _ = await _pass(ready, serving=False, last_written=ready)
    loading = second.status.wire()
    assert second.written and _ready(loading) == "False"
    # Served again before the watch delivered Loading: the watched copy still says Ready.
    third, writer = await _pass(ready, serving=True, last_written=loading)
    assert third.written, "the Ready status must be written again: the cluster says Loading"
    assert ("status", "LoraAdapter", "team-a", "chat-bot") in writer.calls
    assert _ready(third.status.wire()) == "True"


async def test_settled_adapter_writes_nothing() -> None:
    first, _ = await _pass(None, serving=True, last_written=None)
    ready = first.status.wire()
    again, writer = await _pass(ready, serving=True, last_written=ready)
    assert not again.written and writer.calls == []
    # After a restart nothing was written by this process yet: the watched copy decides.
    fresh, writer = await _pass(ready, serving=True, last_written=None)
    assert not fresh.written and writer.calls == []
