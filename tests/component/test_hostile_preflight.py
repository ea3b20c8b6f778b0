"""Every `preflight` case of the hostile-input corpus through validate_adapter with an
in-memory ArtifactStore: refused (never raised), with the case's reason and words; the healthy
adapter next to it, in the same store, is accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.planning.baseconfig import parse_base_config
from lorapack.reconcilers.validation import validate_adapter
from tests.builders import make_adapter, make_pool
from tests.fakes.artifacts import MemoryStore
from tests.hostile import BASE, TINY, Case, adapter_files, adapter_spec, load_cases

CASES = load_cases("preflight")
POOL = BaseModelPool.model_validate(
    make_pool("tiny", baseModel={"name": BASE, "source": {"s3": {"uri": "s3://models/t/"}}})
)
BASE_CONFIGS = {"ml-platform/tiny": parse_base_config(json.dumps(TINY).encode())[0]}


def adapter(name: str, **spec: Any) -> LoraAdapter:
    body = make_adapter(name, baseModel=BASE, **spec)
    body["metadata"]["generation"] = 1
    return LoraAdapter.model_validate(body)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_preflight_refuses_the_case_and_accepts_its_healthy_neighbour(case: Case) -> None:
    files, sizes = adapter_files(case)
    store = MemoryStore(sizes={f"adapters/team-a/hostile/{n}": s for n, s in sizes.items()})
    store.put("s3://adapters/team-a/hostile/", files)
    healthy = adapter_files(Case("healthy", "preflight", (), None, {}))[0]
    store.put("s3://adapters/team-a/healthy/", healthy)
    bases = {k: v for k, v in BASE_CONFIGS.items() if v is not None}
    if case.raw.get("base") == "none":
        bases = {}

    result = await validate_adapter(
        adapter("hostile", **adapter_spec(case)), [POOL], [], store, bases
    )

    assert result.artifact is None, f"{case.id} was accepted"
    reasons = [p.reason for p in result.problems]
    assert case.reason in reasons, f"{case.id}: {result.problems}"
    text = " ".join(p.message for p in result.problems if p.reason == case.reason)
    for word in case.words:
        assert word in text, f"{case.id}: {word!r} not in {text!r}"
    neighbour = await validate_adapter(adapter("healthy"), [POOL], [], store, bases)
    assert neighbour.artifact is not None and neighbour.problems == ()
