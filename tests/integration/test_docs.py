"""The user docs stay true: every command in them runs, in order, against the end-to-end world.

docs/quickstart.md, docs/teams.md, docs/platform.md and docs/troubleshooting.md follow these
conventions (each page repeats the short version in a comment at its top):

* Commands live in ```console blocks. `$ ` starts a command; a line ending in `\\` continues
  it; a command with a heredoc (`<<'EOF'`) runs up to the line that closes it. The other lines
  are the output the page shows: each must match, in order, a line the command printed (stdout,
  then stderr). Runs of spaces compare equal, `...` stands for any text, and a token shaped
  like a kubectl AGE (`40s`, `5m12s`) for any age; blank lines are ignored.
* Every command must exit 0. (A page that wants to show a failing exit code shows it with
  `|| echo "exit code $?"`.)
* Placeholders (`PLACEHOLDERS` below) are replaced with the world's values before a command
  runs and before its output is compared; a command left with an unknown `<placeholder>` fails.
* `lorapack ...` runs as `python -m lorapack.cli` (a shim first on PATH), `kubectl` and `helm`
  are the local control plane's binaries with its kubeconfig, and the working folder is the
  repository root. In-cluster URLs `http://<service>.<namespace>.svc:8000/...` are rewritten to
  the test gateway, which routes `/<namespace>/<service>/...` by EndpointSlices the way
  kube-proxy routes a Service (`SVC_URL` and `_to_gateway`).
* A console block right after `<!-- not run: ... -->` is not run; the comment must name an
  existing file that covers it instead (a test, or the demo).
* Objects readers apply appear only inside `kubectl apply -f - <<'EOF'` commands, so the test
  applies them too: a ```yaml block holding a whole object (apiVersion, kind and spec) fails
  `test_objects_to_apply_are_only_in_commands`. ```bash / ```sh blocks are not allowed at all.
* Inline code in the prose that starts with kubectl, lorapack, curl, helm or make must be the
  beginning of a command shown on the same page.

The static checks at the top need no cluster. Each page's end-to-end test first builds the world
the page describes (the demo's objects for the quickstart; a platform team's pool for the
teams' guide; an adapter per problem for troubleshooting), then runs the page's commands.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from lorapack_testworld import demo
from lorapack_testworld.artifacts import ArtifactIndex
from tests.integration.conftest import BASE_MODEL, E2E

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = ("quickstart.md", "teams.md", "platform.md", "troubleshooting.md")
COMMAND_TIMEOUT = 240.0

# Every placeholder a page may use, and what a reader puts there.
PLACEHOLDERS: Mapping[str, str] = {
    "<team-namespace>": "the application team's namespace (where its LoraAdapters live)",
    "<other-namespace>": "a namespace no pool admits",
    "<pool-namespace>": "the namespace of the BaseModelPool",
    "<pool>": "the BaseModelPool's name",
    "<pod>": "a pool pod holding the adapter (from status.placements)",
    "<base-model>": "the pool's spec.baseModel.name",
    "<bucket>": "the S3 bucket holding the adapters",
    "<s3-endpoint>": "the URL of an S3-compatible store (omitted on AWS)",
    "<access-key>": "AWS_ACCESS_KEY_ID of the credentials",
    "<secret-key>": "AWS_SECRET_ACCESS_KEY of the credentials",
    "<gateway-port>": "the port of the demo's gateway, printed by make demo",
    "<model-folder>": "a folder holding a base model (config.json, tokenizer, safetensors)",
}
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9-]*>")
# In-cluster Service URLs (namespace and service are DNS labels).
SVC_URL = re.compile(
    r"http://(?P<service>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9](?:[-a-z0-9]*"
    r"[a-z0-9])?)\.svc(?:\.cluster\.local)?:8000(?P<path>/[^\s'\"]*)?"
)
_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_SKIP = re.compile(r"<!--\s*not run:(.*?)-->\s*$", re.S)
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1")
_AGE = re.compile(r"\d+[smhd](?:\d+[smh])?")
_TOOLS = ("kubectl", "lorapack", "curl", "helm", "make")


# -- reading the pages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One `$ ` command of a console block, with the output the page shows for it."""

    page: str
    line: int
    text: str
    expected: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Block:
    """A fenced block of a page."""

    page: str
    line: int
    lang: str
    body: str
    skip: str | None = None
    """The `not run:` comment's text when the block is not run."""
    commands: tuple[Command, ...] = field(default=())


