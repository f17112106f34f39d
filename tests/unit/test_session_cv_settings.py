"""Per-metric session-noise priors: ``--llmperf-session-cv F,METRIC=F`` (CLI, pyproject, ``llmperf compare``), their
way into the gate's settings and checks, and ``llmperf baseline noise``, which measures them from recorded sessions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from pytest_llmperf.cli import main as cli_main
from pytest_llmperf.config import LLMPerfConfig
from pytest_llmperf.errors import UsageError
from pytest_llmperf.gate.settings import GateSettings
from pytest_llmperf.options import SessionCV, parse_session_cv
from pytest_llmperf.stats.decision import build_checks
from pytest_llmperf.stats.session_noise import estimate_session_cv
from pytest_llmperf.storage.baselines import Baseline, BaselineStore
from tests.unit.test_storage import GOLDEN, results


def test_the_option_takes_a_default_and_metric_pairs() -> None:
    assert parse_session_cv("0.05") == SessionCV(0.05, ())
    assert parse_session_cv("ttft_p95_ms=0.2, 0.03,tpot_p50_ms=0") == SessionCV(
        0.03, (("tpot_p50_ms", 0.0), ("ttft_p95_ms", 0.2)))
    assert parse_session_cv("5%,tpot_p50_ms=1.5%") == SessionCV(0.05, (("tpot_p50_ms", 0.015),))
    for bad, why in (("0.1,0.2", "two values for every metric"), ("nope_ms=0.1", "nope_ms"),
                     ("1.5", "above 1 is not a prior"), ("tpot_p50_ms=0.1,tpot_p50_ms=0.2", "given twice"),
                     ("tpot_p50_ms=-1", "a number >= 0 in 'tpot_p50_ms=-1'"), ("", "METRIC=NUMBER")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse_session_cv(bad)


def test_config_resolves_cli_over_pyproject_and_keeps_the_backend_default() -> None:
    table = {"session_cv": {"default": 0.04, "tpot_p50_ms": 0.01}}
    cfg = LLMPerfConfig.from_sources({}, table, gpus_available=0)
    assert cfg.session_cv == 0.04 and cfg.session_cv_metrics == (("tpot_p50_ms", 0.01),)
    only = LLMPerfConfig.from_sources({}, {"session_cv": "tpot_p50_ms=0.01"}, gpus_available=0)
    assert only.session_cv == 0.10 and only.session_cv_metrics == (("tpot_p50_ms", 0.01),)  # the cpu default stays
    cli = LLMPerfConfig.from_sources({"session_cv": parse_session_cv("0.2")}, table, gpus_available=0)
    assert cli.session_cv == 0.2 and cli.session_cv_metrics == ()
    with pytest.raises(UsageError, match=r"\[tool.llmperf\] session_cv = 'x=1' in pyproject.toml"):
        LLMPerfConfig.from_sources({}, {"session_cv": "x=1"}, gpus_available=0)


def test_settings_carry_the_priors_into_each_check_and_through_the_results_file() -> None:
    cfg = LLMPerfConfig.from_sources({"session_cv": parse_session_cv("0.05,tpot_p50_ms=0.01")}, {}, gpus_available=0)
    settings = GateSettings.from_config(cfg)
    assert GateSettings.from_dict(settings.to_dict()) == settings
    assert settings.to_dict()["session_cv_metrics"] == {"tpot_p50_ms": 0.01}
    old = {k: v for k, v in settings.to_dict().items() if k != "session_cv_metrics"}  # recorded before them
    assert GateSettings.from_dict(old).session_cvs() == {}
    runs = [{"tpot_p50_ms": 10.0, "e2el_p50_ms": 100.0}] * 3
    checks, _ = build_checks("t", runs, runs, session_cv=settings.session_cv, session_cvs=settings.session_cvs())
    assert {c.metric: c.session_cv for c in checks} == {"e2el_p50_ms": 0.05, "tpot_p50_ms": 0.01}


def test_compare_with_a_metric_prior_decides_what_the_blunt_prior_cannot(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Two sessions 1% apart with 1% run noise: a 50% prior for every metric leaves it INCONCLUSIVE; that metric's
    own prior (here: none, the sessions speak) lets it PASS."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(results([100.0, 101.0, 99.0, 100.5, 99.5])))
    b.write_text(json.dumps(results([101.0, 102.0, 100.0, 101.5, 100.5])))
    base = ["compare", str(a), str(b), "--tolerance", "0.1", "--metric", "ttft_p95_ms"]
    assert cli_main([*base, "--session-cv", "0.5"]) == 2
    assert cli_main([*base, "--session-cv", "0.5,ttft_p95_ms=0"]) == 0
    assert "PASS" in capsys.readouterr().out


def _store(tmp_path: Path, sessions_per_test: int, seed: int = 3) -> tuple[BaselineStore, list[list[list[float]]]]:
    """Three tests of one CPU machine, ``sessions_per_test`` sessions of 4 runs: 5% session, 1% run noise."""
    fp = json.loads((GOLDEN / "valid_baseline.json").read_text())["fingerprint"]
    rng = np.random.default_rng(seed)
    store, truth = BaselineStore(tmp_path / "bl"), []
    with store.transaction("cpu-m") as tx:
        for t in range(3):
            values = [list(np.exp(np.log(100.0 * (t + 1)) + rng.normal(0, 0.05) + rng.normal(0, 0.01, 4)))
                      for _ in range(sessions_per_test)]
            truth.append(values)
            runs = [{"e2el_p50_ms": float(x), "output_throughput_tok_s": 1e4 / float(x)} for s in values for x in s]
            ids = [f"s{j}" for j, s in enumerate(values) for _ in s]
            tx.save(Baseline(test_id=f"t.py::test[{t}]", fingerprint=fp, runs=runs, run_sessions=ids), "cpu-m")
    return store, truth


def test_baseline_noise_prints_the_pooled_spread_and_the_option_that_sets_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, truth = _store(tmp_path, sessions_per_test=3)
    assert cli_main(["baseline", "noise", "--baseline-dir", str(store.root)]) == 0
    out = capsys.readouterr().out
    expected = estimate_session_cv(truth)
    assert expected is not None and expected.df == 6
    row = next(line for line in out.splitlines() if line.startswith("e2el_p50_ms"))
    assert row.split()[1:] == ["3", "9", "6", f"{expected.estimate:.2%}", f"{expected.upper:.2%}"], out
    assert f"--llmperf-session-cv 0.1,e2el_p50_ms={max(expected.upper, 0.005):.3f}," in out


def test_baseline_noise_with_one_session_keeps_the_prior_and_names_a_missing_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = _store(tmp_path, sessions_per_test=1)
    assert cli_main(["baseline", "noise", "--baseline-dir", str(store.root), "cpu-m"]) == 0
    assert "too few recorded sessions for a measured prior" in capsys.readouterr().out
    assert cli_main(["baseline", "noise", "--baseline-dir", str(store.root), "gpu-x"]) == 2
    err = capsys.readouterr().err
    assert "no baselines in" in err and "known folders: cpu-m" in err, err


def test_the_session_summary_points_to_the_measurement_once_sessions_are_recorded() -> None:
    from pytest_llmperf.gate.compare import summary_line

    weak = {"kind": "regression", "verdict": "INCONCLUSIVE", "p_value": 0.5, "underpowered": True}
    one = summary_line([{**weak, "baseline_sessions": 1}])
    assert one.endswith("record more runs or sessions)")  # nothing to measure a spread from yet
    two = summary_line([{**weak, "baseline_sessions": 3}, {**weak, "verdict": "PASS", "underpowered": False}])
    assert two.startswith("llmperf: regression checks: 1 PASS, 1 INCONCLUSIVE; 1 of 2 underpowered")
    assert two.endswith("`llmperf baseline noise` measures each metric's session spread for --llmperf-session-cv")
