"""The PCIe study as performance tests: single GPU vs tensor parallel vs pipeline parallel.

The seed study (2 x RTX 3090 over PCIe vs 1 x RTX A6000, vLLM, a 14B model) found that TP over PCIe loses
badly (an all-reduce at every layer), that PP keeps TTFT close to a single card up to 16 concurrent requests
and beats it on throughput, and that PP draws power unevenly ("bubbles"). Each test here is one point of that
sweep — mode x concurrency x prompt length — measured K times on a real vLLM engine and gated by the SLOs in
``[tool.llmperf.slo]`` and by the regression check against ``baselines/``. On NVLink machines the suite runs
with PCIe emulation (NCCL P2P off, custom all-reduce off); on machines without GPUs it runs on vLLM's CPU
backend with a tiny model. The end-of-run report compares the modes side by side.

Run: ``pytest perf_tests -m pcie``; a subset: ``-m "pcie and pp"``, ``--llmperf-concurrency 1,8``.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.pcie


@pytest.mark.llmperf(slo={"max_failed": 0})
def test_serving(llmperf_bench):
    """Throughput, TTFT p95, TPOT and (with NVML) power stability of one mode at one load point."""
    llmperf_bench.measure_and_gate()
