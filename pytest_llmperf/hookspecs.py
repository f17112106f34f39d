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
    from pytest_llmperf.stats.regression import Verdict

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
                          tolerance: float, alpha: float) -> Verdict | None:
    """Decide one regression check from per-run values (one value per run, K per side).

    The default is a one-sided Welch t-test on log values with a tolerance (see docs/regression.md).
    Example (conftest.py) — a plain ratio gate for one metric, default for the rest::

        def pytest_llmperf_decide(test_id, metric, baseline, candidate, direction, tolerance, alpha):
            if metric != "output_throughput_tok_s":
                return None
            ...
    """


def pytest_llmperf_update_fingerprint(config: pytest.Config, fingerprint: dict[str, Any]) -> None:
    """Add to or change the fingerprint dict (e.g. a runner label) before baselines are looked up.

    Example: ``fingerprint["runner"] = os.environ.get("RUNNER_NAME", "local")``.
    """
