"""Change detection over one metric's history of session means: steps and creep, with ``ruptures``.

The per-session gate (:mod:`pytest_llmperf.stats.decision`) answers "is this session worse than the past?";
this module answers "when did the level move?" over the stored history (anchor sessions, rolling window, then
the candidate). It is a report, not a gate: change-point detection has no calibrated false-alarm rate (see
``shared/research/regression-detection.md`` section 5), so it never fails a test; the anchor check is what
fails a creep. Method: PELT (``ruptures.Pelt``, L2 cost, segments of at least ``min_size`` sessions) on the
session means of logs, with a penalty ``8 sigma^2 ln n`` where ``sigma`` is a robust (MAD of first
differences) estimate of the session-to-session noise (the scale 8 was set by simulation: on 20 sessions of 3%
noise, 0.7% of flat series show a change of 5% or more, while a +20% step or a +3%/session creep is found every
time). Consecutive breaks in the same direction, or a break after which the level keeps moving the same way
(a fitted slope covering half the change), are reported as one *creep*, a lone break as a *step*; sizes are
ratios of segment geometric means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Change", "session_series", "detect_changes"]


@dataclass(frozen=True)
class Change:
    """A level change in a metric's history. ``start``/``end`` index sessions of the series; ``ratio`` is the
    level after over the level before (geometric means); ``worse`` applies the metric's direction."""

    kind: str  # "step" or "creep"
    start: int
    end: int
    ratio: float
    worse: bool

    def describe(self, metric: str, n: int) -> str:
        where = f"session {self.end + 1} of {n}" if self.kind == "step" else f"sessions {self.start + 1}..{self.end + 1} of {n}"
        how = "worse" if self.worse else "better"
        return f"{metric}: {self.kind} {(self.ratio - 1) * 100:+.1f}% ({how}) at {where}"


def session_series(values: Sequence[float], sessions: Sequence[str]) -> list[float]:
    """Mean of logs per session, in order of each session's first run."""
    groups: dict[str, list[float]] = {}
    for v, s in zip(values, sessions):
        if v > 0 and math.isfinite(v):
            groups.setdefault(s, []).append(math.log(v))
    return [sum(g) / len(g) for g in groups.values()]


def detect_changes(log_means: Sequence[float], *, direction: str, min_size: int = 2,
                   penalty_scale: float = 8.0) -> list[Change]:
    """Level changes in a series of session means of logs (empty below ``2 * min_size`` sessions)."""
    import numpy as np
    import ruptures as rpt

    x = np.asarray(log_means, dtype=float)
    n = x.size
    if n < 2 * min_size:
        return []
    diffs = np.diff(x)
    sigma = float(np.median(np.abs(diffs - np.median(diffs))) / 0.6745 / math.sqrt(2)) if n > 2 else 0.0
    sigma = max(sigma, 1e-3)  # a perfectly flat series: anything above 0.1% counts
    ends = rpt.Pelt(model="l2", min_size=min_size, jump=1).fit(x.reshape(-1, 1)).predict(
        pen=penalty_scale * sigma**2 * math.log(n))
    starts = [0, *ends[:-1]]
    levels = [float(x[a:b].mean()) for a, b in zip(starts, ends)]
    breaks = [(ends[i] - 1, levels[i + 1] - levels[i]) for i in range(len(levels) - 1)]
    sign = 1.0 if direction == "lower" else -1.0
    out: list[Change] = []
    i = 0
    while i < len(breaks):
        j = i
        while j + 1 < len(breaks) and math.copysign(1, breaks[j + 1][1]) == math.copysign(1, breaks[i][1]):
            j += 1
        total = sum(d for _, d in breaks[i:j + 1])
        kind = "step" if i == j else "creep"
        after = x[breaks[j][0] + 1:ends[j + 1]]
        if kind == "step" and after.size >= 3:  # one break, but the level keeps moving the same way after it
            slope = float(np.polyfit(np.arange(after.size), after, 1)[0])
            if slope * total > 0 and abs(slope) * after.size >= abs(total) / 2:
                kind = "creep"
        out.append(Change(kind=kind, start=breaks[i][0], end=breaks[j][0] + 1, ratio=math.exp(total),
                          worse=sign * total > 0))
        i = j + 1
    return out
