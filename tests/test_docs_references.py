"""The repository stands on its own: every reference to a heading of docs/architecture.md (the file
name, `#`, the heading's anchor) in code and docs names a heading that exists, and nothing sends a reader
to a design brief or a tracker issue the repo lacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
SUFFIXES = {".py", ".md", ".js", ".mjs", ".html", ".css", ".toml", ".txt", ".cfg", ".ini", ".json", ".sh"}
REFERENCE = re.compile(r"docs/architecture\.md#([\w-]*)")
IN_DOC_LINK = re.compile(r"\]\(#([^)\s]*)\)")
# Built from parts so that this file does not match itself.
BRIEF = "DESIGN " + "\u00a7"
# "issue N" of this project's tracker; an external project's issue ("bleak issue 618") is a fine citation.
TRACKER_ISSUE = re.compile(r"(?<!bleak )\bissue \d+\b")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but `-` and `_`), spaces to `-`."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor, with GitHub's `-1`, `-2` suffixes for repeated ones; fenced code skipped."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6} +(.+?) *#* *$", line)
        if fenced or match is None:
            continue
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def project_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file():
            continue
        if path.suffix in SUFFIXES or path.name in {"Makefile"}:
            files.append(path)
    return files


def test_slug_follows_github() -> None:
    assert slug("The gate") == "the-gate"
    assert slug("Where things live") == "where-things-live"
    assert slug("Samples and commits") == "samples-and-commits"
    assert slug("`ridesync serve`: the host, and its lanes") == "ridesync-serve-the-host-and-its-lanes"
    assert anchors("# A\n## B\n```\n# not a heading\n```\n## B\n") == {"a", "b", "b-1"}


def test_architecture_exists_and_is_linked_from_the_readme() -> None:
    assert ARCHITECTURE.is_file()
    readme = (ROOT / "README.md").read_text()
    architecture_section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    assert "docs/architecture.md" in architecture_section


def test_every_architecture_reference_names_a_heading() -> None:
    known = anchors(ARCHITECTURE.read_text())
    references = 0
    broken = []
    for path in project_files():
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for anchor in REFERENCE.findall(line):
                references += 1
                if anchor not in known:
                    broken.append(f"{path.relative_to(ROOT)}:{number}: #{anchor}")
    assert broken == [], f"no such heading in docs/architecture.md (headings: {sorted(known)})"
    assert references > 0


def test_links_inside_the_architecture_document_resolve() -> None:
    text = ARCHITECTURE.read_text()
    known = anchors(text)
    assert sorted(set(IN_DOC_LINK.findall(text)) - known) == []


@pytest.mark.parametrize("pattern", [BRIEF, "tracker issue"])
def test_no_reference_to_documents_outside_the_repo(pattern: str) -> None:
    offenders = []
    for path in project_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            hit = BRIEF in line if pattern == BRIEF else TRACKER_ISSUE.search(line) is not None
            if hit:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert offenders == []
