"""Fewer glibc malloc arenas for the operator process.

The operator validates adapters with boto3 in a pool of 32 threads. glibc gives threads that
allocate at once arenas of their own (up to eight per core) and keeps what was freed in them,
so a burst of validations leaves the process far larger than what it holds. Two arenas is the
usual remedy (MALLOC_ARENA_MAX=2); it is set here with mallopt so the image, a pip install and
the benchmarks behave alike. An explicit MALLOC_ARENA_MAX in the environment wins; other C
libraries (musl) are left alone.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["limit_arenas"]

_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas at `count`; True if this call set it."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, count))
