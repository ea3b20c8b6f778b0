"""The `agent` and `s3` cases of the hostile-input corpus on the real loopback S3 server.

agent: a healthy adapter is uploaded and published as pre-flight would (presigned URLs, or
pool access); the case changes what the pod is asked to fetch, or the object after validation;
the agent's AdapterCache.ensure refuses it with the case's reason and words, writes nothing
verified, and then fetches a healthy neighbour in the same cache.

s3: pre-flight through the operator's own S3Access (credentials Secrets served by a fake
reader, requests to the real server) and the pool-access download path.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lorapack.agent.cache import AdapterCache
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.podstate import DesiredAdapter, FileSpec, S3Location
from lorapack.clients import kube as k
from lorapack.clients.s3 import ObjectInfo, S3Client
from lorapack.errors import LorapackError
from lorapack.handlers.adapters_io import S3Access
from lorapack.reconcilers.validation import validate_adapter
from lorapack_testworld.s3server import S3Server
from tests.builders import make_adapter, make_pool
from tests.hostile import BASE, Case, adapter_files, load_cases

pytestmark = pytest.mark.s3

AGENT = load_cases("agent")
S3 = load_cases("s3")
HEALTHY = adapter_files(Case("healthy", "preflight", (), None, {}))[0]


@pytest.fixture
def client(s3_server: S3Server) -> Iterator[S3Client]:
    c = S3Client(s3_server.settings())
    yield c
    c.close()


def upload(s3: S3Server, bucket: str, prefix: str, files: dict[str, bytes]) -> list[ObjectInfo]:
    return [s3.put_bytes(bucket, prefix + name, data) for name, data in sorted(files.items())]


def publish(
    objects: list[ObjectInfo], bucket: str, prefix: str, client: S3Client, *, presigned: bool
) -> DesiredAdapter:
    """The desired adapter the operator would publish for these objects."""
    files = [
        FileSpec(
            path=o.key[len(prefix) :],
            size=o.size,
            etag=o.etag,
            key=None if presigned else o.key,
            url=client.presign_get(bucket, o.key, expires_in=600) if presigned else None,
        )
        for o in objects
    ]
    rows = "|".join(f"{o.key}:{o.size}:{o.etag}" for o in objects)
    return DesiredAdapter(
        served_name=prefix.strip("/").replace("/", "-"),
        adapter=f"team-a/{prefix.strip('/').replace('/', '-')}",
        digest="sha256:" + hashlib.sha256(rows.encode()).hexdigest(),
        files=files,
        access="presigned" if presigned else "pool",
        s3=None if presigned else S3Location(bucket=bucket, prefix=prefix),
    )


def _weights(adapter: DesiredAdapter) -> int:
    return next(i for i, f in enumerate(adapter.files) if f.path == "adapter_model.safetensors")


def mutate(
    adapter: DesiredAdapter, change: dict[str, Any], s3: S3Server, bucket: str, prefix: str
) -> tuple[DesiredAdapter, int | None]:
    """Apply a case's `mutate`; returns the adapter and the cache quota to use."""
    files = list(adapter.files)
    w = _weights(adapter)
    key = prefix + "adapter_model.safetensors"
    if "path" in change:
        files[w] = files[w].model_copy(update={"path": change["path"]})
    if change.get("duplicate"):
        files.append(files[0])
    if "add_path" in change:
        files.append(files[0].model_copy(update={"path": change["add_path"]}))
    if "sha256" in change:
        files[w] = files[w].model_copy(update={"sha256": change["sha256"]})
    if "size_delta" in change:
        files[w] = files[w].model_copy(update={"size": files[w].size + change["size_delta"]})
    if change.get("tamper_url"):
        url = files[w].url or ""
        files[w] = files[w].model_copy(
            update={"url": re.sub(r"(X-Amz-Signature=)[0-9a-f]{8}", r"\g<1>00000000", url)}
        )
    swap = change.get("swap")
    if swap == "same-size":
        size = files[w].size
        s3.put_bytes(bucket, key, bytes(reversed(HEALTHY["adapter_model.safetensors"]))[:size])
    elif swap == "bigger":
        s3.put_bytes(bucket, key, b"\xff" * (64 << 20))
    elif swap == "deleted":
        s3.client().delete_object(Bucket=bucket, Key=key)
    if "only" in change:
        files = [f for f in files if f.path in change["only"]]
    if change.get("add_pickle"):
        obj = s3.put_bytes(bucket, prefix + "adapter_model.bin", b"\x80\x02}q\x00.")
        files.append(FileSpec(path="adapter_model.bin", size=obj.size, etag=obj.etag,
                              url=files[0].url and "", key=None))  # fmt: skip
    if change.get("no_files"):
        files = []
    return adapter.model_copy(update={"files": files}), change.get("quota")


def _large_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.stat().st_size > 1 << 20]


