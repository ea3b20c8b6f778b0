"""The API models: defaults, and validation errors that name the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.meta import parse_quantity
from lorapack.cli import format_validation_error
from tests.builders import make_adapter, make_pool


def test_pool_defaults() -> None:
    pool = BaseModelPool.model_validate(
        {
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"baseModel": {"name": "m", "source": {"pvc": {"claimName": "weights"}}}},
        }
    )
    assert pool.spec.engine.max_lora_rank == 64
    assert pool.spec.engine.max_loras == 8
    assert pool.spec.engine.cpu_loras == 8  # vLLM's default: max_cpu_loras = max_loras
    assert pool.spec.engine.gpu_memory_utilization == "0.92"
    assert pool.spec.gpu.resource_name == "nvidia.com/gpu"
    assert (pool.spec.replicas.min, pool.spec.replicas.max) == (1, 1)
    assert pool.spec.adapters.allowed_namespaces == []
    assert pool.spec.adapters_per_pod == 8


def test_adapter_defaults_and_served_name() -> None:
    adapter = LoraAdapter.model_validate(make_adapter("chat", "team-a"))
    assert adapter.served_name == "chat"
    assert (adapter.spec.replicas.min, adapter.spec.replicas.max) == (1, 1)
    assert adapter.spec.priority == 0
    named = LoraAdapter.model_validate(make_adapter("chat", servedName="team-a-chat"))
    assert named.served_name == "team-a-chat"


def test_wire_round_trip_is_camel_case() -> None:
    pool = BaseModelPool.model_validate(make_pool())
    wire = pool.spec.wire()
    assert wire["engine"]["maxLoraRank"] == 64
    assert wire["adapters"]["allowedNamespaces"] == ["team-a", "team-b", "team-c"]
    assert BaseModelPool.model_validate({**make_pool(), "spec": wire}).spec == pool.spec


POOL_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("rank not allowed", {"engine": {"maxLoraRank": 24}}, "spec.engine.maxLoraRank"),
    ("cpu loras below loras", {"engine": {"maxLoras": 8, "maxCpuLoras": 4}}, "maxCpuLoras (4)"),
    ("replicas inverted", {"replicas": {"min": 5, "max": 2}}, "replicas.min (5)"),
    ("bad utilization", {"engine": {"gpuMemoryUtilization": "1.5"}}, "gpuMemoryUtilization"),
    ("zero gpus", {"gpu": {"count": 0}}, "spec.gpu.count"),
    ("bad quantity", {"adapters": {"cacheSize": "lots"}}, "spec.adapters.cacheSize"),
    ("star not alone", {"adapters": {"allowedNamespaces": ["*", "a"]}}, "must be alone"),
    (
        "both sources",
        {"baseModel": {"source": {"pvc": {"claimName": "w"}}}},
        "exactly one of source.s3 or source.pvc",
    ),
    ("bad s3 uri", {"baseModel": {"source": {"s3": {"uri": "http://x/y"}}}}, "uri"),
    ("unknown field", {"engine": {"maxLora": 3}}, "spec.engine.maxLora"),
    ("bad dtype", {"engine": {"dtype": "int4"}}, "spec.engine.dtype"),
]


@pytest.mark.parametrize(("case", "spec", "want"), POOL_ERRORS, ids=[c[0] for c in POOL_ERRORS])
def test_pool_validation_names_the_field(case: str, spec: dict[str, Any], want: str) -> None:
    with pytest.raises(ValidationError) as err:
        BaseModelPool.model_validate(make_pool(**spec))
    text = format_validation_error(err.value)
    assert want in text, text


ADAPTER_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("replicas inverted", {"replicas": {"min": 3, "max": 1}}, "replicas.min (3)"),
    ("replicas zero", {"replicas": {"min": 0}}, "spec.replicas.min"),
    ("served name charset", {"servedName": "bad name!"}, "spec.servedName"),
    ("digest shape", {"digests": {"adapter_model.safetensors": "md5:abc"}}, "spec.digests"),
    ("digest path escape", {"digests": {"../x": "sha256:" + "a" * 64}}, "digests"),
    ("version id escape", {"source": {"s3": {"versionIds": {"/etc": "v1"}}}}, "versionIds"),
    ("rank too big", {"rank": 1024}, "spec.rank"),
    ("no base model", {"baseModel": None}, "spec.baseModel"),
    ("bad load", {"expectedLoad": {"requestsPerSecond": "fast"}}, "requestsPerSecond"),
]


@pytest.mark.parametrize(
    ("case", "spec", "want"), ADAPTER_ERRORS, ids=[c[0] for c in ADAPTER_ERRORS]
)
def test_adapter_validation_names_the_field(case: str, spec: dict[str, Any], want: str) -> None:
    with pytest.raises(ValidationError) as err:
        LoraAdapter.model_validate(make_adapter(**spec))
    text = format_validation_error(err.value)
    assert want in text, text


@pytest.mark.parametrize(
    ("text", "want"),
    [("20Gi", 20 * 2**30), ("500M", 500_000_000), ("1.5Gi", 3 * 2**29), ("1024", 1024)],
)
def test_parse_quantity(text: str, want: int) -> None:
    assert parse_quantity(text) == want


def test_parse_quantity_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity("20 gigs")
