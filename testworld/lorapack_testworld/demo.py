"""`make demo`: the newcomer's tour, on this machine, with nothing but Go and Python.

`python -m lorapack_testworld.demo up` starts the local control plane (simulated L20 GPU nodes),
the loopback S3 server holding real PEFT adapters of a tiny Llama, the pod simulator (an agent
and an engine double per pool pod) with its gateway, and the operator; applies
`examples/demo/` (one pool, three teams' adapters in three namespaces, one deliberately invalid
adapter); shows progress while things converge; then prints where each adapter runs, the GPUs
used against one-GPU-per-adapter, why the invalid one was refused, and a chat completion sent to
one adapter through its Service. Everything keeps running; `down` stops exactly what `up`
started (recorded in $LORAPACK_CACHE/run/demo/state.json).
"""

from __future__ import annotations

import argparse
import base64
import os
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from lorapack_testworld.devcluster import DevCluster
from lorapack_testworld.devcluster.tools import cache_root
from lorapack_testworld.paths import REPO_ROOT
from lorapack_testworld.s3server import S3Server
from lorapack_testworld.stack import Stack

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples" / "demo"
BUCKET = "demo-adapters"
PLACEHOLDER_ENDPOINT = "http://127.0.0.1:9000"
# The examples' adapters and the test adapter (rank) each one is made from.
UPLOADS = {
    "team-a/support-bot/": "r8",
    "team-b/summarizer/": "r16",
    "team-c/sql-helper/": "r64",
    "team-c/sql-helper-xl/": "r128",
}


def state_dir() -> Path:
    return cache_root() / "run" / "demo"


