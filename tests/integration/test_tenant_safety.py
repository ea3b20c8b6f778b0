"""Tenant safety end to end (issue 11, findings 0, 0c, 2 and 4) on the real control plane.

Bad input always arrives next to good input here: the healthy adapters must become Ready and
answer a completion while the bad ones are refused (by the API server where the CRD can tell,
else in their own status), and nothing one team does reaches another team's names or data.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import E2E

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _refused(e: E2E, body: dict[str, Any]) -> str:
    result = e.cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=json.dumps(body), check=False
    )
    assert result.returncode != 0, f"the API server accepted {body['metadata']['name']}"
    return result.stderr


def _stalled(e: E2E, name: str, reason: str, namespace: str | None = None) -> dict[str, Any]:
    return e.wait(  # type: ignore[no-any-return]
        f"{name} Stalled with {reason}",
        lambda: (
            (o := e.try_get("lora", name, namespace))
            and e.condition(o, "Stalled").get("reason") == reason
            and o
        ),
        timeout=90,
    )


def _serves(e: E2E, name: str, namespace: str | None = None) -> None:
    e.wait(f"{name} Ready", lambda: e.ready(name, namespace), timeout=120)
    reply = e.chat(name, namespace)
    assert reply.status_code == 200, reply.text
    assert f"adapter={name}" in reply.json()["choices"][0]["message"]["content"]


def test_names_that_cannot_become_services_are_refused_and_the_pool_keeps_serving(
    e: E2E,
) -> None:
    e.apply(e.pool("names", replicas={"min": 1, "max": 2}))
    healthy = ["alpha", "bravo", "charlie"]
    for name in healthy:
        e.apply(e.adapter(name, "r8"))
    for bad in ("a" * 70, "support.bot", "9lives"):
        message = _refused(e, e.adapter(bad, "r16"))
        assert "metadata.name" in message and "Service" in message
    pool_message = _refused(e, {**e.pool("p" * 62)})
    assert "metadata.name must be at most 52 characters" in pool_message
    for name in healthy:
        _serves(e, name)


def test_a_foreign_service_with_an_adapters_name_stalls_only_that_adapter(e: E2E) -> None:
    e.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "taken", "namespace": e.namespace},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
        }
    )
    e.apply(e.pool("shared"))
    e.apply(e.adapter("taken", "r8"), e.adapter("fine", "r16"))
    obj = _stalled(e, "taken", "OwnedObjectConflict")
    assert "not lorapack's" in e.condition(obj, "Ready")["message"]
    _serves(e, "fine")
    service = e.get("service", "taken")
    assert service["spec"]["ports"][0]["port"] == 80  # never taken over
    assert e.get("service", "fine")["spec"]["clusterIP"] == "None"  # headless by default


def test_a_renamed_adapter_cannot_take_another_teams_served_name(e: E2E) -> None:
    other = e.new_namespace("team-b")
    e.apply(e.pool("names", adapters={"allowedNamespaces": [e.namespace, other]}))
    e.apply(e.adapter("support", "r8", servedName="support"))
    _serves(e, "support", e.namespace)
    e.apply(e.adapter("legacy", "r16", namespace=other))
    e.wait("legacy Ready", lambda: e.ready("legacy", other), timeout=120)
    # Team B renames its adapter onto team A's served name.
    e.apply(e.adapter("legacy", "r16", namespace=other, servedName="support"))
    obj = _stalled(e, "legacy", "ServedNameConflict", other)
    assert f"{e.namespace}/support" in e.condition(obj, "Ready")["message"]
    reply = e.chat("support", e.namespace, model="support")
    assert reply.status_code == 200
    assert "adapter=support" in reply.json()["choices"][0]["message"]["content"]


def test_a_team_cannot_read_another_teams_folder_with_the_pools_credentials(e: E2E) -> None:
    other = e.new_namespace("team-b")
    e.apply(
        e.pool(
            "grants",
            adapters={
                "allowedNamespaces": [e.namespace, other],
                "s3Access": [{"namespaces": [e.namespace], "uriPrefixes": [f"s3://{e.bucket}/"]}],
            },
        )
    )
    e.apply(e.adapter("mine", "r8"))
    e.apply(e.adapter("theirs", "r16", namespace=other))
    obj = _stalled(e, "theirs", "S3LocationNotAllowed", other)
    message = e.condition(obj, "Ready")["message"]
    assert "credentialsSecretRef" in message and "s3Access" in message
    assert not (obj.get("status") or {}).get("artifact")  # nothing of the folder was listed
    # With its own credentials the same team reads the same files.
    e.apply(e.s3_secret("team-b-s3", namespace=other))
    own = e.adapter("theirs", "r16", namespace=other)
    own["spec"]["source"]["s3"]["credentialsSecretRef"] = {"name": "team-b-s3"}
    e.apply(own)
    _serves(e, "theirs", other)
    _serves(e, "mine")


def test_schema_holes_are_closed(e: E2E) -> None:
    dotted = e.adapter("dots", "r8")
    dotted["spec"]["source"]["s3"]["uri"] = f"s3://{e.bucket}/../x/"
    assert "uri" in _refused(e, dotted)
    bad_secret = e.adapter("badsecret", "r8")
    bad_secret["spec"]["source"]["s3"]["credentialsSecretRef"] = {"name": "Not_A_Secret"}
    assert "credentialsSecretRef" in _refused(e, bad_secret)


@pytest.fixture
def e(e2e: E2E) -> E2E:
    return e2e
