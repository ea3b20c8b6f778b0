"""Placement is deterministic across processes: string hashing is randomized per process
(PYTHONHASHSEED), so a planner iterating a set unsorted would place differently after an
operator restart. Two processes with different seeds must produce the same plan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import dataclasses, hashlib, sys
sys.path.insert(0, "bench")
import placement as b
from lorapack.planning.packing import plan_placement
out = []
snap = b.scenario(300, (8, 16, 32, 64), 1.0, 3)
plan = plan_placement(snap)
settled = dataclasses.replace(snap, assignment={
    (p, o): v for p, pp in plan.pools.items() for o, v in pp.assignment.items()})
lost = sorted(settled.assignment)[0]
pods = tuple(dataclasses.replace(p, available=False) if (p.pool, p.ordinal) == lost else p
             for p in settled.pods)
for pl in (plan, plan_placement(dataclasses.replace(settled, pods=pods))):
    out.append(repr(sorted((k, sorted((o, sorted(v)) for o, v in pp.assignment.items()))
                           for k, pp in pl.pools.items())))
print(hashlib.sha256("".join(out).encode()).hexdigest())
"""


def run(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT / "operator")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


def test_same_plan_with_different_hash_seeds() -> None:
    assert run("1") == run("2") == run("3")
