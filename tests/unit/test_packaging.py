"""pyproject.toml declares what the package imports; extras hold what only some users need; one version."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pytest_llmperf"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _imports() -> dict[str, list[tuple[str, bool]]]:
    """Top-level third-party module -> [(file:line, imported at module level outside try/except)]."""
    out: dict[str, list[tuple[str, bool]]] = {}

    def visit(node: ast.AST, path: Path, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            guarded = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Try, ast.If))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                names = ([a.name for a in child.names] if isinstance(child, ast.Import)
                         else [child.module] if child.level == 0 and child.module else [])
                for name in names:
                    mod = name.split(".")[0]
                    if mod not in sys.stdlib_module_names and mod != "pytest_llmperf":
                        out.setdefault(mod, []).append((f"{path.relative_to(ROOT)}:{child.lineno}", top))
            visit(child, path, top and not guarded)

    for path in sorted(PACKAGE.rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)), path, True)
    return out


def _distributions(module: str) -> set[str]:
    """The installed distributions providing ``module``; its own name when none is installed here (tomli on
    Python 3.11+, imported only on older ones)."""
    known = importlib.metadata.packages_distributions().get(module) or [module]
    return {d.lower().replace("_", "-") for d in known}


def test_declared_dependencies_cover_the_imports() -> None:
    project = _project()
    base = {_name(r) for r in project["dependencies"]}
    extras = {extra: {_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    anywhere = base.union(*extras.values())
    problems = []
    for module, sites in sorted(_imports().items()):
        dists = _distributions(module)
        if not dists & anywhere:
            problems.append(f"{module} ({', '.join(sorted(dists))}) is imported at {sites[0][0]} but not declared")
        elif not dists & base:
            eager = [site for site, top in sites if top]
            if eager:
                problems.append(f"{module} comes from an extra but is imported at module level at {eager[0]}")
    assert not problems, "\n".join(problems)


def test_tomli_for_old_pythons_only() -> None:
    tomli = [r for r in _project()["dependencies"] if _name(r) == "tomli"]
    assert len(tomli) == 1 and re.search(r"python_version\s*<\s*['\"]3\.11['\"]", tomli[0])


def test_optional_features_are_extras() -> None:
    project = _project()
    base = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert "matplotlib" not in base and "matplotlib" in {_name(r) for r in extras["plots"]}
    assert "asv" in {_name(r) for r in extras["asv"]}
    # the main job (scripts/setup.sh) installs the extras its reports and the tests use
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for extra in ("plots", "asv", "dev"):
        assert re.search(rf'EXTRA="cpu,[a-z,]*\b{extra}\b', setup), extra


def test_version_has_one_source() -> None:
    from pytest_llmperf import __version__
    from pytest_llmperf.cli import build_parser

    project = _project()
    assert "version" not in project and "version" in project["dynamic"]
    attr = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "pytest_llmperf.__version__"
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", __version__)


def test_reports_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pytest_llmperf.report.summary import write_reports

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plots extra were not installed
    results = json.loads((Path(__file__).parent / "fixtures" / "cpu_amd_results.json").read_text())
    files = write_reports(results, tmp_path, env={})
    assert files.plots == {} and not list(tmp_path.glob("*.png"))
    assert "pip install 'pytest-llmperf[plots]'" in files.plot_notes["all plots"]
    assert "pytest-llmperf[plots]" in files.summary.read_text()
