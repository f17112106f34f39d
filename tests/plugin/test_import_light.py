"""Importing the plugin module (what pytest does for every session) must not import heavy packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("vllm", "torch", "pynvml", "aiohttp", "scipy", "matplotlib")


def imported_modules(statement: str) -> set[str]:
    """Top-level package names imported by ``statement`` in a fresh interpreter (from ``-X importtime``)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True,
                          check=True)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("module", ["pytest_llmperf.plugin", "pytest_llmperf", "pytest_llmperf.session"])
def test_plugin_import_is_light(module: str) -> None:
    names = imported_modules(f"import {module}")
    assert "pytest_llmperf" in names  # the parse worked
    assert not names & set(HEAVY), f"import {module} pulled in {sorted(names & set(HEAVY))}"


def test_detector_sees_a_heavy_import() -> None:
    assert "scipy" in imported_modules("import scipy")
