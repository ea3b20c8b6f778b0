"""Settings of the operator and of the in-pod agent, read from the environment.

Grouped the way kopf's OperatorSettings is: one frozen model per process kind, every field
documented, every variable prefixed `LORAPACK_`. A bad value fails at start-up with the variable's
name (never halfway through a reconcile).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lorapack import __version__
from lorapack.errors import InvalidSpec

__all__ = ["AgentConfig", "OperatorConfig"]


class _EnvModel(BaseModel):
    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True, extra="forbid")

    @classmethod
    def _from(cls, env: Mapping[str, str], prefix: str, extra: Mapping[str, str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for name in cls.model_fields:
            key = f"{prefix}{name.upper()}"
            if key in env:
                values[name] = env[key]
        for field, key in extra.items():
            if key in env and field not in values:
                values[field] = env[key]
        return values


class OperatorConfig(_EnvModel):
    """Settings of `lorapack run`."""

    namespaces: str = ""
    """Comma-separated namespaces to watch; empty watches all (LORAPACK_NAMESPACES)."""
    agent_image: str = f"ghcr.io/lorapack/lorapack:{__version__}"
    """Image of the agent sidecar in pool pods (LORAPACK_AGENT_IMAGE)."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Prometheus /metrics port; 0 disables (LORAPACK_METRICS_PORT)."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics server binds (LORAPACK_METRICS_HOST)."""
    presign_ttl_seconds: int = Field(default=3600, ge=300, le=7 * 24 * 3600)
    """Lifetime of presigned S3 URLs handed to agents (LORAPACK_PRESIGN_TTL_SECONDS)."""
    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    """How long agents wait for in-flight requests before unloading
    (LORAPACK_DRAIN_TIMEOUT_SECONDS)."""
    delete_timeout_seconds: float = Field(default=120.0, ge=1)
    """How long adapter deletion waits for pods to confirm the unload before letting the object
    go with a Warning Event UnloadTimedOut (LORAPACK_DELETE_TIMEOUT_SECONDS)."""
    revalidate_seconds: float = Field(default=600.0, ge=5)
    """How often an adapter's S3 files are re-read to notice new versions
    (LORAPACK_REVALIDATE_SECONDS)."""
    resync_seconds: float = Field(default=30.0, ge=1)
    """Safety-net period of the pool placement loop; changes wake it at once
    (LORAPACK_RESYNC_SECONDS)."""
    pod_lost_seconds: float = Field(default=120.0, ge=0)
    """A pool pod missing or unschedulable this long counts as lost: its adapters are placed on
    other pods (LORAPACK_POD_LOST_SECONDS)."""
    service_port: int = Field(default=8000, ge=1, le=65535)
    """Port of ClusterIP per-adapter Services (LORAPACK_SERVICE_PORT); headless ones are
    reached on the engine's port, 8000."""
    adapter_service_type: Literal["Headless", "ClusterIP"] = "Headless"
    """Per-adapter Services (LORAPACK_ADAPTER_SERVICE_TYPE): Headless takes no cluster IP (DNS
    lists the pods holding the adapter); ClusterIP takes one virtual IP per adapter from the
    cluster's Service range (kube-proxy balances): opt in only with the range to spare."""
    adapter_resync_seconds: float = Field(default=300.0, ge=1)
    """Safety-net period of each adapter's pass; events drive it otherwise
    (LORAPACK_ADAPTER_RESYNC_SECONDS)."""
    adapter_workers: int = Field(default=8, ge=1, le=256)
    """Adapter passes run at once (LORAPACK_ADAPTER_WORKERS)."""
    engine_network_policy: bool = True
    """Give each pool the NetworkPolicy `<pool>-engine`: the engine port reachable only from the
    pool's own pods and the gateway namespaces (LORAPACK_ENGINE_NETWORK_POLICY)."""
    gateway_namespaces: str = Field(
        default="", pattern=r"^\s*([^=,\s]+=[^=,\s]+\s*(,\s*[^=,\s]+=[^=,\s]+\s*)*)?$"
    )
    """Labels (key=value,...) of the namespaces your gateway runs in, admitted to the engine
    port; empty admits no gateway (LORAPACK_GATEWAY_NAMESPACES), e.g.
    kubernetes.io/metadata.name=gateway-system."""
    engine_allow_team_namespaces: bool = False
    """Also admit each pool's allowed team namespaces to the engine port, for teams that hold
    the engine key (they then reach vLLM's unauthenticated SageMaker routes too)
    (LORAPACK_ENGINE_ALLOW_TEAM_NAMESPACES)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read LORAPACK_* variables; InvalidSpec names the variable on a bad value."""
        source = os.environ if env is None else env
        try:
            return cls.model_validate(cls._from(source, "LORAPACK_", {}))
        except ValidationError as err:
            first = err.errors()[0]
            name = f"LORAPACK_{str(first['loc'][0]).upper()}"
            raise InvalidSpec(f"{name}: {first['msg']}") from err

    @property
    def namespace_list(self) -> list[str]:
        """The watched namespaces; empty means all."""
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]


class AgentConfig(_EnvModel):
    """Settings of `lorapack agent` (set by the pod template lorapack generates)."""

    pod_name: str
    """This pod's name (POD_NAME, from the downward API)."""
    pod_namespace: str
    """This pod's namespace (POD_NAMESPACE)."""
    pool_name: str
    """The pool's name (LORAPACK_POOL_NAME)."""
    engine_url: str = "http://127.0.0.1:8000"
    """Base URL of the vLLM engine in this pod (LORAPACK_ENGINE_URL)."""
    engine_api_key: str | None = None
    """vLLM --api-key, if set (VLLM_API_KEY)."""
    cache_dir: str = "/var/cache/lorapack"
    """Adapter cache folder on the shared volume (LORAPACK_CACHE_DIR)."""
    kubeconfig: str | None = None
    """Kubeconfig file; unset uses the pod's service account (KUBECONFIG)."""
    resync_seconds: float = Field(default=30.0, gt=0)
    """Full re-check period even without changes (LORAPACK_RESYNC_SECONDS)."""
    engine_poll_seconds: float = Field(default=2.0, gt=0)
    """How often the engine's health and /v1/models are checked (LORAPACK_ENGINE_POLL_SECONDS)."""
    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    """Most time to wait for an adapter's in-flight requests before unloading it
    (LORAPACK_DRAIN_TIMEOUT_SECONDS)."""
    max_parallel: int = Field(default=8, ge=1, le=64)
    """Adapters downloaded and loaded at once (LORAPACK_MAX_PARALLEL)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentConfig:
        """Read the agent's variables; InvalidSpec names the variable on a bad/missing value."""
        source = os.environ if env is None else env
        extra = {
            "pod_name": "POD_NAME",
            "pod_namespace": "POD_NAMESPACE",
            "engine_api_key": "VLLM_API_KEY",
            "kubeconfig": "KUBECONFIG",
        }
        try:
            return cls.model_validate(cls._from(source, "LORAPACK_", extra))
        except ValidationError as err:
            first = err.errors()[0]
            field = str(first["loc"][0])
            name = extra.get(field, f"LORAPACK_{field.upper()}")
            raise InvalidSpec(f"{name}: {first['msg']}") from err

    @property
    def desired_secret(self) -> str:
        """Name of the Secret holding this pod's desired adapters."""
        return f"{self.pod_name}-adapters"
