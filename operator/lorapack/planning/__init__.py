"""Planning: pure, deterministic decisions from a snapshot to a plan. No kopf, no clients, no
asyncio, no clock: every function here is unit-testable without an event loop or mocks.

* `snapshot`: the frozen input of placement (PoolView, PodView, AdapterView, Snapshot) and the
  builders from the API models.
* `packing`: `plan_placement(snapshot) -> PlacementPlan`, the placement engine (eligibility with
  reasons, packing onto as few pods as the lower bound allows, pool choice by cost,
  make-before-break moves).
* `scaling`: copies per adapter from its load, the lower bound of a pool's pods, and `PoolState`
  (one pool's pods while a plan is made, with the searches placement uses).
* `consolidation`: draining the highest pods when their adapters fit lower and the move pays.
* `artifact`: pre-flight checks of an adapter's files (what vLLM would refuse, per pool).

Called by the pool and adapter reconcilers, by `lorapack plan`, and by bench/placement.py.
"""
