"""docs/sizing.md stays true: every `lorapack size` command in it runs and prints what it shows.

Console blocks hold `$ lorapack size ...` lines followed by their exact output (stdout, then
stderr); a ```json block before a console block is the file its `--config` reads. Markdown table
rows whose first cell is a `lorapack size ...` command state figures that are checked against
the command's JSON output.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from lorapack.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "sizing.md"
GIB = 2**30


@dataclass(frozen=True)
class Example:
    command: str
    output: str
    config_json: str | None


def _examples(text: str) -> list[Example]:
    examples = []
    config: str | None = None
    for block in re.finditer(r"```(json|console)\n(.*?)```", text, flags=re.S):
        kind, body = block.group(1), block.group(2)
        if kind == "json":
            config = body
            continue
        for chunk in re.split(r"^(?=\$ )", body, flags=re.M):
            if not chunk.startswith("$ "):
                continue
            first, _, rest = chunk.partition("\n")
            examples.append(Example(first[2:].strip(), rest.rstrip("\n"), config))
    return examples


def _table_rows(text: str) -> list[tuple[str, list[str]]]:
    rows = []
    for line in text.splitlines():
        match = re.match(r"^\| `(lorapack size[^`]*)` \|(.*)\|$", line)
        if match:
            rows.append((match.group(1), [c.strip() for c in match.group(2).split("|")]))
    return rows


TEXT = DOC.read_text(encoding="utf-8")
EXAMPLES = _examples(TEXT)
TABLE_ROWS = _table_rows(TEXT)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).rstrip("\n")


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 6
    assert len(TABLE_ROWS) >= 3


def test_every_size_command_shown_is_exercised() -> None:
    exercised = {e.command for e in EXAMPLES} | {command for command, _ in TABLE_ROWS}
    shown = set(re.findall(r"^\$ (lorapack size.*)$", TEXT, flags=re.M))
    shown |= {span for span in re.findall(r"`(lorapack size [^`]+)`", TEXT)}
    assert shown <= exercised


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[e.command[len("lorapack size ") :] for e in EXAMPLES]
)
def test_console_example_prints_what_the_doc_shows(
    example: Example,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = shlex.split(example.command)
    assert argv[:2] == ["lorapack", "size"]
    if "--config" in argv:
        assert example.config_json is not None, "a --config example needs a json block before it"
        path = tmp_path / argv[argv.index("--config") + 1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(example.config_json, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, output = _run(argv[1:], capsys)
    assert output == example.output
    assert code == (1 if example.output.startswith("error:") else 0)


@pytest.mark.parametrize(
    ("command", "cells"), TABLE_ROWS, ids=[c[len("lorapack size ") :] for c, _ in TABLE_ROWS]
)
def test_comparison_table_row(
    command: str, cells: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = _run([*shlex.split(command)[1:], "-o", "json"], capsys)
    assert code == 0
    data = json.loads(output)
    per_gpu = data["perGpu"]
    lora = per_gpu["loraLinearBytes"] + per_gpu["loraEmbeddingBytes"]
    want_lora, want_kv, want_tokens = cells
    assert f"{lora / GIB:.2f}" == want_lora
    assert f"{per_gpu['kvBytes']['central'] / GIB:.2f}" == want_kv
    assert f"{data['kvTokens']['central']:,}" == want_tokens
