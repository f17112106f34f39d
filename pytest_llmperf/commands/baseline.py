"""``llmperf baseline update RESULTS.json`` and ``llmperf baseline pin --label NAME``.

``update`` records a results file's runs as a new session of each test's baseline, guarded against
swallowing a regression: the new runs are first judged against the stored baselines by the pytest gate's own
code and settings (each test's recorded ``gate`` settings, else pyproject and the backend's defaults; Holm over
all checks). Any FAIL refuses the whole update (nothing written, exit 1) unless ``--accept-regression --reason
TEXT``, which is recorded with the user. Tests with fewer than 3 runs are never recorded. ``pin`` makes each
baseline's current window the anchor that later sessions are also compared with (e.g. at a release).
The logic is :mod:`pytest_llmperf.gate.update` and :mod:`pytest_llmperf.storage.update`, shared with pytest's
``--llmperf-update-baselines``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytest_llmperf.gate.update import UpdateReport, current_commit, current_user, update_baselines
from pytest_llmperf.storage.baselines import BaselineStore

__all__ = ["add_parser", "main", "pin_main", "update_baselines", "UpdateReport", "current_user", "current_commit"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from pytest_llmperf.commands.compare import add_gate_arguments

    p = subparsers.add_parser("baseline", help="manage stored baselines", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    u = sub.add_parser("update", help="store the runs of a results file as a new baseline session")
    u.add_argument("results", metavar="RESULTS.json", help="session results written by pytest or llmperf run (.json or .json.gz)")
    u.add_argument("--baseline-dir", default="baselines", help="baselines folder (default: baselines)")
    u.add_argument("--accept-regression", action="store_true", help="record the new runs even when they regress")
    u.add_argument("--reason", default=None, help="why a regression is accepted (required with --accept-regression)")
    u.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    add_gate_arguments(u)
    u.set_defaults(func=main)
    pin = sub.add_parser("pin", help="make every baseline's current window its anchor (e.g. at a release)")
    pin.add_argument("hardware_id", metavar="HARDWARE_ID", help="folder under the baselines root")
    pin.add_argument("--label", required=True, help="the anchor's name, e.g. v1.4.0")
    pin.add_argument("--baseline-dir", default="baselines", help="baselines folder (default: baselines)")
    pin.set_defaults(func=pin_main)
    return p


def main(args: argparse.Namespace) -> int:
    from pytest_llmperf.commands.compare import settings_from_args
    from pytest_llmperf.gate.compare import verdict_table
    from pytest_llmperf.report.json_io import load_results_any

    # The same reader as compare and report: .json or .json.gz, pytest's results or any llmperf run --json
    # document, validated, with errors that name the file.
    results = load_results_any(args.results)
    fp = results.get("fingerprint") if isinstance(results.get("fingerprint"), dict) else None
    settings = settings_from_args(args, fp)
    overrides = {k: v for k, v in (("tolerance", args.tolerance), ("family_alpha", args.alpha),
                                   ("session_cv", args.session_cv)) if v is not None}
    report = update_baselines(results, BaselineStore(args.baseline_dir), accept_regression=args.accept_regression,
                              reason=args.reason, dry_run=args.dry_run, settings=settings,
                              metrics=args.metrics, **overrides)  # fmt: skip
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
    return 1 if report.refused or report.not_recorded else 0


def pin_main(args: argparse.Namespace) -> int:
    from pytest_llmperf.storage.update import pin_anchor

    written = pin_anchor(BaselineStore(args.baseline_dir), args.hardware_id, args.label)
    print(f"pinned anchor {args.label!r} in {len(written)} baseline(s) under {Path(args.baseline_dir) / args.hardware_id}")
    return 0 if written else 1