def _say(text: str) -> None:
    print(text, flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _documents(endpoint: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        text = path.read_text().replace(PLACEHOLDER_ENDPOINT, endpoint)
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def _secret(namespace: str, name: str, access: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "AWS_ACCESS_KEY_ID": base64.b64encode(access.encode()).decode(),
            "AWS_SECRET_ACCESS_KEY": base64.b64encode(secret.encode()).decode(),
        },
    }


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _adapter_line(obj: dict[str, Any]) -> str:
    meta, status = obj["metadata"], obj.get("status") or {}
    ready = _conditions(obj).get("Ready", {})
    places = ", ".join(f"{p['pod']}={p['state']}" for p in status.get("placements") or [])
    return (
        f"{meta['namespace']}/{meta['name']}: Ready={ready.get('status', '?')} "
        f"({ready.get('reason', 'waiting')}) {places}"
    )


def up(args: argparse.Namespace) -> int:
    run = state_dir()
    recorded = Stack.attached_state(run)
    if recorded is not None and any(_alive(p) for p in recorded.get("pids", {}).values()):
        _say(f"The demo is already running. export KUBECONFIG={recorded['kubeconfig']}")
        _say("Stop it with: make demo-down")
        return 1
    started = time.monotonic()
    # --engine vllm: the pool's pods run the real vLLM CPU engine instead of the double.
    real_pools = tuple(
        d["metadata"]["name"]
        for d in _documents(PLACEHOLDER_ENDPOINT)
        if d["kind"] == "BaseModelPool" and args.engine == "vllm"
    )
    timeout = args.timeout or (900.0 if real_pools else 180.0)
    stack = _start_stack(run, real_pools)
    cluster = stack.cluster
    world = stack.world
    assert stack.s3 is not None
    expected = _apply_examples(cluster, stack.s3)
    _say("[6/6] Waiting for the adapters to be validated, placed, downloaded and loaded ...")
    items, settled = _wait_settled(cluster, expected, started, timeout)
    if not settled:
        _say(f"Not everything settled in {timeout:.0f} s; see {run / 'operator.log'}")
    _report(cluster, items, world)
    _say("")
    _say("The demo keeps running. Try it yourself:")
    _say(f"  export KUBECONFIG={cluster.kubeconfig}")
    _say(f"  export PATH={':'.join(str(p) for p in cluster.tools.path_dirs())}:$PATH")
    _say("  kubectl get basemodelpools,loraadapters -A")
    _say(
        f"  curl -s {world['gateway']}/team-b/summarizer/v1/chat/completions "
        "-H 'Content-Type: application/json' \\"
    )
    _say('    -d \'{"model": "summarizer", "messages": [{"role": "user", "content": "hi"}]}\'')
    _say("Stop everything with: make demo-down")
    return 0


def _start_stack(run: Path, real_pools: tuple[str, ...]) -> Stack:
    """Steps 1-4: the control plane, S3 with the examples' adapters, pods, gateway, operator."""
    steps = iter(range(1, 5))
    stack = Stack.start(
        run,
        detach=True,
        log=lambda text: _say(f"[{next(steps, 4)}/6] {text[0].upper()}{text[1:]} ..."),
        real_engine_pools=real_pools,
    )
    if real_pools:
        _say(f"      engine: the real vLLM CPU engine for pool(s) {', '.join(real_pools)}")
    cluster = stack.cluster
    nodes = cluster.get_json("nodes", "-l", "nvidia.com/gpu.product=NVIDIA-L20")["items"]
    _say(f"      {cluster.server}: {len(nodes)} nodes with an NVIDIA L20 each (and 2 x 8 H100)")
    index = stack.artifacts
    assert stack.s3 is not None
    stack.s3.create_bucket(BUCKET)
    for prefix, name in UPLOADS.items():
        stack.s3.upload_folder(BUCKET, prefix, index.adapter(name).path)
        _say(f"      s3://{BUCKET}/{prefix} <- PEFT adapter of rank {index.adapter(name).rank}")
    return stack


def _apply_examples(cluster: DevCluster, s3: S3Server) -> int:
    """Step 5: examples/demo pointed at the loopback S3 server; returns how many adapters."""
    _say("[5/6] Applying examples/demo: one pool, three teams' adapters, one invalid adapter")
    docs = _documents(s3.endpoint)
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    cluster.apply_objects(namespaces)
    cluster.apply_objects([_secret("ml-platform", "s3-credentials", s3.access_key, s3.secret_key)])
    cluster.apply_objects([d for d in docs if d["kind"] != "Namespace"])
    for doc in docs:
        _say(
            f"      {doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
        )
    return len([d for d in docs if d["kind"] == "LoraAdapter"])


def _wait_settled(
    cluster: DevCluster, expected: int, started: float, timeout: float
) -> tuple[list[dict[str, Any]], bool]:
    """The adapters as last read, and whether all `expected` are Ready or Stalled (False after
    `timeout`); prints each change."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = cluster.get_json("loraadapters", "-A")["items"]
        for obj in items:
            line = _adapter_line(obj)
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            if seen.get(key) != line:
                seen[key] = line
                _say(f"      [{time.monotonic() - started:5.1f}s] {line}")
        settled = [
            o
            for o in items
            if _conditions(o).get("Ready", {}).get("status") == "True"
            or _conditions(o).get("Stalled", {}).get("status") == "True"
        ]
        if len(items) == expected and len(settled) == len(items):
            return items, True
        time.sleep(0.5)
    return items, False


def _report(cluster: DevCluster, items: list[dict[str, Any]], world: dict[str, Any]) -> None:
    rows = [("ADAPTER", "POOL", "POD", "STATE", "RANK")]
    ready, refused = [], []
    for obj in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        status = obj.get("status") or {}
        name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        rank = str((status.get("artifact") or {}).get("rank") or "-")
        places = status.get("placements") or []
        if _conditions(obj).get("Ready", {}).get("status") == "True":
            ready.append(obj)
        else:
            refused.append(obj)
        for place in places or [
            {"pod": "-", "state": _conditions(obj).get("Ready", {}).get("reason", "-")}
        ]:
            rows.append((name, status.get("pool") or "-", place["pod"], place["state"], rank))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    _say("")
    for row in rows:
        _say("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    pods = cluster.get_json("pods", "-n", "ml-platform", "-l", "lorapack.io/pool")["items"]
    gpus = sum(
        int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
        for p in pods
        for c in p["spec"]["containers"]
    )
    _say("")
    teams = len({o["metadata"]["namespace"] for o in ready})
    _say(
        f"GPUs: {gpus} L20 for {len(ready)} adapters from {teams} teams; one merged "
        f"deployment per adapter would take {len(ready)} GPUs."
    )
    for obj in refused:
        cond = _conditions(obj).get("Ready", {})
        _say(
            f"Refused {obj['metadata']['namespace']}/{obj['metadata']['name']}: "
            f"{cond.get('reason')}: {cond.get('message')}"
        )
    if ready:
        target = ready[0]
        ns, name = target["metadata"]["namespace"], target["metadata"]["name"]
        served = (target.get("status") or {}).get("servedName") or name
        body = {
            "model": served,
            "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": 16,
        }
        reply = httpx.post(
            f"{world['gateway']}/{ns}/{name}/v1/chat/completions", json=body, timeout=30
        )
        _say("")
        _say(f'POST http://{name}.{ns}.svc:8000/v1/chat/completions {{"model": "{served}"}}')
        if reply.status_code == 200:
            answer = reply.json()["choices"][0]["message"]["content"]
            ip = reply.headers.get("X-Lorapack-Endpoint", "?")
            pod = next((p["metadata"]["name"] for p in pods if p["status"].get("podIP") == ip), ip)
            _say(f"  answered by pod {pod} ({ip}): {answer}")
        else:
            _say(f"  HTTP {reply.status_code}: {reply.text[:300]}")


def down(args: argparse.Namespace) -> int:
    del args
    stopped = Stack.stop_recorded(state_dir())
    if not stopped:
        _say("no demo recorded: nothing to stop")
    for what in stopped:
        _say(f"stopped {what}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorapack_testworld.demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start the demo")
    start.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait (180; 900 with vllm)"
    )
    start.add_argument(
        "--engine",
        choices=["double", "vllm"],
        default="double",
        help="engine of the pool's pods: the fast double, or the real vLLM CPU engine",
    )
    start.set_defaults(run=up)
    sub.add_parser("down", help="stop the demo").set_defaults(run=down)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
