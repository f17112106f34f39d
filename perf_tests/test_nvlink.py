"""The same sweep on NVLink-connected GPUs, without emulation: where TP usually wins latency.

Skipped (with the reason) unless the engine's GPUs are NVLink-connected. Run: ``pytest perf_tests -m nvlink``.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.nvlink, pytest.mark.gpu]


@pytest.mark.llmperf(slo={"max_failed": 0})
def test_serving_nvlink(llmperf_bench):
    """Throughput, TTFT p95, TPOT and power of one mode at one load point, GPUs joined by NVLink."""
    llmperf_bench.measure_and_gate()
