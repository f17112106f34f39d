"""The layer table of docs/CONTRIBUTING-LAYERS.md, enforced: imports (module level, lazy, TYPE_CHECKING alike,
read with ``ast``) only go to the same or a lower layer, and no two modules import each other in a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "pytest_llmperf"
DOC = Path(__file__).parents[2] / "docs" / "CONTRIBUTING-LAYERS.md"


def layer_table() -> dict[str, int]:
    """``{name: layer}`` from the doc's table rows ``| n | name, name/ ... |`` (a name is a module or a folder)."""
    table: dict[str, int] = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|([^|]+)\|", line)
        if m:
            for name in re.findall(r"`([^`]+)`", m.group(2)):
                table[name.rstrip("/").removesuffix(".py")] = int(m.group(1))
    return table


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``pytest_llmperf`` module ``path`` imports, wherever the import statement is."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pytest_llmperf":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists() or \
                    (PACKAGE.parent / full.replace(".", "/")).is_dir()
                out.add(full if is_module else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "pytest_llmperf")
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """The table entry a module belongs to: its top-level module or folder under the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer() -> None:
    table = layer_table()
    missing = sorted({unit(m) for m in graph()} - set(table))
    assert not missing, f"add these to the layer table of {DOC.name}: {missing}"


def test_imports_never_go_up_a_layer() -> None:
    table = layer_table()
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if target == "pytest_llmperf":  # ``from pytest_llmperf import __version__`` only
                continue
            if table[unit(target)] > table[unit(module)]:
                wrong.append(f"{module} (layer {table[unit(module)]}) imports {target} (layer {table[unit(target)]})")
    assert not wrong, "\n".join(wrong)


def test_root_package_imports_are_modules_or_the_version() -> None:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pytest_llmperf":
                for alias in node.names:
                    is_module = (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                    assert is_module or alias.name == "__version__", \
                        f"{path}: import {alias.name} from its module, not from the package root"


def test_no_import_cycles() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w == "pytest_llmperf":
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in list(g):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module, forbidden", [("pytest_llmperf.finish", "pytest_llmperf.commands"),
                                               ("pytest_llmperf.plugin", "pytest_llmperf.commands"),
                                               ("pytest_llmperf.stats", "pytest_llmperf.storage")])
def test_named_rules(module: str, forbidden: str) -> None:
    bad = [f"{m} -> {t}" for m, ts in graph().items() if m.startswith(module) for t in ts if t.startswith(forbidden)]
    assert not bad, bad
