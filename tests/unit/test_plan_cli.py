"""`lorapack plan`: GitOps YAML in, placement and problems out, exit code for CI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapack.cli import main
from tests.builders import make_adapter, make_pool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gitops"


def plan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["plan", *argv, "-o", "json"])
    return code, json.loads(capsys.readouterr().out)


def write_yaml(path: Path, *docs: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def write_config(path: Path, **fields: Any) -> Path:
    config = {
        "peft_type": "LORA",
        "r": 16,
        "lora_alpha": 32,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "bias": "none",
        "base_model_name_or_path": "meta-llama/Meta-Llama-3-8B",
    }
    config.update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


# -- the example repository ------------------------------------------------------------------


def test_example_table_shows_pools_adapters_and_the_unplaceable_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", "-f", str(EXAMPLE)]) == 1
    out = capsys.readouterr().out
    assert "ml-platform/llama3-8b" in out and "ml-platform/qwen25-7b" in out
    assert "team-c/legal-summarizer  RankTooLarge" in out
    assert "retrain with r <= 64 or ask for a pool with maxLoraRank 128" in out
    assert "warning: LoraAdapter team-c/marketing-copy: rank unknown" in out
    assert "7 of 8 adapters placed on 4 pods, 4 GPUs" in out


def test_example_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = plan_json(capsys, "-f", str(EXAMPLE))
    assert code == 1
    pools = {p["pool"]: p for p in data["pools"]}
    assert pools["ml-platform/llama3-8b"]["pods"] == 3
    assert pools["ml-platform/qwen25-7b"]["gpus"] == 1
    adapters = {a["adapter"]: a for a in data["adapters"]}
    # Ranks come from adapter_config.json: r, or the largest rank_pattern value.
    assert adapters["team-a/support-bot"]["rank"] == 16
    assert adapters["team-c/sql-helper"]["rank"] == 64
    # 30 rps at 20 rps per pod takes two copies; replicas.min 2 takes two pods.
    assert adapters["team-b/contract-review"]["copies"] == 2
    assert len(set(adapters["team-a/ticket-triage"]["pods"])) == 2
    assert adapters["team-b/invoice-extract"]["pool"] == "ml-platform/qwen25-7b"
    assert [u["adapter"] for u in data["unplaceable"]] == ["team-c/legal-summarizer"]
    assert data["unplaceable"][0]["reason"] == "RankTooLarge"
    summary = data["summary"]
    assert summary["ok"] is False
    assert summary["gpus"] == 4
    assert summary["mergedDeploymentGpus"] == 9
    assert summary["ignoredObjects"] == 1  # the Namespace


def test_example_yaml_output_parses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(EXAMPLE), "-o", "yaml"]) == 1
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["summary"]["placed"] == 7


def test_all_valid_and_placed_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("team-c"))
    code, data = plan_json(capsys, "-f", str(repo))
    assert code == 0
    assert data["summary"]["ok"] is True
    assert data["unplaceable"] == [] and data["invalid"] == []


def test_files_and_folders_combine(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = plan_json(
        capsys, "-f", str(EXAMPLE / "platform"), "-f", str(EXAMPLE / "team-a" / "adapters.yaml")
    )
    assert code == 0
    assert sorted(a["adapter"] for a in data["adapters"]) == [
        "team-a/faq-bot",
        "team-a/support-bot",
        "team-a/ticket-triage",
    ]


# -- invalid input ---------------------------------------------------------------------------


def test_invalid_object_names_file_document_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pools = write_yaml(tmp_path / "pools.yaml", make_pool())
    adapters = write_yaml(
        tmp_path / "adapters.yaml",
        make_adapter("good"),
        make_adapter("typo", replicas={"min": 1, "mx": 2}),
    )
    code, data = plan_json(capsys, "-f", str(pools), "-f", str(adapters))
    assert code == 1
    [problem] = data["invalid"]
    assert problem["source"] == f"{adapters}: document 2"
    assert problem["object"] == "LoraAdapter team-a/typo"
    assert "spec.replicas.mx" in problem["message"]
    assert [a["adapter"] for a in data["adapters"]] == ["team-a/good"]


@pytest.mark.parametrize(
    ("case", "text", "want"),
    [
        ("yaml syntax", "kind: [unclosed", "InvalidYAML"),
        (
            "unknown lorapack kind",
            "apiVersion: lorapack.io/v1alpha1\nkind: LoraPool\n",
            "unknown kind",
        ),
        ("not a mapping", "- a\n- b\n", "not a Kubernetes object"),
    ],
    ids=["yaml-syntax", "unknown-kind", "not-a-mapping"],
)
def test_unreadable_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, text: str, want: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    code, data = plan_json(capsys, "-f", str(tmp_path))
    assert code == 1
    assert want in json.dumps(data["invalid"])


def test_duplicate_objects_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_yaml(tmp_path / "a.yaml", make_pool(), make_adapter("x"))
    write_yaml(tmp_path / "b.yaml", make_adapter("x"))
    code, data = plan_json(capsys, "-f", str(tmp_path))
    assert code == 1
    assert data["invalid"][0]["message"] == "defined twice: keep one definition"


def test_served_name_conflict_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_yaml(
        tmp_path / "all.yaml",
        make_pool(),
        make_adapter("first", servedName="chat"),
        make_adapter("second", "team-b", servedName="chat"),
    )
    code, data = plan_json(capsys, "-f", str(tmp_path))
    assert code == 1
    assert [i["reason"] for i in data["invalid"]] == ["ServedNameConflict"]


# -- adapter metadata ------------------------------------------------------------------------


def test_config_override_by_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_yaml(tmp_path / "repo" / "all.yaml", make_pool(), make_adapter("x"))
    config = write_config(tmp_path / "elsewhere.json", r=256)
    code, data = plan_json(
        capsys, "-f", str(tmp_path / "repo"), "--adapter-config", f"team-a/x={config}"
    )
    assert code == 1
    assert data["unplaceable"][0]["reason"] == "RankTooLarge"


def test_artifact_problems_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_yaml(tmp_path / "all.yaml", make_pool(), make_adapter("dora"))
    write_config(tmp_path / "dora.adapter_config.json", use_dora=True)
    code, data = plan_json(capsys, "-f", str(tmp_path))
    assert code == 1
    [problem] = data["invalid"]
    assert problem["reason"] == "UnsupportedAdapter"
    assert "retrain with use_dora=False" in problem["message"]
    assert data["adapters"] == []


def test_weights_next_to_the_config_are_checked_against_the_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_yaml(tmp_path / "all.yaml", make_pool(), make_adapter("old"))
    write_config(tmp_path / "old" / "adapter_config.json")
    (tmp_path / "old" / "adapter_model.bin").write_bytes(b"\0" * 1024)
    code, data = plan_json(capsys, "-f", str(tmp_path))
    assert code == 1
    assert [i["reason"] for i in data["invalid"]] == ["PickleNotAllowed"]
    assert data["adapters"] == []
    assert data["summary"]["pods"] == 1  # replicas.min: the refused adapter takes no room


def test_size_is_estimated_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # r=64 on all seven Llama-3-8B linear modules is 640 MiB in float32: a 1Gi cache holds one.
    pool = make_pool(adapters={"cacheSize": "1Gi", "allowedNamespaces": ["team-a"]})
    write_yaml(tmp_path / "all.yaml", pool, make_adapter("a"), make_adapter("b"))
    for name in ("a", "b"):
        write_config(
            tmp_path / f"{name}.adapter_config.json",
            r=64,
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        )
    code, data = plan_json(capsys, "-f", str(tmp_path))
    assert code == 0
    assert data["pools"][0]["pods"] == 2


# -- usage errors ----------------------------------------------------------------------------


def test_missing_path_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_folder_without_yaml_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["plan", "-f", str(tmp_path)]) == 2


@pytest.mark.parametrize(
    "flag", ["no-equals-sign", "=x.json", "name=", "name=/no/such/adapter_config.json"]
)
def test_bad_adapter_config_flag_is_a_usage_error(flag: str) -> None:
    assert main(["plan", "-f", str(EXAMPLE), "--adapter-config", flag]) == 2


def test_no_filename_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan"])
    assert exit_info.value.code == 2


# -- speaking like the operator --------------------------------------------------------------


def test_an_invalid_pool_is_the_first_problem_and_its_adapters_point_at_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_pool = make_pool(replicas={"min": 3, "max": 1})
    adapters = [make_adapter(f"bot-{i}", rank=16) for i in range(3)]
    write_yaml(tmp_path / "all.yaml", *adapters, bad_pool)
    assert main(["plan", "-f", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    problems = out.split("NOT PLACED", 1)[1]
    assert problems.index("InvalidSpec") < problems.index("NoPoolForBaseModel")
    assert (
        "BaseModelPool ml-platform/llama3-8b serves meta-llama/Meta-Llama-3-8B but is invalid"
        in out
    )


def test_counts_are_singular_when_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_yaml(
        tmp_path / "one.yaml", make_pool(replicas={"min": 1, "max": 1}), make_adapter(rank=16)
    )
    assert main(["plan", "-f", str(tmp_path)]) == 0
    assert "1 of 1 adapter placed on 1 pod, 1 GPU" in capsys.readouterr().out


def test_reads_a_render_from_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    text = yaml.safe_dump_all([make_pool(), make_adapter(rank=16)], sort_keys=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, data = plan_json(capsys, "-f", "-")
    assert code == 0 and data["summary"]["placed"] == 1


def test_objects_without_a_namespace_are_assumed_default_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = make_adapter(rank=16, namespace="team-a")
    del adapter["metadata"]["namespace"]
    pool = make_pool(adapters={"allowedNamespaces": ["default", "team-a"]})
    write_yaml(tmp_path / "x.yaml", pool, adapter)
    code, data = plan_json(capsys, "-f", str(tmp_path))
    assert code == 0
    assert any("metadata.namespace is not set; assumed default" in w for w in data["warnings"])
    code, data = plan_json(capsys, "-f", str(tmp_path), "-n", "team-a")
    assert code == 0 and not data["warnings"]
    assert data["adapters"][0]["adapter"] == "team-a/support-bot"
