"""Planning: pure, deterministic decisions from a snapshot to a plan (placement, scaling,
artifact checks, file-sync diffs). No kopf, no clients, no asyncio."""