def parse_console(page: str, first_line: int, body: str) -> tuple[Command, ...]:
    """The commands of a console block (first_line: the line number of its first body line)."""
    lines = body.splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if not commands and lines[i].strip():
                raise ValueError(f"{page}:{first_line + i}: output before any `$ ` command")
            i += 1
            continue
        start = i
        text = [lines[i][2:]]
        heredoc = _HEREDOC.search(lines[i])
        while text[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            text.append(lines[i])
            heredoc = heredoc or _HEREDOC.search(lines[i])
        if heredoc is not None:
            end = heredoc.group(2)
            while i + 1 < len(lines):
                i += 1
                text.append(lines[i])
                if lines[i].strip() == end:
                    break
            else:
                raise ValueError(f"{page}:{first_line + start}: heredoc {end} is never closed")
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        commands.append(
            Command(
                page, first_line + start, "\n".join(text), tuple(line for line in expected if line)
            )
        )
    return tuple(commands)


def read_blocks(page: str, text: str) -> list[Block]:
    """Every fenced block of a page, console blocks with their commands."""
    blocks = []
    for match in _FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip()
        skip = _SKIP.search(before)
        reason = skip.group(1).strip() if skip and before.endswith("-->") else None
        commands = parse_console(page, line + 1, body) if lang == "console" else ()
        blocks.append(Block(page, line, lang, body, reason, commands))
    return blocks


def _prose(text: str) -> str:
    return _FENCE.sub("", text)


def page_text(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


BLOCKS = {page: read_blocks(page, page_text(page)) for page in PAGES}


def runnable(page: str) -> list[Command]:
    return [c for b in BLOCKS[page] if b.lang == "console" and b.skip is None for c in b.commands]


# -- running commands -----------------------------------------------------------------------------


def substitute(text: str, values: Mapping[str, str], *, strict: bool) -> str:
    """Replace placeholders; with `strict`, any `<placeholder>` left over is an error."""
    for key, value in values.items():
        text = text.replace(key, value)
    if strict:
        left = sorted(set(_PLACEHOLDER.findall(text)))
        if left:
            raise ValueError(f"no value for {', '.join(left)} in this page's world")
    return text


def _to_gateway(text: str, gateway: str) -> str:
    """http://<service>.<namespace>.svc:8000/<path> -> <gateway>/<namespace>/<service>/<path>."""
    return SVC_URL.sub(
        lambda m: f"{gateway}/{m['namespace']}/{m['service']}{m['path'] or ''}", text
    )


def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = []
    for token in expected.split():
        if _AGE.fullmatch(token):
            parts.append(r"\S+")
        else:
            parts.append(".*".join(re.escape(piece) for piece in token.split("...")))
    return re.compile(r"\s+".join(parts))


def unmatched(expected: tuple[str, ...], output: str) -> str | None:
    """The first expected line that no later output line matches (None: all matched, in order)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    at = 0
    for want in expected:
        if want.strip() == "...":
            continue
        pattern = _line_pattern(want)
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None


@dataclass
class Runner:
    """Runs a page's commands with the world's placeholders, kubectl and gateway."""

    e2e: E2E
    values: dict[str, str]
    bin_dir: Path

    def env(self) -> dict[str, str]:
        env = self.e2e.cluster.env()
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env["PATH"]])
        env["PYTHONPATH"] = str(ROOT / "operator")
        return {k: v for k, v in env.items() if not k.startswith(("LORAPACK_", "AWS_"))}

    def run(self, command: Command) -> None:
        script = substitute(command.text, self.values, strict=True)
        script = _to_gateway(script, self.e2e.world["gateway"])
        try:
            result = subprocess.run(
                ["bash", "-o", "pipefail", "-c", script],
                cwd=ROOT,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command.id}: still running after {COMMAND_TIMEOUT:.0f} s:\n{script}")
        output = result.stdout + result.stderr
        context = (
            f"{command.id}: {script}\n--- exit {result.returncode}, output ---\n{output}"
            f"--- operator log ---\n{self.e2e.operator.tail(30)}"
        )
        assert result.returncode == 0, context
        expected = tuple(substitute(line, self.values, strict=False) for line in command.expected)
        missing = unmatched(expected, output)
        assert missing is None, (
            f"the page shows a line the command did not print: {missing!r}\n{context}"
        )

    def run_page(self, page: str) -> None:
        for command in runnable(page):
            self.run(command)


@pytest.fixture
def lorapack_bin(tmp_path: Path) -> Path:
    """A folder with a `lorapack` shim running this checkout's CLI."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shim = folder / "lorapack"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lorapack.cli "$@"\n')
    shim.chmod(0o755)
    return folder


# -- static checks (no cluster) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "output", "want"),
    [
        pytest.param(("a  b",), "x\na b\n", None, id="spaces-collapse"),
        pytest.param(("a", "b"), "b\na\n", "b", id="order-matters"),
        pytest.param(("NAME AGE", "x 40s"), "NAME   AGE\nx      5m12s\n", None, id="age"),
        pytest.param(("x 40",), "x 41\n", "x 40", id="numbers-are-not-ages"),
        pytest.param(
            ('{"id":"chatcmpl-...","model":"m"...}',),
            '{"id":"chatcmpl-9","model":"m","n":1}',
            None,
            id="ellipsis",
        ),
        pytest.param(("...", "b"), "a\nb\n", None, id="ellipsis-line"),
        pytest.param(("b",), "ab\n", "b", id="whole-line"),
    ],
)
def test_output_matching(lines: tuple[str, ...], output: str, want: str | None) -> None:
    assert unmatched(lines, output) == want


