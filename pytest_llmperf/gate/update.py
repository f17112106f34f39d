"""Recording a session as the new baselines, guarded so an update cannot swallow a regression.

One function for both paths: ``--llmperf-update-baselines`` hands in the verdicts each test was gated with
(and the tests that failed for any other reason); ``llmperf baseline update RESULTS.json`` judges the results'
runs against the stored baselines with the settings each test recorded (else pyproject and the backend's
defaults), Holm over every check. Any FAIL refuses the whole update unless ``accept_regression`` with a
reason; a test that failed after measuring, or that measured fewer than ``MIN_BASELINE_RUNS`` runs, is never
recorded. The bookkeeping (sessions, window, anchor, one lock) is :mod:`pytest_llmperf.storage.update`.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_llmperf.errors import BaselineError, UsageError
from pytest_llmperf.gate.compare import checks_for_test
from pytest_llmperf.gate.settings import GateSettings
from pytest_llmperf.options import SessionCV
from pytest_llmperf.stats.decision import MIN_BASELINE_RUNS, SESSIONS_KEPT, decide_all
from pytest_llmperf.stats.verdict import Verdict, VerdictState
from pytest_llmperf.storage.baselines import BaselineStore, Provenance
from pytest_llmperf.storage.fingerprint import Fingerprint, fingerprint_for_test
from pytest_llmperf.storage.update import NewRuns, SessionInfo, record_sessions

__all__ = ["UpdateReport", "update_baselines", "current_user", "current_commit"]


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
    not_recorded: list[str] = field(default_factory=list)  #: "test_id: why" for tests left out


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


def _tests(results: Mapping[str, Any], fp: Fingerprint) -> list[tuple[str, list[dict[str, float]], Fingerprint, Mapping[str, Any]]]:
    tests = results.get("tests")
    if not isinstance(tests, list):
        raise UsageError("results: field 'tests' must be a list")
    out = []
    for i, test in enumerate(tests):
        if not isinstance(test, Mapping) or not isinstance(test.get("test_id"), str):
            raise UsageError(f"results: field 'tests[{i}].test_id' is missing or not a string")
        runs = [dict(r["summary"]) for r in test.get("runs") or []
                if isinstance(r, Mapping) and isinstance(r.get("summary"), Mapping)]
        engine: Mapping[str, Any] = test["engine"] if isinstance(test.get("engine"), Mapping) else {}
        out.append((test["test_id"], runs, fingerprint_for_test(fp, engine), test))
    return out


def update_baselines(
    results: Mapping[str, Any],
    store: BaselineStore,
    *,
    accept_regression: bool,
    reason: str | None,
    dry_run: bool,
    settings: GateSettings | Callable[[Mapping[str, Any]], GateSettings] | None = None,
    tolerance: float | None = None,
    family_alpha: float | None = None,
    session_cv: float | SessionCV | None = None,
    metrics: Sequence[str] | None = None,
    gated: Mapping[str, Sequence[Verdict]] | None = None,
    failed_tests: Mapping[str, str] | None = None,
    user: str | None = None,
    commit: str | None = None,
    command: str | None = None,
    decide_fn: Callable[..., Verdict | None] | None = None,
) -> UpdateReport:
    """Judge the results' runs against the stored baselines, then record them unless a FAIL forbids it.

    ``settings``: the gate settings (or a function of a results test entry giving them); a test entry's own
    recorded ``gate`` settings win. ``tolerance``/``family_alpha``/``session_cv``/``metrics`` override them (CLI flags).
    ``gated``: test id -> the verdicts the test was gated with (the pytest path: nothing is re-judged).
    ``failed_tests``: test id -> why it failed after measuring (never recorded).
    """
    if accept_regression and not (reason and reason.strip()):
        raise UsageError("--accept-regression needs a non-empty --reason (it is recorded in the baseline)")
    fp_dict = results.get("fingerprint")
    if not isinstance(fp_dict, Mapping):
        raise UsageError("results: field 'fingerprint' is missing; cannot tell which hardware the baselines belong to")
    fp = Fingerprint.from_dict(fp_dict, "results field 'fingerprint'")
    hardware_id = fp.hardware_id()
    entries = _tests(results, fp)
    not_recorded = [f"{t}: {why}" for t, why in sorted((failed_tests or {}).items())]
    checks, verdicts, new_tests, keep = [], [], [], []
    for test_id, runs, test_fp, entry in entries:
        if not runs or test_id in (failed_tests or {}):
            continue
        if len(runs) < MIN_BASELINE_RUNS:
            not_recorded.append(f"{test_id}: {len(runs)} run(s); a baseline needs at least {MIN_BASELINE_RUNS} "
                                f"(--llmperf-repeats) so its noise can be judged")
            continue
        keep.append((test_id, runs, test_fp))
        if gated is not None:
            verdicts += [v for v in gated.get(test_id, []) if v.kind != "slo"]
            continue
        old = store.load(hardware_id, test_id, test_fp.model)
        if old is None:
            new_tests.append(test_id)
            continue
        s = _settings_for(entry, settings, fp)
        flags: dict[str, Any] = {k: v for k, v in (("tolerance", tolerance), ("family_alpha", family_alpha))
                                 if v is not None}
        if isinstance(session_cv, SessionCV):  # --session-cv F[,METRIC=F] replaces the recorded priors (as in pytest)
            flags.update(session_cv.settings())
        elif session_cv is not None:
            flags["session_cv"] = float(session_cv)
        if flags or metrics:
            s = GateSettings(**{**s.__dict__, **flags, **({"metrics": tuple(metrics)} if metrics else {})})
        try:
            c, settled = checks_for_test(test_id, runs, old, test_fp, s, source=str(store.path(hardware_id, test_id, test_fp.model)))
        except BaselineError as exc:
            raise UsageError(str(exc)) from None
        checks += c
        verdicts += settled
    if gated is not None:
        new_tests = [t for t, _, f in keep if store.load(hardware_id, t, f.model) is None]
    alpha = family_alpha if family_alpha is not None else (
        settings.family_alpha if isinstance(settings, GateSettings) else 0.05)
    verdicts = sorted(decide_all(checks, alpha, decide_fn=decide_fn) + verdicts, key=lambda v: (v.test_id, v.metric))
    models = {f.model for _, _, f, _ in entries}  # stale among this session's model's baselines, not another's
    stale = (store.stale(hardware_id, [t for t, _, _, _ in entries], next(iter(models)) if len(models) == 1 else None)
             if (store.root / hardware_id).is_dir() else [])
    failed = [v for v in verdicts if v.verdict == VerdictState.FAIL]
    if failed and not accept_regression:
        msg = (f"refused: {len(failed)} regression(s) "
               f"({', '.join(sorted({v.test_id + ' ' + v.metric for v in failed}))}); rerun with "
               f"--accept-regression --reason TEXT (pytest: --llmperf-accept-regression --llmperf-update-reason TEXT) "
               f"to record them")
        return UpdateReport(hardware_id, verdicts, [], new_tests, stale, refused=True, dry_run=dry_run, message=msg,
                            not_recorded=not_recorded)
    the_commit = commit if commit is not None else current_commit()
    provenance = Provenance(
        commit=the_commit, date_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        engine=fp.engine, engine_version=fp.engine_version,
        command=command if command is not None else " ".join(sys.argv),
        user=user if user is not None else current_user(),
        reason=reason, accepted_regression=bool(failed) and accept_regression,
    )  # fmt: skip
    failed_ids = {v.test_id for v in failed}
    news = [NewRuns(t, f, tuple(r), restart=t in failed_ids) for t, r, f in keep]
    kept = settings.sessions_kept if isinstance(settings, GateSettings) else SESSIONS_KEPT
    header = results.get("header")
    machine = header.get("machine") if isinstance(header, Mapping) else None
    measured_on = machine if isinstance(machine, str) else None  # else: this host
    paths = record_sessions(store, hardware_id, news, SessionInfo.new(commit=the_commit, machine=measured_on), provenance,
                            sessions_kept=kept, dry_run=dry_run)
    written = [str(p) for p in paths]
    verb = "would write" if dry_run else "wrote"
    msg = f"{verb} {len(written)} baseline(s) under {store.root / hardware_id}"
    if not_recorded:
        msg += f"; not recorded: {'; '.join(not_recorded)}"
    return UpdateReport(hardware_id, verdicts, written, new_tests, stale, refused=False, dry_run=dry_run, message=msg,
                        not_recorded=not_recorded)


def _settings_for(entry: Mapping[str, Any], settings: Any, fp: Fingerprint) -> GateSettings:
    recorded = entry.get("gate")
    if isinstance(recorded, Mapping):
        return GateSettings.from_dict(recorded, source=f"results test {entry.get('test_id')!r} field 'gate'")
    if isinstance(settings, GateSettings):
        return settings
    if callable(settings):
        return settings(entry)
    from pytest_llmperf.gate.settings import config_for_backend

    return GateSettings.from_config(config_for_backend(fp.backend))
