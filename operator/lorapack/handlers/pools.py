"""BaseModelPool handlers: the per-pool placement loop (a kopf daemon) and pool events.

The daemon is the only caller of `reconcilers.pool.reconcile_pool` for its pool, so placement
has a single writer. It runs a pass when woken (an adapter validated, a pod reported, the spec
changed) or every LORAPACK_RESYNC_SECONDS, gathers the world from the indexes and stores
(`gather_world`), and publishes the outcome: the pool's status, each adapter's placement (then
queues those adapters' passes), the desired states it wrote, and metrics.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from lorapack import labels
from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool, BaseModelPoolStatus
from lorapack.api.loraadapter import LoraAdapter, LoraAdapterStatus
from lorapack.api.meta import format_validation_error
from lorapack.api.podstate import DesiredState, desired_from_secret
from lorapack.clients import kube as k
from lorapack.errors import ArtifactNotFound, LorapackError, RetryableError
from lorapack.handlers import metrics
from lorapack.handlers.adapters_io import KubeWriter
from lorapack.handlers.runtime import Runtime
from lorapack.handlers.state import GroupView
from lorapack.issues import Issue
from lorapack.keys import key_of, object_key
from lorapack.manifests.network import API_KEY_BYTES, parse_namespace_selector
from lorapack.planning.baseconfig import parse_base_config
from lorapack.planning.basemodel import check_base_model_files
from lorapack.planning.pods import PodObservation
from lorapack.reconcilers.pool import PoolOutcome, reconcile_pool
from lorapack.reconcilers.poolplan import plan_group
from lorapack.reconcilers.poolworld import PoolSettings, PoolWorld, ServiceView
from lorapack.sizing.poolfit import pool_fit_issue
from lorapack.status.conditions import Verdict, kstatus_conditions, now_rfc3339

__all__ = ["gather_world", "pool_checks", "pool_placement_loop"]

log = logging.getLogger(__name__)


def _values(index: Any, key: str) -> list[Any]:
    return list(index[key]) if index is not None and key in index else []


def _with_fresh_artifact(adapter: LoraAdapter, rt: Runtime) -> LoraAdapter:
    """The adapter with this process's newer validation of its current generation in place of
    `status.artifact`: placement does not wait for the status write to come back through the
    watch (under a burst that round trip took seconds). After a restart the persisted status
    is used."""
    result = rt.validations.get(key_of(adapter))
    if result is None or result.artifact is None:
        return adapter
    if result.generation != adapter.metadata.generation:
        return adapter
    status = adapter.status or LoraAdapterStatus()
    # The digest covers the files: the same digest is the same artifact (and a field-by-field
    # comparison of every adapter's artifact was a tenth of a pool pass at 1,000 adapters).
    if status.artifact is not None and status.artifact.digest == result.artifact.digest:
        return adapter
    return adapter.model_copy(
        update={"status": status.model_copy(update={"artifact": result.artifact})}
    )


async def _desired_of(rt: Runtime, pool: BaseModelPool) -> dict[int, DesiredState]:
    """The pool's published desired states: listed once (then kept by the loop, their only
    writer) and listed again every resync period as a safety net."""
    state = rt.pool_state(key_of(pool))
    stale = time.monotonic() - state.desired_listed_at >= rt.config.resync_seconds
    if state.desired is None or stale:
        selector = (
            f"{labels.POOL_LABEL}={pool.metadata.name},{labels.ROLE_LABEL}={labels.ROLE_DESIRED}"
        )
        found: dict[int, DesiredState] = {}
        for secret in await rt.kube.list(
            k.SECRET, pool.metadata.namespace, label_selector=selector
        ):
            desired = desired_from_secret(secret, labels.DESIRED_KEY)
            ordinal = (desired.pod.rsplit("-", 1)[-1]) if desired else ""
            if desired is not None and ordinal.isdigit():
                found[int(ordinal)] = desired
                rt.claims.add(f"Secret {pool.metadata.namespace}/{secret['metadata']['name']}")
        state.desired, state.desired_listed_at = found, time.monotonic()
    return dict(state.desired)


async def pool_checks(rt: Runtime, pool: BaseModelPool) -> tuple[Issue, ...]:
    """Why the pool cannot start pods, checked once per generation before any pod exists: the
    sizing model (the engine does not fit its GPUs) and the base-model folder in S3 (vLLM's
    files are all there). Storage or credential trouble does not block the pool (its pods may
    have an identity the operator lacks): it is logged, and checked again next pass."""
    state = rt.pool_state(key_of(pool))
    if state.checked_generation == pool.metadata.generation:
        return state.pool_issues
    issues: list[Issue] = []
    fit = pool_fit_issue(pool.spec)
    if fit is not None:
        issues.append(fit)
    source = pool.spec.base_model.source.s3
    if source is not None:
        try:
            keys = await rt.s3.list_base_model(pool)
            issues += check_base_model_files(keys, source.uri)
            if not issues and any(k.endswith("/config.json") or k == "config.json" for k in keys):
                raw = await rt.s3.read_base_model_file(pool, "config.json")
                issues += parse_base_config(raw)[1]  # InvalidBaseModelConfig: pre-flight needs it
                first = state.base_config is None
                state.base_config = raw
                if first:
                    # Adapters validated before the base config was known get their shape
                    # checks now, not at their next resync.
                    rt.wake_adapters(rt.adapters_of_base(pool.spec.base_model.name))
        except ArtifactNotFound as err:
            issues.append(Issue(c.BASE_MODEL_NOT_FOUND, f"{source.uri}: {err.message}"))
        except RetryableError as err:
            log.warning("Pool %s: base model not checked yet: %s", key_of(pool), err.message)
            return tuple(issues)
        except LorapackError as err:
            log.warning("Pool %s: cannot read its base model: %s", key_of(pool), err.message)
    state.checked_generation = pool.metadata.generation
    state.pool_issues = tuple(issues)
    return state.pool_issues


def _group_token(rt: Runtime, base: str, group: list[BaseModelPool]) -> tuple[Any, ...]:
    index = rt.indexes.adapters_by_base
    count = len(index[base]) if index is not None and base in index else 0
    pools = tuple((key_of(p), p.metadata.generation) for p in group)
    return (rt.group_views.epoch(base), rt.pools_version, count, pools)


def _group_view(rt: Runtime, base: str, group: list[BaseModelPool]) -> GroupView:
    """The group's shared view: reused from a sibling loop's pass when still usable, else
    made now from the indexes (its plan is computed by the pass that first uses it)."""
    keys = tuple(sorted(key_of(p) for p in group))
    token = _group_token(rt, base, group)
    now = time.monotonic()
    view = rt.group_views.usable(base, keys, token, now)
    if view is not None:
        return view
    idx = rt.indexes
    adapters = [
        _with_fresh_artifact(a, rt)
        for key in rt.adapters_of_base(base)
        for a in _values(idx.adapters, key)
        if isinstance(a, LoraAdapter)
    ]
    deleting = frozenset(key_of(a) for a in adapters if a.metadata.deletion_timestamp is not None)
    view = GroupView(token, now, adapters, deleting, cost=time.monotonic() - now)
    rt.group_views.store(base, keys, view)
    return view


async def gather_world(pool: BaseModelPool, rt: Runtime) -> tuple[PoolWorld, GroupView]:
    """Everything one pass reads, from the indexes and stores (and, when not yet known, the
    pools' desired states listed back), and the group view its adapters come from."""
    idx = rt.indexes
    base = pool.spec.base_model.name
    group = [p for p in _values(idx.pools, base) if p.metadata.deletion_timestamp is None]
    if all(key_of(p) != key_of(pool) for p in group):
        group.append(pool)
    view = _group_view(rt, base, group)
    pods: dict[str, list[PodObservation]] = {}
    desired: dict[str, dict[int, DesiredState]] = {}
    for p in group:
        key = key_of(p)
        # Several pod objects can share an ordinal briefly (old one terminating): the newest wins.
        by_ordinal: dict[int, PodObservation] = {}
        for obs in _values(idx.pods, key):
            old = by_ordinal.get(obs.ordinal)
            if old is None or (old.deleting and not obs.deleting):
                by_ordinal[obs.ordinal] = obs
        pods[key] = list(by_ordinal.values())
        desired[key] = await _desired_of(rt, p)
    me = key_of(pool)
    state = rt.pool_state(me)
    world = PoolWorld(
        pool=pool,
        group=group,
        adapters=view.adapters,
        deleting=view.deleting,
        pods=pods,
        desired=desired,
        slices=dict(_values(idx.slices, me)),
        statefulset_replicas=state.statefulset_replicas,
        owned_applied_generation=state.owned_generation,
        now=datetime.now(UTC),
        services=_Services(idx.services),
        pool_issues=await pool_checks(rt, pool),
        new_engine_key=secrets.token_urlsafe(API_KEY_BYTES),
        shared=view.plan,
    )
    return world, view


class _Services(Mapping[str, ServiceView]):
    """adapter key -> its Service, looked up in the Service index on demand (a pass reads
    only its own adapters' Services)."""

    def __init__(self, index: Any) -> None:
        self._index = index

    def __getitem__(self, key: str) -> ServiceView:
        found = _values(self._index, key)
        if not found:
            raise KeyError(key)
        return cast(ServiceView, found[0])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index or ())

    def __len__(self) -> int:
        return len(self._index or ())


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


