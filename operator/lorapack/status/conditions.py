"""Pure helpers for kstatus conditions: set one, keep transition times, build the triple.

Every status lorapack writes carries exactly Ready, Reconciling and Stalled with the object's
generation as observedGeneration, so `kubectl wait --for=condition=Ready`, Flux and Argo CD read
progress the same way for both kinds. `lastTransitionTime` changes only when a condition's status
changes (kueue's SetCondition rule), so re-computing an unchanged status yields an identical
object and no write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lorapack.api import conditions as c
from lorapack.api.meta import Condition, ConditionStatus

__all__ = ["Verdict", "kstatus_conditions", "now_rfc3339", "set_condition", "truncate"]

MAX_MESSAGE = 1024


def now_rfc3339(now: datetime | None = None) -> str:
    """RFC 3339 timestamp with second precision (as Kubernetes writes them)."""
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def truncate(message: str, limit: int = MAX_MESSAGE) -> str:
    """Messages stay readable in `kubectl describe` and under etcd's object size limits."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def set_condition(conditions: Sequence[Condition], new: Condition, now: str) -> list[Condition]:
    """`conditions` with `new` replacing the one of its type; keeps lastTransitionTime if the
    status did not change."""
    out = []
    found = False
    for old in conditions:
        if old.type != new.type:
            out.append(old)
            continue
        found = True
        when = old.last_transition_time if old.status == new.status else now
        out.append(new.model_copy(update={"last_transition_time": when}))
    if not found:
        out.append(new.model_copy(update={"last_transition_time": now}))
    return out


@dataclass(frozen=True)
class Verdict:
    """The one-line outcome a status builder decided: the object is ready, progressing, or
    stalled (needs a person), with a reason and a message."""

    state: str  # "ready" | "progressing" | "stalled"
    reason: str
    message: str

    def __post_init__(self) -> None:
        if self.state not in ("ready", "progressing", "stalled"):
            raise ValueError(f"unknown verdict state {self.state!r}")


def kstatus_conditions(
    previous: Sequence[Condition], verdict: Verdict, generation: int, now: str
) -> list[Condition]:
    """Ready / Reconciling / Stalled for `verdict`, merged into `previous` (other condition types
    are dropped: lorapack owns the whole list)."""
    message = truncate(verdict.message)

    def cond(kind: str, status: ConditionStatus, reason: str, text: str) -> Condition:
        return Condition(
            type=kind,
            status=status,
            reason=reason,
            message=text,
            observed_generation=generation,
            last_transition_time=now,
        )

    ready = verdict.state == "ready"
    wanted = [
        cond(c.READY, "True" if ready else "False", verdict.reason, message),
        cond(
            c.RECONCILING,
            "True" if verdict.state == "progressing" else "False",
            verdict.reason if verdict.state == "progressing" else c.AS_EXPECTED,
            message if verdict.state == "progressing" else "",
        ),
        cond(
            c.STALLED,
            "True" if verdict.state == "stalled" else "False",
            verdict.reason if verdict.state == "stalled" else c.AS_EXPECTED,
            message if verdict.state == "stalled" else "",
        ),
    ]
    kept = [p for p in previous if p.type in (c.READY, c.RECONCILING, c.STALLED)]
    for new in wanted:
        kept = set_condition(kept, new, now)
    order = {c.READY: 0, c.RECONCILING: 1, c.STALLED: 2}
    return sorted(kept, key=lambda x: order[x.type])