@pytest.mark.parametrize(
    ("body", "want"),
    [
        pytest.param("$ a\nout\n$ b\n", [("a", ("out",)), ("b", ())], id="two"),
        pytest.param("$ a \\\n  --x\nout\n", [("a \\\n  --x", ("out",))], id="continued"),
        pytest.param(
            "$ k apply -f - <<'EOF'\nkind: X\nEOF\ncreated\n",
            [("k apply -f - <<'EOF'\nkind: X\nEOF", ("created",))],
            id="heredoc",
        ),
        pytest.param(
            "$ k \\\n  -f - <<EOF\n$ not a command\nEOF\n",
            [("k \\\n  -f - <<EOF\n$ not a command\nEOF", ())],
            id="heredoc-after-continuation",
        ),
    ],
)
def test_console_parsing(body: str, want: list[tuple[str, tuple[str, ...]]]) -> None:
    assert [(c.text, c.expected) for c in parse_console("p", 1, body)] == want


def test_a_heredoc_must_close() -> None:
    with pytest.raises(ValueError, match="never closed"):
        parse_console("p", 1, "$ k apply -f - <<'EOF'\nkind: X\n")


def test_service_urls_go_to_the_gateway() -> None:
    text = "curl -s http://support-bot.team-a.svc:8000/v1/chat/completions -d '{}'"
    assert _to_gateway(text, "http://127.0.0.1:5") == (
        "curl -s http://127.0.0.1:5/team-a/support-bot/v1/chat/completions -d '{}'"
    )


def test_unknown_placeholders_are_refused() -> None:
    assert substitute("get <pod>", {"<pod>": "p-0"}, strict=True) == "get p-0"
    with pytest.raises(ValueError, match="<pool>"):
        substitute("get <pool>", {}, strict=True)


@pytest.mark.parametrize("page", PAGES)
def test_page_has_commands_and_only_known_placeholders(page: str) -> None:
    commands = runnable(page)
    assert len(commands) >= 5, f"{page}: the docs test found only {len(commands)} commands"
    used = {p for c in commands for p in _PLACEHOLDER.findall(c.text)}
    assert used <= set(PLACEHOLDERS), f"{page}: unknown placeholders {used - set(PLACEHOLDERS)}"


@pytest.mark.parametrize("page", PAGES)
def test_no_unchecked_shell_blocks(page: str) -> None:
    shells = [b.line for b in BLOCKS[page] if b.lang in ("bash", "sh", "shell", "zsh")]
    assert not shells, f"{page}: shell blocks at lines {shells}: use ```console with `$ `"


@pytest.mark.parametrize("page", PAGES)
def test_objects_to_apply_are_only_in_commands(page: str) -> None:
    for block in BLOCKS[page]:
        if block.lang not in ("yaml", "yml"):
            continue
        for doc in yaml.safe_load_all(block.body):
            whole = isinstance(doc, dict) and {"apiVersion", "kind", "spec"} <= set(doc)
            assert not whole, (
                f"{page}:{block.line}: a whole object in a yaml block; show it inside a "
                "`kubectl apply -f - <<'EOF'` console command so the docs test applies it"
            )


