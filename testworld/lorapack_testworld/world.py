"""`python -m lorapack_testworld.world`: the pod simulator and the gateway as one process.

The integration tier and `make demo` start it next to the operator. It writes
`<workdir>/world.json` ({"gateway": url, "admin": url, "pid": n}) once it is up, and serves a
small admin API on loopback for fault injection:

    GET  /pods                                  namespace/name -> engine URL, uid, ip
    POST /pods/{namespace}/{name}/restart-agent  kill and restart the pod's agent
    POST /pods/{namespace}/{name}/restart-engine kill and restart its engine (adapters lost)

Real vLLM engines replace the double for the pods of pools named with `--real-engine-pool NAME`
(needs the vLLM venv and the tiny model: `--model-dir`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from lorapack.clients.kube import KubeClient
from lorapack_testworld.gateway import Gateway
from lorapack_testworld.podsim import PodRuntime, PodSimulator, free_port

__all__ = ["main", "serve"]

log = logging.getLogger(__name__)


def _real_engine_starter(model_dir: Path) -> Any:
    """A PodSimulator engine starter running the real vLLM CPU engine for one pod."""
    from lorapack_testworld import realvllm

    async def start(
        runtime: PodRuntime,
        pod: Mapping[str, Any],
        served: str,
        flags: list[str],
        env: Mapping[str, str],
    ) -> Any:
        values = dict(zip(flags[1::2], flags[2::2], strict=False))  # after "--enable-lora"
        server = realvllm.RealVllm(
            realvllm.RealVllmConfig(
                model=model_dir,
                served_name=served,
                max_loras=int(values.get("--max-loras", "2")),
                max_lora_rank=int(values.get("--max-lora-rank", "64")),
                max_cpu_loras=int(values["--max-cpu-loras"])
                if "--max-cpu-loras" in values
                else None,
                extra_env=dict(env),
            ),
            port=runtime.engine_port,
            log_path=runtime.folder / "vllm.log",
        )
        await asyncio.to_thread(server.start)
        return server

    return start


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Run until `stop`."""
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    starter = None
    if args.real_engine_pool:
        if args.model_dir is None:
            raise SystemExit("--real-engine-pool needs --model-dir (the tiny model folder)")
        starter = _real_engine_starter(args.model_dir)
    sim = PodSimulator(
        args.kubeconfig,
        workdir / "pods",
        model_dir=args.model_dir,
        use_pod_identity=not args.admin_identity,
        real_engine=starter,
        real_engine_pools=args.real_engine_pool,
    )
    await sim.start()
    kube = await KubeClient.connect(str(args.kubeconfig))
    gateway = Gateway(kube, sim.engine_for_ip, port=args.gateway_port)
    gateway_url = await gateway.start()

    async def pods(_: web.Request) -> web.Response:
        return web.json_response(
            {
                key: {"engine": r.engine_url, "uid": r.uid, "ip": r.ip}
                for key, r in sorted(sim.pods.items())
            }
        )

    async def restart(request: web.Request) -> web.Response:
        namespace, name, what = (request.match_info[k] for k in ("namespace", "name", "what"))
        try:
            if what == "restart-agent":
                await sim.restart_agent(namespace, name)
            elif what == "restart-engine":
                await sim.restart_engine(namespace, name)
            elif what == "engine-faults":
                await sim.set_engine_faults(namespace, name, await request.json())
            else:
                return web.json_response({"error": f"unknown action {what}"}, status=404)
        except (KeyError, LookupError) as err:
            return web.json_response({"error": f"no such pod: {err}"}, status=404)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/pods", pods)
    app.router.add_post("/pods/{namespace}/{name}/{what}", restart)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    admin_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", admin_port).start()
    info = {"gateway": gateway_url, "admin": f"http://127.0.0.1:{admin_port}", "pid": os.getpid()}
    (workdir / "world.json").write_text(json.dumps(info))
    log.info("World ready: %s", info)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await gateway.stop()
        await sim.stop()
        await kube.close()
        with contextlib.suppress(FileNotFoundError):
            (workdir / "world.json").unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorapack_testworld.world", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--gateway-port", type=int, default=0)
    parser.add_argument(
        "--real-engine-pool",
        action="append",
        default=[],
        metavar="POOL",
        help="pods of pools with this name run the real vLLM CPU engine (repeatable)",
    )
    parser.add_argument(
        "--admin-identity",
        action="store_true",
        help="run agents with the admin kubeconfig instead of their pool's ServiceAccount",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
