"""Every `apiserver` case of the hostile-input corpus against the real API server with
lorapack's CRDs: `kubectl create --dry-run=server` refuses it, and the refusal names the field
(and, for CEL rules, the fix); the valid object each case starts from is admitted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorapack_testworld.devcluster import DevCluster
from tests.hostile import Case, api_object, load_cases

pytestmark = pytest.mark.integration

CASES = load_cases("apiserver")


def _create(cluster: DevCluster, obj: dict[str, object]) -> tuple[int, str]:
    result = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", "-o", "name", input=json.dumps(obj), check=False
    )
    return result.returncode, result.stderr


@pytest.mark.parametrize("kind", ["LoraAdapter", "BaseModelPool"])
def test_the_starting_objects_are_admitted(
    devcluster: DevCluster, lorapack_crds: Path, namespace: str, kind: str
) -> None:
    code, err = _create(
        devcluster, api_object(Case("ok", "apiserver", (), None, {"kind": kind}), namespace)
    )
    assert code == 0, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_api_server_refuses_the_case(
    devcluster: DevCluster, lorapack_crds: Path, namespace: str, case: Case
) -> None:
    code, err = _create(devcluster, api_object(case, namespace))
    assert code != 0, f"{case.id}: the API server admitted it"
    for word in case.words:
        assert word in err, f"{case.id}: {word!r} not in {err!r}"
