"""The regression gate: K baseline runs vs K candidate runs of one per-run metric -> PASS / FAIL / INCONCLUSIVE.

A run is one sample (requests inside a run are not independent). Each side is reduced to log values;
a one-sided Welch t-test asks whether the candidate is worse in the metric's direction, and the ratio
candidate/baseline (geometric means) gets a confidence interval made of the two one-sided (1-alpha)
bounds, i.e. a two-sided 1-2*alpha interval. FAIL needs significance *and* a point estimate worse than
the tolerance; PASS needs the (1-alpha) bound on worsening within the tolerance; anything else is
INCONCLUSIVE with the runs per side needed to decide. :func:`decide_all` splits a build-wide false-alarm
rate over every check with Holm's step-down method. The vectorised cores (:func:`log_welch`,
:func:`holm_alphas`) are the same code the false-alarm simulation runs. See ``docs/regression.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pytest_llmperf.errors import UsageError

__all__ = [
    "Verdict",
    "decide",
    "decide_all",
    "format_verdict",
    "build_checks",
    "log_welch",
    "holm_alphas",
    "runs_needed_for",
    "Check",
    "DEFAULT_TOLERANCE",
    "DEFAULT_FAMILY_ALPHA",
    "DEFAULT_RUNS",
    "NOT_GATED",
]

DEFAULT_TOLERANCE = 0.05  #: relative worsening tolerated before a FAIL (5%)
DEFAULT_FAMILY_ALPHA = 0.05  #: build-wide false-alarm rate split over all checks by Holm
DEFAULT_RUNS = 3  #: default K, runs per side
NOT_GATED = frozenset({"failed"})  #: counts that are SLO-only, never regression-tested (they can be 0)
_VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "NO_BASELINE", "MISMATCH", "SKIPPED")

#: (test_id, metric, baseline values, candidate values, direction, tolerance[, noise_cv])
Check = tuple[Any, ...]


@dataclass(frozen=True)
class Verdict:
    """One decision; fields are exactly the verdict dict of CONTRIBUTING-LAYERS.md.

    For ``kind="regression"``: values are medians per side, ``ratio`` the ratio of geometric means
    (candidate/baseline), ``ci_low..ci_high`` its (1-2*alpha) interval. For ``kind="slo"``:
    ``baseline_value`` is the limit and ``candidate_value`` the median over runs.
    """

    test_id: str
    metric: str
    kind: str
    verdict: str
    baseline_value: float | None = None
    candidate_value: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    alpha: float | None = None
    baseline_k: int | None = None
    candidate_k: int | None = None
    runs_needed: int | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UsageError(f"verdict dict has unknown field(s) {sorted(unknown)}")
        for required in ("test_id", "metric", "kind", "verdict"):
            if not isinstance(d.get(required), str):
                raise UsageError(f"verdict dict field {required!r} must be a string, got {d.get(required)!r}")
        if d["verdict"] not in _VERDICTS:
            raise UsageError(f"verdict dict field 'verdict' must be one of {_VERDICTS}, got {d['verdict']!r}")
        return cls(**dict(d))


def log_welch(base_logs: Any, cand_logs: Any, sign: float, noise_sd: float | None = None) -> tuple[Any, Any, Any]:
    """Vectorised core over the last axis: (worsening w, standard error, df) of mean(cand) - mean(base) in logs.

    ``sign`` is +1 when lower is better (an increase is worse), -1 when higher is better. Cases:
    both sides >= 2 runs: Welch; one candidate run: the baseline's variance, scale sqrt(1/Kb + 1),
    df = Kb - 1; ``noise_sd`` given (external CV): a z-test (df = inf) with that standard deviation.
    """
    import numpy as np

    b = np.asarray(base_logs, dtype=float)
    c = np.asarray(cand_logs, dtype=float)
    kb, kc = b.shape[-1], c.shape[-1]
    w = sign * (c.mean(axis=-1) - b.mean(axis=-1))
    if noise_sd is not None:
        se = np.full_like(w, noise_sd * math.sqrt(1 / kb + 1 / kc))
        return w, se, np.full_like(w, np.inf)
    vb = b.var(axis=-1, ddof=1)
    if kc == 1:
        return w, np.sqrt(vb * (1 / kb + 1)), np.full_like(w, kb - 1.0)
    vc = c.var(axis=-1, ddof=1)
    ab, ac = vb / kb, vc / kc
    se = np.sqrt(ab + ac)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = (ab + ac) ** 2 / (ab**2 / (kb - 1) + ac**2 / (kc - 1))
    df = np.where(np.isfinite(df), df, kb + kc - 2.0)
    return w, se, df


def _p_and_quantile(w: Any, se: Any, df: Any, alpha: float) -> tuple[Any, Any]:
    """One-sided p-value of worsening and the t quantile of 1-alpha (vectorised; se == 0 handled exactly)."""
    import numpy as np
    from scipy import stats

    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, w / np.where(se > 0, se, 1.0), np.where(w > 0, np.inf, np.where(w < 0, -np.inf, 0.0)))
    p = stats.t.sf(t, df)
    p = np.where((se == 0) & (w == 0), 1.0, p)  # identical constant sides: no evidence at all
    return p, stats.t.ppf(1 - alpha, df)


def holm_alphas(p_values: Any, family_alpha: float) -> Any:
    """Per-check alpha from Holm's step-down, vectorised over the last axis (NaN p = check left out).

    Sorted by p, rank i of m gets family_alpha/(m-i) while every smaller p was below its own level;
    from the first check that is not, all later checks are judged at that stopping level, so they
    cannot be significant either. NaN entries get NaN.
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
    stop = rejected_so_far.sum(axis=-1, keepdims=True)  # index of the first non-rejection
    stop_level = np.take_along_axis(level, np.minimum(stop, p.shape[-1] - 1), axis=-1)
    sorted_alpha = np.where(rank < stop, level, stop_level)
    out = np.empty_like(sorted_alpha)
    np.put_along_axis(out, order, sorted_alpha, axis=-1)
    return np.where(valid, out, np.nan)


