"""The GPU catalog: memory, bandwidth and compute of the GPU types pools run on, and the labels
that find them on a cluster's nodes.

Called by `sizing.memory` (what vLLM may use), `sizing.poolspec` (a pool's `spec.gpu.type`),
`lorapack size` (`--gpu`, `--gpu-memory`, `--list`) and the docs' node-selector recipes (the
`gke_accelerator` and `aws_instances` columns). Pure data and lookups; re-exported by
`sizing.catalog`.

Where each figure comes from is recorded per GPU (`memory_source`, `usable_source`). Nominal
memory, bandwidth and dense BF16 tensor TFLOPS are NVIDIA's datasheet values (the dense figure is
half the "with sparsity" one the datasheets print first) unless the entry says otherwise.
`usable_bytes` is the total memory CUDA reports (`cudaMemGetInfo`), which vLLM multiplies by
`gpu_memory_utilization`; only two are measured figures (L20, A100 40GB); the others are
estimates marked as such, and `lorapack size` says so: pass a pod's figure with `--gpu-memory`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lorapack.errors import InvalidSpec

__all__ = ["GIB", "GPUS", "GpuType", "custom_gpu", "lookup_gpu"]

GIB = 2**30


@dataclass(frozen=True, slots=True)
class GpuType:
    """One GPU model: what node labels call it and how much memory vLLM gets to size from."""

    key: str
    """Catalog key, e.g. L20 (what BaseModelPool spec.gpu.type holds)."""
    aliases: tuple[str, ...]
    """Other names accepted by lookup_gpu (other form factors' GFD labels, GKE accelerator
    names, common spellings)."""
    product_label: str
    """Value of the nvidia.com/gpu.product label set by GPU feature discovery."""
    memory_bytes: int
    """Nominal memory, as marketed (in GiB units)."""
    usable_bytes: int
    """Total memory as CUDA reports it (cudaMemGetInfo); vLLM multiplies this by
    gpu_memory_utilization. Less than nominal: ECC and driver reservations."""
    bandwidth_gbps: float
    """Memory bandwidth in GB/s."""
    bf16_tflops: float
    """Dense (not sparse) BF16 tensor-core TFLOPS."""
    architecture: str
    memory_type: str
    usable_source: str
    """Where usable_bytes comes from, and how sure it is ("estimate..." when it is one)."""
    memory_source: str = ""
    """Where the nominal memory, bandwidth and TFLOPS come from."""
    gke_accelerator: str = ""
    """Value of GKE's cloud.google.com/gke-accelerator node label; empty: GKE does not offer
    it."""
    aws_instances: tuple[str, ...] = ()
    """EC2 instance families carrying it (node.kubernetes.io/instance-type starts with them)."""
    display_name: str = ""

    @property
    def name(self) -> str:
        """Human name for tables and messages."""
        return self.display_name or f"NVIDIA {self.key}"

    @property
    def is_a100(self) -> bool:
        """vLLM picks smaller batch defaults on A100s (its scheduler config special-cases
        them)."""
        return self.key.upper().startswith("A100")


def _gib(value: float) -> int:
    return round(value * GIB)


# The estimate: the card's nvidia-smi total less the ~0.5-0.6 GiB the driver keeps, the gap
# measured on the A100 40GB (nvidia-smi 40960 MiB, CUDA 42,405,855,232 B).
_ESTIMATE = "estimate: nvidia-smi total less ~0.55 GiB driver reservation; confirm from a pod"
_DATASHEET = "NVIDIA {} datasheet (nvidia.com/en-us/data-center/{}/)"

_GPU_LIST = (
    GpuType(
        key="L20",
        aliases=("L20-48GB",),
        product_label="NVIDIA-L20",
        memory_bytes=_gib(48),
        usable_bytes=_gib(44.4),
        bandwidth_gbps=864,
        bf16_tflops=119.5,
        architecture="Ada Lovelace",
        memory_type="GDDR6 ECC",
        usable_source="observed on 48 GB Ada cards (nvidia-smi 46068 MiB, CUDA about 44.4 GiB)",
        memory_source="no global NVIDIA datasheet (China-market part): memory and bandwidth "
        "from spec databases, TFLOPS from Chinese cloud catalogues; medium confidence",
    ),
    GpuType(
        key="L40S",
        aliases=("L40S-48GB",),
        product_label="NVIDIA-L40S",
        memory_bytes=_gib(48),
        usable_bytes=_gib(44.4),
        bandwidth_gbps=864,
        bf16_tflops=362.05,
        architecture="Ada Lovelace",
        memory_type="GDDR6 ECC",
        usable_source="as the L20: about 44.4 GiB on 48 GB Ada cards",
        memory_source=_DATASHEET.format("L40S", "l40s"),
        aws_instances=("g6e",),
    ),
    GpuType(
        key="L4",
        aliases=("L4-24GB",),
        product_label="NVIDIA-L4",
        memory_bytes=_gib(24),
        usable_bytes=_gib(22.0),
        bandwidth_gbps=300,
        bf16_tflops=121,
        architecture="Ada Lovelace",
        memory_type="GDDR6",
        usable_source=_ESTIMATE,
        memory_source=_DATASHEET.format("L4", "l4") + ": 242 TFLOPS with sparsity",
        gke_accelerator="nvidia-l4",
        aws_instances=("g6", "gr6"),
    ),
    GpuType(
        key="A10",
        aliases=("A10-24GB",),
        product_label="NVIDIA-A10",
        memory_bytes=_gib(24),
        usable_bytes=_gib(22.0),
        bandwidth_gbps=600,
        bf16_tflops=125,
        architecture="Ampere",
        memory_type="GDDR6 ECC",
        usable_source=_ESTIMATE,
        memory_source=_DATASHEET.format("A10", "products/a10-gpu"),
    ),
    GpuType(
        # AWS's variant of the A10 (EC2 G5): same memory and bandwidth, fewer tensor TFLOPS.
        key="A10G",
        aliases=("A10G-24GB",),
        product_label="NVIDIA-A10G",
        memory_bytes=_gib(24),
        usable_bytes=_gib(22.0),
        bandwidth_gbps=600,
        bf16_tflops=70,
        architecture="Ampere",
        memory_type="GDDR6",
        usable_source=_ESTIMATE,
        memory_source="no NVIDIA datasheet (made for AWS): memory and bandwidth from the EC2 G5 "
        "page; TFLOPS from Baseten's A10 vs A10G comparison; medium confidence",
        aws_instances=("g5",),
    ),
    GpuType(
        key="A100-40GB",
        aliases=("A100", "NVIDIA-A100-PCIE-40GB", "A100-SXM4-40GB", "nvidia-tesla-a100"),
        product_label="NVIDIA-A100-SXM4-40GB",
        memory_bytes=_gib(40),
        usable_bytes=42_405_855_232,
        bandwidth_gbps=1555,
        bf16_tflops=312,
        architecture="Ampere",
        memory_type="HBM2",
        usable_source="measured: CUDA reports 42,405,855,232 B",
        memory_source=_DATASHEET.format("A100", "a100"),
        gke_accelerator="nvidia-tesla-a100",
        aws_instances=("p4d",),
    ),
    GpuType(
        key="A100-80GB",
        aliases=("NVIDIA-A100-80GB-PCIe", "A100-SXM4-80GB"),
        product_label="NVIDIA-A100-SXM4-80GB",
        memory_bytes=_gib(80),
        usable_bytes=_gib(79.15),
        bandwidth_gbps=2039,
        bf16_tflops=312,
        architecture="Ampere",
        memory_type="HBM2e",
        usable_source=_ESTIMATE,
        memory_source=_DATASHEET.format("A100", "a100") + " (SXM: 2,039 GB/s; PCIe: 1,935)",
        gke_accelerator="nvidia-a100-80gb",
        aws_instances=("p4de",),
    ),
    GpuType(
        key="H100-SXM",
        aliases=("H100", "H100-80GB-HBM3", "H100-80GB", "nvidia-h100-mega-80gb"),
        product_label="NVIDIA-H100-80GB-HBM3",
        memory_bytes=_gib(80),
        usable_bytes=_gib(79.1),
        bandwidth_gbps=3350,
        bf16_tflops=989,
        architecture="Hopper",
        memory_type="HBM3",
        usable_source=_ESTIMATE,
        memory_source=_DATASHEET.format("H100", "h100") + ": SXM column",
        gke_accelerator="nvidia-h100-80gb",
        aws_instances=("p5",),
    ),
    GpuType(
        key="H100-PCIe",
        aliases=("H100-PCIE-80GB",),
        product_label="NVIDIA-H100-PCIe",
        memory_bytes=_gib(80),
        usable_bytes=_gib(79.1),
        bandwidth_gbps=2000,
        bf16_tflops=756,
        architecture="Hopper",
        memory_type="HBM2e",
        usable_source=_ESTIMATE,
        memory_source=_DATASHEET.format("H100", "h100") + ": PCIe column",
    ),
    GpuType(
        key="H20",
        aliases=("H20-96GB",),
        product_label="NVIDIA-H20",
        memory_bytes=_gib(96),
        usable_bytes=_gib(95.0),
        bandwidth_gbps=4000,
        bf16_tflops=148,
        architecture="Hopper",
        memory_type="HBM3",
        usable_source=_ESTIMATE,
        memory_source="no public NVIDIA datasheet (China-market part): press figures; medium "
        "confidence",
    ),
    GpuType(
        key="H200",
        aliases=("H200-SXM", "H200-141GB"),
        product_label="NVIDIA-H200",
        memory_bytes=_gib(141),
        usable_bytes=_gib(139.8),
        bandwidth_gbps=4800,
        bf16_tflops=989,
        architecture="Hopper",
        memory_type="HBM3e",
        usable_source=_ESTIMATE,
        memory_source=_DATASHEET.format("H200", "h200") + ": SXM column",
        gke_accelerator="nvidia-h200-141gb",
        aws_instances=("p5e", "p5en"),
    ),
)

GPUS: Mapping[str, GpuType] = {g.key: g for g in _GPU_LIST}


def _gpu_index() -> dict[str, GpuType]:
    index: dict[str, GpuType] = {}
    for gpu in _GPU_LIST:
        names = (gpu.key, gpu.product_label, *gpu.aliases, gpu.gke_accelerator)
        for name in filter(None, names):
            index[name.lower()] = gpu
            if not name.lower().startswith("nvidia-"):
                index[f"nvidia-{name.lower()}"] = gpu
    return index


_GPU_INDEX = _gpu_index()


def custom_gpu(name: str, usable_bytes: int) -> GpuType:
    """A GPU the catalog does not know, sized only from the memory CUDA reports for it
    (`--gpu-memory`); bandwidth and TFLOPS are unknown (0)."""
    return GpuType(
        key=name.strip(),
        aliases=(),
        product_label="",
        memory_bytes=usable_bytes,
        usable_bytes=usable_bytes,
        bandwidth_gbps=0,
        bf16_tflops=0,
        architecture="unknown",
        memory_type="unknown",
        usable_source="--gpu-memory",
        display_name=name.strip(),
    )


def lookup_gpu(name: str, usable_bytes: int | None = None) -> GpuType:
    """The catalog GPU for a key (L20), a GFD product label (NVIDIA-L20), a GKE accelerator
    name (nvidia-l4) or an alias.

    Case-insensitive; a GPU feature discovery "-SHARED" suffix (time-sliced GPUs) is ignored.
    A name the catalog does not know is sized as `custom_gpu` when `usable_bytes` (the
    `--gpu-memory` override) is given, else refused.
    """
    wanted = name.strip().lower()
    if wanted.endswith("-shared"):
        wanted = wanted[: -len("-shared")]
    gpu = _GPU_INDEX.get(wanted) or _GPU_INDEX.get(wanted.replace(" ", "-"))
    if gpu is None and usable_bytes is not None and name.strip():
        return custom_gpu(name, usable_bytes)
    if gpu is None:
        raise InvalidSpec(
            f"unknown GPU type {name!r}: use one of {', '.join(GPUS)} (or its "
            "nvidia.com/gpu.product label, e.g. NVIDIA-L20), or give the memory CUDA reports "
            "for it with --gpu-memory (e.g. --gpu-memory 22Gi)",
            reason="UnknownGpu",
        )
    return gpu
