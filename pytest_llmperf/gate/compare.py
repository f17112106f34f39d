"""One test's runs against its stored baseline: the checks to decide and the verdicts that need no decision.

Used by the test-time gate (``Bench.gate``), the end-of-session decision, ``llmperf compare`` and
``llmperf baseline update``, so all four judge the same metrics with the same rule
(:func:`pytest_llmperf.stats.decision.decide`). Each metric is checked against the rolling window (the newest
sessions) and, when it holds other sessions, against the anchor (a pinned release, or the first sessions), so
a slow creep that the window absorbs is still measured against a fixed point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pytest_llmperf.errors import BaselineError
from pytest_llmperf.stats.decision import build_checks, decide_check
from pytest_llmperf.stats.verdict import Verdict, VerdictState
from pytest_llmperf.storage.fingerprint import Fingerprint

if TYPE_CHECKING:
    from pytest_llmperf.gate.settings import GateSettings
    from pytest_llmperf.stats.verdict import Check
    from pytest_llmperf.storage.baselines import Baseline

__all__ = ["checks_for_test", "judge", "planned_checks", "summary_line", "gate_failures", "verdict_table",
           "history_notes"]


def _whole_test(test_id: str, state: VerdictState, message: str, k: int) -> Verdict:
    return Verdict(test_id=test_id, metric="*", kind="regression", verdict=state.value, candidate_k=k, message=message)


def checks_for_test(test_id: str, runs: Sequence[Mapping[str, float]], baseline: Baseline | None,
                    fingerprint: Fingerprint | None, settings: GateSettings, *, source: str = "the baseline",
                    where: str = "") -> tuple[list[Check], list[Verdict]]:
    """``(checks to decide, verdicts already settled)`` for one test; raises BaselineError for an empty baseline.

    ``where`` names the baseline folder in the NO_BASELINE message. A test whose every check was SKIPPED
    gets a FAIL naming the reasons: the gate never passes on nothing.
    """
    k = len(runs)
    if baseline is None:
        return [], [_whole_test(test_id, VerdictState.NO_BASELINE,
                                f"NO_BASELINE {test_id}: no baseline{' for ' + where if where else ''} "
                                f"(record one with --llmperf-update-baselines)", k)]
    if not baseline.runs:
        raise BaselineError(f"{source}: field 'runs' is empty: nothing to compare {test_id} with; delete the file "
                            f"or record the test again")
    if fingerprint is not None:
        try:
            diffs = Fingerprint.from_dict(baseline.fingerprint, source=source).differences(fingerprint)
        except Exception as exc:  # noqa: BLE001 - a broken stored fingerprint is a mismatch, named
            diffs = [str(exc)]
        if diffs:
            return [], [_whole_test(test_id, VerdictState.MISMATCH,
                                    f"MISMATCH {test_id}: baseline recorded on different hardware/engine "
                                    f"({'; '.join(diffs)}); comparison skipped", k)]
    metrics = settings.metrics_for(runs[0] if runs else {})
    checks, settled = build_checks(test_id, baseline.runs, runs, metrics=metrics, tolerance=settings.tolerance,
                                   baseline_sessions=baseline.session_ids(), session_cv=settings.session_cv,
                                   session_cvs=settings.session_cvs())
    if not checks:
        reasons = "; ".join(v.message.split(": ", 1)[-1] for v in settled) or "no metric to compare"
        return [], [*settled, _whole_test(test_id, VerdictState.FAIL,
                                          f"FAIL {test_id}: nothing could be compared with the baseline ({reasons}); "
                                          f"the gate does not pass on nothing", k)]
    anchor = baseline.anchor_runs()
    if anchor is not None and not set(anchor[1]) <= set(baseline.session_ids()):
        a_checks, a_settled = build_checks(test_id, anchor[0], runs, metrics=[c.metric for c in checks],
                                           tolerance=settings.tolerance, baseline_sessions=anchor[1],
                                           session_cv=settings.session_cv, session_cvs=settings.session_cvs(),
                                           kind="anchor", label=anchor[2])
        checks += a_checks
        settled += [v for v in a_settled if v.metric not in {s.metric for s in settled}]
    return checks, settled


def judge(checks: Sequence[Check], alpha: float, decide_fn: Callable[..., Verdict | None] | None = None,
          pass_alpha: float | None = None) -> list[Verdict]:
    """Every check at one per-check ``alpha`` (the test-time Bonferroni level); PASS at ``pass_alpha``."""
    return [decide_check(c, alpha, decide_fn, pass_alpha) for c in checks]


def planned_checks(baseline: Baseline | None, n_metrics: int) -> int:
    """How many checks a test will make against ``baseline`` (for the test-time Bonferroni m)."""
    if baseline is None or not baseline.runs:
        return 0
    anchor = baseline.anchor_runs()
    distinct_anchor = anchor is not None and not set(anchor[1]) <= set(baseline.session_ids())
    return n_metrics * (2 if distinct_anchor else 1)


def gate_failures(verdicts: Sequence[Verdict], *, fail_inconclusive: bool,
                  require_baseline: bool = False) -> list[Verdict]:
    """The verdicts that fail a test: FAIL, INCONCLUSIVE regressions with ``fail_inconclusive``, and NO_BASELINE
    with ``require_baseline``."""
    out = [v for v in verdicts if v.verdict == VerdictState.FAIL]
    if fail_inconclusive:
        out += [v for v in verdicts if v.verdict == VerdictState.INCONCLUSIVE and v.kind != "slo"]
    if require_baseline:
        out += [v for v in verdicts if v.verdict == VerdictState.NO_BASELINE and v.kind != "slo"]
    return out


def summary_line(verdicts: Sequence[Mapping[str, object]]) -> str:
    """``"regression checks: 3 PASS, 1 FAIL, ...; 2 of 4 underpowered (...)"`` over verdict dicts."""
    from collections import Counter

    decided = [v for v in verdicts if v.get("kind") in ("regression", "anchor")]
    counts = Counter(str(v.get("verdict")) for v in decided)
    order = [s.value for s in VerdictState]
    parts = ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
    tested = [v for v in decided if v.get("p_value") is not None]
    weak = [v for v in tested if v.get("underpowered")]
    line = f"llmperf: regression checks: {parts or 'none'}"
    if tested:
        line += (f"; {len(weak)} of {len(tested)} underpowered (could not detect twice their tolerance with 80% "
                 f"power at their K and noise: record more runs or sessions)")
    if any(int(v.get("baseline_sessions") or 0) >= 2 for v in weak):  # type: ignore[call-overload]
        line += ("; sessions are recorded: `llmperf baseline noise` measures each metric's session spread for "
                 "--llmperf-session-cv")
    return line


def _pct(x: float | None) -> str:
    return "" if x is None else f"{(x - 1) * 100:+.1f}%"


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    """A plain-text table, one row per check (``llmperf compare``, ``baseline update``, end of session)."""
    from tabulate import tabulate

    rows = [
        [v.verdict, v.test_id, v.metric + (" (anchor)" if v.kind == "anchor" else ""), v.baseline_value,
         v.candidate_value, _pct(v.ratio), f"{_pct(v.ci_low)}..{_pct(v.ci_high)}" if v.ci_low is not None else "",
         "" if v.p_value is None else f"{v.p_value:.2g}", "" if v.alpha is None else f"{v.alpha:.2g}",
         "" if v.min_detectable is None else f"{v.min_detectable * 100:+.0f}%",
         f"{v.baseline_k} vs {v.candidate_k}" + (f" ({v.baseline_sessions} sess.)" if v.baseline_sessions else ""),
         v.runs_needed or ""]
        for v in verdicts
    ]  # fmt: skip
    # the values are medians of the runs; the change (and its CI) is the rule's: the candidate's geometric mean
    # against the baseline sessions' (docs/regression.md), so the two need not agree when runs are skewed
    headers = ["verdict", "test", "metric", "baseline median", "candidate median", "change (geo. mean)", "CI", "p",
               "alpha", "detects", "K", "need K"]
    return tabulate(rows, headers=headers, floatfmt=".4g")


def history_notes(test_id: str, baseline: Baseline | None, checks: Sequence[Check]) -> list[str]:
    """Level changes (step, creep) in each window check's history -- anchor sessions, window sessions, then this
    session -- that worsen by at least half the tolerance (``stats/history.py``; a report, never a FAIL)."""
    from pytest_llmperf.stats.history import detect_changes, session_series
    from pytest_llmperf.stats.metrics import direction_of

    if baseline is None:
        return []
    anchor = baseline.anchor_runs()
    lines = []
    for check in (c for c in checks if c.kind == "regression"):
        history = list(zip(check.baseline, check.baseline_sessions or ()))
        if anchor is not None:
            seen = {s for _, s in history}
            history = [(r[check.metric], s) for r, s in zip(anchor[0], anchor[1])
                       if check.metric in r and s not in seen] + history
        series = session_series([v for v, _ in history] + list(check.candidate),
                                [s for _, s in history] + ["<this session>"] * len(check.candidate))
        for change in detect_changes(series, direction=direction_of(check.metric)):
            if change.worse and abs(change.ratio - 1) >= check.tolerance / 2:
                lines.append(f"history {test_id} {change.describe(check.metric, len(series))}")
    return lines
