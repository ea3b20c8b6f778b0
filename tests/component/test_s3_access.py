"""S3Access's credentials Secret cache: one GET per Secret per TTL, shared by concurrent readers,
missing Secrets never cached."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from lorapack.clients import kube as k
from lorapack.handlers.adapters_io import S3Access


class FakeKube:
    """Counts Secret GETs; answers after a short pause so concurrent readers overlap."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.gets = 0
        self.fail: Exception | None = None

    def put(self, namespace: str, name: str, **data: str) -> None:
        encoded = {key: base64.b64encode(v.encode()).decode() for key, v in data.items()}
        self.secrets[(namespace, name)] = {"data": encoded}

    async def get(self, rt: k.ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        assert rt is k.SECRET
        self.gets += 1
        await asyncio.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        return self.secrets.get((namespace, name))


def access(kube: FakeKube, ttl: float = 60.0) -> S3Access:
    return S3Access(kube, secret_ttl=ttl)  # type: ignore[arg-type]


async def test_concurrent_reads_of_one_secret_cost_one_get() -> None:
    kube = FakeKube()
    kube.put("team-a", "s3", AWS_ACCESS_KEY_ID="id")
    s3 = access(kube)
    results = await asyncio.gather(*(s3.read_secret("team-a", "s3") for _ in range(50)))
    assert all(r == {"AWS_ACCESS_KEY_ID": "id"} for r in results)
    assert kube.gets == 1
    assert await s3.read_secret("team-a", "s3") == {"AWS_ACCESS_KEY_ID": "id"}
    assert kube.gets == 1


async def test_other_secrets_are_read_separately() -> None:
    kube = FakeKube()
    kube.put("team-a", "s3", AWS_ACCESS_KEY_ID="a")
    kube.put("team-b", "s3", AWS_ACCESS_KEY_ID="b")
    s3 = access(kube)
    a, b = await asyncio.gather(s3.read_secret("team-a", "s3"), s3.read_secret("team-b", "s3"))
    assert (a, b) == ({"AWS_ACCESS_KEY_ID": "a"}, {"AWS_ACCESS_KEY_ID": "b"})
    assert kube.gets == 2


async def test_a_rotated_secret_is_read_again_after_the_ttl() -> None:
    kube = FakeKube()
    kube.put("team-a", "s3", AWS_ACCESS_KEY_ID="old")
    s3 = access(kube, ttl=0.05)
    assert await s3.read_secret("team-a", "s3") == {"AWS_ACCESS_KEY_ID": "old"}
    kube.put("team-a", "s3", AWS_ACCESS_KEY_ID="new")
    await asyncio.sleep(0.06)
    assert await s3.read_secret("team-a", "s3") == {"AWS_ACCESS_KEY_ID": "new"}
    assert kube.gets == 2


async def test_a_missing_secret_is_not_cached() -> None:
    kube = FakeKube()
    s3 = access(kube)
    assert await s3.read_secret("team-a", "s3") is None
    kube.put("team-a", "s3", AWS_ACCESS_KEY_ID="id")
    assert await s3.read_secret("team-a", "s3") == {"AWS_ACCESS_KEY_ID": "id"}


async def test_a_failed_read_reaches_every_waiter_and_is_not_cached() -> None:
    kube = FakeKube()
    kube.put("team-a", "s3", AWS_ACCESS_KEY_ID="id")
    kube.fail = RuntimeError("apiserver down")
    s3 = access(kube)
    results = await asyncio.gather(
        *(s3.read_secret("team-a", "s3") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    kube.fail = None
    assert await s3.read_secret("team-a", "s3") == {"AWS_ACCESS_KEY_ID": "id"}
