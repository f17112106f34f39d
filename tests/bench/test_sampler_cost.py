"""CPU cost of one sampler iteration (2 GPUs, replayed NVML) and the rate achieved over ~1 s.

Nothing here asserts timing: the figures go to pytest-benchmark's stats and ``extra_info``.
Run: ``python -m pytest tests/bench/test_sampler_cost.py -p no:cacheprovider --benchmark-only``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pytest_llmperf.telemetry.sampler import NvmlSampler, PowerTrace
from pytest_llmperf.telemetry.selfcheck import ReplayNvml

TRACE = Path(__file__).resolve().parents[1] / "data" / "nvml_h200x2_pp2_nop2p_eager_c32.csv"


def test_one_sampling_iteration_cost(benchmark) -> None:
    fake = ReplayNvml(PowerTrace.from_csv(TRACE))
    sampler = NvmlSampler([0, 1], rate_hz=100, nvml=fake)
    sampler.open()
    benchmark(sampler.sample_once)
    trace = sampler.stop()
    benchmark.extra_info["gpus"] = 2
    benchmark.extra_info["nvml_calls_per_iteration"] = fake.calls / max(1, sampler.iterations)
    assert len(trace) == 2 * sampler.iterations


def test_achieved_rate_over_one_second(benchmark) -> None:
    fake = ReplayNvml(PowerTrace.from_csv(TRACE))

    def run_one_second() -> tuple[PowerTrace, float, float]:
        sampler = NvmlSampler([0, 1], rate_hz=100, nvml=fake)
        cpu0, wall0 = time.process_time(), time.monotonic()
        with sampler:
            threading.Event().wait(1.0)
        return sampler.trace, time.process_time() - cpu0, time.monotonic() - wall0

    trace, cpu_s, wall_s = benchmark.pedantic(run_one_second, rounds=1, iterations=1)
    per_gpu = len(trace.for_gpu(0)["t_unix_s"])
    benchmark.extra_info["asked_rate_hz"] = 100
    benchmark.extra_info["achieved_rate_hz"] = per_gpu / wall_s
    benchmark.extra_info["process_cpu_s_per_s"] = cpu_s / wall_s
    assert per_gpu >= 2 and trace.gpus == (0, 1)
