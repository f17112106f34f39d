"""``llmperf run --json`` writes a results file that ``llmperf compare``, ``baseline update`` and ``report`` read;
``--repeats`` gives K runs; the older ``run --json`` documents are still read (report/json_io.load_results_any)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llmperf import cli
from pytest_llmperf.errors import UsageError
from pytest_llmperf.report.json_io import load_results_any, read_results
from tests.support.scripted_server import scripted_server

MODEL = "scripted-model"


def _run(endpoint: str, out: Path, *extra: str) -> int:
    return cli.main(["run", "--endpoint", endpoint, "--model", MODEL, "--concurrency", "2", "--num-requests", "4",
                     "--input-len", "8", "--output-len", "6", "--json", str(out), *extra])


@pytest.fixture(scope="module")
def two_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("run-json")
    a, b = tmp / "a.json", tmp / "b.json"
    with scripted_server(in_subprocess=True, ttft_s=0.004, itl_s=0.002) as srv:
        assert _run(srv.endpoint, a, "--repeats", "3") == 0
        assert _run(srv.endpoint, b, "--repeats", "3", "--seed", "1") == 0
    return a, b


def test_run_json_is_a_results_file_with_k_runs(two_files: tuple[Path, Path]) -> None:
    a, _ = two_files
    results = read_results(a)  # schema-validated like a pytest session's results
    (test,) = results["tests"]
    assert [r["run_index"] for r in test["runs"]] == [0, 1, 2]
    assert all(r["summary"]["output_throughput_tok_s"] > 0 for r in test["runs"])
    assert test["test_id"] == f"llmperf-run::run[{MODEL}-c2-in8-out6]"
    assert results["header"]["endpoint"].endswith("/v1") and results["fingerprint"]["engine"].startswith("endpoint")
    raw = json.loads(a.read_text())  # the per-request view of the last run is kept for existing readers
    assert raw["metrics"]["completed"] == 4 and len(raw["requests"]) == 4


def test_compare_accepts_run_json(two_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_files
    code = cli.main(["compare", str(a), str(b), "--tolerance", "0.9"])
    out = capsys.readouterr()
    # judged (any verdict: the timings of a shared 2-core machine decide which), not refused as unreadable
    assert code in (0, 1, 2) and "error" not in out.err, out.err
    assert f"llmperf-run::run[{MODEL}-c2-in8-out6]" in out.out and "output_throughput_tok_s" in out.out


def test_baseline_update_accepts_run_json(two_files: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = two_files
    code = cli.main(["baseline", "update", str(a), "--baseline-dir", str(tmp_path / "baselines")])
    out = capsys.readouterr().out
    assert code == 0, out
    (written,) = list((tmp_path / "baselines").glob("*/*.json"))
    assert len(json.loads(written.read_text())["runs"]) == 3


def test_baseline_update_reads_like_compare_and_names_a_bad_file(two_files: tuple[Path, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``baseline update`` reads through the same validated reader as ``compare`` and ``report``: a file of another
    kind or with a corrupt run is refused with its name and nothing is written."""
    a, _ = two_files
    store = tmp_path / "baselines"
    assert cli.main(["baseline", "update", str(a), "--baseline-dir", str(store)]) == 0
    (baseline,) = list(store.glob("*/*.json"))
    before = baseline.read_bytes()
    bad = json.loads(a.read_text())
    bad["tests"][0]["runs"][0]["summary"]["ttft_p95_ms"] = "fast"
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(json.dumps(bad))
    for path, why in ((baseline, "is a baseline file"), (corrupt, "ttft_p95_ms"),
                      (tmp_path / "missing.json", "does not exist")):
        assert cli.main(["baseline", "update", str(path), "--baseline-dir", str(store)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and why in err, err
    assert baseline.read_bytes() == before and len(list(store.glob("*/*.json"))) == 1


def test_report_accepts_run_json(two_files: tuple[Path, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = two_files
    assert cli.main(["report", str(a), "--out", str(tmp_path / "r"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("llmperf: external endpoint http://127.0.0.1:") and "CPU backend" not in out


def test_old_run_json_is_converted(two_files: tuple[Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = two_files
    raw = json.loads(a.read_text())
    old = {k: raw[k] for k in ("endpoint", "model", "workload", "window", "metrics", "requests")}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    results = load_results_any(path)
    (run,) = results["tests"][0]["runs"]
    assert run["summary"]["ttft_p95_ms"] == old["metrics"]["ttft_ms"]["p95"]
    assert results["tests"][0]["test_id"] == raw["tests"][0]["test_id"]  # compares with the new format
    assert cli.main(["compare", str(path), str(a)]) in (0, 1, 2)  # read (one run: judged INCONCLUSIVE at most)
    assert "error" not in capsys.readouterr().err
    path.write_text(json.dumps({"runs": []}))
    with pytest.raises(UsageError, match="old.json: not a results file: expected the one pytest"):
        load_results_any(path)
    import gzip

    zipped = tmp_path / "zipped.json"  # gzip data under a plain .json name (a renamed or downloaded file)
    zipped.write_bytes(gzip.compress(a.read_bytes()))
    assert load_results_any(zipped)["tests"][0]["test_id"] == raw["tests"][0]["test_id"]


def test_stalled_endpoint_stops_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with scripted_server(stall=True) as srv:
        code = cli.main(["run", "--endpoint", srv.endpoint, "--model", MODEL, "--num-requests", "2",
                         "--output-len", "3", "--stall-timeout", "0.5", "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "llmperf run: run 1/1 stopped:" in err, err
    assert not (tmp_path / "r.json").exists()
