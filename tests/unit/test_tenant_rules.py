"""Tenant rules, pure: object names, served-name ownership, S3 locations a pool grants."""

from __future__ import annotations

from typing import Any

import pytest

from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactStatus, LoraAdapter, LoraAdapterStatus
from lorapack.planning.admission import candidate_pools, served_name_conflict, served_name_owners
from lorapack.planning.names import adapter_name_issue, pool_name_issue
from lorapack.planning.s3access import Grant, location_issue
from tests.builders import make_adapter, make_pool


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("support-bot", True),
        ("a", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("a" * 70, False),
        ("support.bot", False),
        ("9lives", False),
        ("Support-Bot", False),
        ("bot-", False),
    ],
)
def test_adapter_names_must_make_a_service_name(name: str, ok: bool) -> None:
    issue = adapter_name_issue(name)
    assert (issue is None) == ok
    if issue is not None:
        assert issue.reason == c.INVALID_NAME
        assert "Service" in issue.message and "recreate the LoraAdapter" in issue.message


def test_pool_names_stop_at_52_characters() -> None:
    assert pool_name_issue("p" * 52) is None
    issue = pool_name_issue("p" * 62)
    assert issue is not None and "at most 52" in issue.message and "StatefulSet" in issue.message


def _adapter(name: str, created: str, served: str | None = None, status_name: str | None = None,
             **spec: Any) -> LoraAdapter:  # fmt: skip
    body = make_adapter(name, **spec)
    body["metadata"]["creationTimestamp"] = created
    if served:
        body["spec"]["servedName"] = served
    model = LoraAdapter.model_validate(body)
    if status_name is not None:
        model = model.model_copy(
            update={
                "status": LoraAdapterStatus(
                    served_name=status_name, artifact=ArtifactStatus(digest="sha256:" + "a" * 64)
                )
            }
        )
    return model


def test_the_incumbent_keeps_its_served_name_against_an_older_rename() -> None:
    incumbent = _adapter("chat-v2", "2026-06-01T00:00:00Z", served="chat", status_name="chat")
    renamed = _adapter("legacy", "2026-01-01T00:00:00Z", served="chat", status_name="legacy")
    owners = served_name_owners([incumbent, renamed])
    assert owners[("meta-llama/Meta-Llama-3-8B", "chat")] == "team-a/chat-v2"
    refusal = served_name_conflict(renamed, [incumbent], ["meta-llama/Meta-Llama-3-8B"])
    assert refusal is not None and "team-a/chat-v2" in refusal.message
    assert served_name_conflict(incumbent, [renamed], ["meta-llama/Meta-Llama-3-8B"]) is None


def test_without_an_incumbent_the_oldest_claimant_wins() -> None:
    old = _adapter("a", "2026-01-01T00:00:00Z", served="chat")
    new = _adapter("b", "2026-02-01T00:00:00Z", served="chat")
    assert served_name_conflict(old, [new], []) is None
    assert served_name_conflict(new, [old], []) is not None


GRANTS = (
    Grant(frozenset({"team-a"}), ("s3://adapters/team-a/",)),
    Grant(frozenset({"*"}), ("s3://shared/",)),
)


@pytest.mark.parametrize(
    ("namespace", "uri", "endpoint", "allowed", "words"),
    [
        ("team-a", "s3://adapters/team-a/bot/", None, True, ""),
        ("team-b", "s3://adapters/team-a/bot/", None, False, "not a location pool"),
        ("team-a", "s3://adapters/team-ab/bot/", None, False, "credentialsSecretRef"),
        ("team-a", "s3://adapters/team-a", None, True, ""),
        ("team-z", "s3://shared/x/", None, True, ""),
        ("team-a", "s3://adapters/team-a/bot/", "https://evil.example", False, "endpoint"),
        ("team-a", "s3://adapters/team-a/bot/", "http://s3.local:9000/", True, ""),
    ],
)
def test_pool_credentials_only_where_the_pool_grants(
    namespace: str, uri: str, endpoint: str | None, allowed: bool, words: str
) -> None:
    issue = location_issue(namespace, uri, endpoint, "ml/pool", "http://s3.local:9000", GRANTS)
    assert (issue is None) == allowed
    if issue is not None:
        assert issue.reason == c.S3_LOCATION_NOT_ALLOWED and words in issue.message


def test_admission_refuses_ungranted_locations_but_not_own_credentials() -> None:
    pool = BaseModelPool.model_validate(
        make_pool(adapters={"s3Access": [{"namespaces": ["team-a"],
                                          "uriPrefixes": ["s3://adapters/team-a/"]}]})
    )  # fmt: skip
    other = LoraAdapter.model_validate(make_adapter("bot", "team-b"))
    found, issue = candidate_pools(other, [pool])
    assert found == [] and issue is not None and issue.reason == c.S3_LOCATION_NOT_ALLOWED
    own = LoraAdapter.model_validate(
        make_adapter("bot", "team-b", source={"s3": {"uri": "s3://adapters/team-a/x/",
                                                     "credentialsSecretRef": {"name": "keys"}}})
    )  # fmt: skip
    found, issue = candidate_pools(own, [pool])
    assert issue is None and found == [pool]
