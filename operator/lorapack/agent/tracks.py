"""What the agent knows about each served name, and the pure rules over it.

Used by lorapack.agent.loop: a Track per served name (the digest it is about, its placement
state since when, attempts and timings), how a state change updates it, the backoff after a
failure, whether a pass is synced, and the adapters part of the report built from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lorapack.api.loraadapter import PlacementState
from lorapack.api.podstate import DesiredAdapter, DesiredState, ObservedAdapter

__all__ = [
    "BACKOFF",
    "Track",
    "digest_of_path",
    "fail",
    "is_synced",
    "now",
    "observed_adapters",
    "one_per_served_name",
    "transition",
]

# Logged under the loop's name: these lines are the loop's, and log filters know it by it.
log = logging.getLogger("lorapack.agent.loop")

# Backoff after a failed download/load: quick first retries, then at most every 5 minutes.
BACKOFF = (2.0, 5.0, 15.0, 60.0, 300.0)


@dataclass
class Track:
    """What the agent knows about one served name."""

    digest: str
    state: PlacementState
    since: str
    message: str = ""
    attempts: int = 0
    retry_at: float = 0.0
    download_ms: int | None = None
    load_ms: int | None = None


def now() -> str:
    """The report's timestamp format, in UTC to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest_of_path(path: str) -> str | None:
    """The digest a cache folder name encodes ("sha256-<hex>" -> "sha256:<hex>")."""
    name = Path(path).name
    return "sha256:" + name.removeprefix("sha256-") if name.startswith("sha256-") else None


def one_per_served_name(
    entries: Sequence[DesiredAdapter], tracks: Mapping[str, Any]
) -> dict[str, DesiredAdapter]:
    """served name -> the one entry the engine may serve under it. The operator never writes
    two adapters under one name (the incumbent wins), but the engine keys adapters by name, so
    a desired state that did would let one name answer for two teams: the agent keeps the entry
    it already serves (same digest) or else the first, and logs the others."""
    out: dict[str, DesiredAdapter] = {}
    for entry in entries:
        have = out.get(entry.served_name)
        if have is None:
            out[entry.served_name] = entry
            continue
        served = getattr(tracks.get(entry.served_name), "digest", None)
        dropped = entry
        if served == entry.digest and served != have.digest:
            out[entry.served_name], dropped = entry, have
        log.error(
            "Desired state names %s twice: serving %s, not %s",
            entry.served_name, out[entry.served_name].adapter, dropped.adapter,
        )  # fmt: skip
    return out


def transition(
    tracks: dict[str, Track], name: str, digest: str, state: PlacementState, message: str
) -> Track:
    """Move `name` to `state` for `digest`: a new Track (new `since`) when the digest or the
    state changes, keeping attempts and timings only for the same digest; else only the
    message changes. Loaded resets the attempts."""
    track = tracks.get(name)
    if track is None or track.digest != digest or track.state != state:
        same = track is not None and track.digest == digest
        track = Track(
            digest=digest,
            state=state,
            since=now(),
            message=message,
            attempts=track.attempts if track is not None and same else 0,
            download_ms=track.download_ms if track is not None and same else None,
            load_ms=track.load_ms if track is not None and same else None,
        )
        tracks[name] = track
    else:
        track.message = message
    if state == "Loaded":
        track.attempts = 0
    return track


def fail(tracks: dict[str, Track], name: str, digest: str, message: str) -> None:
    """Mark `name` Failed, count the attempt and schedule its retry by BACKOFF."""
    track = transition(tracks, name, digest, "Failed", message)
    track.attempts += 1
    delay = BACKOFF[min(track.attempts, len(BACKOFF)) - 1]
    track.retry_at = time.monotonic() + delay
    log.warning("Adapter %s (%s) failed: %s; retrying in %.0f s", name, digest, message, delay)


def is_synced(
    desired: DesiredState, wanted: Mapping[str, DesiredAdapter], tracks: Mapping[str, Track]
) -> bool:
    """A full sync pass finished: every wanted entry Loaded or Failed at its digest, and
    nothing no longer wanted left behind."""
    for entry in wanted.values():
        track = tracks.get(entry.served_name)
        if track is None or track.digest != entry.digest:
            return False
        if track.state not in ("Loaded", "Failed"):
            return False
    # An adapter no longer wanted is not synced until it is gone: its unload task may not
    # have started yet (the track still says Loaded), so test membership, not the state.
    names = {entry.served_name for entry in desired.adapters}
    return not any(name not in names or t.state == "Unloading" for name, t in tracks.items())


def observed_adapters(tracks: Mapping[str, Track]) -> list[ObservedAdapter]:
    """The adapters part of the Pod report, sorted by served name."""
    return [
        ObservedAdapter(
            served_name=name,
            digest=t.digest,
            state=t.state,
            since=t.since,
            message=t.message,
            attempts=t.attempts,
            download_ms=t.download_ms,
            load_ms=t.load_ms,
        )
        for name, t in sorted(tracks.items())
    ]
