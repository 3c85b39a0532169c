"""Helpers of the documentation tests: reading the repository's Markdown files and the examples marked in them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(```|~~~)")


def markdown_files() -> list[Path]:
    """README.md, results/README.md and every page under docs/."""
    return [ROOT / "README.md", ROOT / "results" / "README.md", *sorted(DOCS.glob("*.md"))]


def strip_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (links inside code are not links)."""
    out, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
            out.append("")
            continue
        out.append("" if in_fence else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def headings(text: str) -> list[str]:
    """The text of every Markdown heading outside code blocks (``#`` marks and backticks removed)."""
    found, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            found.append(m.group(1).replace("`", ""))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation except ``-`` and ``_`` removed, spaces -> ``-``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a Markdown file (repeated headings get ``-1``, ``-2``, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for h in headings(text):
        base = slug(h)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def example(page: str, name: str) -> str:
    """The fenced code block right after ``<!-- example: name -->`` in ``docs/<page>``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    marker = f"<!-- example: {name} -->"
    assert text.count(marker) == 1, f"docs/{page}: expected exactly one {marker}"
    lines = text.split(marker, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip())
    assert FENCE.match(lines[start].strip()), f"docs/{page}: {marker} is not followed by a code block"
    end = next(i for i in range(start + 1, len(lines)) if FENCE.match(lines[i].strip()))
    return "\n".join(lines[start + 1:end]) + "\n"


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section (up to the next heading of the same or a higher level)."""
    m = re.search(rf"^(#+) {re.escape(title)}\s*$", text, flags=re.MULTILINE)
    assert m, f"no section {title!r}"
    level = len(m.group(1))
    rest = text[m.end():]
    nxt = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    return rest[:nxt.start()] if nxt else rest
