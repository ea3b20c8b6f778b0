"""A 429 from API Priority and Fairness is waited out inside the client, a bounded number of
times, honouring Retry-After; other errors are not retried there."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from lorapack.clients.kube import client as kube_client
from lorapack.clients.kube.client import THROTTLE_RETRIES, KubeClient
from lorapack.errors import RetryableError

SECRET = kube_client.resource_for({"apiVersion": "v1", "kind": "Secret"})


class _Response:
    status = 200
    headers: ClassVar[dict[str, str]] = {}

    async def read(self) -> bytes:
        return b'{"kind": "Secret"}'

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Api:
    def __init__(self, failures: list[int]) -> None:
        self.failures = failures
        self.calls = 0

    async def call_api(self, *args: Any, **kwargs: Any) -> _Response:
        self.calls += 1
        if self.failures:
            err = ApiException(status=self.failures.pop(0), reason="Too Many Requests")
            err.headers = {"Retry-After": "2"}
            err.body = b'{"message": "too many requests, please try again later"}'
            raise err
        return _Response()


@pytest.fixture(autouse=True)
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(kube_client.asyncio, "sleep", sleep)
    return slept


async def test_throttled_requests_are_retried_after_retry_after(slept: list[float]) -> None:
    api = _Api([429, 429])
    kube = KubeClient(api)  # type: ignore[arg-type]
    assert await kube.get(SECRET, "ns", "x") == {"kind": "Secret"}
    assert (api.calls, kube.throttled) == (3, 2)
    assert len(slept) == 2 and all(1.0 <= s <= 3.0 for s in slept)  # 2 s, jittered


async def test_throttling_that_does_not_end_surfaces_as_retryable() -> None:
    api = _Api([429] * (THROTTLE_RETRIES + 1))
    kube = KubeClient(api)  # type: ignore[arg-type]
    with pytest.raises(RetryableError, match="too many requests"):
        await kube.get(SECRET, "ns", "x")
    assert api.calls == THROTTLE_RETRIES + 1


async def test_other_errors_are_not_retried_here() -> None:
    api = _Api([503])
    kube = KubeClient(api)  # type: ignore[arg-type]
    with pytest.raises(RetryableError):
        await kube.get(SECRET, "ns", "x")
    assert api.calls == 1
