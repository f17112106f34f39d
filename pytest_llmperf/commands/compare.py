"""``llmperf compare A.json B.json``: gate B (candidate) against A (baseline) outside pytest, with the gate's rule.

A and B are session results files (``tests[].runs[].summary``) or baseline files (``runs[]`` with their
sessions and anchor). Every test present in both is judged by the same code as the pytest gate
(:func:`pytest_llmperf.gate.compare.checks_for_test`, then Holm over all checks, so ``--alpha`` is the
false-alarm rate of the whole comparison), with the same defaults: pyproject ``[tool.llmperf]`` and the
backend's defaults (the backend is read from A's fingerprint); ``--tolerance``, ``--alpha``, ``--session-cv``
and ``--metric`` override them. Exit status: 0 all pass, 1 any FAIL, 2 inconclusive, mismatch or error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.gate.compare import checks_for_test, verdict_table
from pytest_llmperf.gate.settings import GateSettings, config_for_backend
from pytest_llmperf.report.json_io import is_baseline_document, read_json, results_from_document
from pytest_llmperf.stats.decision import decide_all
from pytest_llmperf.storage.baselines import Baseline

if TYPE_CHECKING:
    from pytest_llmperf.stats.verdict import Verdict

__all__ = ["add_parser", "main", "load_baselines", "load_runs", "compare_runs", "verdict_table", "exit_code"]


def load_baselines(path: str | Path) -> tuple[dict[str, Baseline], dict[str, Any] | None]:
    """``({test_id: Baseline}, fingerprint or None)`` from a baseline file or, through the reader ``report`` and
    ``baseline update`` use (validated; older ``llmperf run --json`` documents converted), a results file."""
    p = Path(path)
    data = read_json(p)
    if is_baseline_document(data):
        b = Baseline.from_dict(data, source=str(p))
        return {b.test_id: b}, b.fingerprint
    results = results_from_document(data, p)
    fp = results["fingerprint"] if isinstance(results.get("fingerprint"), dict) else {}
    out: dict[str, Baseline] = {}
    for test in results["tests"]:
        summaries = [dict(r["summary"]) for r in test["runs"]]
        out[test["test_id"]] = Baseline(test_id=test["test_id"], fingerprint=dict(fp), runs=summaries,
                                        run_sessions=[p.name] * len(summaries))
    return out, results.get("fingerprint")


def load_runs(path: str | Path) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any] | None]:
    """``({test_id: [per-run summary, ...]}, fingerprint or None)`` from a results or baseline file."""
    baselines, fp = load_baselines(path)
    return {t: b.runs for t, b in baselines.items()}, fp


def compare_runs(baseline: dict[str, Baseline], candidate: dict[str, list[dict[str, float]]],
                 settings: GateSettings) -> list[Verdict]:
    """Verdicts for every common test (SKIPPED ones included), in test then metric order."""
    checks, settled = [], []
    for test_id in sorted(set(baseline) & set(candidate)):
        c, s = checks_for_test(test_id, candidate[test_id], baseline[test_id], None, settings)
        checks += c
        settled += s
    verdicts = decide_all(checks, settings.family_alpha) + settled
    return sorted(verdicts, key=lambda v: (v.test_id, v.metric, v.kind))


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """1 when any FAIL, else 2 when any INCONCLUSIVE (or MISMATCH), else 0."""
    kinds = {v.verdict for v in verdicts}
    if "FAIL" in kinds:
        return 1
    return 2 if kinds & {"INCONCLUSIVE", "MISMATCH"} else 0


def settings_from_args(args: argparse.Namespace, fingerprint: dict[str, Any] | None) -> GateSettings:
    """The pytest gate's settings for the backend of ``fingerprint``, with the command line's overrides."""
    backend = (fingerprint or {}).get("backend") or "cpu"
    cli = {k: v for k, v in {"tolerance": args.tolerance, "far": args.alpha, "session_cv": args.session_cv}.items()
           if v is not None}
    return GateSettings.from_config(config_for_backend(str(backend), ".", cli), args.metrics)


def add_gate_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared with ``baseline update`` (defaults: as the pytest gate resolves them)."""
    from pytest_llmperf.options import parse_fraction, parse_session_cv

    p.add_argument("--tolerance", type=parse_fraction, default=None,
                   help="relative worsening tolerated (default: as pytest: pyproject, else 0.1 gpu / 0.5 cpu)")
    p.add_argument("--alpha", type=parse_fraction, default=None,
                   help="false-alarm rate of the whole comparison (default: as pytest's --llmperf-far, 0.05)")
    p.add_argument("--session-cv", type=parse_session_cv, default=None, metavar="F[,METRIC=F]",
                   help="prior session-to-session noise, for every metric and/or per metric, e.g. "
                        "0.05,tpot_p50_ms=0.01 (default: as pytest, 0.05 gpu / 0.10 cpu; llmperf baseline noise "
                        "measures them)")
    p.add_argument("--metric", action="append", dest="metrics", metavar="M",
                   help="compare only this metric (repeatable; default: the backend's gated metrics)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="compare two results/baseline files (A = baseline, B = candidate)",
                              description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("baseline", metavar="A.json", help="baseline: results or baseline file (.json or .json.gz)")
    p.add_argument("candidate", metavar="B.json", help="candidate: results or baseline file (.json or .json.gz)")
    add_gate_arguments(p)
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    base, base_fp = load_baselines(args.baseline)
    cand, cand_fp = load_runs(args.candidate)
    if not set(base) & set(cand):
        raise UsageError(f"{args.baseline} and {args.candidate} have no test id in common")
    if base_fp and cand_fp and base_fp != cand_fp:
        diffs = [f"{k}: {base_fp.get(k)} != {cand_fp.get(k)}" for k in sorted(set(base_fp) | set(cand_fp))
                 if base_fp.get(k) != cand_fp.get(k)]  # fmt: skip
        print(f"llmperf compare: warning: fingerprints differ ({'; '.join(diffs)})", file=sys.stderr)
    verdicts = compare_runs(base, cand, settings_from_args(args, base_fp))
    print(verdict_table(verdicts))
    print()
    for v in verdicts:
        print(v.message)
    return exit_code(verdicts)
