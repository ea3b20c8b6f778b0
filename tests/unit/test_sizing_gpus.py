"""The GPU catalog's cloud entries (L4, A10G, GKE and EKS names) and `--gpu-memory` overriding it,
for catalog GPUs and for GPUs the catalog does not know (issue 14, item 4)."""

from __future__ import annotations

import json

import pytest

from lorapack.cli import main
from lorapack.errors import InvalidSpec
from lorapack.sizing.catalog import GIB, GPUS, MODELS, lookup_gpu
from lorapack.sizing.gpus import custom_gpu
from lorapack.sizing.memory import EngineSettings, estimate


@pytest.mark.parametrize(
    ("name", "want_key"),
    [
        pytest.param("L4", "L4", id="l4-key"),
        pytest.param("NVIDIA-L4", "L4", id="l4-gfd-label"),
        pytest.param("nvidia-l4", "L4", id="l4-gke-accelerator"),
        pytest.param("A10G", "A10G", id="a10g-key"),
        pytest.param("NVIDIA-A10G", "A10G", id="a10g-gfd-label"),
        pytest.param("nvidia-tesla-a100", "A100-40GB", id="a100-40-gke"),
        pytest.param("nvidia-a100-80gb", "A100-80GB", id="a100-80-gke"),
        pytest.param("nvidia-h100-80gb", "H100-SXM", id="h100-gke"),
        pytest.param("nvidia-h100-mega-80gb", "H100-SXM", id="h100-mega-gke"),
        pytest.param("nvidia-h200-141gb", "H200", id="h200-gke"),
    ],
)
def test_cloud_names_find_the_gpu(name: str, want_key: str) -> None:
    assert lookup_gpu(name).key == want_key


def test_every_gke_accelerator_and_alias_names_one_gpu() -> None:
    """No name is claimed by two GPUs (the index would silently keep the last)."""
    seen: dict[str, str] = {}
    for gpu in GPUS.values():
        for name in {gpu.key, gpu.product_label, *gpu.aliases, gpu.gke_accelerator} - {""}:
            assert seen.setdefault(name.lower(), gpu.key) == gpu.key, name


@pytest.mark.parametrize("key", list(GPUS))
def test_every_gpu_cites_its_sources(key: str) -> None:
    gpu = GPUS[key]
    assert gpu.memory_source, f"{key}: say where memory, bandwidth and TFLOPS come from"
    assert gpu.usable_source
    # Nominal memory in whole GiB, as marketed; CUDA reports less (ECC, driver).
    assert gpu.memory_bytes % GIB == 0
    assert 0.9 * gpu.memory_bytes < gpu.usable_bytes < gpu.memory_bytes


def test_l4_and_a10g_are_24_gb_cards() -> None:
    for key in ("L4", "A10G"):
        assert GPUS[key].memory_bytes == 24 * GIB
    assert GPUS["L4"].aws_instances == ("g6", "gr6")
    assert GPUS["A10G"].aws_instances == ("g5",)
    assert GPUS["L4"].gke_accelerator == "nvidia-l4"


def test_gpu_memory_overrides_a_catalog_gpu() -> None:
    model = MODELS["qwen2.5-7b"]
    default = estimate(model, GPUS["L4"], EngineSettings(max_lora_rank=16))
    larger = estimate(model, GPUS["L4"], EngineSettings(max_lora_rank=16, usable_bytes=23 * GIB))
    assert default.total_bytes == GPUS["L4"].usable_bytes
    assert larger.total_bytes == 23 * GIB
    assert larger.kv_bytes.central > default.kv_bytes.central


def test_unknown_gpu_with_memory_is_sized_from_that_memory() -> None:
    gpu = lookup_gpu("RTX-6000-Ada", 47 * GIB)
    assert gpu == custom_gpu("RTX-6000-Ada", 47 * GIB)
    assert (gpu.key, gpu.usable_bytes, gpu.usable_source) == (
        "RTX-6000-Ada",
        47 * GIB,
        "--gpu-memory",
    )
    report = estimate(MODELS["llama-3-8b"], gpu, EngineSettings(usable_bytes=47 * GIB))
    assert report.total_bytes == 47 * GIB
    assert not [f for f in report.flags if f.code == "EstimatedGpuMemory"]


def test_unknown_gpu_without_memory_says_how_to_size_it() -> None:
    with pytest.raises(InvalidSpec) as err:
        lookup_gpu("RTX-6000-Ada")
    assert err.value.reason == "UnknownGpu"
    assert "--gpu-memory" in err.value.message
    assert "L4" in err.value.message


def _size(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["size", *argv, "-o", "json"]) == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_size_cli_l4_with_gpu_memory_uses_the_figure(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's command: it used to fail with UnknownGpu."""
    data = _size(capsys, "--model", "qwen2.5-7b", "--gpu", "L4", "--gpu-memory", "22.5Gi")
    assert data["perGpu"]["totalBytes"] == round(22.5 * GIB)  # type: ignore[index]
    assert data["gpu"] == "L4"


def test_size_cli_unknown_gpu_with_gpu_memory(capsys: pytest.CaptureFixture[str]) -> None:
    data = _size(capsys, "--model", "llama-3-8b", "--gpu", "RTX-6000-Ada", "--gpu-memory", "47Gi")
    assert data["perGpu"]["totalBytes"] == 47 * GIB  # type: ignore[index]
    assert data["gpu"] == "RTX-6000-Ada"


def test_size_cli_unknown_gpu_without_memory_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["size", "--model", "llama-3-8b", "--gpu", "RTX-6000-Ada"]) == 1
    assert "--gpu-memory" in capsys.readouterr().err


def test_size_list_json_carries_the_cloud_names(capsys: pytest.CaptureFixture[str]) -> None:
    data = _size(capsys, "--list")
    gpus = {g["key"]: g for g in data["gpus"]}  # type: ignore[attr-defined]
    assert gpus["L4"]["gkeAccelerator"] == "nvidia-l4"
    assert gpus["A10G"]["awsInstances"] == ["g5"]
    assert gpus["H200"]["source"].startswith("NVIDIA H200 datasheet")
