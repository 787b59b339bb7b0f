"""The documents say what is true now, and point only inside the repository.

Every relative link in README.md, docs/*.md, bench/README.md and examples/README.md resolves to a
file or folder of the repository (and an anchor, when given, to a heading of the linked Markdown
file); nothing links outside it (no ``../shared``). History belongs to the git log: no dates, clock
times or commit hashes in these documents. The README stays a user's document: under 350 lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "bench" / "README.md", ROOT / "examples" / "README.md", *(ROOT / "docs").glob("*.md")]
)
README_MAX_LINES = 350

# [text](target) and [text]: target; images too. Code spans are removed first (see _prose).
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:...

DATE = re.compile(r"\b(?:19|20)\d\d-\d\d(?:-\d\d)?\b")
CLOCK = re.compile(r"(?<![\d.:])\d{1,2}:\d\d(?::\d\d)?(?![\d:])")
# A short or full commit hash: 7 to 40 hex digits with a letter and a digit, standing alone (not
# part of an id such as ``req-101da27`` or a pseudonym ``p_...``). Alert ids, 24 hex digits, are
# examples readers run (``modwatch explain ID``), not history.
HEX = re.compile(r"(?<![\w-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w-])")
ALERT_ID_LENGTH = 24
MONTH_DAY = re.compile(r"\b\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* (?:19|20)\d\d\b")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans: links and history live in prose."""
    text = re.sub(r"^(```|~~~).*?^\1\s*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in _strip_fences(markdown).splitlines():
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            heading = re.sub(r"[^\w\- ]", "", match.group(1).replace("`", "").lower())
            anchors.add(heading.replace(" ", "-"))
    return anchors


def _strip_fences(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1\s*$", "", text, flags=re.MULTILINE | re.DOTALL)


def _links(text: str) -> list[str]:
    prose = _prose(text)
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def test_the_documents_exist() -> None:
    names = {_rel(p) for p in DOCUMENTS}
    assert {"README.md", "docs/architecture.md", "docs/threat-model.md", "docs/rules.md"} <= names


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_rel)
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    broken = []
    for target in _links(doc.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc.resolve()
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor} in {_rel(resolved)}")
    assert not broken, f"{_rel(doc)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_rel)
def test_nothing_points_outside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text and "CASE.md" not in text, f"{_rel(doc)} points outside the repository"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_rel)
def test_no_dates_clock_times_or_commit_hashes(doc: Path) -> None:
    found = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        for pattern, what in ((DATE, "date"), (MONTH_DAY, "date"), (CLOCK, "clock time")):
            found += [f"line {number}: {what} {m.group(0)!r}" for m in pattern.finditer(line)]
        found += [
            f"line {number}: commit hash? {m.group(0)!r}"
            for m in HEX.finditer(line)
            if len(m.group(0)) != ALERT_ID_LENGTH
        ]
    assert not found, f"{_rel(doc)}: history belongs to the git log: " + "; ".join(found)


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines: move detail to docs/ (under {README_MAX_LINES})"


# --- the checks themselves ------------------------------------------------------------------------------


def test_the_patterns_find_what_they_are_for() -> None:
    diary = "On 30 Nov 2026 at 18:32 (a228ccf) p99 fell; run of 2026-11-30T19:17:19, checkout 4cb3ca4."
    assert DATE.search(diary) and CLOCK.search(diary) and MONTH_DAY.search(diary)
    assert {m.group(0) for m in HEX.finditer(diary)} == {"a228ccf", "4cb3ca4"}
    fine = "metrics on 127.0.0.1:9464, req-101da27, p_92f81e36c564fcd5, 1,048,576 bytes, 60s, 2.8 s, May 1"
    assert not DATE.search(fine) and not CLOCK.search(fine) and not HEX.search(fine)
    assert not MONTH_DAY.search("the example runs from May 1 to June 6 of 2020")


def test_links_and_anchors_are_parsed() -> None:
    text = "See [a](docs/a.md#x-y) and `[b](not/a/link.md)`.\n\n```\n[c](nor/this.md)\n```\n[d]: e.md\n"
    assert _links(text) == ["docs/a.md#x-y", "e.md"]
    assert _anchors("# Where the time goes\n## `modwatch` settings, in detail\n") == {
        "where-the-time-goes",
        "modwatch-settings-in-detail",
    }
