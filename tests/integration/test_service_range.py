"""A cluster whose Service range runs out (issue 15, section 0).

At ~250 adapters the dev cluster's /24 used to fill up with per-adapter ClusterIP Services; then
the pool's own Service could not be created, every pool pass failed and most adapters never got
a status. Here a control plane of its own gets a /28 range (13 free cluster IPs) and the
operator the ClusterIP opt-in, so the range fills up on purpose: the pool's objects come first
and the pool serves; the adapters that got a Service become Ready and answer; the ones that did
not say why (ServiceIPsExhausted, with the fix) and the others are not disturbed; freeing IPs
lets them in without anyone touching them. (Headless Services, the default, take no IP at all.)
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.devcluster import DevCluster, Tools, ToolsMissing
from lorapack_testworld.s3server import S3Server
from tests.integration.conftest import E2E, start_operator, start_world

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SMALL_RANGE = "198.19.0.0/28"
ADAPTERS = [f"a{n:02d}" for n in range(14)]


@pytest.fixture(scope="module")
def small(
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: ArtifactIndex,
    s3_server: S3Server,
    adapter_bucket: str,
) -> Iterator[E2E]:
    try:
        tools = Tools.locate()
    except ToolsMissing as exc:
        pytest.fail(f"the control plane tools are needed: {exc}", pytrace=False)
    work = tmp_path_factory.mktemp("small-range")
    cluster = DevCluster.start(workdir=work / "cluster", tools=tools, service_cidr=SMALL_RANGE)
    world: dict[str, Any] = {}
    operator = None
    try:
        (work / "world").mkdir()
        world = start_world(cluster.kubeconfig, artifacts, work / "world")
        operator = start_operator(
            cluster.kubeconfig, work, {"LORAPACK_ADAPTER_SERVICE_TYPE": "ClusterIP"}
        )
        cluster.kubectl("create", "namespace", "range")
        env = E2E(cluster, "range", s3_server, adapter_bucket, world, operator, [])
        env.apply(env.s3_secret("pool-s3"))
        yield env
    finally:
        if operator is not None:
            operator.stop()
        if world:
            world["proc"].stop()
        cluster.stop()
        shutil.rmtree(work / "world" / "pods", ignore_errors=True)


def _reason(e: E2E, name: str) -> str | None:
    obj = e.try_get("lora", name)
    return e.condition(obj, "Ready").get("reason") if obj else None


def test_a_full_service_range_refuses_only_the_adapters_it_cannot_take(small: E2E) -> None:
    e = small
    e.apply(
        e.pool(
            "llama",
            replicas={"min": 2, "max": 2},
            engine={"maxLoras": 4, "maxLoraRank": 64, "maxCpuLoras": 8},
        )
    )
    e.wait("the pool Ready", lambda: e.condition(e.get("bmp", "llama"), "Ready").get("status")
           == "True", timeout=120)  # fmt: skip
    pool_service = e.get("service", "llama")
    assert ipaddress.ip_address(pool_service["spec"]["clusterIP"]) in ipaddress.ip_network(
        SMALL_RANGE
    )
    e.apply(*(e.adapter(name, "r8") for name in ADAPTERS))

    def settled() -> dict[str, str | None] | None:
        reasons = {name: _reason(e, name) for name in ADAPTERS}
        if all(r in ("Loaded", "ServiceIPsExhausted") for r in reasons.values()):
            return reasons
        return None

    reasons = e.wait("every adapter Loaded or ServiceIPsExhausted", settled, timeout=240)
    refused = sorted(n for n, r in reasons.items() if r == "ServiceIPsExhausted")
    ready = sorted(n for n, r in reasons.items() if r == "Loaded")
    # 16 addresses: network, broadcast, the kubernetes Service and the pool's leave 12.
    assert len(ready) == 12, reasons
    assert len(refused) == 2, reasons
    message = e.condition(e.get("lora", refused[0]), "Ready")["message"]
    assert "Service IP range is full" in message and "Headless" in message, message
    for name in ready:
        reply = e.chat(name)
        assert reply.status_code == 200, reply.text
        assert f"[adapter={name} " in reply.json()["choices"][0]["message"]["content"]
    # The pool is untouched by its adapters' refusals.
    assert e.condition(e.get("bmp", "llama"), "Ready").get("status") == "True"

    # Two teams leave: their IPs go back, and the refused adapters get them by themselves.
    for name in ready[:2]:
        e.cluster.kubectl("delete", "lora", name, "-n", e.namespace, "--wait=false")
    for name in refused:
        e.wait(f"{name} Ready once IPs are free", lambda n=name: e.ready(n), timeout=180)
        assert e.chat(name).status_code == 200


def test_the_dev_cluster_has_room_for_the_scale_bench() -> None:
    from lorapack_testworld.devcluster import SERVICE_CIDR

    assert ipaddress.ip_network(SERVICE_CIDR).num_addresses >= 65536