@pytest.mark.parametrize("page", PAGES)
def test_skipped_blocks_name_what_covers_them(page: str) -> None:
    for block in BLOCKS[page]:
        if block.skip is None:
            continue
        paths = re.findall(r"(?:tests|testworld|operator|hack|bench)/[\w./-]+\w", block.skip)
        assert paths, f"{page}:{block.line}: `not run:` must name the file that covers it"
        for path in paths:
            assert (ROOT / path).exists(), f"{page}:{block.line}: {path} does not exist"


@pytest.mark.parametrize("page", PAGES)
def test_inline_commands_are_shown_and_run(page: str) -> None:
    shown = [
        " ".join(c.text.split()) for b in BLOCKS[page] if b.lang == "console" for c in b.commands
    ]
    for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", _prose(page_text(page))):
        words = " ".join(span.split())
        if words.split(" ", 1)[0] not in _TOOLS or " " not in words:
            continue
        assert any(command.startswith(words) for command in shown), (
            f"{page}: `{span}` is not the start of any command on the page"
        )


# -- worlds ---------------------------------------------------------------------------------------


def _live_adapters(e: E2E) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = e.cluster.get_json("loraadapters", "-A")["items"]
    return [a for a in items if not a["metadata"].get("deletionTimestamp")]


def _served_names_free(e: E2E, names: set[str]) -> None:
    """Adapters of earlier tests (in namespaces being deleted) keep their served names until
    they are gone; a page's adapter created meanwhile would be refused as a duplicate."""

    def free() -> bool:
        taken = {
            (a["spec"].get("servedName") or a["metadata"]["name"])
            for a in _live_adapters(e)
            if a["spec"]["baseModel"] == BASE_MODEL
        }
        return not taken & names

    e.wait(f"served names {sorted(names)} to be free", free, timeout=90)


def _settled(e: E2E, name: str, namespace: str, kind: str = "lora") -> dict[str, Any] | None:
    obj = e.try_get(kind, name, namespace)
    if not obj or (obj.get("status") or {}).get("observedGeneration") != obj["metadata"].get(
        "generation"
    ):
        return None
    done = any(e.condition(obj, t).get("status") == "True" for t in ("Ready", "Stalled"))
    return obj if done else None


def _reason(e: E2E, name: str, namespace: str, reason: str, kind: str = "lora") -> Any:
    try:
        return e.wait(
            f"{kind} {namespace}/{name} with reason {reason}",
            lambda: (
                (o := _settled(e, name, namespace, kind))
                and e.condition(o, "Ready").get("reason") == reason
                and o
            ),
            timeout=120,
        )
    except BaseException:
        obj = e.try_get(kind, name, namespace) or {}
        print(f"{kind} {namespace}/{name} status instead:", json.dumps(obj.get("status"))[:3000])
        raise


def _delete_namespaces(e: E2E, namespaces: list[str]) -> None:
    """Adapters first (their finalizers need the running operator), then the namespaces; wait
    for the pods so their GPUs are free for the next test."""
    for ns in namespaces:
        e.cluster.kubectl("delete", "loraadapters", "--all", "-n", ns, "--timeout=90s", check=False)
    for ns in namespaces:
        e.cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        e.cluster.kubectl("delete", "pods", "--all", "-n", ns, "--wait=false", check=False)
    e.wait(
        "the pages' pods to be gone",
        lambda: all(
            not e.cluster.kubectl("get", "pods", "-n", ns, "-o", "name", check=False).stdout.strip()
            for ns in namespaces
        ),
        timeout=90,
    )


