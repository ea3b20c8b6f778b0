"""BaseModelPool handlers: the per-pool placement loop (a kopf daemon) and deletion reporting.

The daemon is the only caller of `reconcilers.pool.reconcile_pool` for its pool, so placement
has a single writer. It runs a pass when woken (an adapter validated, a pod reported, the spec
changed) or every LORAPACK_RESYNC_SECONDS, gathers the world from the kopf indexes, and
publishes the outcome: the pool's status, each adapter's placement (then wakes those adapters'
status loops), and metrics.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from lorapack import labels
from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool, BaseModelPoolStatus
from lorapack.api.loraadapter import LoraAdapter, LoraAdapterStatus
from lorapack.api.meta import format_validation_error
from lorapack.api.podstate import DesiredState
from lorapack.errors import LorapackError, RetryableError
from lorapack.handlers import metrics
from lorapack.handlers.adapters_io import KubeWriter
from lorapack.handlers.runtime import Runtime
from lorapack.planning.admission import pool_key
from lorapack.planning.pods import PodObservation
from lorapack.planning.rollout import Endpoint
from lorapack.reconcilers.pool import PoolSettings, PoolWorld, reconcile_pool
from lorapack.status.conditions import Verdict, kstatus_conditions, now_rfc3339

Index = Any  # kopf.Index: key -> Store of values


def _values(index: Index, key: str) -> list[Any]:
    return list(index[key]) if key in index else []


def _with_fresh_artifact(adapter: LoraAdapter, rt: Runtime) -> LoraAdapter:
    """The adapter as the index holds it, with this process's newer validation of its current
    generation in place of `status.artifact`.

    The adapter loop publishes the artifact through the status, and the index sees it only once
    kopf has processed that write; under a burst of applies that round trip took seconds, so
    placement would wait on the API server for a fact this process already holds. After a
    restart nothing is held yet and the status (persisted) is used as before.
    """
    result = rt.validations.get(f"{adapter.metadata.namespace}/{adapter.metadata.name}")
    if result is None or result.artifact is None:
        return adapter
    if result.generation != adapter.metadata.generation:
        return adapter
    status = adapter.status or LoraAdapterStatus()
    if status.artifact == result.artifact:
        return adapter
    return adapter.model_copy(
        update={"status": status.model_copy(update={"artifact": result.artifact})}
    )


def gather_world(
    pool: BaseModelPool,
    rt: Runtime,
    lorapack_pools: Index,
    lorapack_adapters: Index,
    lorapack_pods: Index,
    lorapack_desired: Index,
    lorapack_slices: Index,
) -> PoolWorld:
    """Everything one pass reads, from the indexes (no API calls)."""
    base = pool.spec.base_model.name
    group: list[BaseModelPool] = [
        p for p in _values(lorapack_pools, base) if p.metadata.deletion_timestamp is None
    ]
    if all(pool_key(p) != pool_key(pool) for p in group):
        group.append(pool)
    adapters = [_with_fresh_artifact(a, rt) for a in _values(lorapack_adapters, base)]
    deleting = frozenset(
        f"{a.metadata.namespace}/{a.metadata.name}"
        for a in adapters
        if a.metadata.deletion_timestamp is not None
    )
    pods: dict[str, list[PodObservation]] = {}
    desired: dict[str, dict[int, DesiredState]] = {}
    for p in group:
        key = pool_key(p)
        # Several pod objects can share an ordinal briefly (old one terminating): the newest wins.
        by_ordinal: dict[int, PodObservation] = {}
        for obs in _values(lorapack_pods, key):
            old = by_ordinal.get(obs.ordinal)
            if old is None or (old.deleting and not obs.deleting):
                by_ordinal[obs.ordinal] = obs
        pods[key] = list(by_ordinal.values())
        desired[key] = dict(_values(lorapack_desired, key))
    me = pool_key(pool)
    slices: dict[str, tuple[Endpoint, ...]] = dict(_values(lorapack_slices, me))
    return PoolWorld(
        pool=pool,
        group=group,
        adapters=adapters,
        deleting=deleting,
        pods=pods,
        desired=desired,
        slices=slices,
        statefulset_replicas=rt.statefulset_replicas.get(me),
        owned_applied_generation=rt.owned_generation.get(me),
        now=datetime.now(UTC),
    )


async def _write_invalid(rt: Runtime, pool_body: kopf.Body, message: str) -> None:
    status = BaseModelPoolStatus.model_validate(pool_body.get("status") or {})
    generation = int(pool_body.get("metadata", {}).get("generation") or 0)
    new = status.model_copy(
        update={
            "observed_generation": generation,
            "conditions": kstatus_conditions(
                status.conditions,
                Verdict("stalled", c.INVALID_SPEC, message),
                generation,
                now_rfc3339(),
            ),
        }
    )
    if new.wire() != status.wire():
        meta = pool_body["metadata"]
        await KubeWriter(rt.kube).patch_status(
            labels.API_VERSION, labels.POOL_KIND, meta["namespace"], meta["name"], new.wire()
        )


def _publish_metrics(key: str, world: PoolWorld, status: BaseModelPoolStatus) -> None:
    metrics.POOL_SLOTS.labels(key, "total").set(status.capacity.slots_total)
    metrics.POOL_SLOTS.labels(key, "used").set(status.capacity.slots_used)
    metrics.POOL_REPLICAS.labels(key, "desired").set(status.desired_replicas)
    metrics.POOL_REPLICAS.labels(key, "existing").set(status.replicas)
    metrics.POOL_REPLICAS.labels(key, "ready").set(status.ready_replicas)
    counts: dict[str, int] = dict.fromkeys(c.PLACEMENT_STATES, 0)
    for pod in world.pods.get(key, ()):
        for adapter in pod.observed.adapters if pod.observed else ():
            counts[adapter.state] = counts.get(adapter.state, 0) + 1
    for state, count in counts.items():
        metrics.ADAPTERS.labels(key, state).set(count)


async def run_pass(pool_body: kopf.Body, rt: Runtime, **indexes: Index) -> float:
    """One pass; returns the delay before the next scheduled pass."""
    meta = pool_body["metadata"]
    key = f"{meta['namespace']}/{meta['name']}"
    try:
        pool = BaseModelPool.model_validate(dict(pool_body))
    except ValidationError as err:
        await _write_invalid(rt, pool_body, format_validation_error(err))
        return rt.config.resync_seconds
    world = gather_world(pool, rt, **indexes)
    settings = PoolSettings(
        agent_image=rt.config.agent_image,
        presign_ttl_seconds=rt.config.presign_ttl_seconds,
        pod_lost_seconds=rt.config.pod_lost_seconds,
    )
    writer = KubeWriter(rt.kube)
    outcome = await reconcile_pool(world, writer, rt.s3, settings)
    rt.statefulset_replicas[key] = outcome.desired_replicas
    if outcome.owned_applied:
        rt.owned_generation[key] = pool.metadata.generation
    current = BaseModelPoolStatus.model_validate(pool_body.get("status") or {})
    if outcome.status.wire() != current.wire():
        await writer.patch_status(
            labels.API_VERSION, labels.POOL_KIND, pool.metadata.namespace,
            pool.metadata.name, outcome.status.wire(),
        )  # fmt: skip
    changed = [k for k, p in outcome.placements.items() if rt.placements.get(k) != p]
    for adapter_key, placement in outcome.placements.items():
        rt.placements[adapter_key] = placement
    rt.wake_adapters(changed)
    _publish_metrics(key, world, outcome.status)
    return rt.config.resync_seconds


@kopf.daemon(
    labels.GROUP,
    labels.VERSION,
    labels.POOL_PLURAL,
    cancellation_backoff=1.0,
    cancellation_timeout=10.0,
)
async def pool_placement_loop(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    **indexes: Any,
) -> None:
    """The pool's single-writer placement loop (kopf passes the indexes as keyword args)."""
    rt: Runtime = memo.runtime
    key = f"{namespace or ''}/{name}"
    waker = rt.pool_waker(key)
    backoff = 1.0
    while not stopped:
        waker.clear()
        started = time.monotonic()
        try:
            delay = await run_pass(
                body,
                rt,
                lorapack_pools=indexes["lorapack_pools"],
                lorapack_adapters=indexes["lorapack_adapters"],
                lorapack_pods=indexes["lorapack_pods"],
                lorapack_desired=indexes["lorapack_desired"],
                lorapack_slices=indexes["lorapack_slices"],
            )
            metrics.RECONCILES.labels("BaseModelPool", "ok").inc()
            backoff = 1.0
        except RetryableError as err:
            metrics.RECONCILES.labels("BaseModelPool", "retry").inc()
            logger.warning("Pool pass will be retried: %s", err.message)
            delay, backoff = min(backoff, err.retry_after), min(backoff * 2, 30.0)
        except LorapackError as err:
            metrics.RECONCILES.labels("BaseModelPool", "error").inc()
            logger.error("Pool pass failed: %s: %s", err.reason, err.message)
            delay = rt.config.resync_seconds
        except Exception:  # keep the loop alive; the next pass retries
            metrics.RECONCILES.labels("BaseModelPool", "error").inc()
            logger.exception("Pool pass crashed")
            delay, backoff = backoff, min(backoff * 2, 30.0)
        metrics.RECONCILE_SECONDS.labels("BaseModelPool").observe(time.monotonic() - started)
        await waker.wait(delay)


