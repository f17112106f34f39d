"""Hooks a project implements in its conftest.py to change how pytest-llmperf sees hardware or decides.

Each has a default implementation in :mod:`pytest_llmperf.plugin`; ``firstresult`` hooks stop at the first
non-None answer, so a conftest implementation overrides the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_llmperf.engine.topology import Topology
    from pytest_llmperf.stats.verdict import Verdict

__all__ = ["pytest_llmperf_detect_topology", "pytest_llmperf_decide", "pytest_llmperf_update_fingerprint"]


@pytest.hookspec(firstresult=True)
def pytest_llmperf_detect_topology(config: pytest.Config) -> Topology | None:
    """Return the machine's GPU topology (GPUs and the link between each pair).

    The default tries, in order: the ``LLMPERF_TOPOLOGY`` environment variable, NVML, ``nvidia-smi topo -m``.
    Example (conftest.py) — pretend to be two RTX 3090s over PCIe::

        from pytest_llmperf.engine.topology import parse_topology_short_form
        def pytest_llmperf_detect_topology(config):
            return parse_topology_short_form("2xRTX3090:pcie")
    """


@pytest.hookspec(firstresult=True)
def pytest_llmperf_decide(test_id: str, metric: str, baseline: Sequence[float], candidate: Sequence[float], direction: str,
                          tolerance: float, alpha: float, baseline_sessions: Sequence[str] | None, session_cv: float,
                          kind: str, label: str, pass_alpha: float | None) -> Verdict | None:
    """Decide one regression check from per-run values (one value per run; ``baseline_sessions`` names the
    session of each baseline run, ``kind`` is ``"regression"`` for the rolling window or ``"anchor"`` for the
    pinned reference named ``label``; ``pass_alpha`` the level of the PASS bound). An implementation may take
    any subset of these arguments.

    The default compares the candidate session with the baseline sessions on the log scale: FAIL when the
    lower confidence bound of the worsening lies beyond the tolerance, PASS when the upper bound lies inside
    (see docs/regression.md).
    Example (conftest.py) — a plain ratio gate for one metric, default for the rest::

        def pytest_llmperf_decide(test_id, metric, baseline, candidate, direction, tolerance, alpha):
            if metric != "output_throughput_tok_s":
                return None
            ...
    """


def pytest_llmperf_update_fingerprint(config: pytest.Config, fingerprint: dict[str, Any]) -> None:
    """Add to or change the fingerprint dict (e.g. a runner label) before baselines are looked up.

    Changed fields and added keys are kept: added keys become part of the baseline folder name and a baseline
    recorded with another value is a MISMATCH. Example: ``fingerprint["runner"] = os.environ.get("RUNNER_NAME", "local")``.
    """
