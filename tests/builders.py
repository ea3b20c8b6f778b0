"""Fluent-ish builders for test objects: wire-format dicts of pools and adapters.

Tests start from a valid object and change one thing, so each case reads as the difference
that matters (kueue's MakeWorkload style).
"""

from __future__ import annotations

import copy
from typing import Any

POOL_API = "lorapack.io/v1alpha1"


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Merge `changes` into a copy of `base`; a None value deletes the key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_pool(
    name: str = "llama3-8b", namespace: str = "ml-platform", **spec: Any
) -> dict[str, Any]:
    """A valid BaseModelPool; keyword arguments are merged into spec."""
    base = {
        "apiVersion": POOL_API,
        "kind": "BaseModelPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "baseModel": {
                "name": "meta-llama/Meta-Llama-3-8B",
                "source": {"s3": {"uri": "s3://models/llama-3-8b/"}},
            },
            "engine": {"maxLoras": 8, "maxLoraRank": 64, "maxCpuLoras": 32},
            "gpu": {"type": "L20", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L20"}},
            "replicas": {"min": 1, "max": 4},
            "adapters": {
                "allowedNamespaces": ["team-a", "team-b", "team-c"],
                # Adapters without credentials of their own read with the pool's identity,
                # only where the pool grants it.
                "s3Access": [{"namespaces": ["*"], "uriPrefixes": ["s3://adapters/"]}],
            },
        },
    }
    return deep_merge(base, {"spec": spec})


def make_adapter(
    name: str = "support-bot", namespace: str = "team-a", **spec: Any
) -> dict[str, Any]:
    """A valid LoraAdapter; keyword arguments are merged into spec."""
    base = {
        "apiVersion": POOL_API,
        "kind": "LoraAdapter",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "baseModel": "meta-llama/Meta-Llama-3-8B",
            "source": {"s3": {"uri": f"s3://adapters/{namespace}/{name}/"}},
        },
    }
    return deep_merge(base, {"spec": spec})
