"""`lorapack size`: flags reach the sizing model, output formats, and errors that say the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapack.cli import main
from lorapack.sizing.catalog import GIB, GPUS, MODELS


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["size", *argv, "-o", "json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def run_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["size", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_worked_example_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(["--model", "meta-llama/Meta-Llama-3-8B", "--gpu", "NVIDIA-L20"], capsys)
    assert (data["model"], data["gpu"], data["gpus"]) == ("llama-3-8b", "L20", 1)
    per_gpu = data["perGpu"]
    assert per_gpu["weightBytes"] == 16_060_522_496
    assert per_gpu["loraLinearBytes"] + per_gpu["loraEmbeddingBytes"] == 2_955_411_456
    assert per_gpu["kvBytesPerToken"] == 131_072
    assert per_gpu["kvBytes"]["central"] / GIB == pytest.approx(20.6, abs=0.1)
    assert data["kvTokens"]["central"] == pytest.approx(169_000, rel=0.01)
    assert data["maxConcurrency"]["central"] == pytest.approx(20.6, abs=0.1)
    assert data["recommended"]["maxLoraRank"] == 64
    assert "adapter" not in data
    assert "cost" not in data


def test_engine_flags_reach_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(
        [
            "--model",
            "llama-3-70b",
            "--gpu",
            "H100-SXM",
            "--gpus",
            "4",
            "--max-loras",
            "4",
            "--max-lora-rank",
            "32",
            "--max-cpu-loras",
            "16",
            "--gpu-memory-utilization",
            "0.9",
            "--max-model-len",
            "4096",
            "--dtype",
            "bfloat16",
            "--lora-dtype",
            "float16",
            "--kv-cache-dtype",
            "fp8",
            "--lora-target-modules",
            "q_proj, v_proj",
            "--fully-sharded-loras",
            "--max-num-seqs",
            "128",
            "--max-num-batched-tokens",
            "4096",
            "--enforce-eager",
            "--gpu-memory",
            "79Gi",
        ],
        capsys,
    )
    engine = data["engine"]
    assert engine == {
        "enableLora": True,
        "maxLoras": 4,
        "maxLoraRank": 32,
        "maxCpuLoras": 16,
        "gpuMemoryUtilization": 0.9,
        "maxModelLen": 4096,
        "dtype": "bfloat16",
        "loraDtype": "float16",
        "tensorParallelSize": 4,
        "fullyShardedLoras": True,
        "loraTargetModules": ["q_proj", "v_proj"],
        "maxNumSeqs": 128,
        "maxNumBatchedTokens": 4096,
    }
    assert data["perGpu"]["totalBytes"] == 79 * GIB
    assert data["perGpu"]["kvBytesPerToken"] == 327_680 // 4 // 2  # TP 4, fp8
    assert data["perGpu"]["loraEmbeddingBytes"] == 0  # only q/v targeted


def test_adapters_rank_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(
        [
            "--model",
            "llama-3-8b",
            "--max-cpu-loras",
            "32",
            "--adapters",
            "50",
            "--rank",
            "16",
            "--host-memory",
            "2Gi",
        ],
        capsys,
    )
    assert data["adapter"]["params"] == 16 * 2_621_440
    assert data["adapter"]["engineBytes"] == 80 * 2**20
    assert data["recommended"]["maxLoraRank"] == 16
    assert data["recommended"]["maxCpuLoras"] == 24  # 2 GiB / 80 MiB, less one loading
    assert data["cost"] == {
        "adapters": 50,
        "gpusPerMergedCopy": 1,
        "mergedGpus": 50,
        "adaptersPerPod": 32,
        "pods": 2,
        "poolGpus": 2,
        "ratio": 25.0,
    }


def test_target_modules_and_adapters_per_pod(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(
        [
            "--model",
            "mistral-7b-v0.3",
            "--gpu",
            "L40S",
            "--max-cpu-loras",
            "8",
            "--rank",
            "8",
            "--target-modules",
            "q_proj,v_proj",
            "--adapters",
            "10",
            "--adapters-per-pod",
            "4",
        ],
        capsys,
    )
    assert data["adapter"]["params"] == 8 * 32 * ((4096 + 4096) + (4096 + 1024))
    assert (data["cost"]["pods"], data["cost"]["poolGpus"]) == (3, 3)


def test_no_lora_drops_the_lora_sections(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["size", "--model", "llama-3-8b", "--no-lora"]) == 0
    out = capsys.readouterr().out
    assert "--enable-lora" not in out
    assert "LoRA slots" not in out
    assert "HOST MEMORY" not in out
    assert "RECOMMENDED" not in out
    data = run_json(["--model", "llama-3-8b", "--no-lora"], capsys)
    assert data["perGpu"]["loraLinearBytes"] == 0
    assert data["engine"]["enableLora"] is False


def test_yaml_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["size", "--model", "qwen2.5-7b", "--gpu", "L40S", "-o", "yaml"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["perGpu"]["kvBytesPerToken"] == 57_344
    assert data["perGpu"]["loraEmbeddingBytes"] == 0


def test_table_names_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["size", "--model", "llama-3-8b", "--adapters", "20", "--rank", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for heading in (
        "vllm serve meta-llama/Meta-Llama-3-8B --enable-lora",
        "MEMORY PER GPU",
        "KV CACHE",
        "HOST MEMORY PER POD",
        "ADAPTER (RANK 8, all-linear)",
        "SETTING",
        "GPUS FOR 20 ADAPTERS OF Llama-3-8B",
        "info: CpuCacheOnlyHoldsSlots",
    ):
        assert heading in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(["--list"], capsys)
    assert [m["key"] for m in data["models"]] == list(MODELS)
    assert [g["key"] for g in data["gpus"]] == list(GPUS)
    assert data["models"][0]["params"] == 8_030_261_248
    assert main(["size", "--list"]) == 0
    table = capsys.readouterr().out
    assert "NVIDIA-H100-80GB-HBM3" in table
    assert "gemma-2-9b" in table


def test_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 2048,
                "intermediate_size": 8192,
                "max_position_embeddings": 4096,
                "num_attention_heads": 16,
                "num_hidden_layers": 16,
                "num_key_value_heads": 4,
                "vocab_size": 32000,
            }
        )
    )
    data = run_json(["--config", str(folder), "--gpu", "A10"], capsys)
    assert data["model"] == "tiny-llama"
    assert data["perGpu"]["kvBytesPerToken"] == 2 * 16 * 4 * 128 * 2
    assert data["engine"]["maxModelLen"] == 4096


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        pytest.param([], "error: MissingModel: --model is required: one of llama-3-8b", id="none"),
        pytest.param(
            ["--model", "gpt-4"], "error: UnknownModel: unknown model 'gpt-4'", id="unknown-model"
        ),
        pytest.param(
            ["--model", "llama-3-8b", "--gpu", "TPUv5"],
            "error: UnknownGpu: unknown GPU type 'TPUv5'",
            id="unknown-gpu",
        ),
        pytest.param(
            ["--model", "llama-3-8b", "--max-lora-rank", "24"],
            "(choose from 1, 8, 16, 32, 64, 128, 256, 320, 512): use 32",
            id="rank",
        ),
        pytest.param(
            ["--model", "llama-3-8b", "--max-cpu-loras", "2"],
            "max_cpu_loras (2) must be >= max_loras (8).",
            id="cpu-loras",
        ),
        pytest.param(
            ["--model", "llama-3-8b", "--gpu-memory", "lots"],
            "error: InvalidQuantity: --gpu-memory 'lots' is not a quantity",
            id="gpu-memory",
        ),
        pytest.param(
            ["--model", "llama-3-8b", "--adapters", "5", "--host-memory", "5 GB"],
            "--host-memory '5 GB' is not a quantity",
            id="host-memory",
        ),
        pytest.param(
            ["--model", "llama-3-8b", "--adapters", "0"],
            "error: InvalidAdapters: --adapters must be >= 1",
            id="no-adapters",
        ),
        pytest.param(
            ["--model", "llama-3-8b", "--rank", "600"],
            "retrain the adapter at rank <= 512",
            id="adapter-rank",
        ),
        pytest.param(
            ["--model", "qwen2.5-7b", "--rank", "8", "--target-modules", "lm_head"],
            "target module 'lm_head' cannot be served",
            id="adapter-module",
        ),
        pytest.param(
            ["--config", "/nonexistent/config.json"],
            "error: InvalidModelConfig: --config '/nonexistent/config.json': cannot read",
            id="config-missing",
        ),
        pytest.param(
            ["--model", "llama-3-70b", "--gpu", "A100-80GB"],
            "error: ModelDoesNotFit: Llama-3-70B needs 131.42 GiB of weights",
            id="does-not-fit",
        ),
    ],
)
def test_errors_name_the_field_and_the_fix(
    argv: list[str], want: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert want in run_error(argv, capsys)


def test_bad_flag_types_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["size", "--model", "llama-3-8b", "--max-loras", "eight"])
    assert exit_info.value.code == 2
