"""Lint and types over the package: ruff (pytest, docstring and type-checking rule sets, plus pyflakes) and mypy.

Findings in files whose owners have not cleaned them yet are listed in ``KNOWN`` (file -> the rule codes
allowed there, with their count); anything beyond that fails (a listed finding that has gone only shrinks the
debt: take it off the list). Skips with the reason when ruff or mypy is not installed (``pip install -e .[dev]``).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
RUFF_RULES = ["--select", "PT,D,TC,F",
              # D1xx: missing docstrings are judged in review; D2xx/D4xx below contradict the project's docstring
              # style (summary and closing quotes may share lines; "vLLM" starts lowercase)
              "--ignore", "D1,D200,D202,D203,D205,D209,D212,D213,D301,D400,D401,D403,D413,D415,TC003"]
#: file -> Counter of rule codes (ruff) or "mypy" still allowed there
KNOWN: dict[str, dict[str, int]] = {}


def tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e .[dev])")
    return path


def compare(found: dict[str, collections.Counter[str]], kind: str) -> list[str]:
    problems = []
    for path in sorted(set(found) | set(KNOWN)):
        allowed = {k: v for k, v in KNOWN.get(path, {}).items() if (k == "mypy") == (kind == "mypy")}
        got = dict(found.get(path, collections.Counter()))
        if any(n > allowed.get(code, 0) for code, n in got.items()):
            problems.append(f"{path}: found {got or 'nothing'}, allowed {allowed or 'nothing'}")
    return problems


def test_ruff() -> None:
    out = subprocess.run([tool("ruff"), "check", "pytest_llmperf", *RUFF_RULES, "--line-length", "120",
                          "--target-version", "py310", "--output-format", "concise", "--no-cache"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in out.stdout.splitlines():
        m = re.match(r"^(\S+?):\d+:\d+: ([A-Z]+\d+) ", line)
        if m:
            found[m.group(1)][m.group(2)] += 1
    assert out.returncode in (0, 1), out.stderr
    problems = compare(found, "ruff")
    assert not problems, "\n".join(problems) + "\n" + out.stdout


def test_mypy() -> None:
    out = subprocess.run([tool("mypy"), "pytest_llmperf", "--ignore-missing-imports", "--python-version", "3.11",
                          "--no-error-summary", "--hide-error-context"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in out.stdout.splitlines():
        m = re.match(r"^(\S+?\.py):\d+: error: ", line)
        if m:
            found[m.group(1)]["mypy"] += 1
    problems = compare(found, "mypy")
    assert not problems, "\n".join(problems) + "\n" + out.stdout
