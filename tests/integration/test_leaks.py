"""No credential and no presigned URL ever leaves the places that must hold them.

A full scenario on the end-to-end world (the operator, the pod simulator's agents and engine
doubles, the real S3 server), with recognisable values planted:

* the pool's credentials Secret and a team's credentials Secret hold the S3 server's secret key
  and an extra canary value each; a second team Secret holds a canary access key, secret key and
  session token that S3 refuses (the error path of validation);
* adapters read with the team's keys (presigned URLs for the agents), with the pool's keys, and
  with the refused ones; one of them loses its files after it was served, and its pod is deleted,
  so a new agent downloads from presigned URLs that now answer 404 (the agent's error path);
* the presigned URLs themselves are read back from the desired-state Secrets (their signatures,
  and the URLs without their signature, are canaries too).

Then every place that is not a Secret is searched for every canary: the operator's and world's
logs, each pod's agent and engine log, Events of all namespaces, the pools', adapters', pods',
Services' and EndpointSlices' full objects (status, annotations such as the agents' reports)
and the operator's /metrics (LORAPACK_METRICS_PORT set for this test). Zero hits. The number of
places and canaries is printed (`-s`) and recorded in docs/security.md.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lorapack import labels
from lorapack.api.podstate import ObservedState, desired_from_secret
from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.devcluster.processes import free_port
from tests.integration.conftest import E2E, Proc

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
def metrics_port(e2e: E2E) -> Iterator[int]:
    """The session's operator, restarted with /metrics on a free port (and restored after)."""
    operator: Proc = e2e.operator
    port = free_port()
    saved = operator.env.get("LORAPACK_METRICS_PORT")
    operator.env["LORAPACK_METRICS_PORT"] = str(port)
    operator.restart()
    try:
        yield port
    finally:
        operator.env["LORAPACK_METRICS_PORT"] = saved or "0"
        operator.restart()


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _presigned_canaries(e: E2E) -> list[str]:
    """Signatures and signature-less URLs of every presigned URL in the pool's desired states."""
    secrets = e.cluster.get_json(
        "secrets", "-n", e.namespace, "-l", f"{labels.ROLE_LABEL}={labels.ROLE_DESIRED}"
    )["items"]
    canaries: list[str] = []
    for secret in secrets:
        state = desired_from_secret(secret, labels.DESIRED_KEY)
        for adapter in state.adapters if state else []:
            for spec in adapter.files:
                if not spec.url:
                    continue
                query = parse_qs(urlsplit(spec.url).query)
                canaries += query.get("X-Amz-Signature", [])
                canaries.append(spec.url.split("X-Amz-Signature=")[0])
    return canaries