def runs_needed_for(cv: float, tolerance: float, alpha: float, power: float = 0.8, at_least: int = 2) -> int:
    """Runs per side to detect a worsening of ``tolerance`` at run-to-run ``cv`` (normal approximation)."""
    from scipy.stats import norm

    if tolerance <= 0:
        raise UsageError(f"runs needed: the change to detect must be > 0, got {tolerance!r}")
    n = 2 * (norm.ppf(1 - alpha) + norm.ppf(power)) ** 2 * (cv / math.log1p(tolerance)) ** 2
    return max(int(math.ceil(n - 1e-9)), at_least)


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
    noise_cv: float | None = None,
) -> Verdict:
    """Judge one metric of one test: baseline runs vs candidate runs (one value per run each).

    Same arguments as the ``pytest_llmperf_decide`` hookspec, plus ``test_id`` (for the message) and
    ``noise_cv`` (run-to-run std of logs measured elsewhere, used only when the baseline has one run).
    """
    import numpy as np

    if direction not in ("lower", "higher"):
        raise UsageError(f"metric {metric!r}: direction must be 'lower' or 'higher', got {direction!r}")
    if not (0 < alpha < 0.5) or not (tolerance >= 0):
        raise UsageError(f"metric {metric!r}: need 0 < alpha < 0.5 and tolerance >= 0, got {alpha!r}, {tolerance!r}")
    cand = _validate(metric, "candidate", candidate, test_id)
    if not cand:
        raise UsageError(f"metric {metric!r}: no candidate values")
    base = _validate(metric, "baseline", baseline, test_id)
    kb, kc = len(base), len(cand)
    common = dict(test_id=test_id, metric=metric, kind="regression", baseline_k=kb, candidate_k=kc, alpha=alpha)
    if kb == 0:
        v = Verdict(verdict="NO_BASELINE", candidate_value=float(np.median(cand)), **common)
        return replace(v, message=format_verdict(v, tolerance))
    lb, lc = np.log(base), np.log(cand)
    sign = 1.0 if direction == "lower" else -1.0
    ratio = float(np.exp(lc.mean() - lb.mean()))
    values = dict(baseline_value=float(np.median(base)), candidate_value=float(np.median(cand)), ratio=ratio)
    if kb == 1 and noise_cv is None:
        cv = float(lc.std(ddof=1)) if kc >= 2 else None
        need = runs_needed_for(cv, tolerance, alpha, at_least=max(kb, kc) + 1) if cv and tolerance > 0 else max(DEFAULT_RUNS, kc + 1)
        v = Verdict(verdict="INCONCLUSIVE", runs_needed=need, **values, **common)
        return replace(v, message=format_verdict(v, tolerance))
    w, se, df = (float(x) for x in log_welch(lb, lc, sign, noise_cv if kb == 1 else None))
    p_arr, q_arr = _p_and_quantile(np.array(w), np.array(se), np.array(df), alpha)
    p, q = float(p_arr), float(q_arr)
    limit = math.log1p(tolerance)
    d = sign * w  # log ratio candidate/baseline
    ci_low, ci_high = math.exp(d - q * se), math.exp(d + q * se)
    if p < alpha and w > limit:
        verdict, need = "FAIL", None
    elif w + q * se <= limit:
        verdict, need = "PASS", None
    else:
        verdict = "INCONCLUSIVE"
        cv = noise_cv if kb == 1 else float(np.sqrt(((kb - 1) * lb.var(ddof=1) + (kc - 1) * (lc.var(ddof=1) if kc > 1 else 0.0)) / max(kb + kc - 2, 1)))
        # with tolerance 0 no number of runs can prove "not worse": nothing to suggest
        need = runs_needed_for(cv or 0.0, tolerance, alpha, at_least=max(kb, kc) + 1) if tolerance > 0 else None
    v = Verdict(verdict=verdict, ci_low=ci_low, ci_high=ci_high, p_value=p, runs_needed=need, **values, **common)
    return replace(v, message=format_verdict(v, tolerance))


