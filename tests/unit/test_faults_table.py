"""docs/faults.md's fault table and the tests that inject each fault stay in step.

Every row names the test that injects its fault (``path::function`` or ``path::function[id]``); that test must
exist. Every fault test (tests/unit/test_faults_engine.py, tests/unit/test_workflow_security.py and the
"faults (issue 14)" section of tests/unit/test_client.py) must have a row.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "faults.md"
COLUMNS = ["fault injected", "what the user sees", "time to fail", "processes left", "data kept", "test"]
_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(\[[\w-]+\])?`")


def _rows() -> list[list[str]]:
    lines = DOC.read_text().splitlines()
    start = lines.index("## The fault table")
    table = [ln for ln in lines[start:] if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == COLUMNS
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in table[2:]]


def _fault_tests() -> set[tuple[str, str]]:
    out = set()
    for rel in ("tests/unit/test_faults_engine.py", "tests/unit/test_workflow_security.py"):
        out |= {(rel, name) for name in re.findall(r"^def (test_\w+)", (ROOT / rel).read_text(), re.M)}
    client = (ROOT / "tests/unit/test_client.py").read_text()
    section = client[client.index("# --- faults (issue 14)"):]
    out |= {("tests/unit/test_client.py", n) for n in re.findall(r"^def (test_\w+)", section, re.M)
            if n != "test_deadlines_are_validated"}
    return out


def test_every_row_is_complete_and_names_an_existing_test() -> None:
    rows = _rows()
    assert len(rows) >= 20
    for row in rows:
        assert len(row) == len(COLUMNS) and all(row), row
        refs = _REF.findall(row[-1])
        if not refs:
            assert row[-1] in ("same test (`omit_done`)", "same test (`truncate_after_tokens` + `omit_done`)"), \
                f"row names no test: {row}"
            continue
        for path, name, param in refs:
            source = (ROOT / path).read_text()
            assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} does not exist"
            if param:
                assert f'"{param[1:-1]}"' in source, f"{path}::{name}{param}: no such parameter"


def test_every_fault_test_has_a_row() -> None:
    named = {(path, name) for row in _rows() for path, name, _ in _REF.findall(row[-1])}
    missing = _fault_tests() - named
    assert not missing, f"fault tests without a row in docs/faults.md: {sorted(missing)}"
