"""End of a pytest session: the build-wide decision, the results file, baseline updates and reports.

Called once from ``LLMPerfSession.pytest_sessionfinish`` with explicit arguments. Returns the exit status it
wants (0 or 1) with the lines to print: 1 when the Holm procedure over every check of the build finds a
regression the per-test (Bonferroni) gate did not already fail, or when a baseline update was refused.
The results file is always written (failed tests included), before anything else can go wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_llmperf.config import LLMPerfConfig
    from pytest_llmperf.records import TestResult
    from pytest_llmperf.stats.verdict import Check, Verdict

__all__ = ["finish_session", "final_verdicts"]

log = logging.getLogger(__name__)


def final_verdicts(results: Sequence[TestResult], checks: Sequence[Check], family_alpha: float,
                   decide_fn: Callable[..., Verdict | None] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Holm over all regression checks (build-wide FAR = ``family_alpha``) plus every other verdict, in test
    order; and the lines of checks that only the build-wide decision FAILs."""
    from pytest_llmperf.stats.decision import decide_all
    from pytest_llmperf.stats.verdict import format_verdict

    final = decide_all(list(checks), family_alpha, decide_fn=decide_fn)
    by_key = {(v.test_id, v.metric, v.kind): v for v in final}
    verdicts: list[dict[str, Any]] = []
    newly_failed: list[str] = []
    for result in results:
        for v in result.verdicts:
            holm = by_key.get((v["test_id"], v["metric"], v["kind"]))
            if holm is None:
                verdicts.append(v)
                continue
            if holm.verdict == "FAIL" and v["verdict"] != "FAIL":
                newly_failed.append(format_verdict(holm))
            verdicts.append(holm.to_dict())
    return verdicts, newly_failed


def finish_session(*, cfg: LLMPerfConfig, results: Sequence[TestResult], checks: Sequence[Check],
                   failed_tests: Mapping[str, str], results_dict: Callable[[], dict[str, Any]],
                   decide_fn: Callable[..., Verdict | None] | None, interrupted: bool) -> tuple[int, list[dict[str, Any]], list[str]]:
    """``(exit status wanted, final verdict dicts, lines for the terminal)``; ``results_dict()`` builds the
    results JSON once the final verdicts are set on the caller (it is called after they are returned)."""
    from pytest_llmperf.gate.compare import summary_line
    from pytest_llmperf.report.json_io import write_results

    lines: list[str] = []
    status = 0
    verdicts, newly_failed = final_verdicts(results, checks, cfg.far, decide_fn)
    if newly_failed and not cfg.no_gate:
        lines.append("llmperf: regressions found by the build-wide (Holm) decision:")
        lines.extend(f"  {line}" for line in newly_failed)
        status = 1
    results_obj = {**results_dict(), "verdicts": verdicts}
    path = write_results(cfg.results, results_obj)
    lines.append(f"llmperf: results written to {path}")
    lines.append(summary_line(verdicts))
    if cfg.update_baselines:
        update_status, update_lines = _update_baselines(cfg, results_obj, verdicts, failed_tests, interrupted, decide_fn)
        status = max(status, update_status)
        lines.extend(update_lines)
    lines.extend(_write_reports(cfg.report_dir, results_obj, plots=not cfg.no_plots))
    return status, verdicts, lines


def _update_baselines(cfg: LLMPerfConfig, results: dict[str, Any], verdicts: list[dict[str, Any]],
                      failed_tests: Mapping[str, str], interrupted: bool,
                      decide_fn: Callable[..., Verdict | None] | None) -> tuple[int, list[str]]:
    """Record this session, judged by exactly the verdicts its tests were gated with."""
    if interrupted:
        return 1, ["llmperf baseline update skipped: the session was interrupted; nothing was written"]
    from pytest_llmperf.gate.compare import verdict_table
    from pytest_llmperf.gate.settings import GateSettings
    from pytest_llmperf.gate.update import update_baselines
    from pytest_llmperf.stats.verdict import Verdict
    from pytest_llmperf.storage.baselines import BaselineStore

    gated: dict[str, list[Verdict]] = {}
    for v in verdicts:
        gated.setdefault(v["test_id"], []).append(Verdict.from_dict(v))
    report = update_baselines(results, BaselineStore(cfg.baseline_dir), accept_regression=cfg.accept_regression,
                              reason=cfg.update_reason, dry_run=False, settings=GateSettings.from_config(cfg),
                              gated=gated, failed_tests=failed_tests, decide_fn=decide_fn)
    lines = ["llmperf baseline update (the verdicts this session gated with):"]
    shown = [v for v in report.verdicts if v.verdict not in ("PASS", "NO_BASELINE")]
    if shown:
        lines.append(verdict_table(shown))
    lines += [f"new baseline: {t}" for t in report.new_tests]
    lines += [f"stale baseline (test no longer exists): {t}" for t in report.stale]
    lines.append(("llmperf baseline update " if report.refused else "") + report.message)
    return (1 if report.refused or report.not_recorded else 0), lines


def _write_reports(report_dir: str, results: dict[str, Any], *, plots: bool = True) -> list[str]:
    """Markdown summary and plots under ``report_dir`` (and the job summary), through the one writer that
    ``llmperf report`` uses too; a plotting failure is reported, never hides the results."""
    from pytest_llmperf.report.summary import write_reports

    if not results.get("tests"):
        return []
    return list(write_reports(results, report_dir, plots=plots).messages)
