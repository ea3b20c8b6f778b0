"""The simulated pods' processes: stopping them, waiting for an engine, injecting faults.

Used by lorapack_testworld.podsim for the engine and agent processes it starts per pod (and
for the real vLLM engines it is given, which stop through their own `stop()`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

__all__ = ["post_faults", "terminate", "wait_http"]


async def terminate(process: Any) -> None:
    """Stop a process (SIGTERM, then SIGKILL after 10 s) or an object with `stop()`."""
    if process is None:
        return
    stop = getattr(process, "stop", None)
    if stop is not None and not isinstance(process, asyncio.subprocess.Process):
        result = stop()
        if asyncio.iscoroutine(result):
            await result
        return
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def post_faults(engine_url: str, faults: dict[str, Any]) -> None:
    """Set the engine double's faults (its /_double/faults endpoint)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        (await client.post(f"{engine_url}/_double/faults", json=faults)).raise_for_status()


async def wait_http(url: str, process: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    """Until `url` answers 200; RuntimeError if the process exits first."""
    async with httpx.AsyncClient(timeout=2.0) as client, asyncio.timeout(timeout):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"engine exited with {process.returncode} before {url} answered")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
