"""``llmperf compare A.json B.json``: gate B (candidate) against A (baseline) outside pytest.

A and B are session results files (``tests[].runs[].summary``) or baseline files (``runs[]``). Every
test present in both is compared metric by metric with :func:`~pytest_llmperf.stats.regression.decide_all`
(Holm over all checks, so ``--alpha`` is the false-alarm rate of the whole comparison). Exit status:
0 all pass, 1 any FAIL, 2 inconclusive or error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.stats.regression import (
    DEFAULT_FAMILY_ALPHA,
    DEFAULT_TOLERANCE,
    Verdict,
    build_checks,
    decide_all,
)

__all__ = ["add_parser", "main", "load_runs", "compare_runs", "verdict_table", "exit_code"]


def load_runs(path: str | Path) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any] | None]:
    """``({test_id: [per-run summary, ...]}, fingerprint or None)`` from a results or baseline file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{p}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if isinstance(data, dict) and isinstance(data.get("tests"), list):
        out: dict[str, list[dict[str, float]]] = {}
        for i, test in enumerate(data["tests"]):
            if not isinstance(test, dict) or not isinstance(test.get("test_id"), str):
                raise UsageError(f"{p}: field 'tests[{i}].test_id' is missing or not a string")
            runs = test.get("runs") or []
            if not all(isinstance(r, dict) and isinstance(r.get("summary"), dict) for r in runs):
                raise UsageError(f"{p}: field 'tests[{i}].runs[].summary' must be an object in every run")
            out[test["test_id"]] = [dict(r["summary"]) for r in runs]
        return out, data.get("fingerprint")
    if isinstance(data, dict) and "runs" in data and "test_id" in data:
        from pytest_llmperf.storage.baselines import Baseline

        b = Baseline.from_dict(data, source=str(p))
        return {b.test_id: b.runs}, b.fingerprint
    raise UsageError(f"{p}: neither a results file (field 'tests') nor a baseline file (fields 'test_id', 'runs')")


def compare_runs(
    baseline: dict[str, list[dict[str, float]]],
    candidate: dict[str, list[dict[str, float]]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_FAMILY_ALPHA,
    metrics: Sequence[str] | None = None,
) -> list[Verdict]:
    """Verdicts for every common test and metric (SKIPPED ones included), in test then metric order."""
    checks, skipped = [], []
    for test_id in sorted(set(baseline) & set(candidate)):
        c, s = build_checks(test_id, baseline[test_id], candidate[test_id], tolerance=tolerance, metrics=metrics)
        checks += c
        skipped += s
    verdicts = decide_all(checks, alpha) + skipped
    return sorted(verdicts, key=lambda v: (v.test_id, v.metric))


def _pct(x: float | None) -> str:
    return "" if x is None else f"{(x - 1) * 100:+.1f}%"


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    """A tabulate table, one row per check."""
    from tabulate import tabulate

    rows = [
        [v.verdict, v.test_id, v.metric, v.baseline_value, v.candidate_value, _pct(v.ratio),
         f"{_pct(v.ci_low)}..{_pct(v.ci_high)}" if v.ci_low is not None else "",
         "" if v.p_value is None else f"{v.p_value:.2g}", "" if v.alpha is None else f"{v.alpha:.2g}",
         f"{v.baseline_k} vs {v.candidate_k}", v.runs_needed or ""]
        for v in verdicts
    ]  # fmt: skip
    headers = ["verdict", "test", "metric", "baseline", "candidate", "change", "CI", "p", "alpha", "K", "need K"]
    return tabulate(rows, headers=headers, floatfmt=".4g")


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """1 when any FAIL, else 2 when any INCONCLUSIVE (or MISMATCH), else 0."""
    kinds = {v.verdict for v in verdicts}
    if "FAIL" in kinds:
        return 1
    return 2 if kinds & {"INCONCLUSIVE", "MISMATCH"} else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="compare two results/baseline files (A = baseline, B = candidate)",
                              description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("baseline", metavar="A.json", help="baseline: results or baseline file")
    p.add_argument("candidate", metavar="B.json", help="candidate: results or baseline file")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="relative worsening tolerated (default 0.05)")
    p.add_argument("--alpha", type=float, default=DEFAULT_FAMILY_ALPHA, help="false-alarm rate of the whole comparison (default 0.05)")
    p.add_argument("--metric", action="append", dest="metrics", metavar="M", help="compare only this metric (repeatable)")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    base, base_fp = load_runs(args.baseline)
    cand, cand_fp = load_runs(args.candidate)
    common = set(base) & set(cand)
    if not common:
        raise UsageError(f"{args.baseline} and {args.candidate} have no test id in common")
    if base_fp and cand_fp and base_fp != cand_fp:
        diffs = [f"{k}: {base_fp.get(k)} != {cand_fp.get(k)}" for k in sorted(set(base_fp) | set(cand_fp))
                 if base_fp.get(k) != cand_fp.get(k)]  # fmt: skip
        print(f"llmperf compare: warning: fingerprints differ ({'; '.join(diffs)})", file=sys.stderr)
    verdicts = compare_runs(base, cand, tolerance=args.tolerance, alpha=args.alpha, metrics=args.metrics)
    print(verdict_table(verdicts))
    print()
    for v in verdicts:
        print(v.message)
    return exit_code(verdicts)
