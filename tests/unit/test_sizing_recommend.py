"""Recommendations (rank, CPU cache, slot cost) and the merged vs multi-LoRA GPU comparison."""

from __future__ import annotations

import pytest

from lorapack.errors import InvalidSpec
from lorapack.sizing import recommend as recommend_module
from lorapack.sizing.catalog import GPUS, MODELS
from lorapack.sizing.memory import EngineSettings, estimate
from lorapack.sizing.recommend import (
    CostComparison,
    compare_costs,
    gpus_for_one_copy,
    recommend,
    slot_cost,
)

LLAMA = MODELS["llama-3-8b"]
L20 = GPUS["L20"]
GIB = 2**30
MIB = 2**20


def test_slot_cost_of_the_worked_example() -> None:
    cost = slot_cost(estimate(LLAMA, L20))
    assert cost.bytes_per_gpu == 2_955_411_456 // 8
    assert cost.kv_tokens == 2_955_411_456 // 8 // 131_072


def test_rank_recommendation_frees_kv_cache() -> None:
    rec = recommend(LLAMA, L20, EngineSettings(max_cpu_loras=32), adapter_rank=16)
    assert rec.max_lora_rank == 16
    assert rec.kv_tokens_gained == pytest.approx(17_000, rel=0.02)
    assert any("--max-lora-rank 16 instead of 64 frees 2.06 GiB" in n for n in rec.notes)
    assert rec.slot.bytes_per_gpu == 8 * 16 * 2 * (81_920 * 32 + 2 * (128_256 + 4096)) // 8


def test_rank_above_the_pool_limit_is_raised_with_vllms_reason() -> None:
    rec = recommend(LLAMA, L20, EngineSettings(), adapter_rank=100)
    assert rec.max_lora_rank == 128
    assert rec.kv_tokens_gained < 0
    assert "LoRA rank 100 is greater than max_lora_rank 64" in rec.notes[0]


@pytest.mark.parametrize(
    ("rank", "want_in_message"),
    [
        pytest.param(600, "retrain the adapter at rank <= 512", id="above-vllm-limit"),
        pytest.param(512, "need --max-lora-rank 512, which does not fit", id="does-not-fit"),
    ],
)
def test_rank_that_cannot_be_served(rank: int, want_in_message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        recommend(LLAMA, GPUS["A10"], EngineSettings(), adapter_rank=rank)
    assert want_in_message in err.value.message


@pytest.mark.parametrize(
    ("adapters", "host", "want_cpu", "want_note"),
    [
        pytest.param(None, None, 32, None, id="nothing-to-change"),
        pytest.param(50, None, 50, "pass --host-memory to cap it", id="all-adapters-no-budget"),
        pytest.param(50, 4 * GIB, 50, "keeps 50 adapters", id="budget-fits-all"),
        pytest.param(50, 2 * GIB, 24, "so 3 pods are needed for 50 adapters", id="budget-caps"),
        pytest.param(50, 500 * MIB, 8, "holds 5 adapters of rank 16", id="budget-below-slots"),
        pytest.param(4, None, 8, None, id="never-below-max-loras"),
    ],
)
def test_cpu_cache_recommendation(
    adapters: int | None, host: int | None, want_cpu: int, want_note: str | None
) -> None:
    # rank 16: 80 MiB per adapter in the CPU cache (contract §7.6)
    settings = EngineSettings(max_cpu_loras=32 if adapters is None else 8)
    rec = recommend(
        LLAMA, L20, settings, adapter_rank=16, adapters=adapters, host_memory_bytes=host
    )
    assert rec.max_cpu_loras == want_cpu
    assert rec.host_bytes == (want_cpu + 1) * 80 * MIB
    if want_note is not None:
        assert any(want_note in n for n in rec.notes), rec.notes


@pytest.mark.parametrize(
    ("model", "gpu", "settings", "want"),
    [
        pytest.param("llama-3-8b", "L20", EngineSettings(), 1, id="8b-l20"),
        pytest.param("llama-3-70b", "L20", EngineSettings(), 4, id="70b-l20"),
        pytest.param("llama-3-70b", "H100-SXM", EngineSettings(), 4, id="70b-h100"),
        pytest.param("qwen2.5-72b", "H200", EngineSettings(), 2, id="72b-h200"),
        pytest.param("gemma-2-9b", "A10", EngineSettings(), 2, id="gemma-a10"),
        pytest.param(
            "qwen2.5-72b",
            "A10",
            EngineSettings(gpu_memory_utilization=0.3),
            None,
            id="no-pod-holds-it",
        ),
    ],
)
def test_gpus_for_one_merged_copy(
    model: str, gpu: str, settings: EngineSettings, want: int | None
) -> None:
    assert gpus_for_one_copy(MODELS[model], GPUS[gpu], settings) == want


def test_current_cache_above_the_host_budget_is_noted() -> None:
    settings = EngineSettings(max_cpu_loras=32)  # 33 × 320 MiB at rank 64
    rec = recommend(LLAMA, L20, settings, host_memory_bytes=8 * GIB)
    assert "as set, --max-cpu-loras 32 at rank 64 needs 10.31 GiB" in rec.notes[0]
    assert rec.max_cpu_loras == 8 * GIB // (320 * MIB) - 1
    within = recommend(LLAMA, L20, settings, host_memory_bytes=11 * GIB)
    assert not any("as set" in n for n in within.notes)


def test_cost_comparison_of_the_seed_scenario() -> None:
    cost = compare_costs(LLAMA, L20, EngineSettings(max_cpu_loras=32), adapters=50)
    assert cost == CostComparison(
        adapters=50, gpus_per_copy=1, adapters_per_pod=32, pods=2, gpus_per_pod=1
    )
    assert (cost.merged_gpus, cost.pool_gpus, cost.ratio) == (50, 2, 25.0)


def test_cost_comparison_with_tensor_parallel_pods() -> None:
    settings = EngineSettings(max_cpu_loras=16, tensor_parallel=4)
    cost = compare_costs(MODELS["llama-3-70b"], GPUS["H100-SXM"], settings, 40, 10)
    assert (cost.pods, cost.pool_gpus, cost.merged_gpus) == (4, 16, 160)
    assert cost.ratio == 10.0


def test_cost_comparison_when_merged_does_not_fit() -> None:
    cost = CostComparison(
        adapters=3, gpus_per_copy=None, adapters_per_pod=8, pods=1, gpus_per_pod=1
    )
    assert cost.merged_gpus is None
    assert cost.ratio is None


@pytest.mark.parametrize(
    ("adapters", "per_pod", "want_in_message"),
    [(0, None, "--adapters must be >= 1"), (5, 0, "--adapters-per-pod must be >= 1")],
    ids=["no-adapters", "no-room"],
)
def test_cost_comparison_errors(adapters: int, per_pod: int | None, want_in_message: str) -> None:
    with pytest.raises(InvalidSpec, match=want_in_message):
        compare_costs(LLAMA, L20, EngineSettings(), adapters, per_pod)


def test_public_surface() -> None:
    for name in recommend_module.__all__:
        assert hasattr(recommend_module, name), name
