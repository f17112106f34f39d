"""Run-to-run noise and the number of runs it takes to see a given change (for ``llmperf calibrate``).

``noise_cv`` is the sample standard deviation of the natural logs of per-run values: for small noise it
equals the coefficient of variation, and it is the scale the regression test works on. ``runs_needed``
is the planning figure of the normal approximation n = 2 (z_{1-alpha} + z_{power})^2 (cv / ln(1+delta))^2
per side (it underestimates below about 5 runs; the gate's own ``runs_needed`` in stats/decision.py uses t
quantiles and the session model). Both are within one session; the session-to-session spread comes on top.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.errors import UsageError

__all__ = ["noise_cv", "runs_needed", "calibration_table"]


def noise_cv(values: Sequence[float]) -> float:
    """Sample std (ddof=1) of log(values); needs at least two positive values."""
    vals = [float(v) for v in values]
    if len(vals) < 2:
        raise UsageError(f"noise_cv needs at least 2 runs, got {len(vals)}")
    if min(vals) <= 0:
        raise UsageError(f"noise_cv needs positive values, got {min(vals)!r}")
    return statistics.stdev(math.log(v) for v in vals)


def runs_needed(cv: float, delta: float, alpha: float, power: float = 0.8) -> int:
    """Runs per side to detect a relative change ``delta`` at one-sided ``alpha`` with ``power`` (>= 2)."""
    if cv < 0 or delta <= 0 or not (0 < alpha < 1) or not (0 < power < 1):
        raise UsageError(f"runs_needed: need cv >= 0, delta > 0, 0 < alpha, power < 1; got {cv}, {delta}, {alpha}, {power}")
    from scipy.stats import norm

    n = 2 * (norm.ppf(1 - alpha) + norm.ppf(power)) ** 2 * (cv / math.log1p(delta)) ** 2
    return max(int(math.ceil(n - 1e-9)), 2)


def calibration_table(runs: Sequence[Mapping[str, float]], delta: float, alpha: float, power: float = 0.8) -> list[dict[str, Any]]:
    """Per metric (sorted by name): ``metric, k, median, cv, runs_needed``; cv/runs_needed None when not computable."""
    names = sorted({k for r in runs for k in r})
    rows: list[dict[str, Any]] = []
    for name in names:
        vals = [float(r[name]) for r in runs if r.get(name) is not None]
        cv = noise_cv(vals) if len(vals) >= 2 and min(vals) > 0 else None
        rows.append({
            "metric": name,
            "k": len(vals),
            "median": statistics.median(vals) if vals else None,
            "cv": cv,
            "runs_needed": runs_needed(cv, delta, alpha, power) if cv is not None else None,
        })  # fmt: skip
    return rows