def settings_of(rt: Runtime) -> PoolSettings:
    config = rt.config
    return PoolSettings(
        agent_image=config.agent_image,
        presign_ttl_seconds=config.presign_ttl_seconds,
        pod_lost_seconds=config.pod_lost_seconds,
        service_type=config.adapter_service_type,
        service_port=config.service_port,
        drain_timeout_seconds=config.drain_timeout_seconds,
        network_policy=config.engine_network_policy,
        gateway_namespaces=parse_namespace_selector(
            config.gateway_namespaces, what="LORAPACK_GATEWAY_NAMESPACES"
        ),
        allow_team_namespaces=config.engine_allow_team_namespaces,
    )


async def run_pass(pool_body: kopf.Body, rt: Runtime) -> float:
    """One pass; returns the delay before the next scheduled pass."""
    meta = pool_body["metadata"]
    key = object_key(meta["namespace"], meta["name"])
    try:
        pool = BaseModelPool.model_validate(dict(pool_body))
    except ValidationError as err:
        await _write_invalid(rt, pool_body, format_validation_error(err))
        return rt.config.resync_seconds
    world, view = await gather_world(pool, rt)
    settings = settings_of(rt)
    if world.shared is None:
        started = time.monotonic()
        view.plan = plan_group(world, settings)
        view.cost += time.monotonic() - started
        world = replace(world, shared=view.plan)
    writer = KubeWriter(rt.kube)
    outcome: PoolOutcome = await reconcile_pool(world, writer, rt.s3, settings, rt.claims)
    state = rt.pool_state(key)
    state.record_desired(outcome.desired_written)
    base = pool.spec.base_model.name
    if outcome.desired_written:
        rt.group_views.touch(base)  # the siblings' plans read this pool's desired states
    if outcome.statefulset_applied:
        state.statefulset_replicas = outcome.desired_replicas
    if outcome.owned_applied:
        state.owned_generation = pool.metadata.generation
    current = BaseModelPoolStatus.model_validate(pool_body.get("status") or {})
    wire = outcome.status.wire()
    last = rt.pool_statuses.get(key)  # the watched body can lag our own last write
    if wire != current.wire() or (last is not None and wire != last):
        await writer.patch_status(
            labels.API_VERSION, labels.POOL_KIND, pool.metadata.namespace,
            pool.metadata.name, wire,
        )  # fmt: skip
        rt.pool_statuses.record(key, wire)
    rt.wake_adapters(rt.placements.publish(outcome.placements))
    _publish_metrics(key, world, outcome.status)
    delay = 2.0 if outcome.retry else rt.config.resync_seconds
    # Planned from an outdated view (its inputs changed within its window): run again when the
    # window closes, so the change is planned.
    token = _group_token(rt, base, list(world.group))
    stale = rt.group_views.stale_for(view, token, time.monotonic())
    return min(delay, stale) if stale is not None else delay


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
    **kwargs: Any,
) -> None:
    """The pool's single-writer placement loop."""
    rt: Runtime = memo.runtime
    rt.capture(kwargs)
    key = object_key(namespace or "", name)
    waker = rt.pool_waker(key)
    backoff = 1.0
    while not stopped:
        waker.clear()
        started = time.monotonic()
        try:
            delay = await run_pass(body, rt)
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


