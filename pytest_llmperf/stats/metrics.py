"""Per-run metric definitions: request timings in, one :class:`RunMetrics` (and one summary dict) out.

Pure functions over :class:`~pytest_llmperf.records.RequestRecord`; nothing here prints, measures or
stores. Percentiles use numpy's default ``'linear'`` method (type 7 of Hyndman & Fan, the same as
vLLM's ``bench serve``), so ``p50`` of ``[1, 2, 3, 4]`` is ``2.5``. Definitions: ``docs/metrics.md``.
A metric with no data is ``None``, never ``0``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_llmperf.errors import UsageError

if TYPE_CHECKING:
    from pytest_llmperf.records import RequestRecord

__all__ = [
    "Distribution",
    "RunMetrics",
    "GoodputLimits",
    "compute_run_metrics",
    "run_summary",
    "METRIC_DIRECTIONS",
    "SUMMARY_KEYS",
    "POWER_KEY_PATTERNS",
    "SERVER_KEYS_LOWER",
    "direction_of",
]

#: The per-run summary keys produced by :func:`run_summary`, in the order of CONTRIBUTING-LAYERS.md.
SUMMARY_KEYS: tuple[str, ...] = (
    "ttft_p50_ms", "ttft_p90_ms", "ttft_p95_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p95_ms",
    "itl_p50_ms", "itl_p99_ms", "e2el_p50_ms", "e2el_p95_ms", "output_throughput_tok_s",
    "request_throughput_req_s", "goodput_req_s", "failed",
)  # fmt: skip

#: Per-GPU power keys written by telemetry, with ``{i}`` standing for the GPU index.
POWER_KEY_PATTERNS: tuple[str, ...] = (
    "gpu{i}_power_mean_w", "gpu{i}_power_cv", "gpu{i}_power_peak_w", "gpu{i}_energy_j", "gpu{i}_idle_share",
)  # fmt: skip

#: Server-side summary keys (telemetry/server_metrics.py) for which lower is better; ``server_running_peak`` and
#: ``server_requests`` are informational (no direction: not gateable).
SERVER_KEYS_LOWER: tuple[str, ...] = (
    "server_ttft_mean_ms", "server_ttft_p50_ms", "server_ttft_p95_ms", "server_e2el_mean_ms",
    "server_queue_time_mean_ms", "server_queue_time_p95_ms", "server_prefill_time_mean_ms",
    "server_decode_time_mean_ms", "server_kv_cache_usage_peak_pct", "server_preemptions", "server_waiting_peak",
)  # fmt: skip

#: "lower" or "higher" is better, for every summary key, the per-GPU power patterns and energy per token.
METRIC_DIRECTIONS: dict[str, str] = {
    **{k: "lower" for k in SUMMARY_KEYS if "_ms" in k},
    "output_throughput_tok_s": "higher",
    "request_throughput_req_s": "higher",
    "goodput_req_s": "higher",
    "failed": "lower",
    **{k: "lower" for k in POWER_KEY_PATTERNS},
    "energy_per_output_token_j": "lower",
    # goodput as an SLO and the saturation search (load/saturation.py)
    "slo_attainment": "higher",
    "max_rate_at_slo_req_s": "higher",
    "max_concurrency_at_slo": "higher",
    "slo_attainment_at_max": "higher",
    # the server's side of a run, from vLLM's /metrics (telemetry/server_metrics.py)
    **{k: "lower" for k in SERVER_KEYS_LOWER},
}

_GPU_PREFIX = re.compile(r"^gpu\d+_")


def direction_of(metric: str) -> str:
    """``"lower"`` or ``"higher"`` (is better) for ``metric``; ``gpu3_power_cv`` resolves as ``gpu{i}_power_cv``."""
    key = _GPU_PREFIX.sub("gpu{i}_", metric)
    try:
        return METRIC_DIRECTIONS[key]
    except KeyError:
        raise UsageError(
            f"unknown metric {metric!r}: no direction (lower/higher is better) is defined for it; "
            f"known metrics: {', '.join(sorted(METRIC_DIRECTIONS))}"
        ) from None


@dataclass(frozen=True)
class Distribution:
    """Count, mean, population std (ddof=0) and linear-interpolated percentiles of one metric, in its unit."""

    count: int
    mean: float
    std: float
    p50: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution | None:
        """The distribution of ``values``; ``None`` when there are none."""
        if len(values) == 0:
            return None
        import numpy as np

        arr = np.asarray(values, dtype=float)
        p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])  # method="linear", numpy's default
        return cls(
            count=int(arr.size), mean=float(arr.mean()), std=float(arr.std()),
            p50=float(p50), p90=float(p90), p95=float(p95), p99=float(p99),
        )  # fmt: skip


@dataclass(frozen=True)
class GoodputLimits:
    """Per-request limits that define goodput, in ms; ``None`` means no limit. A request counts toward
    goodput when it meets every limit that is set (``SLO.goodput()`` gives a test's)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None


@dataclass(frozen=True)
class RunMetrics:
    """Everything one measured run yields. Latency distributions are in ms; ``None`` means no data."""

    ttft_ms: Distribution | None
    tpot_ms: Distribution | None
    itl_ms: Distribution | None
    e2el_ms: Distribution | None
    output_throughput_tok_s: float | None
    request_throughput_req_s: float | None
    goodput_req_s: float | None
    completed: int
    failed: int
    total_output_tokens: int
    duration_s: float
    #: fraction of all requests (failed ones count as misses) that succeeded and met every per-request limit;
    #: None when no limit is set (goodput as an SLO: ``min_slo_attainment``)
    slo_attainment: float | None = None


def _meets(record: RequestRecord, slo: GoodputLimits) -> bool:
    """Whether one successful request meets every per-request limit that ``slo`` sets."""
    if slo.ttft_ms is not None and (record.ttft_ms is None or record.ttft_ms > slo.ttft_ms):
        return False
    if slo.e2el_ms is not None and (record.e2el_ms is None or record.e2el_ms > slo.e2el_ms):
        return False
    tpot = record.tpot_ms  # undefined for a single-token answer: nothing to violate
    return not (slo.tpot_ms is not None and tpot is not None and tpot > slo.tpot_ms)


def compute_run_metrics(records: Sequence[RequestRecord], duration_s: float,
                        slo: GoodputLimits | None = None) -> RunMetrics:
    """Reduce one run's request records to :class:`RunMetrics`.

    ``duration_s`` is the measured window (first send to last finish); throughputs divide by it.
    TTFT, E2EL, TPOT and ITL use successful requests only; ITL pools every token gap of every request
    (token-weighted). Goodput counts successful requests meeting every per-request limit of ``slo`` (the
    :class:`GoodputLimits` ``ttft_ms``, ``tpot_ms``, ``e2el_ms``) and is ``None`` when it sets none of them;
    ``slo_attainment`` is that count over all requests sent (failed ones count as misses).
    """
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise UsageError(f"compute_run_metrics: duration_s must be a positive number of seconds, got {duration_s!r}")
    ok = [r for r in records if r.success]
    ttft = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    e2el = [r.e2el_ms for r in ok if r.e2el_ms is not None]
    tpot = [t for t in (r.tpot_ms for r in ok) if t is not None]
    itl = [gap for r in ok for gap in r.itl_ms]
    tokens = sum(r.output_tokens for r in ok)
    goodput: float | None = None
    attainment: float | None = None
    if slo is not None and (slo.ttft_ms is not None or slo.tpot_ms is not None or slo.e2el_ms is not None):
        good = sum(1 for r in ok if _meets(r, slo))
        goodput = good / duration_s if ok else None
        attainment = good / len(records) if records else None
    return RunMetrics(
        ttft_ms=Distribution.of(ttft),
        tpot_ms=Distribution.of(tpot),
        itl_ms=Distribution.of(itl),
        e2el_ms=Distribution.of(e2el),
        output_throughput_tok_s=tokens / duration_s if ok else None,
        request_throughput_req_s=len(ok) / duration_s if ok else None,
        goodput_req_s=goodput,
        completed=len(ok),
        failed=len(records) - len(ok),
        total_output_tokens=tokens,
        duration_s=float(duration_s),
        slo_attainment=attainment,
    )


def run_summary(m: RunMetrics) -> dict[str, float]:
    """The per-run summary (one number per gated metric), keys as in CONTRIBUTING-LAYERS.md; no-data keys left out."""
    out: dict[str, float] = {}
    pairs = (
        ("ttft", m.ttft_ms, ("p50", "p90", "p95", "p99")),
        ("tpot", m.tpot_ms, ("p50", "p95")),
        ("itl", m.itl_ms, ("p50", "p99")),
        ("e2el", m.e2el_ms, ("p50", "p95")),
    )
    for name, dist, pcts in pairs:
        if dist is not None:
            for p in pcts:
                out[f"{name}_{p}_ms"] = getattr(dist, p)
    for key in ("output_throughput_tok_s", "request_throughput_req_s", "goodput_req_s", "slo_attainment"):
        value = getattr(m, key)
        if value is not None:
            out[key] = float(value)
    out["failed"] = float(m.failed)
    return out
