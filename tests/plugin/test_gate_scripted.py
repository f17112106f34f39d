"""The regression gate end to end without vLLM: inner pytest sessions measure a scripted SSE server through
``--llmperf-endpoint``; a regression is the server made slower (its first-token and inter-token delays scaled).

Each scenario records a baseline in one inner session and judges in the next. Settings are fixed on the
command line (tolerance 50%, session-noise prior 2%, 3 runs of 4 requests) so that an unchanged server PASSes
and a 4x slower one FAILs whatever this shared machine does; the statistics themselves are tested in
tests/unit/test_regression.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_llmperf
from tests.support.scripted_server import scripted_server

TTFT_S, ITL_S = 0.02, 0.003
GATE_ARGS = ("--llmperf-model", "scripted-model", "--llmperf-tolerance", "0.5", "--llmperf-session-cv", "0.02",
             "--llmperf-output-len", "8", "--llmperf-input-lens", "16", "--llmperf-no-plots")
BODY = "def test_{name}(llmperf_mode, llmperf_concurrency, llmperf_input_len, llmperf_bench):\n" \
       "    llmperf_bench.measure_and_gate()\n"
ID = "test_inner.py::test_{}[single-c2-in16]"


def inner(*names: str, marker: str = "") -> str:
    return "import pytest\n\n" + "\n".join(f"{marker}{BODY.format(name=n)}" for n in names)


@contextmanager
def server(speed: float = 1.0) -> Iterator[str]:
    """A scripted server ``speed`` times slower than the reference (in its own process)."""
    with scripted_server(in_subprocess=True, ttft_s=TTFT_S * speed, itl_s=ITL_S * speed) as handle:
        yield handle.endpoint


def session(pytester: pytest.Pytester, speed: float, *args: str, subprocess: bool = False) -> pytest.RunResult:
    with server(speed) as endpoint:
        return run_llmperf(pytester, "-rA", "--llmperf-endpoint", endpoint, *GATE_ARGS, *args, subprocess=subprocess,
                           timeout=120)


def results(pytester: pytest.Pytester) -> dict[str, Any]:
    return json.loads((pytester.path / "results.json").read_text())


def verdicts(pytester: pytest.Pytester, name: str) -> dict[tuple[str, str], str]:
    return {(v["metric"], v["kind"]): v["verdict"] for v in results(pytester)["verdicts"]
            if v["test_id"] == ID.format(name)}


def baseline_file(pytester: pytest.Pytester, name: str) -> Path:
    files = [p for p in (pytester.path / "baselines").glob("*/*.json")
             if json.loads(p.read_text())["test_id"] == ID.format(name)]
    assert len(files) == 1, files
    return files[0]


def edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def record(pytester: pytest.Pytester, *names: str) -> None:
    result = session(pytester, 1.0, "--llmperf-update-baselines")
    result.assert_outcomes(passed=len(names))
    for name in names:
        assert verdicts(pytester, name) == {("*", "regression"): "NO_BASELINE"}


def test_record_pass_fail_inconclusive_and_no_gate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=inner("a"))
    result = session(pytester, 1.0, "--llmperf-update-baselines")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*no baseline for this machine (cpu-*) in baselines/: every such test reports "
                                 "NO_BASELINE; record them with: pytest *--llmperf-update-baselines",
                                 "*new baseline: test_inner.py::test_a*", "*wrote 1 baseline(s) under baselines*",
                                 "llmperf: session passed (exit status 0)"])
    stored = json.loads(baseline_file(pytester, "a").read_text())
    assert len(stored["runs"]) == 3 and len(set(stored["run_sessions"])) == 1
    (sid,) = set(stored["run_sessions"])
    assert set(stored["sessions"][sid]) == {"date_utc", "commit", "machine"}

    same = session(pytester, 1.0)
    same.assert_outcomes(passed=1)
    assert verdicts(pytester, "a") == {("e2el_p50_ms", "regression"): "PASS",
                                       ("output_throughput_tok_s", "regression"): "PASS"}
    same.stdout.fnmatch_lines(["llmperf: regression checks: 2 PASS; 0 of 2 underpowered*"])

    slow = session(pytester, 4.0)
    assert slow.ret == 1
    slow.assert_outcomes(failed=1)
    slow.stdout.fnmatch_lines(["*FAIL test_inner.py::test_a*e2el_p50_ms +*% (*CI*tolerance 50%*",
                               "llmperf: session FAILED (exit status 1)"])
    assert verdicts(pytester, "a")[("e2el_p50_ms", "regression")] == "FAIL"
    assert [t["test_id"] for t in results(pytester)["tests"]] == [ID.format("a")]  # a failed test is in the results

    between = session(pytester, 1.6)
    between.assert_outcomes(passed=1)
    assert "INCONCLUSIVE" in verdicts(pytester, "a").values()
    strict = session(pytester, 1.6, "--llmperf-fail-inconclusive")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*INCONCLUSIVE test_inner.py::test_a*"])

    ungated = session(pytester, 4.0, "--llmperf-no-gate")
    ungated.assert_outcomes(passed=1)
    assert ungated.ret == 0
    assert verdicts(pytester, "a")[("e2el_p50_ms", "regression")] == "FAIL"


def test_update_refused_then_accepted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=inner("a"))
    record(pytester, "a")
    path = baseline_file(pytester, "a")
    before = path.read_text()
    refused = session(pytester, 4.0, "--llmperf-update-baselines")
    assert refused.ret == 1
    refused.stdout.fnmatch_lines(["*baseline update refused: 2 regression(s) (test_inner.py::test_a* e2el_p50_ms*"
                                  "rerun with --accept-regression*"])
    assert path.read_text() == before
    accepted = session(pytester, 4.0, "--llmperf-update-baselines", "--llmperf-accept-regression",
                       "--llmperf-update-reason", "slower sampler, expected")
    accepted.stdout.fnmatch_lines(["*wrote 1 baseline(s) under baselines*"])
    stored = json.loads(path.read_text())
    assert stored["provenance"]["reason"] == "slower sampler, expected"
    assert stored["provenance"]["accepted_regression"] is True
    assert len(set(stored["run_sessions"])) == 1  # an accepted regression starts the window afresh
    old = json.loads(before)["runs"]
    assert min(r["e2el_p50_ms"] for r in stored["runs"]) > 2 * max(r["e2el_p50_ms"] for r in old)


def test_broken_baselines_never_pass(pytester: pytest.Pytester) -> None:
    names = ("mismatch", "corrupt", "empty", "blank_runs", "zeros")
    pytester.makepyfile(test_inner=inner(*names))
    record(pytester, *names)
    edit(baseline_file(pytester, "mismatch"), lambda d: d["fingerprint"].update(engine_version="0.0.1"))
    corrupt = baseline_file(pytester, "corrupt")
    edit(baseline_file(pytester, "empty"), lambda d: d.update(runs=[], run_sessions=[]))
    edit(baseline_file(pytester, "blank_runs"), lambda d: d.update(runs=[{} for _ in d["runs"]]))
    edit(baseline_file(pytester, "zeros"), lambda d: [r.update({k: 0.0 for k in r}) for r in d["runs"]])
    corrupt.write_text("{ not json")
    result = session(pytester, 1.0)
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines_random([
        f"*MISMATCH {ID.format('mismatch')}: baseline recorded on different hardware/engine (engine_version: 0.0.1 "
        f"!= *".replace("[", "[[]"),
        f"*{ID.format('corrupt')}: *{corrupt.name}: not valid JSON (line 1, column 3*".replace("[", "[[]"),
        f"*{ID.format('empty')}: *field 'runs' is empty: nothing to compare*".replace("[", "[[]"),
        f"*FAIL {ID.format('blank_runs')}: nothing could be compared with the baseline (not in the baseline;*"
        .replace("[", "[[]"),
        f"*FAIL {ID.format('zeros')}: nothing could be compared*a run measured 0*".replace("[", "[[]"),
    ])


def test_slo_breach_and_collection_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=inner("slo", marker='@pytest.mark.llmperf(slo={"ttft_p95_ms": 0.001})\n'))
    result = session(pytester, 1.0)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*FAIL test_inner.py::test_slo* ttft_p95_ms * > limit 0.001 (SLO; median of 3 runs)"])
    for marker, words in [('@pytest.mark.llmperf(metrics=["no_such_metric"])\n', "unknown metric 'no_such_metric'"),
                          ('@pytest.mark.llmperf(slo={"ttft_p95": 1})\n', "unknown SLO key 'ttft_p95'"),
                          ("@pytest.mark.llmperf(warmup=-1)\n", "warmup=-1) must be >= 0")]:
        pytester.makepyfile(test_inner=inner("bad", marker=marker))
        # no server at all: the error comes at collection, before any engine or endpoint is touched
        bad = run_llmperf(pytester, "--llmperf-endpoint", "http://127.0.0.1:9/v1", *GATE_ARGS)
        assert bad.ret == pytest.ExitCode.USAGE_ERROR
        error = bad.stderr.str()
        assert words in error and "test_inner.py::test_bad" in error and "Traceback" not in error
    pytester.makepyfile(test_inner=inner("ok"))
    quote = run_llmperf(pytester, "--llmperf-engine-args", "--foo 'bar")
    assert quote.ret == pytest.ExitCode.USAGE_ERROR
    quote.stderr.fnmatch_lines(["*--llmperf-engine-args*No closing quotation*"])
    # a pytest-xdist worker (it sets config.workerinput) refuses to plan engine tests
    pytester.makeconftest("def pytest_configure(config):\n    config.workerinput = {'workerid': 'gw0'}\n")
    worker = run_llmperf(pytester, "--llmperf-endpoint", "http://127.0.0.1:9/v1", *GATE_ARGS)
    assert worker.ret == pytest.ExitCode.USAGE_ERROR
    worker.stderr.fnmatch_lines(["*pytest-llmperf cannot run under pytest-xdist (-n)*"])
    (pytester.path / "conftest.py").unlink()


def test_update_refuses_few_runs_failed_tests_and_reports_unwritable_dirs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=inner("few") + "\n"
                        "def test_after(llmperf_mode, llmperf_concurrency, llmperf_input_len, llmperf_bench):\n"
                        "    llmperf_bench.run()\n    assert False, 'broken after measuring'\n")
    result = session(pytester, 1.0, "--llmperf-update-baselines", "--llmperf-repeats", "2")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*not recorded: test_inner.py::test_after*: the test failed in call (*AssertionError)"
                                 "; test_inner.py::test_few*: 2 run(s); a baseline needs at least 3*"])
    assert not list((pytester.path / "baselines").glob("*/*.json"))
    (pytester.path / "not_a_dir").write_text("")
    blocked = session(pytester, 1.0, "--llmperf-update-baselines", "-k", "few", "--llmperf-baseline-dir", "not_a_dir")
    assert blocked.ret == 1
    blocked.stdout.fnmatch_lines(["*baseline folder not_a_dir/* is not writable*"])
    assert "Traceback" not in blocked.stdout.str()


def test_build_wide_holm_and_decide_hook(pytester: pytest.Pytester) -> None:
    """Two checks judged by a project's ``pytest_llmperf_decide``: p = 0.03 and 0.001. At test time each is
    judged at 0.05/2 = 0.025, so only the second FAILs; Holm at session end judges the first at 0.05 too."""
    pytester.makepyfile(test_inner=inner("first", "second", marker='@pytest.mark.llmperf(metrics=["e2el_p50_ms"])\n'))
    record(pytester, "first", "second")
    pytester.makeconftest("""
        from pytest_llmperf import Verdict

        def pytest_llmperf_decide(test_id, metric, baseline, candidate, alpha, kind):
            p = 0.03 if "first" in test_id else 0.001
            return Verdict(test_id=test_id, metric=metric, kind=kind, verdict="FAIL" if p < alpha else "PASS",
                           p_value=p, alpha=alpha, message=f"{'FAIL' if p < alpha else 'PASS'} {test_id} at {alpha}")
    """)
    result = session(pytester, 1.0)
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*regressions found by the build-wide (Holm) decision:*",
                                 f"  FAIL {ID.format('first')} at 0.05".replace("[", "[[]")])
    assert verdicts(pytester, "first") == {("e2el_p50_ms", "regression"): "FAIL"}


def test_update_fingerprint_hook_changes_the_fingerprint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=inner("a"))
    pytester.makeconftest("""
        import os

        def pytest_llmperf_update_fingerprint(config, fingerprint):
            fingerprint["runner"] = os.environ["RUNNER_LABEL"]
    """)
    os.environ["RUNNER_LABEL"] = "rack-a"
    try:
        record(pytester, "a")
        path = baseline_file(pytester, "a")
        assert path.parent.name.endswith("_runner-rack-a")
        assert json.loads(path.read_text())["fingerprint"]["runner"] == "rack-a"
        assert results(pytester)["fingerprint"]["runner"] == "rack-a"
        os.environ["RUNNER_LABEL"] = "rack-b"
        other = session(pytester, 1.0)
        assert verdicts(pytester, "a") == {("*", "regression"): "NO_BASELINE"}  # another runner: its own baselines
        other.assert_outcomes(passed=1)
    finally:
        del os.environ["RUNNER_LABEL"]


def test_interrupted_session_writes_no_baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner="def test_stop(llmperf_mode, llmperf_concurrency, llmperf_input_len, "
                                   "llmperf_bench):\n    llmperf_bench.run()\n    raise KeyboardInterrupt\n")
    # in a subprocess: an in-process inner session would hand the KeyboardInterrupt to this one
    result = session(pytester, 1.0, "--llmperf-update-baselines", subprocess=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*baseline update skipped: the session was interrupted; nothing was written*"])
    assert not list((pytester.path / "baselines").glob("*/*.json"))
    assert [t["test_id"] for t in results(pytester)["tests"]] == ["test_inner.py::test_stop[single-c2-in16]"]


def test_drifting_server_unchanged_sessions_pass_and_slowed_sessions_fail(pytester: pytest.Pytester) -> None:
    """Issue 12's black box: the server's speed drifts a few percent from session to session. Four recorded
    sessions, then two unchanged ones (no FAIL) and a slowed one (FAIL), with the real default session prior
    of the CPU backend replaced by none at all: the spread of the recorded sessions is the only noise model."""
    pytester.makepyfile(test_inner=inner("drift"))
    args = ("--llmperf-session-cv", "0", "--llmperf-tolerance", "0.25")
    for speed in (1.0, 1.05, 0.97, 1.03):
        session(pytester, speed, *args, "--llmperf-update-baselines").assert_outcomes(passed=1)
    stored = json.loads(baseline_file(pytester, "drift").read_text())
    assert len(set(stored["run_sessions"])) == 4
    for speed in (1.02, 0.98):
        unchanged = session(pytester, speed, *args)
        unchanged.assert_outcomes(passed=1)
        assert "FAIL" not in verdicts(pytester, "drift").values()
        assert {v["baseline_sessions"] for v in results(pytester)["verdicts"] if v["kind"] == "regression"} == {4}
    for speed in (4.0,):
        slowed = session(pytester, speed, *args)
        slowed.assert_outcomes(failed=1)
        assert verdicts(pytester, "drift")[("e2el_p50_ms", "regression")] == "FAIL"
