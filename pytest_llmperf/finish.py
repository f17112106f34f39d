"""End of a pytest session: the build-wide decision, the results file, reports and baseline updates.

Called once from :meth:`LLMPerfSession.pytest_sessionfinish`. Returns the exit status it wants (0 or 1):
1 when the Holm procedure over every check of the build finds a regression that the per-test
(Bonferroni) gate did not already fail, or when a baseline update was refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_llmperf.session import LLMPerfSession

__all__ = ["finish_session"]

log = logging.getLogger(__name__)


def _final_verdicts(session: LLMPerfSession) -> tuple[list[dict[str, Any]], list[str]]:
    """Holm over all regression checks (build-wide FAR = --llmperf-far) plus every other verdict."""
    from pytest_llmperf.stats.regression import decide_all, format_verdict

    hook = session.pytest_config.hook.pytest_llmperf_decide
    final = decide_all(session.checks, session.cfg.far, decide_fn=lambda **kw: hook(**kw))
    by_key = {(v.test_id, v.metric): v for v in final}
    verdicts: list[dict[str, Any]] = []
    newly_failed: list[str] = []
    for result in session.results:
        for v in result.verdicts:
            holm = by_key.get((v["test_id"], v["metric"])) if v["kind"] == "regression" else None
            if holm is None:
                verdicts.append(v)
                continue
            if holm.verdict == "FAIL" and v["verdict"] != "FAIL":
                newly_failed.append(format_verdict(holm))
            verdicts.append(holm.to_dict())
    return verdicts, newly_failed


def finish_session(session: LLMPerfSession) -> int:
    from pytest_llmperf.report.json_io import write_results

    status = 0
    session.verdicts, newly_failed = _final_verdicts(session)
    if newly_failed and not session.cfg.no_gate:
        session.end_messages.append("llmperf: regressions found by the build-wide (Holm) decision:")
        session.end_messages.extend(f"  {line}" for line in newly_failed)
        status = 1
    results = session.results_dict()
    path = write_results(session.cfg.results, results)
    session.end_messages.append(f"llmperf: results written to {path}")
    status = max(status, _update_baselines(session, results))
    _write_reports(session, results)
    return status


def _update_baselines(session: LLMPerfSession, results: dict[str, Any]) -> int:
    if not session.cfg.update_baselines:
        return 0
    from pytest_llmperf.commands.baseline import update_baselines
    from pytest_llmperf.commands.compare import verdict_table
    from pytest_llmperf.storage.baselines import BaselineStore

    c = session.cfg
    failed_at_test = [v for r in session.results for v in r.verdicts if v["verdict"] == "FAIL"]
    if failed_at_test and not c.accept_regression:
        session.end_messages.append(
            f"llmperf baseline update refused: {len(failed_at_test)} check(s) failed in this run "
            f"({', '.join(sorted({v['test_id'] + ' ' + v['metric'] for v in failed_at_test}))}); rerun with "
            f"--llmperf-accept-regression --llmperf-update-reason TEXT to record them")
        return 1
    from pytest_llmperf.bench import gated_metrics_of

    summaries = [run.summary for result in session.results for run in result.runs]
    metrics = sorted({m for summary in summaries for m in gated_metrics_of(summary, None, c.gate_metrics)})
    report = update_baselines(results, BaselineStore(c.baseline_dir), accept_regression=c.accept_regression,
                              reason=c.update_reason, dry_run=False, tolerance=c.tolerance, family_alpha=c.far,
                              metrics=metrics)
    lines = ["llmperf baseline update (old vs new):"]
    if report.verdicts:
        lines.append(verdict_table(report.verdicts))
    lines += [f"new baseline: {t}" for t in report.new_tests]
    lines += [f"stale baseline (test no longer exists): {t}" for t in report.stale]
    lines.append(report.message)
    session.end_messages.extend(lines)
    return 1 if report.refused else 0


def _write_reports(session: LLMPerfSession, results: dict[str, Any]) -> None:
    """Markdown summary and plots under --llmperf-report-dir; the summary also goes to
    $GITHUB_STEP_SUMMARY when set. A plotting failure is logged, never hides the results."""
    from pytest_llmperf.report.markdown import render_markdown

    out = Path(session.cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    try:
        from pytest_llmperf.report.plots import make_plots

        plots = {k: str(v) for k, v in make_plots(results, out).items()}
    except Exception as exc:  # noqa: BLE001 - a broken plot must not lose the run
        session.end_messages.append(f"llmperf: plots failed: {exc!r}")
    md = render_markdown(results, {k: os.path.relpath(v, out) for k, v in plots.items()})
    (out / "summary.md").write_text(md)
    session.end_messages.append(f"llmperf: report written to {out}/ (summary.md, {len(plots)} plots)")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a") as fh:
            fh.write(md + "\n")