@pytest.fixture
def demo_world(e2e: E2E, artifacts: ArtifactIndex) -> Iterator[dict[str, str]]:
    """What `make demo` sets up (testworld/lorapack_testworld/demo.py, step 5), in this cluster:
    examples/demo/ applied as is, with the same bucket, adapters and pool credentials."""
    e = e2e
    _served_names_free(
        e, {"support-bot", "summarizer", "sql-helper", "sql-helper-xl", "my-adapter"}
    )
    e.s3.create_bucket(demo.BUCKET)
    for prefix, name in demo.UPLOADS.items():
        e.s3.upload_folder(demo.BUCKET, prefix, Path(artifacts.adapter(name).path))
    docs: list[dict[str, Any]] = []
    for path in sorted(demo.EXAMPLES.glob("*.yaml")):
        text = path.read_text().replace(demo.PLACEHOLDER_ENDPOINT, e.s3.endpoint)
        docs += [d for d in yaml.safe_load_all(text) if d]
    namespaces = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    try:
        e.apply(*[d for d in docs if d["kind"] == "Namespace"])
        e.apply(e.s3_secret("s3-credentials", namespace="ml-platform"))
        e.apply(*[d for d in docs if d["kind"] != "Namespace"])
        for doc in docs:
            if doc["kind"] == "LoraAdapter":
                meta = doc["metadata"]
                e.wait(
                    f"{meta['namespace']}/{meta['name']} to settle",
                    lambda m=meta: _settled(e, m["name"], m["namespace"]),
                    timeout=120,
                )
        yield {"<gateway-port>": str(urlsplit(e.world["gateway"]).port)}
    finally:
        _delete_namespaces(e, namespaces)


def _team_namespace(e: E2E, stem: str) -> str:
    name = e.new_namespace(stem)
    e.wait(
        f"ServiceAccount default in {name}",
        lambda: e.cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
    )
    return name