@kopf.on.update(labels.GROUP, labels.VERSION, labels.POOL_PLURAL, field="spec")
def pool_spec_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A changed pool may admit or refuse adapters: re-validate them and re-plan."""
    rt: Runtime = memo.runtime
    rt.pools_version += 1
    rt.wake_pools()
    rt.wake_adapters()


@kopf.on.create(labels.GROUP, labels.VERSION, labels.POOL_PLURAL)
def pool_created(memo: kopf.Memo, **_: Any) -> None:
    """A new pool may serve adapters that had none: let them re-validate."""
    rt: Runtime = memo.runtime
    rt.pools_version += 1
    rt.wake_adapters()


@kopf.on.delete(labels.GROUP, labels.VERSION, labels.POOL_PLURAL, optional=True)
def pool_deleted(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Never blocks: reports the adapters that lose their pool (their status explains)."""
    rt: Runtime = memo.runtime
    key = f"{namespace or ''}/{name}"
    attached = sorted(k for k, p in rt.placements.items() if p.pool == key)
    if attached:
        kopf.warn(
            body,
            reason=c.ADAPTERS_ATTACHED,
            message=f"deleted with {len(attached)} adapter(s) attached, which lose this pool: "
            + ", ".join(attached[:20])
            + (" ..." if len(attached) > 20 else ""),
        )
    for k in attached:
        rt.placements.pop(k, None)
    rt.pool_wakers.pop(key, None)
    rt.pools_version += 1
    rt.wake_pools()
    rt.wake_adapters()
