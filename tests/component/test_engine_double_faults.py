"""The engine double's fault injection, and the engine client's reaction to each fault.

Faults are set through the admin endpoint (POST /_double/faults), as tests in other processes
(the pod simulator, the demo) do, or as CLI flags of `python -m lorapack_testworld.enginedouble`.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lorapack.clients.engine import EngineClient, LoadOutcome
from lorapack.errors import EngineUnavailable
from lorapack_testworld.enginedouble import EngineDouble
from lorapack_testworld.realvllm import free_port
from tests.fixtures.artifacts import FakeAdapter
from tests.fixtures.engines import DoubleFactory

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"


async def set_faults(double: EngineDouble, **faults: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=double.url) as http:
        return await http.post("/_double/faults", json=faults)


async def test_fail_next_loads_gives_500s_that_the_client_calls_invalid(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double()
    folder = str(fake_adapter("a"))
    assert (await set_faults(double, fail_next_loads=2)).json()["fail_next_loads"] == 2

    async with EngineClient(double.url) as client:
        outcomes = [(await client.load("a", folder)).outcome for _ in range(3)]

    assert outcomes == [
        LoadOutcome.INVALID_ADAPTER,
        LoadOutcome.INVALID_ADAPTER,
        LoadOutcome.LOADED,
    ]


async def test_a_500_while_unhealthy_is_engine_unavailable(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double()
    await set_faults(double, fail_next_loads=1, unhealthy=True)

    async with EngineClient(double.url) as client:
        assert await client.health() is False
        with pytest.raises(EngineUnavailable, match="/health fails"):
            await client.load("a", str(fake_adapter("a")))


async def test_a_slow_load_times_the_client_out(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(faults=None)
    await set_faults(double, load_delay_s=2.0)

    async with EngineClient(double.url, timeout=0.2) as client:
        with pytest.raises(EngineUnavailable, match=re.escape("timed out after 0.2 s")):
            await client.load("a", str(fake_adapter("a")))


async def test_crash_stops_answering(engine_double: DoubleFactory) -> None:
    double = await engine_double()
    assert (await set_faults(double, crash=True)).status_code == 200
    await asyncio.wait_for(double.stopped.wait(), timeout=10)

    async with EngineClient(double.url, timeout=2) as client:
        assert await client.health() is False
        with pytest.raises(EngineUnavailable, match="ConnectError"):
            await client.adapters()


async def test_restart_forgets_runtime_adapters_but_reloads_static_ones(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double(lora_modules=[f"static={fake_adapter('static')}"])
    async with EngineClient(double.url) as client:
        await client.load("runtime", str(fake_adapter("runtime")))
        assert set(await client.adapters()) == {"static", "runtime"}

        await set_faults(double, restart=True)
        await asyncio.sleep(0)  # the static reload runs as a task

        for _ in range(100):
            if set(await client.adapters()) == {"static"}:
                break
            await asyncio.sleep(0.01)
        assert set(await client.adapters()) == {"static"}
        assert double.state()["cpu_cache"] == [{"id": 1, "name": "static"}]


async def test_unknown_fault_fields_are_rejected_with_the_known_ones(
    engine_double: DoubleFactory,
) -> None:
    double = await engine_double()
    response = await set_faults(double, explode=True)
    assert response.status_code == 400
    assert "unknown fault fields ['explode']" in response.json()["error"]
    assert "load_delay_s" in response.json()["error"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lorapack_testworld.enginedouble", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(OPERATOR_DIR), **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "want_code", "want_stderr"),
    [
        pytest.param(
            ["serve", "m", "--max-lora-rank", "24"],
            {},
            2,
            "argument --max-lora-rank: invalid choice: 24 (choose from 1, 8, 16, 32, 64, 128, "
            "256, 320, 512)",
            id="rank-not-allowed",
        ),
        pytest.param(
            ["serve", "m", "--api-server-count", "2"],
            {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
            1,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING cannot be used with api_server_count > 1",
            id="runtime-updating-with-two-api-servers",
        ),
        pytest.param(
            ["serve", "m", "--enable-lora", "--max-loras", "8", "--max-cpu-loras", "4"],
            {},
            1,
            "max_cpu_loras (4) must be >= max_loras (8).",
            id="cpu-loras-below-max-loras",
        ),
        pytest.param(
            ["serve", "m", "--lora-extra-vocab-size", "256"],
            {},
            2,
            "unrecognized arguments: --lora-extra-vocab-size",
            id="removed-flag",
        ),
    ],
)
def test_cli_start_up_errors(
    args: list[str], env: dict[str, str], want_code: int, want_stderr: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == want_code
    assert want_stderr in result.stderr


def test_cli_a_bad_static_adapter_aborts_start_up(fake_adapter: FakeAdapter) -> None:
    big = fake_adapter("big", rank=128)
    result = run_cli(
        "serve",
        "m",
        "--enable-lora",
        "--max-lora-rank",
        "64",
        "--port",
        str(free_port()),
        "--lora-modules",
        f"big={big}",
    )
    assert result.returncode == 1
    assert "LoRA rank 128 is greater than max_lora_rank 64." in result.stderr


async def test_cli_serves_and_exits_1_when_crashed(fake_adapter: FakeAdapter) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lorapack_testworld.enginedouble",
        "serve",
        "lorapack/tiny-llama",
        "--port",
        str(port),
        "--enable-lora",
        "--max-loras",
        "2",
        "--max-lora-rank",
        "64",
        "--double-fail-next-loads",
        "1",
        env={
            **os.environ,
            "PYTHONPATH": str(OPERATOR_DIR),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with EngineClient(url, timeout=2) as client:
            for _ in range(200):
                if await client.health():
                    break
                await asyncio.sleep(0.05)
            folder = str(fake_adapter("a"))
            assert (await client.load("a", folder)).outcome is LoadOutcome.INVALID_ADAPTER
            assert (await client.load("a", folder)).outcome is LoadOutcome.LOADED
            async with httpx.AsyncClient(base_url=url) as http:
                await http.post("/_double/faults", json={"crash": True})
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_ignore_next_unloads_answers_200_and_keeps_the_name(
    engine_double: DoubleFactory, fake_adapter: FakeAdapter
) -> None:
    double = await engine_double()
    async with EngineClient(double.url) as client:
        await client.load("a", str(fake_adapter("a")))
        answer = await set_faults(double, ignore_next_unloads=1)
        assert answer.json()["ignore_next_unloads"] == 1

        unloads = [await client.unload("a"), "a" in await client.adapters()]
        unloads += [await client.unload("a"), "a" in await client.adapters()]

    # Both unloads say 200; only the second one took.
    assert unloads == [True, True, True, False]
