"""Absolute service-level objectives (MLPerf style): limits on per-run summary metrics, checked per test.

An :class:`SLO` comes from a test's marker or from ``[tool.llmperf.slo]`` in pyproject; every limit
is optional. :func:`check_slo` compares the median over runs of each limited metric with its limit
(``failed`` uses the worst run: a failure anywhere breaks "max_failed"). A limit whose metric was not
measured (no NVML, no successful request) gives SKIPPED with the reason, never PASS. The per-request
limits ``ttft_ms``, ``tpot_ms``, ``e2el_ms`` define goodput (see ``compute_run_metrics``); ``min_slo_attainment``
makes it an SLO (the share of requests meeting them; it needs at least one of them set).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.stats.metrics import GoodputLimits
from pytest_llmperf.stats.verdict import Verdict

__all__ = ["SLO", "check_slo", "SLO_LIMITS"]

#: limit field -> (summary metric, "max" or "min"); ``gpu{i}_power_cv`` means every GPU's CV.
SLO_LIMITS: dict[str, tuple[str, str]] = {
    "ttft_p50_ms": ("ttft_p50_ms", "max"),
    "ttft_p95_ms": ("ttft_p95_ms", "max"),
    "ttft_p99_ms": ("ttft_p99_ms", "max"),
    "tpot_p50_ms": ("tpot_p50_ms", "max"),
    "tpot_p95_ms": ("tpot_p95_ms", "max"),
    "itl_p99_ms": ("itl_p99_ms", "max"),
    "e2el_p95_ms": ("e2el_p95_ms", "max"),
    "min_output_throughput_tok_s": ("output_throughput_tok_s", "min"),
    "min_request_throughput_req_s": ("request_throughput_req_s", "min"),
    "max_failed": ("failed", "max"),
    "max_power_cv": ("gpu{i}_power_cv", "max"),
    "min_slo_attainment": ("slo_attainment", "min"),
    "max_preemptions": ("server_preemptions", "max"),
    "min_max_rate_at_slo_req_s": ("max_rate_at_slo_req_s", "min"),
}
_POWER_CV = re.compile(r"^gpu\d+_power_cv$")


@dataclass(frozen=True)
class SLO:
    """Optional limits; ``None`` means no limit. Units are in the names."""

    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p50_ms: float | None = None
    tpot_p95_ms: float | None = None
    itl_p99_ms: float | None = None
    e2el_p95_ms: float | None = None
    min_output_throughput_tok_s: float | None = None
    min_request_throughput_req_s: float | None = None
    max_failed: int | None = None
    max_power_cv: float | None = None
    #: goodput as an SLO: the minimum fraction (0..1) of requests meeting every per-request limit below
    min_slo_attainment: float | None = None
    #: vLLM's preemptions in a run (server_preemptions, from /metrics); 0 = none allowed
    max_preemptions: int | None = None
    #: the saturation search's answer (``Bench.saturation``) must stay at or above this many req/s
    min_max_rate_at_slo_req_s: float | None = None
    ttft_ms: float | None = None  # per-request goodput limits
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], source: str = "SLO") -> SLO:
        """Build from a marker's kwargs or a pyproject table; ``source`` names it in every error."""
        names = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        for key, value in d.items():
            if key not in names:
                raise UsageError(f"unknown SLO key {key!r} in {source}; known keys: {', '.join(names)}")
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UsageError(f"SLO key {key!r} in {source} must be a non-negative number, got {value!r}")
            if key in ("max_failed", "max_preemptions"):
                if value != int(value):
                    raise UsageError(f"SLO key {key!r} in {source} must be a whole number, got {value!r}")
                value = int(value)
            elif key == "min_slo_attainment" and value > 1:
                raise UsageError(f"SLO key 'min_slo_attainment' in {source} is a fraction of requests in [0, 1], "
                                 f"got {value!r}")
            else:
                value = float(value)
            values[key] = value
        return cls(**values)

    def merged(self, other: SLO | None) -> SLO:
        """A copy with every limit that ``other`` sets taking precedence (e.g. marker over pyproject)."""
        if other is None:
            return self
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(other) if getattr(other, f.name) is not None})

    def goodput(self) -> GoodputLimits:
        """The per-request limits that define goodput (passed to ``compute_run_metrics`` on their own)."""
        return GoodputLimits(ttft_ms=self.ttft_ms, tpot_ms=self.tpot_ms, e2el_ms=self.e2el_ms)

    def limits(self) -> dict[str, float]:
        """The run-level limits that are set (goodput's per-request limits excluded)."""
        return {k: getattr(self, k) for k in SLO_LIMITS if getattr(self, k) is not None}


#: counts where one bad run breaks the limit: judged on the worst run, not the median
_WORST_RUN = ("failed", "server_preemptions")
#: why a limited metric can be missing from every run (else: "the metric was not measured in any run")
_MISSING_WHY = {
    "slo_attainment": "no per-request limit (ttft_ms, tpot_ms or e2el_ms) is set to attain",
    "server_preemptions": "the server's /metrics was not scraped or has no preemption counter "
                          "(--llmperf-server-metrics off, or not a vLLM server)",
    "max_rate_at_slo_req_s": "no saturation search ran (llmperf_bench.saturation()), or no rate met the SLOs",
}


def _one(test_id: str, metric: str, limit: float, bound: str, values: list[float]) -> Verdict:
    value = max(values) if metric in _WORST_RUN else statistics.median(values)
    ok = value <= limit if bound == "max" else value >= limit
    how = "worst" if metric in _WORST_RUN else "median"
    sign = "<=" if bound == "max" else ">="
    broken = ">" if bound == "max" else "<"
    verdict = "PASS" if ok else "FAIL"
    message = (
        f"{verdict} {test_id} {metric} {value:.4g} {sign if ok else broken} limit {limit:.4g} "
        f"(SLO; {how} of {len(values)} run{'s' if len(values) != 1 else ''})"
    )
    return Verdict(
        test_id=test_id, metric=metric, kind="slo", verdict=verdict, baseline_value=float(limit),
        candidate_value=float(value), ratio=float(value / limit) if limit > 0 else None,
        candidate_k=len(values), message=message,
    )  # fmt: skip


def _skip(test_id: str, metric: str, reason: str) -> Verdict:
    return Verdict(test_id=test_id, metric=metric, kind="slo", verdict="SKIPPED",
                   message=f"SKIPPED {test_id} {metric}: {reason}")  # fmt: skip


def check_slo(slo: SLO, test_id: str, runs: Sequence[Mapping[str, float]]) -> list[Verdict]:
    """One verdict per limit set in ``slo`` (per GPU for ``max_power_cv``), judged on the per-run summaries."""
    out: list[Verdict] = []
    for field_name, limit in slo.limits().items():
        metric, bound = SLO_LIMITS[field_name]
        if field_name == "max_power_cv":
            gpu_keys = sorted({k for r in runs for k in r if _POWER_CV.match(k)}, key=lambda k: int(k[3:].split("_")[0]))
            if not gpu_keys:
                out.append(_skip(test_id, metric, "no GPU power was measured (no NVML on this machine?)"))
            for key in gpu_keys:
                vals = [float(r[key]) for r in runs if r.get(key) is not None]
                out.append(_one(test_id, key, limit, bound, vals))
            continue
        vals = [float(r[metric]) for r in runs if r.get(metric) is not None]
        if not vals:
            why = "no runs" if not runs else _MISSING_WHY.get(metric, "the metric was not measured in any run")
            out.append(_skip(test_id, metric, why))
        else:
            out.append(_one(test_id, metric, limit, bound, vals))
    return out
