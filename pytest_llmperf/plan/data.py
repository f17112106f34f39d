"""What the planner reads from session results files: the single-GPU compute times and the measured TP/PP points.

Results files are the session JSON (``pytest --llmperf-results``), plain or gzipped (``.json.gz``, as the study's
files under docs/gpu-results/data). Each test's runs are reduced to the median over runs of each summary metric
(a run is one sample, as in the gate).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_llmperf.plan.model import mode_label
from pytest_llmperf.report.study import link_of, run_values

__all__ = ["Measured", "measured_points", "median_metric", "run_values"]


@dataclass(frozen=True)
class Measured:
    """One engine at one concurrency: medians over its runs (``None`` where a metric is missing)."""

    link: str
    mode: str
    tp: int
    pp: int
    concurrency: int
    input_len: int
    output_len: int
    tpot_ms: float | None
    ttft_ms: float | None
    throughput_tok_s: float | None
    runs: int
    model: str | None
    dtype: str | None
    gpu_model: str | None


def median_metric(test: Mapping[str, Any], metric: str) -> float | None:
    values = run_values(test, metric)
    return statistics.median(values) if values else None


def measured_points(results: Sequence[Mapping[str, Any]]) -> list[Measured]:
    """Every measured test of every results dict, reduced to medians. Replicated (``dp2``) and expert-parallel
    engines are left out: the planner models TP and PP of one model copy, and a DP=2 engine (tp=1, pp=1) would
    otherwise count as a single GPU."""
    out = []
    for res in results:
        fp = res.get("fingerprint") or {}
        for test in res.get("tests") or []:
            engine, wl = test.get("engine") or {}, test.get("workload") or {}
            if not test.get("runs") or int(engine.get("dp") or 1) > 1 or engine.get("expert_parallel"):
                continue
            tp, pp = int(engine.get("tp") or 1), int(engine.get("pp") or 1)
            out.append(Measured(
                link=link_of(test, fp), mode=mode_label(tp, pp), tp=tp, pp=pp,
                concurrency=int(wl.get("concurrency") or 0), input_len=int(wl.get("input_len") or 0),
                output_len=int(wl.get("output_len") or 0), tpot_ms=median_metric(test, "tpot_p50_ms"),
                ttft_ms=median_metric(test, "ttft_p50_ms"),
                throughput_tok_s=median_metric(test, "output_throughput_tok_s"), runs=len(test["runs"]),
                model=engine.get("model"), dtype=engine.get("dtype"), gpu_model=fp.get("gpu_model")))
    return out
