"""The documentation matches the repository: links, cited sections, the API list, the module map, the results block.

Each check reads the Markdown files and the code they describe, so a renamed module, a new export, a moved section
or a refreshed results table without the matching documentation change fails here.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from docs_util import DOCS, ROOT, anchors, headings, markdown_files, section, strip_code

import structure_align

SRC = ROOT / "src" / "structure_align"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _repo_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files, without the acquired sources (what a clone would hold)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode().split("\0")
    return [ROOT / f for f in out if f and not f.startswith("resources/") and (ROOT / f).is_file()]


def test_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= 150, f"README.md has {n} lines (at most 150; details belong under docs/)"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link points to an existing file, and an anchor to a heading of the target page."""
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(strip_code(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_nothing_points_outside_the_repository() -> None:
    """The background documents of the development setup are not part of a clone: no file may cite them."""
    needles = ("paper" + "-spec", "shared" + "/docs", "../" + "shared")
    hits = [f"{f.relative_to(ROOT)}: {n}" for f in _repo_files() if f.suffix not in (".png", ".pdf")
            for n in needles if n in f.read_text(encoding="utf-8", errors="replace")]
    assert not hits, hits


def _citations() -> list[tuple[str, str, str]]:
    """``(citing file, docs page, section)`` for every ``docs/<page>.md "<Section>"`` in code, tests and docs."""
    cite = re.compile(r'docs/([\w.-]+\.md) "([^"]+)"')
    found = []
    for f in _repo_files():
        if f.suffix in (".py", ".smk", ".md", ".yaml", ".toml") or f.name in ("Snakefile", "Makefile"):
            for page, title in cite.findall(f.read_text(encoding="utf-8")):
                found.append((str(f.relative_to(ROOT)), page, title))
    return found


def test_cited_sections_exist() -> None:
    citations = _citations()
    assert len(citations) >= 10  # the code cites docs sections in many places; an empty list means a broken regex
    missing = []
    for where, page, title in citations:
        path = DOCS / page
        if not path.is_file():
            missing.append(f"{where}: docs/{page} does not exist")
        elif not any(h == title or h.startswith(title + " ") for h in headings(path.read_text(encoding="utf-8"))):
            missing.append(f"{where}: docs/{page} has no section {title!r}")
    assert not missing, missing


def test_cited_method_sections_exist() -> None:
    """Every ``method.md §N`` (docstrings, tests, docs) names a section that docs/method.md has."""
    sections = {m for h in headings((DOCS / "method.md").read_text(encoding="utf-8"))
                for m in re.findall(r"^§(\d+(?:\.\d+)?)", h)}
    cite = re.compile(r"method\.md(?:\]\([^)]*\))?\s*§(\d+(?:\.\d+)?)")
    missing = sorted({f"{f.relative_to(ROOT)}: §{n}" for f in _repo_files() if f.suffix in (".py", ".md", ".smk")
                      for n in cite.findall(f.read_text(encoding="utf-8")) if n not in sections})
    assert sections and not missing, missing


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in DOCS.glob("*.md") if f"](docs/{p.name})" not in readme]
    assert not unlinked, unlinked


def test_api_list_is_the_exported_names() -> None:
    api = section((DOCS / "library.md").read_text(encoding="utf-8"), "API")
    rows = [line.split("|") for line in api.splitlines() if line.startswith("| ") and not line.startswith("| part")]
    listed = [name for row in rows for name in re.findall(r"`(\w+)`", row[3])]
    assert len(listed) == len(set(listed)), "a name is listed twice"
    assert set(listed) == set(structure_align.__all__), (
        f"missing from docs/library.md: {sorted(set(structure_align.__all__) - set(listed))}; "
        f"not exported: {sorted(set(listed) - set(structure_align.__all__))}")
    for row in rows:  # the module column names where the listed names are defined
        modules = set(re.findall(r"`(\w+)`", row[2]))
        for name in re.findall(r"`(\w+)`", row[3]):
            assert structure_align._EXPORTS[name] in modules, (name, modules)


def test_module_map_lists_every_module() -> None:
    table = section((DOCS / "design.md").read_text(encoding="utf-8"), "Module map")
    listed = {m.group(1) for line in table.splitlines() if (m := re.match(r"^\| `([^`]+)` \|", line))}
    on_disk = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*") if p.suffix in (".py", ".yaml")}
    assert listed == on_disk, f"missing: {sorted(on_disk - listed)}; no such module: {sorted(listed - on_disk)}"


def test_readme_results_blocks_are_the_committed_tables() -> None:
    """Each ``<!-- results: begin <path> -->`` block of the README is a verbatim copy of that generated file."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- results: begin (\S+)[^>]*-->\n(.*?)<!-- results: end -->", readme, flags=re.DOTALL)
    assert blocks, "README.md lacks the results blocks"
    for rel, body in blocks:
        table = (ROOT / rel).read_text(encoding="utf-8")
        assert body.strip() == table.strip(), f"copy {rel} into README.md between its markers"


def test_every_params_block_is_documented() -> None:
    schema = yaml.safe_load((SRC / "params.schema.yaml").read_text(encoding="utf-8"))
    workflow = (DOCS / "workflow.md").read_text(encoding="utf-8")
    missing = [k for k in schema["properties"] if not re.search(rf"`{k}(`|\.|\[)", workflow)]
    assert not missing, missing


def _imports(path: Path) -> set[str]:
    """Package modules imported by ``path`` (module level and inside functions), as dotted names."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1]  # the package a relative import starts from (for __init__.py: its own package)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import registry` imports the submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if (SRC.parent / sub.replace(".", "/")).with_suffix(".py").is_file() else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("structure_align")}
    return {m for m in found if m != ".".join(parts)}


def test_import_graph_has_no_cycles() -> None:
    """The import-graph contract of docs/design.md, counting function-level imports too."""
    modules = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("").parts
        modules[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = path
    # a package's __init__ imports its submodules; a submodule importing its own package is a submodule import
    graph = {m: {t for t in _imports(p) if t in modules and not m.startswith(t + ".")} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
