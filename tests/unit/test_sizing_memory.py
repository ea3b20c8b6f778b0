"""The GPU-memory model: the §7.4 worked example, the §7.5 table, validation and flags."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.errors import InvalidSpec
from lorapack.sizing import memory
from lorapack.sizing.catalog import GIB, GPUS, MODELS, param_count
from lorapack.sizing.memory import (
    EngineSettings,
    SizingReport,
    batch_limits,
    estimate,
    from_pool_spec,
    kv_bytes_per_token,
    lora_buffer_bytes,
    smallest_allowed_rank,
    tensor_parallel_sizes,
    validate_settings,
    weight_bytes,
)
from tests.builders import make_pool

LLAMA = MODELS["llama-3-8b"]
L20 = GPUS["L20"]


def gib(value: int) -> float:
    return value / GIB


def codes(report: SizingReport) -> list[str]:
    return [f.code for f in report.flags]


class TestWorkedExample:
    """Contract §7.4: Llama-3-8B, bf16, L20, --max-loras 8 --max-lora-rank 64, TP 1."""

    report = estimate(LLAMA, L20, EngineSettings(max_loras=8, max_lora_rank=64))

    def test_exact_terms(self) -> None:
        r = self.report
        assert r.weight_bytes == 16_060_522_496
        assert r.lora_linear_bytes == 2_684_354_560
        assert r.lora_embedding_bytes == 271_056_896
        assert r.lora_buffer_bytes == 2_955_411_456
        assert r.kv_bytes_per_token == 131_072
        assert (r.max_num_batched_tokens, r.max_num_seqs) == (2048, 256)  # L20 < 70 GiB

    def test_requested_memory(self) -> None:
        assert gib(self.report.requested_bytes) == pytest.approx(40.85, abs=0.01)

    def test_kv_cache_central_and_range(self) -> None:
        kv = self.report.kv_bytes
        assert gib(kv.central) == pytest.approx(20.6, abs=0.1)
        assert gib(kv.low) == pytest.approx(19.3, abs=0.1)
        assert gib(kv.high) == pytest.approx(21.6, abs=0.1)
        overhead = self.report.overhead_bytes
        assert gib(overhead.low) == pytest.approx(1.5, abs=0.05)
        assert gib(overhead.high) == pytest.approx(3.8, abs=0.05)

    def test_kv_tokens_and_concurrency(self) -> None:
        tokens = self.report.kv_tokens
        assert tokens.central == pytest.approx(169_000, rel=0.01)
        assert tokens.low == pytest.approx(158_000, rel=0.01)
        assert tokens.high == pytest.approx(177_000, rel=0.01)
        assert self.report.kv_blocks == pytest.approx(10_600, rel=0.01)
        assert int(self.report.max_concurrency()[1]) == 20  # full 8k-token sequences

    def test_without_lora(self) -> None:
        plain = estimate(LLAMA, L20, EngineSettings(enable_lora=False))
        assert plain.lora_buffer_bytes == 0
        assert gib(plain.kv_bytes.central) == pytest.approx(23.4, abs=0.2)
        assert plain.kv_tokens.central == pytest.approx(192_000, rel=0.01)
        share = 1 - self.report.kv_tokens.central / plain.kv_tokens.central
        assert 0.12 <= share <= 0.14  # "LoRA costs ≈ 12-14 % of KV capacity here"

    def test_rank_16(self) -> None:
        r16 = estimate(LLAMA, L20, EngineSettings(max_lora_rank=16))
        assert gib(r16.lora_buffer_bytes) == pytest.approx(0.69, abs=0.005)
        gained = r16.kv_bytes.central - self.report.kv_bytes.central
        assert gib(gained) == pytest.approx(2.06, abs=0.01)
        added = r16.kv_tokens.central - self.report.kv_tokens.central
        assert added == pytest.approx(17_000, rel=0.02)

    def test_attention_only_target_modules(self) -> None:
        settings = EngineSettings(lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
        report = estimate(LLAMA, L20, settings)
        assert report.lora_embedding_bytes == 0
        assert gib(report.lora_buffer_bytes) == pytest.approx(0.81, abs=0.005)


# Contract §7.5: weights GiB, KV bytes/token, LoRA bytes per slot per rank (linear, embedding),
# GiB for 8 slots at r64 and at r16 (bf16, TP 1).
TABLE_7_5 = {
    "llama-3-8b": (14.96, 131_072, 5_242_880, 529_408, 2.75, 0.69),
    "llama-3.1-8b": (14.96, 131_072, 5_242_880, 529_408, 2.75, 0.69),
    "llama-3-70b": (131.42, 327_680, 25_886_720, 545_792, 12.60, 3.15),
    "llama-3.1-70b": (131.42, 327_680, 25_886_720, 545_792, 12.60, 3.15),
    "qwen2.5-7b": (14.19, 57_344, 5_046_272, 0, 2.41, 0.60),
    "qwen2.5-14b": (27.51, 196_608, 8_601_600, 0, 4.10, 1.03),
    "qwen2.5-72b": (135.43, 327_680, 26_316_800, 0, 12.55, 3.14),
    "mistral-7b-v0.3": (13.50, 131_072, 5_242_880, 0, 2.50, 0.63),
    # The reference prints 0.81 for r16; 8 × 16 × 6,752,256 B is 0.805 GiB.
    "gemma-2-9b": (17.21, 344_064, 6_752_256, 0, 3.22, 0.805),
}


@pytest.mark.parametrize(("key", "row"), TABLE_7_5.items(), ids=list(TABLE_7_5))
def test_table_7_5(key: str, row: tuple[float, int, int, int, float, float]) -> None:
    want_weights, want_kv, want_linear, want_emb, want_r64, want_r16 = row
    model = MODELS[key]
    one = EngineSettings(max_loras=1, max_lora_rank=1)
    assert weight_bytes(model, one) == 2 * param_count(model)
    assert gib(weight_bytes(model, one)) == pytest.approx(want_weights, abs=0.005)
    assert kv_bytes_per_token(model, one) == want_kv
    assert lora_buffer_bytes(model, one) == (want_linear, want_emb)
    r64 = sum(lora_buffer_bytes(model, EngineSettings(max_loras=8, max_lora_rank=64)))
    r16 = sum(lora_buffer_bytes(model, EngineSettings(max_loras=8, max_lora_rank=16)))
    assert r64 == 8 * 64 * (want_linear + want_emb)
    assert gib(r64) == pytest.approx(want_r64, abs=0.0051)
    assert gib(r16) == pytest.approx(want_r16, abs=0.0051)


@pytest.mark.parametrize(
    ("key", "tp", "want_kv"),
    [
        pytest.param("llama-3-70b", 4, 327_680 // 4, id="70b-tp4"),
        pytest.param("llama-3-70b", 8, 327_680 // 8, id="70b-tp8"),
        pytest.param("llama-3-70b", 16, 327_680 // 8, id="70b-tp16-kv-heads-replicated"),
        pytest.param("qwen2.5-7b", 4, 57_344 // 4, id="qwen7b-tp4"),
    ],
)
def test_kv_per_token_under_tensor_parallel(key: str, tp: int, want_kv: int) -> None:
    assert kv_bytes_per_token(MODELS[key], EngineSettings(tensor_parallel=tp)) == want_kv


def test_tensor_parallel_lora_buffers_follow_the_sharding_rules() -> None:
    """§7.2: column layers keep A whole, row layers keep B whole, unless fully sharded."""
    h, i, q, kv, layers = 4096, 14336, 4096, 1024, 32
    tp2 = lora_buffer_bytes(LLAMA, EngineSettings(max_loras=1, max_lora_rank=1, tensor_parallel=2))
    per_layer = 3 * h + (q + 2 * kv) // 2 + q // 2 + h + 2 * h + 2 * i // 2 + i // 2 + h
    assert tp2 == (2 * layers * per_layer, 2 * 2 * (128256 + h))
    full = EngineSettings(max_loras=1, max_lora_rank=2, tensor_parallel=2, fully_sharded=True)
    per_rank_full = (3 * h + q + 2 * kv + q + h + 2 * h + 2 * i + i + h) // 2
    assert lora_buffer_bytes(LLAMA, full)[0] == 2 * 2 * layers * per_rank_full


def test_fp8_kv_cache_halves_bytes_per_token() -> None:
    assert kv_bytes_per_token(LLAMA, EngineSettings(kv_cache_dtype="fp8")) == 65_536


def test_float32_dtype_doubles_weights_and_lora_buffers() -> None:
    fp32 = EngineSettings(dtype="float32", max_loras=1, max_lora_rank=1)
    assert weight_bytes(LLAMA, fp32) == 4 * param_count(LLAMA)
    assert lora_buffer_bytes(LLAMA, fp32) == (2 * 5_242_880, 2 * 529_408)
    half = dataclasses.replace(fp32, lora_dtype="bfloat16")
    assert lora_buffer_bytes(LLAMA, half) == (5_242_880, 529_408)


@pytest.mark.parametrize(
    ("gpu", "settings", "want"),
    [
        pytest.param("L20", EngineSettings(), (2048, 256), id="l20"),
        pytest.param("A100-80GB", EngineSettings(), (2048, 256), id="a100-80-excluded"),
        pytest.param("H100-SXM", EngineSettings(), (8192, 1024), id="h100"),
        pytest.param("H200", EngineSettings(), (8192, 1024), id="h200-below-160"),
        pytest.param(
            "H200", EngineSettings(usable_bytes=170 * GIB), (16384, 1024), id="160-gib-or-more"
        ),
        pytest.param(
            "L20",
            EngineSettings(max_num_seqs=64, max_num_batched_tokens=4096),
            (4096, 64),
            id="set",
        ),
    ],
)
def test_batch_limits(gpu: str, settings: EngineSettings, want: tuple[int, int]) -> None:
    assert batch_limits(GPUS[gpu], settings) == want


@pytest.mark.parametrize(
    ("rank", "want"),
    [(1, 1), (2, 8), (8, 8), (9, 16), (24, 32), (64, 64), (100, 128), (300, 320), (512, 512)],
)
def test_smallest_allowed_rank(rank: int, want: int) -> None:
    assert smallest_allowed_rank(rank) == want


def test_rank_above_512_cannot_be_served() -> None:
    with pytest.raises(InvalidSpec, match="retrain the adapter at rank <= 512"):
        smallest_allowed_rank(513)


def test_tensor_parallel_sizes() -> None:
    assert tensor_parallel_sizes(LLAMA) == (1, 2, 4, 8, 16)
    assert tensor_parallel_sizes(MODELS["qwen2.5-7b"]) == (1, 2, 4)  # 28 heads, 4 KV heads
    assert tensor_parallel_sizes(MODELS["qwen2.5-14b"]) == (1, 2, 4, 8)  # 40 heads


@pytest.mark.parametrize(
    ("model", "gpu", "changes", "want_reason", "want_in_message"),
    [
        pytest.param(
            "llama-3-8b",
            "L20",
            {"max_lora_rank": 24},
            "InvalidMaxLoraRank",
            "(choose from 1, 8, 16, 32, 64, 128, 256, 320, 512): use 32",
            id="rank-not-allowed",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"max_lora_rank": 600},
            "InvalidMaxLoraRank",
            "adapters need rank <= 512",
            id="rank-too-big",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"max_cpu_loras": 4},
            "InvalidMaxCpuLoras",
            "max_cpu_loras (4) must be >= max_loras (8).",
            id="cpu-loras-below-slots",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"max_loras": 0},
            "InvalidEngineSettings",
            "engine.maxLoras (--max-loras) must be a positive integer",
            id="zero-slots",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"gpu_memory_utilization": 1.5},
            "InvalidEngineSettings",
            "must be in (0, 1], got 1.5",
            id="utilization-above-1",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"gpu_memory_utilization": 0.0},
            "InvalidEngineSettings",
            "must be in (0, 1]",
            id="utilization-zero",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"dtype": "int8"},
            "InvalidEngineSettings",
            "engine.dtype (--dtype) 'int8' is not one vLLM accepts",
            id="dtype",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"lora_dtype": "float32"},
            "InvalidEngineSettings",
            "--lora-dtype 'float32' is not one vLLM accepts: use one of auto, bfloat16, float16",
            id="lora-dtype-float32",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"kv_cache_dtype": "int4"},
            "InvalidEngineSettings",
            "--kv-cache-dtype 'int4'",
            id="kv-dtype",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"tensor_parallel": 3},
            "InvalidTensorParallel",
            "Total number of attention heads (32) must be divisible by tensor parallel size (3). "
            "Set gpu.count (--gpus) to one of 1, 2, 4, 8, 16.",
            id="heads-not-divisible",
        ),
        pytest.param(
            "qwen2.5-7b",
            "L20",
            {"tensor_parallel": 7},
            "InvalidTensorParallel",
            "4 KV heads, which vLLM cannot split or replicate over 7 GPUs",
            id="kv-heads-not-divisible",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"tensor_parallel": 32},
            "InvalidTensorParallel",
            "must be between 1 and 16",
            id="too-many-gpus",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"max_model_len": 9000},
            "InvalidMaxModelLen",
            "User-specified max_model_len (9000) is greater than the derived max_model_len "
            "(max_position_embeddings=8192)",
            id="max-model-len-too-long",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"lora_target_modules": ("w1",)},
            "UnsupportedTargetModule",
            "--lora-target-modules: target module 'w1' cannot be served",
            id="target-module",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"lora_target_modules": ("all-linear",)},
            "UnsupportedTargetModule",
            "no module is called all-linear): use names from q_proj",
            id="engine-targets-are-module-names",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            {"usable_bytes": 0},
            "InvalidEngineSettings",
            "--gpu-memory must be a positive integer",
            id="gpu-memory-zero",
        ),
        pytest.param(
            "llama-3-70b",
            "L20",
            {},
            "ModelDoesNotFit",
            "Llama-3-70B needs 131.42 GiB of weights + 12.60 GiB of LoRA slot buffers at "
            "gpu.count (--gpus) 1, but one L20 gives vLLM 40.85 GiB (44.40 GiB × 0.92): set "
            "gpu.count (--gpus) to 8 (L20 GPUs per pod); or no catalog GPU type holds it on "
            "one GPU",
            id="70b-on-one-l20",
        ),
        pytest.param(
            "gemma-2-9b",
            "A10",
            {},
            "ModelDoesNotFit",
            "set gpu.count (--gpus) to 2 (A10 GPUs per pod); or use a GPU type that holds it on "
            "one GPU: A100-40GB, L20, L40S,",
            id="gemma-on-a10",
        ),
        pytest.param(
            "llama-3-8b",
            "A10",
            {"max_loras": 64},
            "ModelDoesNotFit",
            "or lower engine.maxLoras (--max-loras) / engine.maxLoraRank (--max-lora-rank)",
            id="lora-buffers-do-not-fit",
        ),
    ],
)
def test_validate_settings(
    model: str, gpu: str, changes: dict[str, Any], want_reason: str, want_in_message: str
) -> None:
    settings = dataclasses.replace(EngineSettings(), **changes)
    with pytest.raises(InvalidSpec) as err:
        validate_settings(MODELS[model], GPUS[gpu], settings)
    assert err.value.reason == want_reason
    assert want_in_message in err.value.message


def test_embedding_lora_refused_above_the_vocab_limit() -> None:
    big_vocab = dataclasses.replace(LLAMA, vocab_size=262_144)
    with pytest.raises(InvalidSpec, match="When using LoRA, vocab size must be <= 258048"):
        validate_settings(big_vocab, GPUS["H100-SXM"], EngineSettings())
    linear_only = EngineSettings(lora_target_modules=("qkv_proj", "o_proj", "gate_up_proj"))
    validate_settings(big_vocab, GPUS["H100-SXM"], linear_only)
    validate_settings(big_vocab, GPUS["H100-SXM"], EngineSettings(enable_lora=False))


def test_lora_flags_are_not_checked_without_lora() -> None:
    settings = EngineSettings(enable_lora=False, max_lora_rank=24, max_cpu_loras=2)
    assert estimate(LLAMA, L20, settings).lora_buffer_bytes == 0


@pytest.mark.parametrize(
    ("model", "gpu", "settings", "want_codes"),
    [
        pytest.param(
            "llama-3-8b",
            "L20",
            EngineSettings(max_cpu_loras=32),
            [],
            id="worked-example-with-cpu-cache",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            EngineSettings(),
            ["CpuCacheOnlyHoldsSlots"],
            id="cpu-cache-unset",
        ),
        pytest.param(
            "llama-3-8b",
            "A10",
            EngineSettings(max_loras=12, max_cpu_loras=12),
            ["NoKvCacheMemory", "EstimatedGpuMemory"],
            id="nothing-left-for-kv",
        ),
        pytest.param(
            "llama-3.1-8b",
            "A10",
            EngineSettings(max_cpu_loras=8),
            ["MaxModelLenTooLong", "EstimatedGpuMemory"],
            id="131k-context-on-a10",
        ),
        pytest.param(
            "llama-3.1-8b",
            "L20",
            EngineSettings(max_cpu_loras=8, gpu_memory_utilization=0.83),
            ["KvCacheTight"],
            id="tight",
        ),
        pytest.param(
            "gemma-2-9b",
            "L20",
            EngineSettings(max_cpu_loras=8),
            ["SlidingWindowUpperBound"],
            id="gemma-sliding-window",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            EngineSettings(max_cpu_loras=8, fully_sharded=True),
            ["FullyShardedLoras"],
            id="fully-sharded-tp1",
        ),
        pytest.param(
            "llama-3-8b",
            "H100-SXM",
            EngineSettings(max_cpu_loras=8, usable_bytes=79 * GIB),
            [],
            id="memory-override-is-not-an-estimate",
        ),
        pytest.param(
            "llama-3-8b",
            "L20",
            EngineSettings(enable_lora=False),
            [],
            id="no-lora-no-cpu-cache-note",
        ),
    ],
)
def test_flags(model: str, gpu: str, settings: EngineSettings, want_codes: list[str]) -> None:
    assert codes(estimate(MODELS[model], GPUS[gpu], settings)) == want_codes


def test_max_model_len_flag_uses_vllms_wording() -> None:
    report = estimate(MODELS["llama-3.1-8b"], GPUS["A10"], EngineSettings(max_cpu_loras=8))
    message = report.flags[0].message
    assert message.startswith(
        "To serve at least one request with the model's max seq len (131072), (16.00 GiB KV cache "
        "is needed, which is larger than the available KV cache memory"
    )
    assert f"estimated maximum model length is {report.kv_tokens.central}" in message
    assert not report.fits


def test_no_kv_flag_uses_vllms_wording() -> None:
    report = estimate(LLAMA, GPUS["A10"], EngineSettings(max_loras=12))
    assert report.kv_tokens.central == 0
    assert report.flags[0].message.startswith(
        "No available memory for the cache blocks. Try increasing `gpu_memory_utilization`"
    )


def test_host_memory_of_the_cpu_adapter_cache() -> None:
    report = estimate(LLAMA, L20, EngineSettings(max_cpu_loras=32))
    assert report.cpu_bytes_per_adapter == 320 * 2**20  # §7.6: r64, bf16
    assert report.cpu_cache_bytes == 33 * 320 * 2**20  # + one being loaded
    tp2 = estimate(LLAMA, L20, EngineSettings(max_cpu_loras=32, tensor_parallel=2))
    assert tp2.cpu_cache_bytes == 2 * report.cpu_cache_bytes  # every TP worker caches


def test_as_dict_carries_the_figures() -> None:
    report = estimate(LLAMA, L20)
    data = report.as_dict()
    assert data["perGpu"]["weightBytes"] == 16_060_522_496
    assert data["perGpu"]["loraSlotBytes"] == 2_955_411_456 // 8
    assert data["kvTokens"]["central"] == report.kv_tokens.central
    assert data["engine"]["maxCpuLoras"] == 8
    assert data["flags"][0]["code"] == "CpuCacheOnlyHoldsSlots"


def pool_spec(**changes: Any) -> Any:
    return BaseModelPool.model_validate(make_pool(**changes)).spec


def test_from_pool_spec_matches_estimate() -> None:
    report = from_pool_spec(pool_spec())
    assert report == estimate(LLAMA, L20, EngineSettings(max_cpu_loras=32))


def test_from_pool_spec_reads_architecture_gpu_count_and_extra_args() -> None:
    spec = pool_spec(
        baseModel={"name": "team-llm", "architecture": "llama-3-70b"},
        gpu={"type": "NVIDIA-H100-80GB-HBM3", "count": 4},
        engine={
            "maxModelLen": 4096,
            "gpuMemoryUtilization": "0.9",
            "extraArgs": [
                "--lora-dtype",
                "float16",
                "--max-num-seqs=128",
                "--enforce-eager",
                "--lora-target-modules q_proj v_proj",
                "--kv-cache-dtype",
                "fp8",
                "--fully-sharded-loras",
                "--disable-log-requests",
            ],
        },
    )
    report = from_pool_spec(spec)
    s = report.settings
    assert report.model.key == "llama-3-70b"
    assert report.gpu.key == "H100-SXM"
    assert (s.tensor_parallel, s.max_model_len, s.gpu_memory_utilization) == (4, 4096, 0.9)
    assert (s.lora_dtype, s.max_num_seqs, s.enforce_eager, s.fully_sharded) == (
        "float16",
        128,
        True,
        True,
    )
    assert s.lora_target_modules == ("q_proj", "v_proj")
    assert s.kv_cache_dtype == "fp8"


@pytest.mark.parametrize(
    ("changes", "want_in_message"),
    [
        pytest.param(
            {"baseModel": {"name": "acme/secret-model"}},
            "spec.baseModel.name: unknown model 'acme/secret-model'",
            id="unknown-name",
        ),
        pytest.param(
            {"baseModel": {"architecture": "gpt-5"}},
            "spec.baseModel.architecture: unknown model 'gpt-5'",
            id="unknown-architecture",
        ),
        pytest.param({"gpu": {"type": "TPU"}}, "spec.gpu.type: unknown GPU type", id="gpu"),
        pytest.param(
            {"engine": {"extraArgs": ["--max-num-seqs", "many"]}},
            "spec.engine.extraArgs: --max-num-seqs 'many' is not an integer",
            id="extra-args-not-int",
        ),
        pytest.param(
            {"engine": {"extraArgs": ["--lora-dtype"]}},
            "spec.engine.extraArgs: --lora-dtype needs a value",
            id="extra-args-missing-value",
        ),
        pytest.param(
            {"gpu": {"count": 3}},
            "must be divisible by tensor parallel size (3)",
            id="gpu-count",
        ),
    ],
)
def test_from_pool_spec_errors(changes: dict[str, Any], want_in_message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        from_pool_spec(pool_spec(**changes))
    assert want_in_message in err.value.message


def test_public_surface() -> None:
    for name in memory.__all__:
        assert hasattr(memory, name), name