def _pool_changed(rt: Runtime, bases: set[str]) -> None:
    """A pool appeared, changed or left: its base models' adapters re-validate and re-plan."""
    rt.pools_version += 1
    for base in sorted(bases):
        rt.wake_pools(rt.pools_of_base(base))
        rt.wake_adapters(rt.adapters_of_base(base))


def _bases(body: kopf.Body, old: Any = None) -> set[str]:
    found = {((body.get("spec") or {}).get("baseModel") or {}).get("name")}
    if isinstance(old, dict):
        found.add((old.get("baseModel") or {}).get("name"))
    return {b for b in found if isinstance(b, str)}


@kopf.on.update(labels.GROUP, labels.VERSION, labels.POOL_PLURAL, field="spec")
def pool_spec_changed(body: kopf.Body, old: Any, memo: kopf.Memo, **_: Any) -> None:
    """A changed pool may admit or refuse adapters: re-validate them and re-plan."""
    _pool_changed(memo.runtime, _bases(body, old))


@kopf.on.create(labels.GROUP, labels.VERSION, labels.POOL_PLURAL)
def pool_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new pool may serve adapters that had none: let them re-validate."""
    _pool_changed(memo.runtime, _bases(body))


@kopf.on.delete(labels.GROUP, labels.VERSION, labels.POOL_PLURAL, optional=True)
def pool_deleted(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Never blocks: reports the adapters that lose their pool (their status explains)."""
    rt: Runtime = memo.runtime
    key = object_key(namespace or "", name)
    attached = rt.placements.drop_pool(key)
    if attached:
        kopf.warn(
            body,
            reason=c.ADAPTERS_ATTACHED,
            message=f"deleted with {len(attached)} adapter(s) attached, which lose this pool: "
            + ", ".join(attached[:20])
            + (" ..." if len(attached) > 20 else ""),
        )
    rt.pool_wakers.pop(key, None)
    rt.pools.pop(key, None)
    rt.pool_statuses.forget(key)
    _pool_changed(rt, _bases(body))
    rt.wake_adapters(attached)
