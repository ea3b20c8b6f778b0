"""The Kubernetes client: a small typed async facade over the official kubernetes_asyncio client.

Everything lorapack writes goes through here: server-side apply with lorapack's field manager
(so other writers' fields are never fought over), JSON merge / JSON Patch for targeted edits,
and watches for the agent and the pod simulator. Objects are plain dicts; the layers above
validate them into the pydantic models. API errors become `lorapack.errors`:

    404 on get/delete   -> None / False (the object is gone: nothing to do)
    409                 -> ApiConflict (retryable: re-read and try again)
    422 / 400           -> InvalidSpec (the server refused the object; message from its Status)
    403                 -> PermanentError(reason="Forbidden") naming the verb and resource
    429                 -> retried after its Retry-After (THROTTLE_RETRIES times), then as 5xx
    5xx, timeouts       -> RetryableError(reason="ApiUnavailable")

Callers: the operator's handlers (through reconciler ports), the agent, the pod simulator.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from lorapack.clients.kube.resources import SERVICEACCOUNT, ResourceType, resource_for
from lorapack.clients.kube.watch import WatchEvent, watch_objects
from lorapack.errors import ApiConflict, InvalidSpec, PermanentError, RetryableError

__all__ = ["KubeClient", "WatchEvent"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PatchKind = Literal["merge", "json", "strategic"]
_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


def _status_message(body: str | bytes | None) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return str(body)[:500]
    return str(data.get("message", "")) if isinstance(data, dict) else str(data)[:500]


def _raise_for(status: int, body: str | bytes | None, what: str) -> None:
    message = _status_message(body) or f"HTTP {status}"
    if status == 409:
        raise ApiConflict(f"{what}: {message}", retry_after=0.2)
    if status in (400, 422):
        raise InvalidSpec(f"{what}: {message}")
    if status == 403:
        raise PermanentError(f"{what}: {message}", reason="Forbidden")
    if status == 404:
        raise PermanentError(f"{what}: {message}", reason="NotFound")
    raise RetryableError(f"{what}: {message}", reason="ApiUnavailable", retry_after=2.0)


THROTTLE_RETRIES = 5


def _retry_after(headers: Any) -> float:
    """The Retry-After header in seconds (1 s when absent or not a number)."""
    try:
        return max(0.1, float((headers or {}).get("Retry-After", 1)))
    except (TypeError, ValueError):
        return 1.0


class KubeClient:
    """Async access to one cluster."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self.throttled = 0
        """429 answers retried (the API server's Priority and Fairness said wait)."""

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> KubeClient:
        """From a kubeconfig file, or the pod's service account when running in a cluster."""
        configuration = Configuration()
        if kubeconfig:
            await k8s_config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration
            )
        else:
            try:
                k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
            except k8s_config.ConfigException:
                await k8s_config.load_kube_config(client_configuration=configuration)
        return cls(ApiClient(configuration))

    @property
    def api(self) -> ApiClient:
        """The official client's transport (configuration, auth, TLS, connection pool)."""
        return self._api

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        request_timeout: float | None = 30.0,
    ) -> tuple[int, bytes]:
        """One call; a 429 (API Priority and Fairness refusing it for now) is retried here
        after the server's Retry-After, a few times, as client-go does: surfacing it would
        cost a whole pass and its backoff for what the server asked to wait a second for."""
        for attempt in range(THROTTLE_RETRIES + 1):
            status, data, wait = await self._send(
                method, path, body=body, query=query, content_type=content_type,
                request_timeout=request_timeout,
            )  # fmt: skip
            if status != 429 or attempt == THROTTLE_RETRIES:
                return status, data
            self.throttled += 1
            log.debug("%s %s: 429, retrying in %.1f s", method, path, wait)
            await asyncio.sleep(min(wait, 4.0) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        query: list[tuple[str, Any]] | None,
        content_type: str,
        request_timeout: float | None,
    ) -> tuple[int, bytes, float]:
        """(status, body, Retry-After seconds) of one request."""
        try:
            resp = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=request_timeout,
            )
        except ApiException as err:
            data = (
                (err.body or b"")
                if isinstance(err.body, bytes)
                else (str(err.body or err.reason or "").encode())
            )
            return int(err.status or 0), data, _retry_after(err.headers)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise RetryableError(
                f"{method} {path}: {err or type(err).__name__}",
                reason="ApiUnavailable",
                retry_after=2.0,
            ) from err
        async with resp:
            data = await resp.read()
            return int(resp.status), data, _retry_after(resp.headers)

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        """The object, or None if it does not exist."""
        status, data = await self._request("GET", rt.path(namespace, name))
        if status == 404:
            return None
        if status >= 300:
            _raise_for(status, data, f"get {rt.kind} {namespace}/{name}")
        result: Obj = json.loads(data)
        return result

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[Obj]:
        """Every matching object (all pages)."""
        items, _ = await self.list_all(rt, namespace, label_selector, field_selector)
        return items

    async def list_all(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
    ) -> tuple[builtins.list[Obj], str]:
        items: builtins.list[Obj] = []
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", 500)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            status, data = await self._request("GET", rt.path(namespace), query=query)
            if status >= 300:
                _raise_for(status, data, f"list {rt.plural} in {namespace or 'all namespaces'}")
            page = json.loads(data)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, str((page.get("metadata") or {}).get("resourceVersion", ""))

    async def apply(
        self,
        obj: Mapping[str, Any],
        *,
        field_manager: str,
        force: bool = True,
        subresource: str | None = None,
    ) -> Obj:
        """Server-side apply: this manager owns exactly the fields in `obj`."""
        rt = resource_for(obj)
        meta = obj.get("metadata") or {}
        what = f"apply {rt.kind} {meta.get('namespace', '')}/{meta.get('name')}"
        status, data = await self._request(
            "PATCH",
            rt.path(meta.get("namespace"), meta["name"], subresource),
            body=dict(obj),
            query=[("fieldManager", field_manager), ("force", "true" if force else "false")],
            content_type="application/apply-patch+yaml",
        )
        if status >= 300:
            _raise_for(status, data, what)
        result: Obj = json.loads(data)
        return result

    async def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        kind: PatchKind = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj | None:
        """A merge, JSON or strategic patch; None if the object does not exist."""
        query = [("fieldManager", field_manager)] if field_manager else []
        status, data = await self._request(
            "PATCH",
            rt.path(namespace, name, subresource),
            body=patch,
            query=query,
            content_type=_CONTENT_TYPES[kind],
        )
        if status == 404:
            return None
        if status >= 300:
            _raise_for(status, data, f"patch {rt.kind} {namespace}/{name}")
        result: Obj = json.loads(data)
        return result

    async def create(self, obj: Mapping[str, Any], *, field_manager: str | None = None) -> Obj:
        """Create an object (ApiConflict if it exists)."""
        rt = resource_for(obj)
        namespace = (obj.get("metadata") or {}).get("namespace")
        query = [("fieldManager", field_manager)] if field_manager else []
        status, data = await self._request("POST", rt.path(namespace), body=dict(obj), query=query)
        if status >= 300:
            _raise_for(status, data, f"create {rt.kind} in {namespace}")
        result: Obj = json.loads(data)
        return result

    async def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        grace_seconds: int | None = None,
    ) -> bool:
        """Delete (background propagation); False if it was already gone."""
        query: list[tuple[str, Any]] = [("propagationPolicy", "Background")]
        if grace_seconds is not None:
            query.append(("gracePeriodSeconds", grace_seconds))
        status, data = await self._request("DELETE", rt.path(namespace, name), query=query)
        if status == 404:
            return False
        if status >= 300:
            _raise_for(status, data, f"delete {rt.kind} {namespace}/{name}")
        return True

    async def create_token(
        self, namespace: str, service_account: str, *, seconds: int = 3600
    ) -> str:
        """A bound token for a ServiceAccount (TokenRequest API)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        path = SERVICEACCOUNT.path(namespace, service_account, "token")
        status, data = await self._request("POST", path, body=body)
        if status >= 300:
            _raise_for(status, data, f"create a token for {namespace}/{service_account}")
        return str(json.loads(data)["status"]["token"])

    async def watch(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 240,
    ) -> AsyncIterator[WatchEvent]:
        """List, then watch forever (see lorapack.clients.kube.watch)."""
        async for event in watch_objects(
            self, rt, namespace, label_selector=label_selector,
            field_selector=field_selector, timeout_seconds=timeout_seconds,
        ):  # fmt: skip
            yield event
