"""`Issue`: the one shape of "what is wrong and what to change", used by every layer.

Admission, eligibility, placement, the artifact checks, `lorapack plan`, the status builders and
the agent's file checks all speak in Issues: a PascalCase `reason` from lorapack.api.conditions
(stable: alerts and runbooks match on it) and a `message` that names the field and the fix. An
exception that must stop a call is a `lorapack.errors.LorapackError` with the same two parts;
`Issue.of` turns one into the other at the boundary. A leaf module: it imports only errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorapack.errors import LorapackError

__all__ = ["Issue"]


@dataclass(frozen=True, slots=True)
class Issue:
    """Why something cannot be done as asked, and what to change."""

    reason: str
    """A reason from lorapack.api.conditions, e.g. RankTooLarge."""
    message: str
    """What is wrong, naming the field, and the fix."""

    @classmethod
    def of(cls, error: LorapackError) -> Issue:
        """The Issue an error reports."""
        return cls(error.reason, error.message)