@pytest.mark.parametrize("case", AGENT, ids=[c.id for c in AGENT])
async def test_the_agent_refuses_the_case_and_keeps_serving_others(
    case: Case, s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    prefix = f"{case.id}/"
    presigned = case.raw.get("access", "presigned") == "presigned"
    objects = upload(s3_server, s3_bucket, prefix, HEALTHY)
    adapter, quota = mutate(
        publish(objects, s3_bucket, prefix, client, presigned=presigned),
        case.raw["mutate"], s3_server, s3_bucket, prefix,
    )  # fmt: skip
    cache = AdapterCache(tmp_path / "cache", quota_bytes=quota)

    with pytest.raises(LorapackError) as caught:
        await cache.ensure(adapter, s3=client, allow_pickle=False)

    err = caught.value
    assert err.reason == case.reason, f"{case.id}: {err.reason}: {err.message}"
    for word in case.words:
        assert word in err.message, f"{case.id}: {word!r} not in {err.message!r}"
    assert cache.digests() == set()
    assert _large_files(tmp_path) == []  # a swapped 64 MiB object never reached the disk
    # The same agent (a fresh cache where the quota refused everything) serves a neighbour.
    neighbour = publish(
        upload(s3_server, s3_bucket, "healthy/", HEALTHY), s3_bucket, "healthy/", client,
        presigned=presigned,
    )  # fmt: skip
    keeper = cache if quota is None else AdapterCache(tmp_path / "other")
    path = await keeper.ensure(neighbour, s3=client, allow_pickle=False)
    assert (path / "adapter_model.safetensors").read_bytes() == HEALTHY["adapter_model.safetensors"]


# -- s3 ----------------------------------------------------------------------------------------


class Secrets:
    """The Kubernetes side of S3Access: Secrets by (namespace, name)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}

    def put(self, namespace: str, name: str, **data: str) -> None:
        encoded = {key: base64.b64encode(v.encode()).decode() for key, v in data.items()}
        self.secrets[(namespace, name)] = {"data": encoded}

    async def get(self, rt: k.ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        assert rt is k.SECRET
        return self.secrets.get((namespace, name))


def _pool(s3: S3Server) -> BaseModelPool:
    body = make_pool(
        "tiny",
        baseModel={"name": BASE, "source": {"s3": {"uri": "s3://models/tiny-llama/"}}},
        s3={"endpoint": s3.endpoint, "region": s3.region, "addressingStyle": "path",
            "credentialsSecretRef": {"name": "pool-s3"}},
    )  # fmt: skip
    return BaseModelPool.model_validate(body)


def _adapter(name: str, uri: str) -> LoraAdapter:
    body = make_adapter(name, baseModel=BASE)
    body["spec"]["source"]["s3"] = {"uri": uri, "credentialsSecretRef": {"name": "team-s3"}}
    body["metadata"]["generation"] = 1
    return LoraAdapter.model_validate(body)


async def _swapped_pool_access(s3: S3Server, bucket: str, client: S3Client, tmp: Path) -> None:
    objects = upload(s3, bucket, "swap/", HEALTHY)
    adapter = publish(objects, bucket, "swap/", client, presigned=False)
    size = adapter.files[_weights(adapter)].size
    s3.put_bytes(bucket, "swap/adapter_model.safetensors", b"\x01" * size)
    await AdapterCache(tmp / "cache").ensure(adapter, s3=client, allow_pickle=False)


@pytest.mark.parametrize("case", S3, ids=[c.id for c in S3])
async def test_s3_behaviours_are_refusals_and_others_keep_validating(
    case: Case, s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    behaviour = case.raw["behaviour"]
    if behaviour == "swapped-pool-access":
        with pytest.raises(LorapackError) as caught:
            await _swapped_pool_access(s3_server, s3_bucket, client, tmp_path)
        assert caught.value.reason == case.reason, caught.value
        for word in case.words:
            assert word in caught.value.message, caught.value.message
        return
    secrets = Secrets()
    secrets.put("ml-platform", "pool-s3", AWS_ACCESS_KEY_ID=s3_server.access_key,
                AWS_SECRET_ACCESS_KEY=s3_server.secret_key)  # fmt: skip
    good = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    if behaviour == "wrong-credentials":
        secrets.put("team-a", "team-s3", AWS_ACCESS_KEY_ID="AKIAWRONG", AWS_SECRET_ACCESS_KEY="x")
    elif behaviour == "secret-without-keys":
        secrets.put("team-a", "team-s3", password="hunter2")
    elif behaviour != "missing-secret":
        secrets.put("team-a", "team-s3", **good)
    upload(s3_server, s3_bucket, "team-a/bot/", HEALTHY)
    bucket = "no-such-bucket-here" if behaviour == "missing-bucket" else s3_bucket
    access = S3Access(secrets, secret_ttl=0.0)  # type: ignore[arg-type]
    pool = _pool(s3_server)

    result = await validate_adapter(
        _adapter("bot", f"s3://{bucket}/team-a/bot/"), [pool], [], access
    )

    assert result.artifact is None
    assert [p.reason for p in result.problems] == [case.reason], result.problems
    for word in case.words:
        assert word in result.problems[0].message, result.problems[0].message
    assert s3_server.secret_key not in result.problems[0].message
    # The same S3Access, once the team's Secret works, validates a neighbour.
    secrets.put("team-a", "team-s3", **good)
    ok = await validate_adapter(
        _adapter("other", f"s3://{s3_bucket}/team-a/bot/"), [pool], [], access
    )
    assert ok.artifact is not None, ok.problems
