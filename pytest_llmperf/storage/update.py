"""Recording a session into the baselines: one locked read-merge-write per hardware folder.

The decision whether a session *may* be recorded is the gate's (:mod:`pytest_llmperf.gate.update`); this
module only does the bookkeeping, the same for ``--llmperf-update-baselines`` and ``llmperf baseline update``:

- every new run is tagged with the session it came from (:class:`SessionInfo`: id, date, commit, machine);
- a baseline keeps the runs of its newest ``sessions_kept`` sessions (the rolling window the gate compares with);
- the anchor (the fixed point creep is measured against) is, until someone pins a release with
  ``llmperf baseline pin``, the first ``sessions_kept`` sessions ever recorded; it then stays put;
- an accepted regression, or a new fingerprint, starts the window and the anchor afresh;
- the whole read-merge-write of a folder happens under one lock (:meth:`BaselineStore.transaction`).
"""

from __future__ import annotations

import datetime as _dt
import math
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.storage.baselines import Baseline, BaselineStore, Provenance
from pytest_llmperf.storage.fingerprint import Fingerprint

__all__ = ["SessionInfo", "NewRuns", "merge_session", "record_sessions", "pin_anchor", "run_noise"]


@dataclass(frozen=True)
class SessionInfo:
    """Where one session's runs came from. ``id`` is unique per session (12 hex digits)."""

    id: str
    date_utc: str
    commit: str | None = None
    machine: str | None = None

    @classmethod
    def new(cls, commit: str | None = None, machine: str | None = None, date_utc: str | None = None) -> SessionInfo:
        return cls(id=uuid.uuid4().hex[:12],
                   date_utc=date_utc or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   commit=commit, machine=machine if machine is not None else socket.gethostname())

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "id"}


@dataclass(frozen=True)
class NewRuns:
    """One test's runs of this session, with the fingerprint they were measured on."""

    test_id: str
    fingerprint: Fingerprint
    runs: tuple[Mapping[str, float], ...]
    restart: bool = False  #: an accepted regression: drop the old window and anchor


def run_noise(runs: Sequence[Mapping[str, float]], sessions: Sequence[str]) -> dict[str, float] | None:
    """Per metric, the pooled within-session std of logs (run-to-run noise; informational, for the report)."""
    out: dict[str, float] = {}
    for key in sorted({k for r in runs for k in r}):
        groups: dict[str, list[float]] = {}
        for r, s in zip(runs, sessions):
            if key in r and r[key] > 0:
                groups.setdefault(s, []).append(math.log(r[key]))
        ss = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in groups.values())
        df = sum(len(g) - 1 for g in groups.values())
        if df > 0:
            out[key] = math.sqrt(ss / df)
    return out or None


def _keep_newest(runs: list[dict[str, float]], sessions: list[str], n: int) -> tuple[list[dict[str, float]], list[str]]:
    order: list[str] = []
    for s in sessions:
        if s not in order:
            order.append(s)
    kept = set(order[-n:])
    pairs = [(r, s) for r, s in zip(runs, sessions) if s in kept]
    return [r for r, _ in pairs], [s for _, s in pairs]


def merge_session(old: Baseline | None, new: NewRuns, session: SessionInfo, provenance: Provenance,
                  sessions_kept: int) -> Baseline:
    """``old`` with this session's runs added (window trimmed, anchor grown while it is automatic)."""
    runs = [dict(r) for r in new.runs]
    tags = [session.id] * len(runs)
    fresh = old is None or new.restart or bool(Fingerprint.from_dict(old.fingerprint).differences(new.fingerprint))
    if fresh or old is None:
        all_runs, all_tags, infos = runs, tags, {session.id: session.to_dict()}
        anchor: dict[str, Any] | None = {"label": "first sessions", "auto": True, "runs": runs, "run_sessions": tags}
    else:
        all_runs, all_tags = _keep_newest(old.runs + runs, old.session_ids() + tags, sessions_kept)
        infos = {**old.sessions, session.id: session.to_dict()}
        anchor = old.anchor
        if anchor is None:  # a legacy file: its runs and this session become the automatic anchor
            anchor = {"label": "first sessions", "auto": True, "runs": old.runs + runs,
                      "run_sessions": old.session_ids() + tags}
        elif anchor.get("auto") and len(set(anchor.get("run_sessions") or [])) < sessions_kept:
            anchor = {**anchor, "runs": list(anchor["runs"]) + runs,
                      "run_sessions": list(anchor.get("run_sessions") or []) + tags}
    keep_ids = set(all_tags) | set((anchor or {}).get("run_sessions") or [])
    infos = {k: v for k, v in infos.items() if k in keep_ids}
    return Baseline(test_id=new.test_id, fingerprint=new.fingerprint.to_dict(), runs=all_runs, provenance=provenance,
                    noise=run_noise(all_runs, all_tags), run_sessions=all_tags, sessions=infos, anchor=anchor)


def record_sessions(store: BaselineStore, hardware_id: str, entries: Sequence[NewRuns], session: SessionInfo,
                    provenance: Provenance, *, sessions_kept: int, dry_run: bool = False) -> list[Path]:
    """Merge every entry into its baseline file under one lock; returns the paths (would be) written."""
    written: list[Path] = []
    if dry_run:
        return [store.path(hardware_id, e.test_id, e.fingerprint.model) for e in entries]
    with store.transaction(hardware_id) as tx:
        for entry in entries:
            baseline = merge_session(tx.load(hardware_id, entry.test_id, entry.fingerprint.model), entry, session, provenance, sessions_kept)
            written.append(tx.save(baseline, hardware_id))
    return written


def pin_anchor(store: BaselineStore, hardware_id: str, label: str, test_ids: Sequence[str] | None = None) -> list[Path]:
    """Make each baseline's current window its anchor, named ``label`` (e.g. a release tag)."""
    if not label.strip():
        raise UsageError("baseline pin: the anchor needs a non-empty label, e.g. --label v1.4.0")
    written = []
    with store.transaction(hardware_id) as tx:
        for b in tx.baselines(hardware_id):  # every model's
            if test_ids is not None and b.test_id not in test_ids:
                continue
            b.anchor = {"label": label, "auto": False, "runs": list(b.runs), "run_sessions": b.session_ids(),
                        "pinned_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            written.append(tx.save(b, hardware_id))
    return written
