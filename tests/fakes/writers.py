"""In-memory fakes of the reconcilers' ports that record every call (karpenter-style)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactObject, LoraAdapter
from lorapack.api.podstate import DesiredState
from lorapack.errors import ApiConflict
from lorapack.reconcilers.poolworld import ServiceView


class FakeWriter:
    """Writer port: keeps the last applied object per (kind, namespace, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str, str]] = []
        self.fail: dict[tuple[str, str, str], Exception] = {}
        """(kind, namespace, name) -> the error every write of that object raises."""

    def _check(self, key: tuple[str, str, str]) -> None:
        if key in self.fail:
            raise self.fail[key]

    async def apply(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        key = (str(obj["kind"]), str(meta.get("namespace", "")), str(meta["name"]))
        self.calls.append(("apply", *key))
        self._check(key)
        self.objects[key] = dict(obj)

    async def create(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        key = (str(obj["kind"]), str(meta.get("namespace", "")), str(meta["name"]))
        self.calls.append(("create", *key))
        self._check(key)
        if key in self.objects:
            raise ApiConflict(f"{key} already exists")
        self.objects[key] = dict(obj)

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.calls.append(("delete", kind, namespace, name))
        self._check((kind, namespace, name))
        self.objects.pop((kind, namespace, name), None)

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.calls.append(("status", kind, namespace, name))

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: obj for (k, _, name), obj in self.objects.items() if k == kind}

    def desired(self) -> dict[int, DesiredState]:
        out = {}
        for name, secret in self.of_kind("Secret").items():
            if labels.DESIRED_KEY not in (secret.get("data") or {}):
                continue  # the pool's engine key
            state = DesiredState.model_validate_json(
                base64.b64decode(secret["data"][labels.DESIRED_KEY])
            )
            out[int(name.rsplit("-", 2)[-2])] = state
        return out

    def replicas(self) -> int | None:
        sets = self.of_kind("StatefulSet")
        return next(iter(sets.values()))["spec"]["replicas"] if sets else None

    def slices(self) -> dict[str, list[str]]:
        return {
            f"{obj['metadata']['namespace']}/{name}": [
                e["targetRef"]["name"] for e in obj["endpoints"]
            ]
            for name, obj in self.of_kind("EndpointSlice").items()
        }

    def writes(self) -> int:
        return len(self.calls)

    def services(self) -> dict[str, ServiceView]:
        """adapter key -> Service, as the operator's Service index holds them."""
        out = {}
        for (kind, namespace, _), obj in self.objects.items():
            adapter = obj["metadata"].get("labels", {}).get(labels.ADAPTER_LABEL)
            if kind != "Service" or adapter is None:
                continue
            owners = [o["uid"] for o in obj["metadata"].get("ownerReferences", [])]
            headless = obj["spec"].get("clusterIP") == "None"
            out[f"{namespace}/{adapter}"] = ServiceView(owners[0] if owners else "", headless)
        return out


class FakeClaims(set[str]):
    """Claims port: the refs this 'process' has seen to be its own."""


class FakePresigner:
    """Presigner port: deterministic fake URLs, records calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def presign(
        self,
        adapter: LoraAdapter,
        pool: BaseModelPool,
        bucket: str,
        objects: Sequence[tuple[str, ArtifactObject]],
        ttl_seconds: int,
    ) -> tuple[list[str], datetime]:
        self.calls += 1
        urls = [f"https://s3.example/{bucket}/{key}?sig=x" for key, _ in objects]
        return urls, datetime.now(UTC) + timedelta(seconds=ttl_seconds)


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
