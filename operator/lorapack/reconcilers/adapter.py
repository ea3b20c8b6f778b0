"""One pass of an adapter: pre-flight when due, then the status, written through the ports.

`reconcile_adapter` validates the adapter when the handler says a check is due (a new
generation, a pool change, the revalidation period), derives the complete status from the
validation, its pool loop's placement and the agents' reports (`status.adapter`), and writes it
only when it changed. It is the only writer of a LoraAdapter's status. Placement, routing and
the adapter's Service belong to the pool loops, which the handler wakes when a new version was
validated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactStatus, LoraAdapter, LoraAdapterStatus
from lorapack.errors import RetryableError
from lorapack.issues import Issue
from lorapack.planning.admission import candidate_pools, pool_key
from lorapack.planning.baseconfig import BaseConfig
from lorapack.planning.names import adapter_name_issue
from lorapack.planning.pods import PodObservation
from lorapack.reconcilers.poolworld import AdapterPlacement
from lorapack.reconcilers.ports import ArtifactStore, Writer
from lorapack.reconcilers.validation import ValidationResult, validate_adapter
from lorapack.status.adapter import AdapterFacts, compute_adapter_status

__all__ = ["AdapterOutcome", "AdapterWorld", "reconcile_adapter"]


@dataclass(frozen=True)
class AdapterWorld:
    """Everything one adapter pass reads (from the operator's indexes and stores)."""

    adapter: LoraAdapter
    pools: Sequence[BaseModelPool]
    """Live pools of the adapter's base model (all pools when none serves it, so refusals can
    say which base models are served)."""
    others: Sequence[LoraAdapter]
    """Adapters of the same base model claiming the same served name (its ownership)."""
    last: ValidationResult | None
    """The last validation (None: never checked in this process)."""
    check_due: bool
    placement: AdapterPlacement | None
    pods_by_pool: Mapping[str, Sequence[PodObservation]]
    """pool key -> its pods."""
    endpoint: str
    now: str
    base_configs: Mapping[str, BaseConfig] = field(default_factory=dict)
    """pool key -> its base model's config.json, where the pool loop has read it (the
    tensors' shape checks)."""
    last_written: Mapping[str, object] | None = None
    """The status this process last wrote (wire form; None: none since start). The index
    can lag our own write: after Ready -> Loading -> Ready in quick succession it may still
    show the first Ready, and comparing with it alone would skip the second write and leave
    Loading in the cluster until a resync."""


@dataclass(frozen=True)
class AdapterOutcome:
    """What the pass found and wrote."""

    validation: ValidationResult
    checked: bool
    """A validation ran in this pass."""
    new_artifact: bool
    """The validation found a version the pool loops have not placed yet."""
    status: LoraAdapterStatus
    written: bool
    became_ready: bool
    waiting: RetryableError | None


def _ready(status: LoraAdapterStatus) -> bool:
    return any(x.type == "Ready" and x.status == "True" for x in status.conditions)


async def reconcile_adapter(
    world: AdapterWorld, store: ArtifactStore, writer: Writer
) -> AdapterOutcome:
    """Validate if due, then write the status if it changed."""
    adapter = world.adapter
    previous = adapter.status.artifact if adapter.status else None
    waiting: RetryableError | None = None
    result = world.last or ValidationResult(-1, None, ())
    checked = False
    invalid_name = adapter_name_issue(adapter.metadata.name)
    if invalid_name is not None:
        result, checked = ValidationResult(adapter.metadata.generation, None, (invalid_name,)), True
    elif world.check_due:
        try:
            result = await validate_adapter(
                adapter, world.pools, world.others, store, world.base_configs
            )
            checked = True
        except RetryableError as err:  # said in the status, retried by the handler
            waiting = err
    artifact: ArtifactStatus | None = result.artifact or previous
    if invalid_name is not None:
        artifact = None
    new_artifact = result.artifact is not None and (
        previous is None or previous.digest != result.artifact.digest
    )
    status = compute_adapter_status(adapter, _facts(world, result, artifact, waiting), world.now)
    current = adapter.status or LoraAdapterStatus()
    wire = status.wire()
    written = wire != current.wire() or (
        world.last_written is not None and wire != world.last_written
    )
    if written:
        await writer.patch_status(
            labels.API_VERSION,
            labels.ADAPTER_KIND,
            adapter.metadata.namespace,
            adapter.metadata.name,
            wire,
        )
    return AdapterOutcome(
        validation=result,
        checked=checked,
        new_artifact=new_artifact,
        status=status,
        written=written,
        became_ready=written and _ready(status) and not _ready(current),
        waiting=waiting,
    )


def _facts(
    world: AdapterWorld,
    result: ValidationResult,
    artifact: ArtifactStatus | None,
    waiting: RetryableError | None,
) -> AdapterFacts:
    adapter = world.adapter
    placement = world.placement
    chosen = placement.pool if placement else None
    if chosen is None:
        candidates, _ = candidate_pools(adapter, world.pools)
        chosen_pods = pool_key(candidates[0]) if candidates else None
    else:
        chosen_pods = chosen
    pods = {p.name: p for p in world.pods_by_pool.get(chosen_pods or "", ())}
    problems: list[Issue] = list(result.problems)
    write_problem = placement.problem if placement else None
    return AdapterFacts(
        artifact=artifact,
        validated=result.generation == adapter.metadata.generation,
        problems=problems,
        pool=chosen,
        unplaceable=placement.unplaceable if placement else None,
        desired=dict(placement.desired) if placement else {},
        pods=pods,
        serving=list(placement.serving) if placement else [],
        endpoint=world.endpoint,
        waiting=Issue(waiting.reason, f"{waiting.message} (retrying)") if waiting else None,
        write_problem=write_problem,
        write_transient=bool(placement and placement.problem_transient),
    )