# -- the pages, end to end ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quickstart(e2e: E2E, demo_world: dict[str, str], lorapack_bin: Path) -> None:
    Runner(e2e, demo_world, lorapack_bin).run_page("quickstart.md")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_teams_guide(e2e: E2E, artifacts: ArtifactIndex, lorapack_bin: Path) -> None:
    e = e2e
    _served_names_free(e, {"support-bot"})
    team = _team_namespace(e, "team")
    e.apply(
        e.pool(
            "shared",
            replicas={"min": 1, "max": 2},
            adapters={"allowedNamespaces": [team], "maxPerReplica": 4},
        )
    )
    # The team's files: two versions of its adapter, in the bucket the "reader" identity (the
    # team's read-only keys) may read.
    bucket = "public"
    e.s3.create_bucket(bucket)
    for version, name in (("v1", "r8"), ("v2", "r16")):
        e.s3.upload_folder(bucket, f"support-bot/{version}/", Path(artifacts.adapter(name).path))
    _reason(e, "shared", e.namespace, "AsExpected", kind="bmp")
    values = {
        "<team-namespace>": team,
        "<pool-namespace>": e.namespace,
        "<pool>": "shared",
        "<base-model>": BASE_MODEL,
        "<bucket>": bucket,
        "<access-key>": e.s3.reader_access_key,
        "<secret-key>": e.s3.reader_secret_key,
    }
    Runner(e, values, lorapack_bin).run_page("teams.md")
    # The guide ends by deleting the adapter: nothing of it is left on any pod.
    for pod in e.cluster.get_json("pods", "-n", e.namespace, "-l", "lorapack.io/pool=shared")[
        "items"
    ]:
        observed = pod["metadata"].get("annotations", {}).get("lorapack.io/observed", "")
        assert '"servedName":"support-bot"' not in observed.replace(" ", "")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_platform_guide(e2e: E2E, artifacts: ArtifactIndex, lorapack_bin: Path) -> None:
    e = e2e
    team = _team_namespace(e, "team")
    values = {
        "<pool-namespace>": e.namespace,
        "<team-namespace>": team,
        "<s3-endpoint>": e.s3.endpoint,
        "<access-key>": e.s3.access_key,
        "<secret-key>": e.s3.secret_key,
        # The page stages the base model its pool names (the tiny test model stands in).
        "<model-folder>": str(artifacts.model.path),
    }
    Runner(e, values, lorapack_bin).run_page("platform.md")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_troubleshooting(e2e: E2E, lorapack_bin: Path) -> None:
    e = e2e
    names = {
        "support-bot",
        "support-bot-xl",
        "llama31-bot",
        "faq-bot",
        "typo-bot",
        "secret-bot",
        "denied-bot",
        "broken-bot",
        "fancy-bot",
        "offline-bot",
    }
    _served_names_free(e, names)
    team = _team_namespace(e, "team")
    other = _team_namespace(e, "other")
    e.apply(e.pool("shared", adapters={"allowedNamespaces": [team]}))
    e.apply(e.adapter("support-bot", "r8", namespace=team))
    e.wait("support-bot Ready", lambda: e.ready("support-bot", team), timeout=120)
    # One adapter per problem the page explains (support-bot-2 comes after support-bot, so the
    # first keeps the served name).
    wrong_keys = e.s3_secret("wrong-keys", namespace=team)
    wrong_keys["data"]["AWS_ACCESS_KEY_ID"] = base64.b64encode(b"nobody").decode()
    e.apply(wrong_keys)

    def own_secret(body: dict[str, Any], secret: str) -> dict[str, Any]:
        body["spec"]["source"]["s3"]["credentialsSecretRef"] = {"name": secret}
        return body

    e.apply(
        e.adapter("support-bot-xl", "r128", namespace=team),
        e.adapter("support-bot-2", "r16", namespace=team, servedName="support-bot"),
        e.adapter("llama31-bot", "r8", namespace=team, baseModel="meta-llama/Llama-3.1-8B"),
        e.adapter("faq-bot", "r8", namespace=other),
        e.adapter("typo-bot", "typo", namespace=team),
        own_secret(e.adapter("secret-bot", "r8", namespace=team), "missing-secret"),
        own_secret(e.adapter("denied-bot", "r8", namespace=team), "wrong-keys"),
        # Weights for a module its own config does not list: refused by pre-flight, no pod.
        e.adapter("fancy-bot", "unexpected-module", namespace=team),
    )
    # Files lorapack accepts but the engine refuses (on a GPU: vLLM out of memory, an
    # unsupported kernel): the test world's engines are told to refuse broken-bot.
    for key in httpx.get(f"{e.world['admin']}/pods", timeout=10).json():
        if key.split("/", 1)[0] == e.namespace:
            httpx.post(
                f"{e.world['admin']}/pods/{key}/engine-faults",
                json={"refuse_names": ["broken-bot"]},
                timeout=30,
            ).raise_for_status()
    e.apply(e.adapter("broken-bot", "r8", namespace=team))
    # An S3 endpoint where nothing listens: retried without a status (no condition to wait for).
    # It names the team's own keys: the pool's are used only at the pool's endpoint.
    e.apply(e.s3_secret("team-keys", namespace=team))
    offline = own_secret(e.adapter("offline-bot", "r8", namespace=team), "team-keys")
    offline["spec"]["source"]["s3"]["endpoint"] = "http://127.0.0.1:1"
    e.apply(offline)
    for name, reason in (
        ("support-bot-xl", "RankTooLarge"),
        ("support-bot-2", "ServedNameConflict"),
        ("llama31-bot", "NoPoolForBaseModel"),
        ("typo-bot", "ArtifactNotFound"),
        ("secret-bot", "CredentialsNotFound"),
        ("denied-bot", "AccessDenied"),
        ("broken-bot", "LoadFailed"),
        ("fancy-bot", "UnsupportedAdapter"),
    ):
        _reason(e, name, team, reason)
    _reason(e, "faq-bot", other, "NamespaceNotAllowed")
    # A pool whose pods ask for more GPUs than any node has.
    too_wide = e.pool("too-wide")
    too_wide["spec"]["gpu"]["count"] = 2
    e.apply(too_wide)
    _reason(e, "too-wide", e.namespace, "Unschedulable", kind="bmp")
    # An engine that restarted: the agent loads everything again from its cache.
    pod = "shared-0"
    e.admin(f"/pods/{e.namespace}/{pod}/restart-engine").raise_for_status()

    def reloaded() -> bool:
        annotations = e.get("pod", pod)["metadata"].get("annotations", {})
        observed = json.loads(annotations.get("lorapack.io/observed", "{}"))
        states = {a["servedName"]: a["state"] for a in observed.get("adapters", [])}
        return observed.get("engineRestarts") == 1 and states.get("support-bot") == "Loaded"

    e.wait("the agent to report the engine restart and reload support-bot", reloaded, timeout=90)
    e.wait("support-bot Ready again", lambda: e.ready("support-bot", team), timeout=60)
    # The restart makes the agent try broken-bot again too: wait until it failed again.
    _reason(e, "broken-bot", team, "LoadFailed")
    values = {
        "<team-namespace>": team,
        "<other-namespace>": other,
        "<pool-namespace>": e.namespace,
        "<pool>": "shared",
        "<pod>": pod,
        "<base-model>": BASE_MODEL,
        "<bucket>": e.bucket,
    }
    Runner(e, values, lorapack_bin).run_page("troubleshooting.md")
