"""``llmperf baseline update RESULTS.json``: record new baselines, guarded against swallowing a regression.

For every test in the results, the new runs are first judged against the stored baseline (the same
gate as CI, Holm over all checks). Any FAIL refuses the whole update (nothing written, exit 1) unless
``--accept-regression --reason TEXT``, which is recorded in the provenance with the user. Baseline files
of tests absent from the results are reported as stale. :func:`update_baselines` is the same logic for
the pytest plugin's ``--llmperf-update-baselines``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import getpass
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.stats.calibration import noise_cv
from pytest_llmperf.stats.regression import DEFAULT_FAMILY_ALPHA, DEFAULT_TOLERANCE, Verdict, build_checks, decide_all
from pytest_llmperf.storage.baselines import Baseline, BaselineStore, Provenance
from pytest_llmperf.storage.fingerprint import Fingerprint, fingerprint_for_test

__all__ = ["add_parser", "main", "update_baselines", "UpdateReport", "current_user", "current_commit"]


@dataclass(frozen=True)
class UpdateReport:
    """What an update did (or, with ``dry_run`` / ``refused``, would have done)."""

    hardware_id: str
    verdicts: list[Verdict]
    written: list[str] = field(default_factory=list)
    new_tests: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    refused: bool = False
    dry_run: bool = False
    message: str = ""


def _git(*argv: str) -> str | None:
    try:
        out = subprocess.run(["git", *argv], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def current_user() -> str | None:
    """``git config user.name``, else ``$USER``."""
    return _git("config", "user.name") or os.environ.get("USER") or (getpass.getuser() if hasattr(os, "getuid") else None)


def current_commit() -> str | None:
    return _git("rev-parse", "HEAD")


def _noise(runs: list[dict[str, float]]) -> dict[str, float] | None:
    out = {}
    for key in sorted({k for r in runs for k in r}):
        vals = [r[key] for r in runs if key in r]
        if len(vals) >= 2 and min(vals) > 0:
            out[key] = noise_cv(vals)
    return out or None


#: runs a baseline keeps; older runs drop out first
MAX_BASELINE_RUNS = 12


def _accumulated(store: BaselineStore, hardware_id: str, test_id: str, runs: list[dict[str, float]],
                 fp: Fingerprint, failed_tests: set[str]) -> list[dict[str, float]]:
    """New runs appended to the stored ones (same fingerprint, no regression), newest ``MAX_BASELINE_RUNS``.

    Runs from several sessions put the between-session noise (machine load, clocks, allocator layout) into the
    baseline's spread; runs of one session alone understate it and make a later unchanged session look
    significantly different. An accepted regression or a new fingerprint starts the baseline afresh.
    """
    old = store.load(hardware_id, test_id)
    if old is None or test_id in failed_tests:
        return runs
    try:
        if Fingerprint.from_dict(old.fingerprint).differences(fp):
            return runs
    except UsageError:
        return runs
    return (list(old.runs) + list(runs))[-MAX_BASELINE_RUNS:]


def update_baselines(
    results: Mapping[str, Any],
    store: BaselineStore,
    *,
    accept_regression: bool,
    reason: str | None,
    dry_run: bool,
    tolerance: float = DEFAULT_TOLERANCE,
    family_alpha: float = DEFAULT_FAMILY_ALPHA,
    user: str | None = None,
    commit: str | None = None,
    command: str | None = None,
    metrics: Sequence[str] | None = None,
) -> UpdateReport:
    """Judge the results' runs against the stored baselines, then write them unless a FAIL forbids it."""
    if accept_regression and not (reason and reason.strip()):
        raise UsageError("--accept-regression needs a non-empty --reason (it is recorded in the baseline)")
    fp_dict = results.get("fingerprint")
    if not isinstance(fp_dict, Mapping):
        raise UsageError("results: field 'fingerprint' is missing; cannot tell which hardware the baselines belong to")
    fp = Fingerprint.from_dict(fp_dict, "results field 'fingerprint'")
    hardware_id = fp.hardware_id()
    tests = results.get("tests")
    if not isinstance(tests, list):
        raise UsageError("results: field 'tests' must be a list")
    new: dict[str, list[dict[str, float]]] = {}
    test_fps: dict[str, Fingerprint] = {}
    for i, test in enumerate(tests):
        if not isinstance(test, Mapping) or not isinstance(test.get("test_id"), str):
            raise UsageError(f"results: field 'tests[{i}].test_id' is missing or not a string")
        runs = [dict(r["summary"]) for r in test.get("runs") or [] if isinstance(r, Mapping) and isinstance(r.get("summary"), Mapping)]
        if runs:
            new[test["test_id"]] = runs
            engine = test.get("engine") if isinstance(test.get("engine"), Mapping) else {}
            test_fps[test["test_id"]] = fingerprint_for_test(fp, engine)
    checks, verdicts, new_tests = [], [], []
    for test_id, runs in new.items():
        old = store.load(hardware_id, test_id)
        if old is None:
            new_tests.append(test_id)
            continue
        try:
            diffs = Fingerprint.from_dict(old.fingerprint).differences(test_fps[test_id])
        except UsageError as exc:
            diffs = [str(exc)]
        if diffs:
            verdicts.append(Verdict(test_id=test_id, metric="*", kind="regression", verdict="MISMATCH",
                                    message=f"MISMATCH {test_id}: baseline fingerprint differs ({'; '.join(diffs)})"))  # fmt: skip
            continue
        c, s = build_checks(test_id, old.runs, runs, tolerance=tolerance, metrics=metrics)
        checks += c
        verdicts += s
    verdicts = sorted(decide_all(checks, family_alpha) + verdicts, key=lambda v: (v.test_id, v.metric))
    stale = store.stale(hardware_id, list(new)) if (store.root / hardware_id).is_dir() else []
    failed = [v for v in verdicts if v.verdict == "FAIL"]
    if failed and not accept_regression:
        msg = f"refused: {len(failed)} regression(s); rerun with --accept-regression --reason TEXT to record them"
        return UpdateReport(hardware_id, verdicts, [], new_tests, stale, refused=True, dry_run=dry_run, message=msg)
    provenance = Provenance(
        commit=commit if commit is not None else current_commit(),
        date_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        engine=fp.engine, engine_version=fp.engine_version,
        command=command if command is not None else " ".join(sys.argv),
        user=user if user is not None else current_user(),
        reason=reason, accepted_regression=bool(failed) and accept_regression,
    )  # fmt: skip
    written: list[str] = []
    failed_tests = {v.test_id for v in failed}
    for test_id, runs in new.items():
        runs = _accumulated(store, hardware_id, test_id, runs, test_fps[test_id], failed_tests)
        baseline = Baseline(test_id=test_id, fingerprint=test_fps[test_id].to_dict(), runs=runs, provenance=provenance, noise=_noise(runs))
        if dry_run:
            written.append(str(store.path(hardware_id, test_id)))
        else:
            written.append(str(store.save(baseline, hardware_id)))
    verb = "would write" if dry_run else "wrote"
    msg = f"{verb} {len(written)} baseline(s) under {store.root / hardware_id}"
    return UpdateReport(hardware_id, verdicts, written, new_tests, stale, refused=False, dry_run=dry_run, message=msg)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("baseline", help="manage stored baselines", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    u = sub.add_parser("update", help="store the runs of a results file as the new baselines")
    u.add_argument("results", metavar="RESULTS.json", help="session results written by pytest --llmperf-json / llmperf run")
    u.add_argument("--baseline-dir", default="baselines", help="baselines folder (default: baselines)")
    u.add_argument("--accept-regression", action="store_true", help="record the new runs even when they regress")
    u.add_argument("--reason", default=None, help="why a regression is accepted (required with --accept-regression)")
    u.add_argument("--metric", action="append", default=None, metavar="M",
                   help="compare only these metrics old vs new (repeatable; default: every metric on both sides)")
    u.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    u.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="relative worsening tolerated (default 0.05)")
    u.add_argument("--alpha", type=float, default=DEFAULT_FAMILY_ALPHA, help="false-alarm rate of the old-vs-new check (default 0.05)")
    u.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    import json

    from pytest_llmperf.commands.compare import verdict_table

    path = Path(args.results)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read results: {exc}") from exc
    report = update_baselines(results, BaselineStore(args.baseline_dir), accept_regression=args.accept_regression,
                              reason=args.reason, dry_run=args.dry_run, tolerance=args.tolerance,
                              family_alpha=args.alpha, metrics=args.metric)  # fmt: skip
    print(f"hardware: {report.hardware_id}")
    if report.verdicts:
        print(verdict_table(report.verdicts))
        print()
        for v in report.verdicts:
            if v.verdict not in ("PASS", "SKIPPED"):
                print(v.message)
    for t in report.new_tests:
        print(f"new baseline: {t}")
    for t in report.stale:
        print(f"stale baseline (test no longer in the results): {t}")
    print(report.message)
    return 1 if report.refused else 0
