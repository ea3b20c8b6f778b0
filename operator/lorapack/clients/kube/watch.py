"""Watches: list, then follow every change, re-listing after 410 Gone or a broken stream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from lorapack.clients.kube.resources import ResourceType
from lorapack.errors import RetryableError

if TYPE_CHECKING:
    from lorapack.clients.kube.client import KubeClient

__all__ = ["WatchEvent", "watch_objects"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED (BOOKMARK and ERROR are handled inside)."""

    type: str
    object: Obj


async def watch_objects(
    client: KubeClient,
    rt: ResourceType,
    namespace: str | None = None,
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    timeout_seconds: int = 240,
) -> AsyncIterator[WatchEvent]:
    """List, then watch forever: yields ADDED for existing objects, then every change.

    Re-lists after the server ends a watch with 410 Gone; reconnects after network errors
    (callers see only ADDED/MODIFIED/DELETED).
    """
    known: dict[str, Obj] = {}
    while True:
        try:
            items, version = await client.list_all(rt, namespace, label_selector, field_selector)
        except RetryableError:
            await asyncio.sleep(1.0)
            continue
        fresh = {str(i["metadata"]["uid"]): i for i in items}
        for uid, obj in known.items():
            if uid not in fresh:
                yield WatchEvent("DELETED", obj)
        for uid, obj in fresh.items():
            yield WatchEvent("MODIFIED" if uid in known else "ADDED", obj)
        known = fresh
        async for event in _watch_from(
            client, rt, namespace, label_selector, field_selector, version, timeout_seconds
        ):
            if event is None:  # 410 Gone or a broken stream: re-list
                break
            uid = str(event.object["metadata"]["uid"])
            if event.type == "DELETED":
                known.pop(uid, None)
            else:
                known[uid] = event.object
            yield event


async def _watch_from(
    client: KubeClient,
    rt: ResourceType,
    namespace: str | None,
    label_selector: str | None,
    field_selector: str | None,
    version: str,
    timeout_seconds: int,
) -> AsyncIterator[WatchEvent | None]:
    query: list[tuple[str, Any]] = [
        ("watch", "true"),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", timeout_seconds),
    ]
    if version:
        query.append(("resourceVersion", version))
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    while True:
        try:
            resp = await client.api.call_api(
                rt.path(namespace),
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=timeout_seconds + 30,
            )
        except (ApiException, aiohttp.ClientError, TimeoutError) as err:
            log.debug("Watch of %s failed: %s", rt.plural, err)
            await asyncio.sleep(1.0)
            yield None
            return
        async with resp:
            if resp.status >= 300:
                yield None
                return
            try:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":  # 410 Gone: our resourceVersion is too old
                        yield None
                        return
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        query = [q for q in query if q[0] != "resourceVersion"]
                        query.append(("resourceVersion", rv))
                    if kind == "BOOKMARK":
                        continue
                    yield WatchEvent(str(kind), obj)
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                log.debug("Watch stream of %s broke: %s", rt.plural, err)
                yield None
                return
        # The server closed the watch after timeoutSeconds: resume from the last version.
