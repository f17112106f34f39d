"""The one regression rule: baseline sessions vs one candidate session of one per-run metric -> a Verdict.

Model (on the log scale, so a ratio is a difference and both directions are symmetric): the log of run k of
session j is ``mu + s_j + e_jk`` with session effect ``s_j ~ N(0, sigma_s^2)`` (machine, clocks, load of the
day) and run noise ``e_jk ~ N(0, sigma_r^2)``. Past sessions' means predict the candidate session's mean; the
prediction's standard error is ``sqrt(sigma_s^2 (1 + 1/J) + sigma_r^2 (1/K_c + 1/(J K_b)))`` with J baseline
sessions. ``sigma_r^2`` is the pooled within-session variance; ``sigma_s^2`` comes from the spread of the
session means, pooled with a prior ``session_cv`` worth ``prior_df`` sessions (a scaled-inverse-chi-square
prior), so one recorded session is usable and twenty are mostly data; ``session_cv = 0`` means no prior. Degrees of freedom by Welch-Satterthwaite.

Decision with ``L = ln(1 + tolerance)`` and ``w`` the worsening (log ratio, sign by the metric's direction):
FAIL iff ``w - t_{1-alpha} se > L`` (the one-sided lower bound of the worsening lies beyond the tolerance: a
minimum-effect test at the per-check alpha; its p-value ``P(T >= (w - L)/se)`` feeds Holm); PASS iff
``w + t_{1-pass_alpha} se <= L`` (the upper bound lies inside: the equivalence side, at the build-wide rate: a
PASS is no false alarm to split over checks); INCONCLUSIVE otherwise. See docs/regression.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.stats.verdict import Check, Verdict, VerdictState, format_verdict

__all__ = [
    "decide",
    "decide_check",
    "decide_all",
    "build_checks",
    "session_model",
    "holm_alphas",
    "runs_needed",
    "LEGACY_SESSION",
    "DEFAULT_TOLERANCE",
    "DEFAULT_FAMILY_ALPHA",
    "DEFAULT_RUNS",
    "MIN_BASELINE_RUNS",
    "SESSIONS_KEPT",
    "PRIOR_SESSION_DF",
    "NOT_GATED",
    "POWER",
]

DEFAULT_TOLERANCE = 0.05  #: relative worsening tolerated (5%) when nothing else is configured
DEFAULT_FAMILY_ALPHA = 0.05  #: build-wide false-alarm rate split over all checks (Bonferroni, then Holm)
DEFAULT_RUNS = 3  #: default K, runs per session
MIN_BASELINE_RUNS = 3  #: a baseline session with fewer runs is refused (its noise cannot be judged)
SESSIONS_KEPT = 20  #: baseline sessions in the rolling window and the automatic anchor (docs/regression.md: why 20)
PRIOR_SESSION_DF = 4  #: the session-noise prior counts as this many sessions' evidence
POWER = 0.8  #: power behind ``min_detectable`` and ``runs_needed``
LEGACY_SESSION = "legacy"  #: session id of baseline runs recorded before sessions were stored
NOT_GATED = frozenset({"failed"})  #: counts that are SLO-only, never regression-tested (they can be 0)


def session_model(base_means: Any, cand_mean: Any, within_var: Any, within_df: float, k_base: float, k_cand: int,
                  session_cv: float = 0.0, prior_df: float = PRIOR_SESSION_DF) -> tuple[Any, Any, Any]:
    """Vectorised core: ``(d, se, df)`` of the candidate session's mean log against J past session means.

    ``base_means`` has the J session means of logs on its last axis; ``within_var`` is the pooled run-to-run
    variance of logs (``within_df`` degrees of freedom; 0 when every session has one run, in which case the
    spread of session means carries the run noise too); ``k_base`` the (harmonic) mean runs per baseline
    session. ``d`` = candidate mean - mean of session means (log ratio of geometric means).
    """
    import numpy as np

    m = np.asarray(base_means, dtype=float)
    j = m.shape[-1]
    if session_cv == 0:
        prior_df = 0  # no prior (rather than "certainly no session noise"): the recorded sessions alone speak
    d = np.asarray(cand_mean, dtype=float) - m.mean(axis=-1)
    wv = np.asarray(within_var, dtype=float) if within_df > 0 else np.zeros_like(d)
    if j >= 2:
        between = np.maximum(m.var(axis=-1, ddof=1) - wv / k_base, 0.0)
    else:
        between = np.zeros_like(d)
    df_s = prior_df + j - 1
    s2 = (prior_df * session_cv**2 + (j - 1) * between) / df_s if df_s > 0 else np.zeros_like(d)
    a = s2 * (1 + 1 / j)
    b = wv * (1 / k_cand + 1 / (j * k_base))
    se = np.sqrt(a + b)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = (a + b) ** 2 / (np.where(df_s > 0, a**2 / max(df_s, 1e-12), 0.0)
                             + (b**2 / within_df if within_df > 0 else 0.0))
    df = np.where(np.isfinite(df) & (df > 0), df, max(within_df, df_s, 1.0))
    return d, se, df


def holm_alphas(p_values: Any, family_alpha: float) -> Any:
    """Per-check alpha from Holm's step-down, vectorised over the last axis (NaN p = check left out).

    Sorted by p, rank i of m gets family_alpha/(m-i) while every smaller p was below its own level; from
    the first check that is not, all later checks are judged at that stopping level. NaN entries get NaN.
    """
    import numpy as np

    p = np.asarray(p_values, dtype=float)
    valid = ~np.isnan(p)
    m = valid.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(valid, p, np.inf), axis=-1, kind="stable")
    ps = np.take_along_axis(np.where(valid, p, np.inf), order, axis=-1)
    rank = np.arange(p.shape[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        level = family_alpha / np.maximum(m - rank, 1)
    rejected_so_far = np.cumprod(ps < level, axis=-1).astype(bool)
    stop = rejected_so_far.sum(axis=-1, keepdims=True)
    stop_level = np.take_along_axis(level, np.minimum(stop, p.shape[-1] - 1), axis=-1)
    sorted_alpha = np.where(rank < stop, level, stop_level)
    out = np.empty_like(sorted_alpha)
    np.put_along_axis(out, order, sorted_alpha, axis=-1)
    return np.where(valid, out, np.nan)


def runs_needed(session_var: float, within_var: float, within_df: float, j: int, k_cand: int,
                tolerance: float, alpha: float, df_s: float, power: float = POWER, limit: int = 200) -> int | None:
    """Runs per session (``--llmperf-repeats``, baseline and candidate alike) with which an unchanged session
    would PASS with ``power``, from t quantiles; None when no number of runs can (the session-to-session term
    alone is too wide: more baseline sessions are needed)."""
    from scipy import stats

    if tolerance <= 0 or within_df <= 0:
        return None
    bound = math.log1p(tolerance)
    a = session_var * (1 + 1 / j)
    for k in range(k_cand + 1, limit + 1):
        b = within_var * (1 / k + 1 / (j * k))
        dfw = within_df + (k - k_cand) * (j + 1)
        df = (a + b) ** 2 / ((a**2 / df_s if df_s > 0 else 0.0) + b**2 / dfw) if a + b > 0 else dfw
        if (stats.t.ppf(1 - alpha, df) + stats.t.ppf(power, df)) * math.sqrt(a + b) <= bound:
            return k
    return None


def _validate(metric: str, name: str, values: Sequence[float], test_id: str) -> list[float]:
    out = [float(v) for v in values]
    bad = [v for v in out if not (math.isfinite(v) and v > 0)]
    if bad:
        where = f" of {test_id}" if test_id else ""
        raise UsageError(
            f"metric {metric!r}{where}: {name} values must be positive and finite for the log-ratio test, got {bad[0]!r}"
            " (count metrics such as 'failed' belong in an SLO, not in the regression gate)"
        )
    return out


def decide(
    metric: str,
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    direction: str,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_FAMILY_ALPHA,
    test_id: str = "",
    baseline_sessions: Sequence[str] | None = None,
    session_cv: float = 0.0,
    prior_df: float = PRIOR_SESSION_DF,
    kind: str = "regression",
    label: str = "",
    pass_alpha: float | None = None,
) -> Verdict:
    """Judge one metric of one test: baseline runs (with their sessions) vs one candidate session's runs.

    Same keyword arguments as the ``pytest_llmperf_decide`` hookspec. ``baseline_sessions`` gives each
    baseline run's session (None: all from one session); ``session_cv`` is the prior session-to-session std
    of logs, worth ``prior_df`` sessions; 0 means no prior (the recorded sessions alone estimate the spread).
    ``pass_alpha`` (default ``alpha``) is the level of the equivalence (PASS) bound; the gate uses its
    build-wide rate there.
    """
    import numpy as np
    from scipy import stats

    if direction not in ("lower", "higher"):
        raise UsageError(f"metric {metric!r}: direction must be 'lower' or 'higher', got {direction!r}")
    if not (0 < alpha < 0.5) or not (tolerance >= 0) or not (session_cv >= 0):
        raise UsageError(f"metric {metric!r}: need 0 < alpha < 0.5, tolerance >= 0 and session_cv >= 0, "
                         f"got {alpha!r}, {tolerance!r}, {session_cv!r}")
    cand = _validate(metric, "candidate", candidate, test_id)
    if not cand:
        raise UsageError(f"metric {metric!r}: no candidate values")
    base = _validate(metric, "baseline", baseline, test_id)
    sessions = list(baseline_sessions) if baseline_sessions is not None else [LEGACY_SESSION] * len(base)
    if len(sessions) != len(base):
        raise UsageError(f"metric {metric!r}: {len(sessions)} session ids for {len(base)} baseline runs")
    kb, kc = len(base), len(cand)
    common: dict[str, Any] = dict(test_id=test_id, metric=metric, kind=kind, baseline_k=kb, candidate_k=kc,
                                  alpha=alpha, tolerance=tolerance, extra={"label": label} if label else {})
    if kb == 0:
        v = Verdict(verdict=VerdictState.NO_BASELINE.value, candidate_value=float(np.median(cand)), **common)
        return replace(v, message=format_verdict(v))
    groups: dict[str, list[float]] = {}
    for s, x in zip(sessions, base):
        groups.setdefault(s, []).append(math.log(x))
    lc = np.log(cand)
    means = np.array([np.mean(g) for g in groups.values()])
    j = len(means)
    within_ss = sum(float(np.sum((np.asarray(g) - np.mean(g)) ** 2)) for g in groups.values())
    within_ss += float(np.sum((lc - lc.mean()) ** 2))
    within_df = float(sum(len(g) - 1 for g in groups.values()) + kc - 1)
    within_var = within_ss / within_df if within_df > 0 else 0.0
    k_base = float(len(groups) / sum(1 / len(g) for g in groups.values()))
    common.update(baseline_value=float(np.median(base)), candidate_value=float(np.median(cand)),
                  baseline_sessions=j)
    sign = 1.0 if direction == "lower" else -1.0
    d_arr, se_arr, df_arr = session_model(means, lc.mean(), within_var, within_df, k_base, kc, session_cv, prior_df)
    d, se, df = float(d_arr), float(se_arr), float(df_arr)
    ratio = math.exp(d)
    if within_df <= 0 and j < 2 and (prior_df <= 0 or session_cv == 0):
        # one run on each side and no prior: nothing says how noisy a run is
        v = Verdict(verdict=VerdictState.INCONCLUSIVE.value, ratio=ratio, runs_needed=max(DEFAULT_RUNS, kc + 1),
                    **common)
        return replace(v, message=format_verdict(v) + " (one run per side: its run-to-run noise is unknown)")
    w = sign * d
    bound = math.log1p(tolerance)
    q = float(stats.t.ppf(1 - alpha, df))
    pa = alpha if pass_alpha is None else max(alpha, pass_alpha)
    q_pass = float(stats.t.ppf(1 - pa, df))
    if se > 0:
        p = float(stats.t.sf((w - bound) / se, df))
    else:
        p = 0.0 if w > bound else 1.0
    ci_low, ci_high = math.exp(d - q * se), math.exp(d + q * se)
    detect_log = bound + (q + float(stats.t.ppf(POWER, df))) * se  # worsening FAILed with 80% power, in logs
    min_detectable = math.expm1(sign * detect_log)  # as a change of the metric: + for latency, - for throughput
    underpowered = tolerance > 0 and detect_log > math.log1p(2 * tolerance)
    need: int | None = None
    if p < alpha:
        verdict = VerdictState.FAIL
    elif w + q_pass * se <= bound:
        verdict = VerdictState.PASS
    else:
        verdict = VerdictState.INCONCLUSIVE
        prior_df = prior_df if session_cv > 0 else 0
        df_s = prior_df + j - 1
        between = max(float(np.var(means, ddof=1)) - within_var / k_base, 0.0) if j >= 2 else 0.0
        s2 = (prior_df * session_cv**2 + (j - 1) * between) / df_s if df_s > 0 else 0.0
        need = runs_needed(s2, within_var, within_df, j, max(kc, int(k_base)), tolerance, pa, df_s)
    v = Verdict(verdict=verdict.value, ratio=ratio, ci_low=ci_low, ci_high=ci_high, p_value=p, runs_needed=need,
                min_detectable=min_detectable, underpowered=underpowered, **common)
    message = format_verdict(v)
    if verdict is VerdictState.INCONCLUSIVE and need is None and tolerance > 0:
        message += " (more runs cannot settle it: the session-to-session spread needs more baseline sessions)"
    return replace(v, message=message)


def decide_check(check: Check, alpha: float, decide_fn: Callable[..., Verdict | None] | None = None,
                 pass_alpha: float | None = None) -> Verdict:
    """:func:`decide` (or the ``pytest_llmperf_decide`` hook ``decide_fn``) on one :class:`Check`."""
    kwargs: dict[str, Any] = dict(test_id=check.test_id, metric=check.metric, baseline=list(check.baseline),
                                  candidate=list(check.candidate), direction=check.direction,
                                  tolerance=check.tolerance, alpha=alpha,
                                  baseline_sessions=None if check.baseline_sessions is None
                                  else list(check.baseline_sessions),
                                  session_cv=check.session_cv, kind=check.kind, label=check.label,
                                  pass_alpha=pass_alpha)
    v = decide_fn(**kwargs) if decide_fn is not None else None
    if v is None:
        return decide(**kwargs)
    return v if v.test_id else replace(v, test_id=check.test_id)


def decide_all(checks: Sequence[Check], family_alpha: float = DEFAULT_FAMILY_ALPHA, *,
               decide_fn: Callable[..., Verdict | None] | None = None) -> list[Verdict]:
    """Judge every check so the build-wide chance of any false FAIL stays <= ``family_alpha`` (Holm).

    Checks whose decision has no p-value (no baseline, one run per side) cannot FAIL and are not counted in
    m. The PASS side is judged at ``family_alpha``. Verdicts come back in input order.
    """
    import numpy as np

    first = [decide_check(c, family_alpha, decide_fn, family_alpha) for c in checks]
    if not first:
        return []
    p = np.array([np.nan if v.p_value is None else v.p_value for v in first], dtype=float)
    alphas = holm_alphas(p, family_alpha)
    return [v if np.isnan(a) else decide_check(c, float(a), decide_fn, family_alpha)
            for c, v, a in zip(checks, first, alphas)]


def build_checks(
    test_id: str,
    baseline_runs: Sequence[Mapping[str, float]],
    candidate_runs: Sequence[Mapping[str, float]],
    *,
    metrics: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    tolerances: Mapping[str, float] | None = None,
    baseline_sessions: Sequence[str] | None = None,
    session_cv: float = 0.0,
    session_cvs: Mapping[str, float] | None = None,
    kind: str = "regression",
    label: str = "",
) -> tuple[list[Check], list[Verdict]]:
    """Checks for ``metrics`` (default: every metric on both sides) and SKIPPED verdicts for what cannot be tested.

    A metric of unknown direction, missing on one side, or with a value <= 0 is SKIPPED with the reason;
    metrics in :data:`NOT_GATED` are left to the SLO unless named in ``metrics``. ``tolerances`` and ``session_cvs``
    give a metric its own tolerance and session-noise prior over ``tolerance`` and ``session_cv``.
    """
    from pytest_llmperf.stats.metrics import direction_of

    sessions = list(baseline_sessions) if baseline_sessions is not None else [LEGACY_SESSION] * len(baseline_runs)
    names: set[str] = set()
    for run in [*baseline_runs, *candidate_runs]:
        names.update(run)
    wanted = list(metrics) if metrics else sorted(names - NOT_GATED)
    checks: list[Check] = []
    skipped: list[Verdict] = []
    for metric in wanted:
        pairs = [(float(r[metric]), s) for r, s in zip(baseline_runs, sessions) if r.get(metric) is not None]
        cand = [float(r[metric]) for r in candidate_runs if r.get(metric) is not None]
        base = [x for x, _ in pairs]
        reason = None
        direction = "lower"
        try:
            direction = direction_of(metric)
        except UsageError:
            reason = "no direction (lower/higher is better) is known for this metric"
        if reason is None and metric in NOT_GATED:
            reason = "a count, judged by the SLO (max_failed), not by the log-ratio test"
        elif reason is None and not cand:
            reason = "not measured in this run"
        elif reason is None and not base:
            reason = "not in the baseline"
        elif reason is None and min(base + cand) <= 0:
            reason = (f"a run measured {min(base + cand):g} (the log-ratio test needs positive values; on the CPU "
                      f"backend a TPOT of 0 means the stream arrived in one burst)")
        if reason is not None:
            skipped.append(Verdict(test_id=test_id, metric=metric, kind=kind, verdict=VerdictState.SKIPPED.value,
                                   baseline_k=len(base), candidate_k=len(cand),
                                   message=f"SKIPPED {test_id} {metric}: {reason}"))  # fmt: skip
            continue
        tol = (tolerances or {}).get(metric, tolerance)
        checks.append(Check(test_id, metric, tuple(base), tuple(cand), direction, tol,
                            tuple(s for _, s in pairs), kind=kind, label=label,
                            session_cv=(session_cvs or {}).get(metric, session_cv)))
    return checks, skipped
