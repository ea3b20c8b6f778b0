"""A loopback stand-in for kube-proxy: routes `/<namespace>/<service>/v1/...` by EndpointSlices.

In the simulated cluster pod IPs are documentation addresses that nothing listens on; the pod
simulator knows which loopback engine stands in for each pod IP. This gateway resolves a
Service's EndpointSlices (only ready endpoints, exactly as kube-proxy does), picks one round-robin
and forwards the request to that pod's engine, so tests and the demo prove that traffic reaches
only pods that really hold the adapter. Used by the integration tier and `make demo`.

It also plays the part docs/security.md gives a real cluster's gateway: only the inference paths
are routed (anything else, vLLM's runtime load/unload API included, gets 404 here and never
reaches an engine), the client's `Authorization` is dropped and the pool's engine key (the
Secret `<pool>-engine-key`) is sent instead.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
from aiohttp import web

from lorapack import labels
from lorapack.clients.kube import ENDPOINTSLICE, SECRET, KubeClient

__all__ = ["Gateway", "podnet_from_file"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Resolver = Callable[[str], str | None]

# What the gateway routes (method, path after the Service): the inference paths only.
INFERENCE_ROUTES = frozenset(
    {("POST", "v1/chat/completions"), ("POST", "v1/completions"), ("GET", "v1/models")}
)


def podnet_from_file(path: Path) -> Resolver:
    """A resolver reading the pod simulator's podnet.json on every lookup."""

    def resolve(ip: str) -> str | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        url = data.get(ip)
        return str(url) if url else None

    return resolve


class Gateway:
    """HTTP server on 127.0.0.1 forwarding to the pods behind a Service's EndpointSlices."""

    def __init__(self, kube: KubeClient, resolve: Resolver, port: int = 0) -> None:
        self._kube = kube
        self._resolve = resolve
        self._port = port
        self._counter = itertools.count()
        self._runner: web.AppRunner | None = None
        self._client = httpx.AsyncClient(timeout=60.0)
        self._route_cache: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        self._key_cache: dict[tuple[str, str], str | None] = {}
        self.url = ""

    async def endpoints(self, namespace: str, service: str) -> list[str]:
        """Ready endpoint addresses of the Service (all its slices)."""
        return sorted(await self._routes(namespace, service))

    async def _routes(self, namespace: str, service: str) -> dict[str, tuple[str, str]]:
        """Ready endpoint address -> (pool namespace, pool name) of the slice listing it."""
        slices = await self._kube.list(
            ENDPOINTSLICE, namespace, label_selector=f"{labels.SERVICE_NAME_LABEL}={service}"
        )
        out: dict[str, tuple[str, str]] = {}
        for item in slices:
            meta_labels = (item.get("metadata") or {}).get("labels") or {}
            pool = (meta_labels.get(labels.POOL_NAMESPACE_LABEL, ""),
                    meta_labels.get(labels.POOL_LABEL, ""))  # fmt: skip
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                for address in endpoint.get("addresses") or []:
                    out[address] = pool
        return out

    async def _engine_key(self, pool_namespace: str, pool: str) -> str | None:
        """The pool's engine key, read from its Secret as a real gateway would."""
        if not pool:
            return None
        secret = await self._kube.get(SECRET, pool_namespace, f"{pool}-engine-key")
        value = ((secret or {}).get("data") or {}).get("api-key")
        return base64.b64decode(value).decode() if value else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        service = request.match_info["service"]
        rest = request.match_info["rest"]
        if (request.method, rest.strip("/")) not in INFERENCE_ROUTES:
            return web.json_response(
                {"error": f"no route for {request.method} /{rest}: only inference paths"},
                status=404,
            )
        try:
            routes = await self._routes(namespace, service)
            self._route_cache[(namespace, service)] = routes
        except Exception:  # the API server is down: kube-proxy keeps its last rules too
            routes = self._route_cache.get((namespace, service), {})
        if not routes:
            return web.json_response(
                {"error": f"no ready endpoints for Service {namespace}/{service}"}, status=503
            )
        addresses = sorted(routes)
        ip = addresses[next(self._counter) % len(addresses)]
        target = self._resolve(ip)
        if target is None:
            return web.json_response({"error": f"no pod process for {ip}"}, status=502)
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        try:
            key = await self._engine_key(*routes[ip])
            self._key_cache[routes[ip]] = key
        except Exception:  # as above: the last key read
            key = self._key_cache.get(routes[ip])
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        try:
            upstream = await self._client.request(
                request.method, f"{target}/{rest}", content=body, headers=headers
            )
        except httpx.HTTPError as err:  # the engine is restarting: what a client of kube-proxy sees
            return web.json_response({"error": f"{ip}: {err!r}"}, status=502)
        return web.Response(
            status=upstream.status_code,
            body=upstream.content,
            headers={
                "Content-Type": upstream.headers.get("content-type", "application/json"),
                "X-Lorapack-Endpoint": ip,
            },
        )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{namespace}/{service}/{rest:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = self._port or _free_port()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        await self._client.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
