"""validate_adapter reads the safetensors header with bounded ranged GETs and refuses, before
any pod is touched, what vLLM would misload: a corrupt header, tensors of another model under a
matching name, target modules the architecture lacks, a declared r that disagrees with the
shapes; and every input that used to crash the pass (a deep config, target_modules 5, a huge
listing, unsafe keys) is a refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.planning.baseconfig import BaseConfig, parse_base_config
from lorapack.planning.tensors import FIRST_READ_BYTES
from lorapack.reconcilers.validation import ValidationResult, validate_adapter
from lorapack_testworld.safetensors import (
    build_safetensors,
    lora_config,
    lora_tensor_specs,
    raw_safetensors,
)
from tests.builders import make_adapter, make_pool
from tests.fakes.artifacts import MemoryStore
from tests.hostile import ALL, TINY

WIDE = TINY | {"hidden_size": 128, "intermediate_size": 256}
BASE = "lorapack/tiny-llama"
URI = "s3://adapters/team-a/bot/"


def base_config(sizes: dict[str, Any]) -> BaseConfig:
    config, problems = parse_base_config(json.dumps(sizes).encode())
    assert config is not None, problems
    return config


def pool(name: str = "tiny") -> BaseModelPool:
    body = make_pool(name, baseModel={"name": BASE, "source": {"s3": {"uri": "s3://models/t/"}}})
    return BaseModelPool.model_validate(body)


def adapter(**spec: Any) -> LoraAdapter:
    body = make_adapter("bot", baseModel=BASE, **spec)
    body["metadata"]["generation"] = 1
    return LoraAdapter.model_validate(body)


def files(
    weights: bytes | None = None, config: dict[str, Any] | bytes | None = None
) -> dict[str, bytes]:
    config = lora_config(8, ALL) if config is None else config
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    if weights is None:
        weights = build_safetensors(lora_tensor_specs(TINY, 8, ALL))
    return {"adapter_config.json": raw, "adapter_model.safetensors": weights}


async def check(
    store: MemoryStore,
    pools: list[BaseModelPool] | None = None,
    base: dict[str, BaseConfig] | None = None,
    **spec: Any,
) -> ValidationResult:
    return await validate_adapter(adapter(**spec), pools or [pool()], [], store, base)


def refused(result: ValidationResult, reason: str, *words: str) -> None:
    assert result.artifact is None, result
    assert reason in [p.reason for p in result.problems], result.problems
    text = " ".join(p.message for p in result.problems)
    for w in words:
        assert w in text, text


TINY_BASE = {"ml-platform/tiny": base_config(TINY)}


async def test_a_healthy_adapter_is_accepted_after_one_bounded_ranged_get() -> None:
    store = MemoryStore()
    store.put(URI, files())
    result = await check(store, base=TINY_BASE)
    assert result.problems == () and result.artifact is not None
    assert result.pools == ("ml-platform/tiny",)
    ranges = [x for x in store.calls if x[0] == "range"]
    assert [r[2:] for r in ranges] == [(0, FIRST_READ_BYTES)]  # of 81,320 bytes


async def test_only_the_header_is_read_of_a_large_file() -> None:
    weights = build_safetensors(lora_tensor_specs(TINY, 64, ALL))
    assert len(weights) > FIRST_READ_BYTES
    store = MemoryStore()
    store.put(URI, files(weights, lora_config(64, ALL)))
    result = await check(store, base=TINY_BASE)
    assert result.problems == ()
    assert store.bytes_read == FIRST_READ_BYTES  # 28 tensors: the header is in the first read


async def test_a_header_longer_than_the_first_read_takes_a_second_one() -> None:
    specs = lora_tensor_specs(TINY, 8, ALL)
    long_names = {f"note{i}": "x" * 100 for i in range(700)}
    weights = build_safetensors(specs, metadata=long_names)
    n = int.from_bytes(weights[:8], "little")
    assert 8 + n > FIRST_READ_BYTES
    store = MemoryStore()
    store.put(URI, files(weights))
    result = await check(store, base=TINY_BASE)
    assert result.problems == ()
    ranges = [x[2:] for x in store.calls if x[0] == "range"]
    assert ranges == [(0, FIRST_READ_BYTES), (FIRST_READ_BYTES, 8 + n - FIRST_READ_BYTES)]


async def test_a_corrupt_header_is_refused() -> None:
    store = MemoryStore()
    store.put(URI, files(raw_safetensors(b'{"a": {"dtype": "F32"', b"\0" * 64)))
    refused(await check(store), c.CORRUPT_WEIGHTS, f"{URI}adapter_model.safetensors", "not JSON")


async def test_a_huge_header_length_is_refused_without_reading_it() -> None:
    store = MemoryStore()
    store.put(URI, files(raw_safetensors(b"{}", b"\0" * 64, length=1 << 40)))
    refused(await check(store), c.CORRUPT_WEIGHTS, "header length")
    assert store.bytes_read <= FIRST_READ_BYTES


async def test_a_pickle_under_the_safetensors_name_is_refused() -> None:
    store = MemoryStore()
    store.put(URI, files(b"PK\x03\x04" + b"\0" * 200))  # torch.save's zip, renamed
    refused(await check(store), c.CORRUPT_WEIGHTS, "header length")


async def test_tensors_of_another_model_with_a_matching_name_are_refused() -> None:
    store = MemoryStore()
    store.put(URI, files(build_safetensors(lora_tensor_specs(WIDE, 8, ALL))))
    refused(
        await check(store, base=TINY_BASE),
        c.WEIGHTS_DO_NOT_FIT,
        "has 64 input features",
        "retrain it on lorapack/tiny-llama",
    )


async def test_without_the_pools_base_config_shapes_are_not_checked() -> None:
    store = MemoryStore()
    store.put(URI, files(build_safetensors(lora_tensor_specs(WIDE, 8, ALL))))
    assert (await check(store)).artifact is not None


async def test_target_modules_the_architecture_lacks_are_refused() -> None:
    store = MemoryStore()
    mods = ("q_proj", "fancy_proj")
    store.put(URI, files(build_safetensors(lora_tensor_specs(TINY, 8, mods)), lora_config(8, mods)))
    refused(await check(store, base=TINY_BASE), c.WEIGHTS_DO_NOT_FIT, "fancy_proj")


async def test_a_declared_rank_that_disagrees_with_the_shapes_is_refused() -> None:
    # vLLM serves this one, scaled by lora_alpha / 8 instead of / 16: wrong outputs.
    store = MemoryStore()
    store.put(URI, files(build_safetensors(lora_tensor_specs(TINY, 16, ALL)), lora_config(8, ALL)))
    refused(await check(store), c.RANK_MISMATCH, "declares r=8", "has rank 16")


async def test_only_the_pool_whose_base_the_tensors_fit_accepts_the_adapter() -> None:
    store = MemoryStore()
    store.put(URI, files())
    pools = [pool("wide"), pool("tiny")]
    bases = {"ml-platform/wide": base_config(WIDE), "ml-platform/tiny": base_config(TINY)}
    result = await check(store, pools, bases)
    assert result.artifact is not None and result.pools == ("ml-platform/tiny",)
    only_wide = await check(store, [pool("wide")], bases)
    refused(only_wide, c.WEIGHTS_DO_NOT_FIT, "has 128 input features")


# -- inputs that crashed the pass are refusals ---------------------------------------------


CRASHERS = [
    ("deep config", b"[" * 5000 + b"]" * 5000, c.UNSUPPORTED_ADAPTER, "deeply"),
    ("deeper config", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, c.UNSUPPORTED_ADAPTER, "deeply"),
    ("target_modules 5", lora_config(8, ALL, target_modules=5), c.UNSUPPORTED_ADAPTER, "is 5"),
    (
        "target_modules of ints",
        lora_config(8, ALL, target_modules=[1, 2]),
        c.UNSUPPORTED_ADAPTER,
        "list of module names",
    ),
    ("r as dict", lora_config(8, ALL, r={"x": 1}), c.UNSUPPORTED_ADAPTER, "positive integer"),
    ("config list", b"[1]", c.UNSUPPORTED_ADAPTER, "JSON list"),
    ("huge int", b'{"r": ' + b"9" * 5000 + b"}", c.UNSUPPORTED_ADAPTER, "not valid JSON"),
]


@pytest.mark.parametrize(
    ("case", "config", "reason", "words"), CRASHERS, ids=[x[0] for x in CRASHERS]
)
async def test_configs_that_crashed_the_pass_are_refused(
    case: str, config: Any, reason: str, words: str
) -> None:
    store = MemoryStore()
    store.put(URI, files(config=config))
    refused(await check(store), reason, words)


async def test_a_listing_of_many_objects_is_refused_and_bounded() -> None:
    store = MemoryStore()
    store.put(URI, files())
    store.put(URI, {f"checkpoint-{i}/x.bin": b"" for i in range(10_000)})
    refused(await check(store), c.TOO_MANY_FILES, "more than 256", "spec.source.s3.uri")


@pytest.mark.parametrize("key", ["../escape", "a//b", "./x", "a\\b", "x/../../etc/passwd"])
async def test_unsafe_object_names_are_refused(key: str) -> None:
    store = MemoryStore()
    store.put(URI, files() | {key: b"x"})
    refused(await check(store), c.UNSAFE_PATH, "rename or remove the object")


async def test_storage_refusals_on_the_header_read_are_refusals() -> None:
    class DeniedRange(MemoryStore):
        async def get_range(self, *args: Any) -> bytes:
            self.denied = True
            return await super().get_range(*args)

    store = DeniedRange()
    store.put(URI, files())
    refused(await check(store), c.ACCESS_DENIED, "S3 refused access")


async def test_identical_files_of_two_tenants_get_different_digests() -> None:
    store = MemoryStore()
    store.put(URI, files())
    store.put("s3://adapters/team-b/bot/", files())
    mine = await check(store)
    theirs = await validate_adapter(
        adapter(source={"s3": {"uri": "s3://adapters/team-b/bot/"}}), [pool()], [], store
    )
    elsewhere = await validate_adapter(
        adapter(
            source={
                "s3": {
                    "endpoint": "https://s3.evil.example",
                    "credentialsSecretRef": {"name": "own-keys"},
                }
            }
        ),
        [pool()],
        [],
        store,
    )
    pinned = await check(store, digests={"adapter_model.safetensors": "sha256:" + "a" * 64})
    results = (mine, theirs, elsewhere, pinned)
    digests = [r.artifact.digest for r in results if r.artifact]
    assert len(digests) == 4, [r.problems for r in results]
    assert len(digests) == 4 and len(set(digests)) == 4
