"""The agent cache's disk quota: what part of the volume adapters may be promised.

Used by lorapack.agent.cache before a download starts (and by anything that sizes the cache
volume): the quota is the emptyDir's sizeLimit, and reaching it evicts the GPU pod, so a
download that would not fit is refused with CapacityExceeded before any byte is written.
"""

from __future__ import annotations

from lorapack.errors import CapacityExceeded

__all__ = ["check_quota", "quota_headroom"]


def quota_headroom(quota_bytes: int) -> int:
    """Bytes of the quota never promised to adapters: the quota is the emptyDir's sizeLimit,
    which the kubelet measures in disk blocks (a 1-byte file takes 4 KiB, folders and the
    manifests take more), and reaching it evicts the GPU pod. 1/16 of it, at most 1 GiB."""
    return min(quota_bytes // 16, 1 << 30)


def check_quota(adapter: str, need: int, *, quota_bytes: int, used: int, in_flight: int) -> None:
    """Raise CapacityExceeded unless `need` more bytes fit.

    Everything on the volume counts (`used`: leftovers of a crash too, until GC removes them),
    and downloads in flight count with the full size they promised (`in_flight`).
    """
    headroom = quota_headroom(quota_bytes)
    free = quota_bytes - headroom - used - in_flight
    if need > free:
        raise CapacityExceeded(
            f"adapter {adapter} needs {_human(need)} ({need} bytes) but the "
            f"adapter cache has {_human(max(free, 0))} free of its "
            f"{_human(quota_bytes)} quota ({_human(used)} on disk, {_human(in_flight)} "
            f"promised to downloads in flight, {_human(headroom)} kept free); raise "
            "spec.adapters.cacheSize on the pool, or lower spec.adapters.maxPerReplica so "
            "fewer adapters share a pod",
        )


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