def _attempts(pod: dict[str, Any], served_name: str) -> int:
    """Failed attempts the pod's agent reports for an adapter (its observed annotation)."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(labels.OBSERVED_ANNOTATION)
    report = ObservedState.model_validate_json(raw) if raw else ObservedState()
    counts = [a.attempts for a in report.adapters if a.served_name == served_name]
    return max(counts, default=0)


def _places(e: E2E, namespaces: list[str], metrics_url: str) -> dict[str, str]:
    """name -> text of every place searched."""
    places: dict[str, str] = {
        "operator log": e.operator.log.read_text(errors="replace"),
        "world log": e.world["proc"].log.read_text(errors="replace"),
    }
    pods_dir = Path(e.world["workdir"]) / "pods"
    for namespace in namespaces:
        for log in sorted((pods_dir / namespace).glob("*/*.log")):
            places[f"{log.parent.name} {log.name}"] = log.read_text(errors="replace")
    places["events (all namespaces)"] = e.cluster.kubectl(
        "get", "events", "-A", "-o", "json"
    ).stdout
    for namespace in namespaces:
        for kind in ("basemodelpools", "loraadapters", "pods", "services", "endpointslices"):
            text = e.cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
            places[f"{kind} in {namespace}"] = text
    places["operator /metrics"] = httpx.get(metrics_url, timeout=10).text
    return places


def test_no_credential_or_presigned_url_leaks(
    e2e: E2E, metrics_port: int, artifacts: ArtifactIndex
) -> None:
    e = e2e
    tag = uuid.uuid4().hex[:10]
    team = e.new_namespace("leaky")
    pool_canary, team_canary = f"pool-canary-{tag}", f"team-canary-{tag}"
    bad = {
        "AWS_ACCESS_KEY_ID": f"AKIACANARY{tag.upper()}",
        "AWS_SECRET_ACCESS_KEY": f"canary-secret-key-{tag}",
        "AWS_SESSION_TOKEN": f"canary-session-token-{tag}",
    }
    keys = {"AWS_ACCESS_KEY_ID": e.s3.access_key, "AWS_SECRET_ACCESS_KEY": e.s3.secret_key}
    e.apply(
        _secret("pool-s3", e.namespace, keys | {"LEAK_CANARY": pool_canary}),
        _secret("team-creds", team, keys | {"LEAK_CANARY": team_canary}),
        _secret("bad-creds", team, bad),
    )
    # An adapter whose files vanish after it is served (its own prefix).
    gone_prefix = f"leak-gone-{tag}"
    # (Files of its own: adapters with the same files share one download in an agent.)
    e.s3.upload_folder(e.bucket, f"{gone_prefix}/", artifacts.adapter("r64").path)
    e.apply(
        e.pool("leaks", adapters={"allowedNamespaces": [e.namespace, team]}),
        e.adapter("leak-team", "r8", team, source={"s3": {
            "uri": f"s3://{e.bucket}/r8/", "credentialsSecretRef": {"name": "team-creds"}}}),
        e.adapter("leak-pool", "r16"),
        e.adapter("leak-gone", gone_prefix, team, source={"s3": {
            "uri": f"s3://{e.bucket}/{gone_prefix}/",
            "credentialsSecretRef": {"name": "team-creds"}}}),
        e.adapter("leak-bad", "r16", team, source={"s3": {
            "uri": f"s3://{e.bucket}/r16/", "credentialsSecretRef": {"name": "bad-creds"}}}),
    )  # fmt: skip
    e.wait("leak-team Ready", lambda: e.ready("leak-team", team), timeout=150)
    e.wait("leak-pool Ready", lambda: e.ready("leak-pool"), timeout=150)
    e.wait("leak-gone Ready", lambda: e.ready("leak-gone", team), timeout=150)
    assert e.chat("leak-team", team).status_code == 200
    refused = e.wait(
        "leak-bad refused",
        lambda: (
            (o := e.try_get("lora", "leak-bad", team))
            and e.condition(o, "Stalled").get("status") == "True"
            and o
        ),
        timeout=90,
    )
    presigned = _presigned_canaries(e)
    assert presigned, "no presigned URL in the desired states: the team adapters did not use them"

    # The agent's error path: the files go, the pod goes, its successor downloads from the
    # (still valid) presigned URLs, which now answer 404.
    client = e.s3.client()
    for item in client.list_objects_v2(Bucket=e.bucket, Prefix=f"{gone_prefix}/")["Contents"]:
        client.delete_object(Bucket=e.bucket, Key=item["Key"])
    [pod] = e.cluster.get_json("pods", "-n", e.namespace, "-l", f"{labels.POOL_LABEL}=leaks")[
        "items"
    ]
    uid = pod["metadata"]["uid"]
    e.cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", e.namespace)
    e.wait(
        "the new pod's agent to fail twice downloading leak-gone",
        lambda: (
            (p := e.try_get("pod", pod["metadata"]["name"]))
            and p["metadata"]["uid"] != uid
            and _attempts(p, "leak-gone") >= 2
        ),
        timeout=120,
    )
    time.sleep(2)  # let the operator fold the failure into statuses and Events

    canaries = {
        "S3 secret key": e.s3.secret_key,
        "pool Secret canary": pool_canary,
        "team Secret canary": team_canary,
        **{f"refused {k}": v for k, v in bad.items()},
        **{f"presigned URL part {i}": v for i, v in enumerate(presigned)},
    }
    places = _places(e, [e.namespace, team], f"http://127.0.0.1:{metrics_port}/metrics")
    assert "lorapack_reconcile_total" in places["operator /metrics"]
    assert refused["status"]["conditions"], refused
    hits = [
        f"{what} in {place}"
        for place, text in places.items()
        for what, canary in canaries.items()
        if canary in text
    ]
    print(f"\nleak check: {len(places)} places, {len(canaries)} canaries, {len(hits)} hits")
    assert hits == []
