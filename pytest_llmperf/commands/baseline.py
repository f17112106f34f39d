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

from pytest_llmperf.errors import UsageError
from pytest_llmperf.gate.update import UpdateReport, current_commit, current_user, update_baselines
from pytest_llmperf.storage.baselines import BaselineStore

__all__ = ["add_parser", "main", "pin_main", "update_baselines", "UpdateReport", "current_user", "current_commit"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from pytest_llmperf.commands.compare import add_gate_arguments
    from pytest_llmperf.options import parse_fraction

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
    noise = sub.add_parser("noise", help="how much whole sessions differ per metric, from the recorded baselines",
                           description="The session-to-session spread of each gated metric, pooled over a "
                                       "machine's recorded baselines, and the --llmperf-session-cv that sets it "
                                       "as the regression model's prior (docs/regression.md).")
    noise.add_argument("hardware_ids", metavar="HARDWARE_ID", nargs="*", help="folders under the baselines root "
                                                                               "(default: every folder)")
    noise.add_argument("--baseline-dir", default="baselines", help="baselines folder (default: baselines)")
    noise.add_argument("--confidence", type=parse_fraction, default=0.9,
                       help="level of the one-sided upper bound suggested as the prior (default 0.9)")
    noise.set_defaults(func=noise_main)
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
        print(f"not in these results (kept; stale if the test was removed): {t}")
    print(report.message)
    return 1 if report.refused or report.not_recorded else 0


def pin_main(args: argparse.Namespace) -> int:
    from pytest_llmperf.storage.update import pin_anchor

    written = pin_anchor(BaselineStore(args.baseline_dir), args.hardware_id, args.label)
    print(f"pinned anchor {args.label!r} in {len(written)} baseline(s) under {Path(args.baseline_dir) / args.hardware_id}")
    return 0 if written else 1


#: fewest degrees of freedom (sum over tests of sessions - 1) behind a suggested per-metric prior
MIN_NOISE_DF = 4
#: the smallest prior suggested: 0 would mean "no prior", which with few sessions lets a session pass for a change
MIN_SUGGESTED_CV = 0.005


def session_noise_rows(baselines: list[Any], metrics: list[str], confidence: float) -> list[tuple[str, Any]]:
    """``(metric, SessionNoise or None)`` per metric, pooled over ``baselines`` (each test's window of sessions)."""
    from pytest_llmperf.stats.session_noise import estimate_session_cv

    rows = []
    for metric in metrics:
        tests = []
        for b in baselines:
            by_session: dict[str, list[float]] = {}
            for run, session in zip(b.runs, b.session_ids()):
                value = run.get(metric)
                if value is not None and value > 0:
                    by_session.setdefault(session, []).append(float(value))
            tests.append(list(by_session.values()))
        rows.append((metric, estimate_session_cv(tests, confidence)))
    return rows


def noise_main(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from pytest_llmperf.gate.settings import GateSettings, config_for_backend

    store = BaselineStore(args.baseline_dir)
    ids = args.hardware_ids or store.hardware_ids()
    if not ids:
        raise UsageError(f"no baselines under {args.baseline_dir}/ (record some with --llmperf-update-baselines)")
    for hardware_id in ids:
        baselines = store.baselines(hardware_id)
        if not baselines:
            raise UsageError(f"no baselines in {Path(args.baseline_dir) / hardware_id}: known folders: "
                             f"{', '.join(store.hardware_ids()) or 'none'}")
        backend = str(baselines[0].fingerprint.get("backend") or "cpu")
        settings = GateSettings.from_config(config_for_backend(backend, "."))
        metrics = sorted({m for b in baselines if b.runs for m in settings.metrics_for(b.runs[0])})
        rows = session_noise_rows(baselines, metrics, args.confidence)
        level = f"{args.confidence * 100:.4g}%"  # 0.999 is 99.9%, not 100%
        own = ", ".join(f"{m} {cv:g}" for m, cv in settings.session_cv_metrics)
        print(f"{Path(args.baseline_dir) / hardware_id}: {len(baselines)} baseline{'s' if len(baselines) != 1 else ''}; "
              f"prior now {settings.session_cv:g}" + (f", {own}" if own else " for every metric"))
        body = [[m, n.tests, n.sessions, n.df, f"{n.estimate:.2%}", f"{n.upper:.2%}"] if n else
                [m, 0, "-", 0, "-", "-"] for m, n in rows]
        print(tabulate(body, headers=["metric", "tests", "sessions", "df", "session CV", f"{level} upper"],
                       colalign=("left", "right", "right", "right", "right", "right")))
        chosen = [(m, min(max(n.upper, MIN_SUGGESTED_CV), 1.0)) for m, n in rows  # the option takes 0.005 .. 1
                  if n is not None and n.df >= MIN_NOISE_DF]
        if chosen:
            print(f"measured priors ({level} upper bounds; metrics under {MIN_NOISE_DF} degrees of freedom keep "
                  f"{settings.session_cv:g}):\n  --llmperf-session-cv "
                  + ",".join([f"{settings.session_cv:g}", *(f"{m}={cv:.3f}" for m, cv in chosen)]))
        else:
            print(f"too few recorded sessions for a measured prior (each metric needs {MIN_NOISE_DF} degrees of "
                  f"freedom: tests x (sessions - 1)); keep {settings.session_cv:g}")
        print()
    return 0
