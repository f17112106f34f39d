"""How much whole sessions differ on one machine: the session-to-session std of logs, from recorded baselines.

The regression rule (:mod:`pytest_llmperf.stats.decision`) predicts a new session's mean from the recorded ones;
its uncertainty is dominated by the session effect ``s_j ~ N(0, sigma_s^2)``, estimated from the recorded sessions
pooled with a prior ``session_cv`` worth 4 sessions. One prior for every metric is blunt: on an H200 the session
means of TPOT agree within 0.3% while its TTFT p95 moves by 20%. :func:`estimate_session_cv` measures ``sigma_s``
of one metric over many tests of one machine (each test: its sessions, each session: its runs), on the rule's own
model, so a team can set ``session_cv`` per metric from its own history (``llmperf baseline noise``).

Per test with J >= 2 sessions: session means ``m_j`` and the pooled within-session variance ``v`` of logs (over
sessions with >= 2 runs); ``between = max(var(m_j, ddof=1) - v / K, 0)`` with ``K`` the harmonic mean of the runs
per session (the rule's own estimate), worth ``J - 1`` degrees of freedom. Tests are pooled by degrees of freedom:
``s^2 = sum (J_t - 1) between_t / sum (J_t - 1)``. The one-sided upper confidence bound at ``confidence`` is the
chi-square bound of the session means' own pooled variance, ``df M / chi2_{1-confidence}(df)`` with ``M = sum
(J_t - 1) var_t(m_j) / df``: that variance is ``sigma_s^2 + sigma_r^2 / K``, so its bound is also one for
``sigma_s^2``, conservative by the run noise left in the means, and never 0 unless the session means coincide (a
bound computed from the truncated estimate would be 0 whenever run noise hides the session effect). Pure functions
over numbers; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SessionNoise", "estimate_session_cv", "between_session_variance"]


@dataclass(frozen=True)
class SessionNoise:
    """The session-to-session std of logs of one metric, pooled over ``tests`` tests and ``sessions`` sessions."""

    estimate: float  #: pooled std of logs (about the relative session-to-session spread)
    upper: float  #: one-sided upper confidence bound at ``confidence``
    df: int  #: degrees of freedom: sum over tests of (sessions - 1)
    tests: int
    sessions: int
    confidence: float


def between_session_variance(sessions: Sequence[Sequence[float]]) -> tuple[float, float, int] | None:
    """``(between-session variance of logs, variance of the session means, J - 1)`` of one test's sessions (each a
    list of positive run values), or None with fewer than 2 sessions that have values."""
    if any(not (math.isfinite(x) and x > 0) for runs in sessions for x in runs):
        raise ValueError("session values must be positive and finite")
    logs = [[math.log(x) for x in runs] for runs in sessions if len(runs) > 0]
    if len(logs) < 2:
        return None
    means = [sum(r) / len(r) for r in logs]
    grand = sum(means) / len(means)
    var_means = sum((m - grand) ** 2 for m in means) / (len(means) - 1)
    multi = [r for r in logs if len(r) >= 2]
    ss = sum(sum((x - sum(r) / len(r)) ** 2 for x in r) for r in multi)
    dfw = sum(len(r) - 1 for r in multi)
    within = ss / dfw if dfw > 0 else 0.0
    k_harmonic = len(logs) / sum(1 / len(r) for r in logs)
    return max(var_means - within / k_harmonic, 0.0), var_means, len(logs) - 1


def estimate_session_cv(tests: Sequence[Sequence[Sequence[float]]], confidence: float = 0.9) -> SessionNoise | None:
    """The pooled session-to-session std of logs over ``tests`` (each: its sessions' run values), or None when no
    test has two sessions. Raises ValueError for a value that is not positive and finite or a bad confidence."""
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    parts = [p for p in (between_session_variance(t) for t in tests) if p is not None]
    if not parts:
        return None
    df = sum(d for _, _, d in parts)
    s2 = sum(v * d for v, _, d in parts) / df
    upper = sum(m * d for _, m, d in parts) / float(stats.chi2.ppf(1 - confidence, df))
    n_sessions = sum(d + 1 for _, _, d in parts)
    return SessionNoise(estimate=math.sqrt(s2), upper=math.sqrt(upper), df=df, tests=len(parts),
                        sessions=n_sessions, confidence=confidence)
