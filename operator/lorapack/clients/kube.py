"""The Kubernetes client: a small typed async facade over the official kubernetes_asyncio client.

Everything lorapack writes goes through here: server-side apply with lorapack's field manager
(so other writers' fields are never fought over), JSON merge / JSON Patch for targeted edits,
and watches for the agent and the pod simulator. Objects are plain dicts; the layers above
validate them into the pydantic models. API errors become `lorapack.errors`:

    404 on get/delete   -> None / False (the object is gone: nothing to do)
    409                 -> ApiConflict (retryable: re-read and try again)
    422 / 400           -> InvalidSpec (the server refused the object; message from its Status)
    403                 -> PermanentError(reason="Forbidden") naming the verb and resource
    5xx, timeouts       -> RetryableError(reason="ApiUnavailable")

Callers: the operator's handlers (through reconciler ports), the agent, the pod simulator.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from lorapack.errors import ApiConflict, InvalidSpec, PermanentError, RetryableError

__all__ = [
    "ADAPTER",
    "CONFIGMAP",
    "ENDPOINTSLICE",
    "EVENT",
    "NAMESPACE",
    "NODE",
    "PDB",
    "POD",
    "POOL",
    "ROLE",
    "ROLEBINDING",
    "SECRET",
    "SERVICE",
    "SERVICEACCOUNT",
    "STATEFULSET",
    "KubeClient",
    "ResourceType",
    "WatchEvent",
    "resource_for",
]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PatchKind = Literal["merge", "json", "strategic"]
_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


@dataclass(frozen=True)
class ResourceType:
    """Where a kind lives in the REST API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        """The REST path of the collection, or of one object (and its subresource)."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if sub:
                base += f"/{sub}"
        return base


POD = ResourceType("v1", "Pod", "pods")
SERVICE = ResourceType("v1", "Service", "services")
SECRET = ResourceType("v1", "Secret", "secrets")
CONFIGMAP = ResourceType("v1", "ConfigMap", "configmaps")
SERVICEACCOUNT = ResourceType("v1", "ServiceAccount", "serviceaccounts")
NAMESPACE = ResourceType("v1", "Namespace", "namespaces", namespaced=False)
NODE = ResourceType("v1", "Node", "nodes", namespaced=False)
EVENT = ResourceType("events.k8s.io/v1", "Event", "events")
STATEFULSET = ResourceType("apps/v1", "StatefulSet", "statefulsets")
PDB = ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
ENDPOINTSLICE = ResourceType("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")
ROLE = ResourceType("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLEBINDING = ResourceType("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
POOL = ResourceType("lorapack.io/v1alpha1", "BaseModelPool", "basemodelpools")
ADAPTER = ResourceType("lorapack.io/v1alpha1", "LoraAdapter", "loraadapters")

_BY_KIND = {
    (r.api_version, r.kind): r
    for r in (
        POD, SERVICE, SECRET, CONFIGMAP, SERVICEACCOUNT, NAMESPACE, NODE, EVENT, STATEFULSET,
        PDB, ENDPOINTSLICE, ROLE, ROLEBINDING, POOL, ADAPTER,
    )
}  # fmt: skip


def resource_for(obj: Mapping[str, Any]) -> ResourceType:
    """The ResourceType of an object by its apiVersion and kind."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    try:
        return _BY_KIND[key]
    except KeyError:
        raise InvalidSpec(f"lorapack does not manage {key[1]} ({key[0]})") from None


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED (BOOKMARK and ERROR are handled inside)."""

    type: str
    object: Obj


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


class KubeClient:
    """Async access to one cluster."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

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
            return int(err.status or 0), (err.body or b"") if isinstance(err.body, bytes) else (
                str(err.body or err.reason or "").encode()
            )
        except (aiohttp.ClientError, TimeoutError) as err:
            raise RetryableError(
                f"{method} {path}: {err or type(err).__name__}",
                reason="ApiUnavailable",
                retry_after=2.0,
            ) from err
        async with resp:
            data = await resp.read()
            return int(resp.status), data

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
        items, _ = await self._list_all(rt, namespace, label_selector, field_selector)
        return items

    async def _list_all(
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
        """List, then watch forever: yields ADDED for existing objects, then every change.

        Re-lists after the server ends a watch with 410 Gone; reconnects after network errors
        (callers see only ADDED/MODIFIED/DELETED).
        """
        known: dict[str, Obj] = {}
        while True:
            try:
                items, version = await self._list_all(rt, namespace, label_selector, field_selector)
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
            async for event in self._watch_from(
                rt, namespace, label_selector, field_selector, version, timeout_seconds
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
        self,
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
                resp = await self._api.call_api(
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
