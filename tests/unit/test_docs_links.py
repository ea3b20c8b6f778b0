"""Every relative link in README.md and docs/ points at a file that exists (and, for a link into a
Markdown file with a `#fragment`, at one of that file's headings).

Links inside fenced code blocks and inline code are not links (docs/api.md shows regular
expressions such as `[a-z0-9](/.*)`), so both are blanked out before links are read. Web links
(http, https, mailto) are not followed: this test needs no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
# A code span closes on a backtick run of the same length, on the same line (table rows such as
# docs/api.md's "default ``" hold unpaired runs).
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)")
# [text](target) and ![alt](target), with an optional "title" after the target.
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_EXTERNAL = ("http://", "https://", "mailto:")


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}:{self.target}"


def _prose(text: str) -> str:
    """The text with code blocks and code spans replaced by spaces (line numbers kept)."""

    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match.group(0))

    return _INLINE_CODE.sub(blank, _FENCE.sub(blank, text))


def _links(page: Path) -> list[Link]:
    text = _prose(page.read_text(encoding="utf-8"))
    return [
        Link(page, text.count("\n", 0, match.start()) + 1, match.group(1))
        for match in _LINK.finditer(text)
        if not match.group(1).startswith(_EXTERNAL)
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, code and punctuation dropped, spaces to '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Anchors of every heading of a Markdown page (duplicates get -1, -2, ... as on GitHub)."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for match in _HEADING.finditer(text):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


LINKS = [link for page in PAGES for link in _links(page)]


@pytest.mark.parametrize(
    ("heading", "want"),
    [
        pytest.param("Flux", "flux", id="plain"),
        pytest.param("`lorapack plan` before merging", "lorapack-plan-before-merging", id="code"),
        pytest.param(
            "Symptom: adapter stuck in Pending", "symptom-adapter-stuck-in-pending", id="colon"
        ),
        pytest.param("GPUs, nodes & taints", "gpus-nodes--taints", id="ampersand"),
    ],
)
def test_slug_follows_github(heading: str, want: str) -> None:
    assert slug(heading) == want


def test_links_are_found_outside_code_only(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        'See [a](a.md) and ![img](pics/x.png "title").\n'
        "`[not](a link)` and\n```\n[nor](this.md)\n```\n[web](https://example.com)\n",
        encoding="utf-8",
    )
    assert [(link.line, link.target) for link in _links(page)] == [(1, "a.md"), (1, "pics/x.png")]


def test_the_pages_have_links() -> None:
    # The README's Documentation section links every page; a parser that finds nothing must fail.
    readme = {link.target for link in LINKS if link.page.name == "README.md"}
    assert {"docs/quickstart.md", "docs/teams.md", "docs/platform.md"} <= readme


def test_readme_links_every_doc() -> None:
    readme = {link.target.partition("#")[0] for link in LINKS if link.page == ROOT / "README.md"}
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages <= readme, f"README.md's Documentation section misses {sorted(pages - readme)}"


@pytest.mark.parametrize("link", LINKS, ids=[link.id for link in LINKS])
def test_relative_link_points_at_an_existing_file(link: Link) -> None:
    path, _, fragment = link.target.partition("#")
    target = (link.page.parent / path).resolve() if path else link.page
    assert target.exists(), f"{link.id}: {target} does not exist"
    if fragment and target.suffix == ".md":
        assert fragment in anchors(target), (
            f"{link.id}: {target.relative_to(ROOT)} has no heading with anchor #{fragment}"
        )