def decide_all(
    checks: Sequence[Check],
    family_alpha: float = DEFAULT_FAMILY_ALPHA,
    *,
    decide_fn: Callable[..., Verdict] | None = None,
) -> list[Verdict]:
    """Judge every check so the build-wide chance of any false FAIL stays <= ``family_alpha`` (Holm).

    A check is ``(test_id, metric, baseline, candidate, direction, tolerance[, noise_cv])``. Checks
    whose decision has no p-value (no baseline, too few runs) cannot FAIL and are not counted in m.
    ``decide_fn`` replaces :func:`decide` (the ``pytest_llmperf_decide`` hook), called with keywords
    ``test_id, metric, baseline, candidate, direction, tolerance, alpha``. Verdicts come back in input order.
    """
    import numpy as np

    def run(check: Check, alpha: float) -> Verdict:
        test_id, metric, base, cand, direction, tolerance = check[:6]
        if decide_fn is not None:
            v = decide_fn(test_id=test_id, metric=metric, baseline=base, candidate=cand, direction=direction,
                          tolerance=tolerance, alpha=alpha)
            return v if v.test_id else replace(v, test_id=test_id)
        noise = check[6] if len(check) > 6 else None
        return decide(metric, base, cand, direction=direction, tolerance=tolerance, alpha=alpha, test_id=test_id, noise_cv=noise)

    first = [run(c, family_alpha) for c in checks]
    p = np.array([np.nan if v.p_value is None else v.p_value for v in first], dtype=float)
    if p.size == 0:
        return []
    alphas = holm_alphas(p, family_alpha)
    return [v if np.isnan(a) else run(c, float(a)) for c, v, a in zip(checks, first, alphas)]


def build_checks(
    test_id: str,
    baseline_runs: Sequence[Mapping[str, float]],
    candidate_runs: Sequence[Mapping[str, float]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    tolerances: Mapping[str, float] | None = None,
    metrics: Sequence[str] | None = None,
) -> tuple[list[Check], list[Verdict]]:
    """Checks for every metric present on both sides (or only ``metrics``), and SKIPPED verdicts for the rest.

    Metrics in :data:`NOT_GATED`, of unknown direction, or with a non-positive value are not testable
    on the log scale: they come back as SKIPPED verdicts naming the reason.
    """
    from pytest_llmperf.stats.metrics import direction_of

    names: set[str] = set()
    for run in [*baseline_runs, *candidate_runs]:
        names.update(run)
    wanted = list(metrics) if metrics else sorted(names)
    checks: list[Check] = []
    skipped: list[Verdict] = []
    for metric in wanted:
        base = [float(r[metric]) for r in baseline_runs if r.get(metric) is not None]
        cand = [float(r[metric]) for r in candidate_runs if r.get(metric) is not None]
        reason = None
        if metric in NOT_GATED:
            continue  # SLO territory, by design
        if not cand:
            reason = "no candidate values"
        elif not base:
            reason = "no baseline values"
        else:
            try:
                direction = direction_of(metric)
            except UsageError:
                reason = "no direction known for this metric"
            else:
                if min(base + cand) <= 0:
                    reason = "a value is <= 0, the log-ratio test is undefined"
        if reason is not None:
            skipped.append(Verdict(test_id=test_id, metric=metric, kind="regression", verdict="SKIPPED",
                                   baseline_k=len(base), candidate_k=len(cand),
                                   message=f"SKIPPED {test_id} {metric}: {reason}"))  # fmt: skip
            continue
        tol = (tolerances or {}).get(metric, tolerance)
        checks.append((test_id, metric, base, cand, direction, tol))
    return checks, skipped


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def _num(x: float) -> str:
    return f"{x:.2g}" if x < 0.01 else f"{x:.3g}"


def format_verdict(v: Verdict, tolerance: float | None = None) -> str:
    """One readable line; with ``tolerance`` None, the stored ``message`` when there is one."""
    if tolerance is None and v.message:
        return v.message
    head = f"{v.verdict} {v.test_id} {v.metric}".replace("  ", " ")
    if v.kind == "slo":
        return f"{head} {v.candidate_value} vs limit {v.baseline_value}"
    k = f"K={v.baseline_k} vs {v.candidate_k}"
    tol = f"; tolerance {tolerance * 100:g}%" if tolerance is not None else ""
    need = f"; need K={v.runs_needed} per side" if v.runs_needed else ""
    if v.verdict == "NO_BASELINE":
        return f"{head} no baseline runs ({k})"
    if v.ratio is None:
        return f"{head} ({k}{tol}{need})"
    if v.p_value is None or v.alpha is None or v.ci_low is None or v.ci_high is None:
        return f"{head} {_pct(v.ratio)} (one baseline run: its run-to-run noise is unknown{tol}; {k}{need})"
    level = f"{(1 - 2 * v.alpha) * 100:.4g}%"
    cmp = "<" if v.p_value < v.alpha else ">="
    return (
        f"{head} {_pct(v.ratio)} ({level} CI {_pct(v.ci_low)}..{_pct(v.ci_high)}, "
        f"p={_num(v.p_value)} {cmp} α={_num(v.alpha)}{tol}; {k}{need})"
    )
