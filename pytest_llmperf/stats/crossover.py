"""The seed study's one sentence: from which concurrency one parallelism overtakes another on a link.

Pure functions. Each run is one sample (as in the gate); two modes are compared at each concurrency by the
ratio of their geometric means (B / A) with a two-sided Welch confidence interval on the log scale. "B
overtakes A" at concurrency c when the interval lies entirely on B's better side (below 1 for lower-is-better
metrics, above 1 for higher-is-better). The crossover is the lowest concurrency from which B stays ahead at
every higher concurrency of the range; "none in range" when B is not ahead at the highest one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["RatioCI", "Crossover", "ratio_ci", "find_crossover"]


@dataclass(frozen=True)
class RatioCI:
    """B / A at one concurrency: point estimate (ratio of geometric means) and its interval."""

    concurrency: int
    ratio: float
    low: float
    high: float
    k_a: int
    k_b: int

    def b_better(self, direction: str) -> bool:
        return self.high < 1.0 if direction == "lower" else self.low > 1.0

    def a_better(self, direction: str) -> bool:
        return self.low > 1.0 if direction == "lower" else self.high < 1.0


@dataclass(frozen=True)
class Crossover:
    """The answer for one metric on one link: ``at`` is the crossover concurrency, or None."""

    metric: str
    direction: str
    mode_a: str
    mode_b: str
    at: int | None
    points: tuple[RatioCI, ...]
    confidence: float

    @property
    def at_point(self) -> RatioCI | None:
        return next((p for p in self.points if p.concurrency == self.at), None)

    def sentence(self, metric_label: str | None = None, link: str | None = None) -> str:
        """One line, e.g. ``TPOT p50 on emulated PCIe: pp2 overtakes tp2 from concurrency 8 (pp2/tp2 0.81,
        95% CI 0.78-0.84)``."""
        name = metric_label or self.metric
        where = f"{name}{f' on {link}' if link else ''}"
        lo_c, hi_c = self.points[0].concurrency, self.points[-1].concurrency
        level = f"{self.confidence:.0%} CI"
        if self.at is not None:
            p = self.at_point
            assert p is not None
            start = "at every concurrency in range" if self.at == lo_c else f"from concurrency {self.at}"
            before = [q for q in self.points if q.concurrency < self.at]
            prev = (f"; at {before[-1].concurrency}: {before[-1].ratio:.2f}, {before[-1].low:.2f}-{before[-1].high:.2f}"
                    if before else "")
            return (f"{where}: {self.mode_b} overtakes {self.mode_a} {start} ({self.mode_b}/{self.mode_a} "
                    f"{p.ratio:.2f}, {level} {p.low:.2f}-{p.high:.2f} at {p.concurrency}{prev})")
        last = self.points[-1]
        leader = self.mode_a if last.a_better(self.direction) else None
        verdict = (f"{leader} leads at {hi_c}" if leader else f"no significant difference at {hi_c}")
        return (f"{where}: {self.mode_b} does not overtake {self.mode_a} in range {lo_c}-{hi_c} ({verdict}; "
                f"{self.mode_b}/{self.mode_a} {last.ratio:.2f}, {level} {last.low:.2f}-{last.high:.2f})")


def ratio_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, *, concurrency: int = 0) -> RatioCI:
    """Ratio of geometric means b / a with a Welch interval on log values. Needs >= 2 positive values a side."""
    from scipy import stats

    la = [math.log(x) for x in a if x > 0 and math.isfinite(x)]
    lb = [math.log(x) for x in b if x > 0 and math.isfinite(x)]
    if len(la) < 2 or len(lb) < 2:
        raise ValueError(f"need at least 2 positive runs per mode (got {len(la)} and {len(lb)})")
    ma, mb = sum(la) / len(la), sum(lb) / len(lb)
    va = sum((x - ma) ** 2 for x in la) / (len(la) - 1)
    vb = sum((x - mb) ** 2 for x in lb) / (len(lb) - 1)
    se2 = va / len(la) + vb / len(lb)
    diff = mb - ma
    if se2 <= 0:
        return RatioCI(concurrency, math.exp(diff), math.exp(diff), math.exp(diff), len(la), len(lb))
    df = se2 ** 2 / ((va / len(la)) ** 2 / (len(la) - 1) + (vb / len(lb)) ** 2 / (len(lb) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    return RatioCI(concurrency, math.exp(diff), math.exp(diff - half), math.exp(diff + half), len(la), len(lb))


def find_crossover(metric: str, direction: str, runs_a: Mapping[int, Sequence[float]],
                   runs_b: Mapping[int, Sequence[float]], *, mode_a: str, mode_b: str,
                   confidence: float = 0.95) -> Crossover | None:
    """Where ``mode_b`` overtakes ``mode_a`` on ``metric`` over the concurrencies both have (>= 2 runs each).

    ``runs_x`` maps concurrency -> per-run values. None when no concurrency has enough runs on both sides.
    """
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")
    points = []
    for c in sorted(set(runs_a) & set(runs_b)):
        try:
            points.append(ratio_ci(runs_a[c], runs_b[c], confidence, concurrency=c))
        except ValueError:
            continue
    if not points:
        return None
    at = None
    for p in reversed(points):  # the longest suffix of concurrencies where B is ahead
        if not p.b_better(direction):
            break
        at = p.concurrency
    return Crossover(metric, direction, mode_a, mode_b, at, tuple(points), confidence)
