"""Runs the operator in-process (`lorapack run`): kopf with lorapack's handlers registered."""

from __future__ import annotations

import kopf

import lorapack.handlers.registry  # noqa: F401  (registers the handlers)
from lorapack.arenas import limit_arenas
from lorapack.config import OperatorConfig

__all__ = ["run_operator"]


def run_operator(
    *,
    standalone: bool,
    peering: str | None,
    priority: int,
    liveness: str | None,
) -> None:
    """Blocks until the operator stops (SIGTERM/SIGINT)."""
    limit_arenas()  # before kopf and the thread pool start
    config = OperatorConfig.from_env()
    namespaces = config.namespace_list
    kopf.run(
        standalone=standalone,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=liveness,
        clusterwide=not namespaces,
        namespaces=namespaces,
    )
