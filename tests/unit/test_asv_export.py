"""report.asv_export: the tree asv 0.6 reads, and the real ``asv publish`` building html across two commits."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmperf.errors import UsageError
from pytest_llmperf.report.asv_export import export_asv, machine_name, metric_unit

SAMPLE = Path(__file__).parent / "fixtures" / "sample_results.json"
asv = pytest.importorskip("asv")


@pytest.fixture
def sample() -> dict:
    return json.loads(SAMPLE.read_text())


def _git_repo(path: Path) -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git not installed (asv publish reads commits from a git repository)")
    env = ["-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    hashes = []
    for msg in ("first", "second"):
        subprocess.run(["git", *env, "-C", str(path), "commit", "-q", "--allow-empty", "-m", msg], check=True)
        hashes.append(subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True,
                                     capture_output=True, text=True).stdout.strip())
    return hashes


def test_units_and_machine(sample: dict) -> None:
    assert metric_unit("ttft_p95_ms") == "ms" and metric_unit("output_throughput_tok_s") == "tokens/s"
    assert metric_unit("gpu0_power_cv") == "unit" and metric_unit("gpu1_power_mean_w") == "W"
    assert machine_name(sample) == "h200x2-pcie-emu"


def test_bad_commit(tmp_path: Path, sample: dict) -> None:
    with pytest.raises(UsageError, match="commit hash"):
        export_asv(tmp_path, sample, "not-a-sha")


def test_asv_reads_the_tree(tmp_path: Path, sample: dict) -> None:
    from asv.results import Results

    path = export_asv(tmp_path, sample, "a" * 40, 1_700_000_000)
    res = Results.load(str(path), machine_name="h200x2-pcie-emu")
    bench = json.loads((tmp_path / "results" / "benchmarks.json").read_text())
    assert bench["version"] == 2
    b = bench["test_pcie_sweep.output_throughput_tok_s"]
    assert b["params"] == [["'single'", "'tp2'", "'pp2'"], ["1", "4", "8"], ["1024"]] and b["type"] == "track"
    values = res.get_result_value("test_pcie_sweep.output_throughput_tok_s", b["params"])
    test = next(t for t in sample["tests"] if t["test_id"].endswith("[tp2-c4-in1024]"))
    runs = sorted(r["summary"]["output_throughput_tok_s"] for r in test["runs"])
    assert values[4] == pytest.approx(sum(runs) / 2)  # (tp2, 4, 1024) is the 5th combination; median of K=2
    assert sorted(res.get_result_samples("test_pcie_sweep.output_throughput_tok_s", b["params"])[4]) == runs
    assert res.date == 1_700_000_000_000 and res.commit_hash == "a" * 40


def test_asv_publish_two_commits(tmp_path: Path, sample: dict) -> None:
    repo = tmp_path / "repo"
    c1, c2 = _git_repo(repo)
    site = tmp_path / "asv"
    slower = copy.deepcopy(sample)
    for t in slower["tests"]:
        for r in t["runs"]:
            r["summary"]["tpot_p50_ms"] *= 1.10
    export_asv(site, sample, c1, 1_700_000_000, repo=str(repo))
    export_asv(site, slower, c2, 1_700_086_400, repo=str(repo))
    proc = subprocess.run([sys.executable, "-m", "asv", "publish", "--no-pull"], cwd=site, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = site / "html"
    assert (html / "index.html").is_file()
    index = json.loads((html / "index.json").read_text())
    assert "test_pcie_sweep.tpot_p50_ms" in index["benchmarks"]
    assert set(index["revision_to_hash"].values()) == {c1, c2}
    graph = next((html / "graphs").glob("**/machine-h200x2-pcie-emu/**/test_pcie_sweep.tpot_p50_ms.json"))
    series = json.loads(graph.read_text())
    # each point: [revision, [value per (mode, concurrency, input_len)]]; the second commit is 10% slower
    (rev1, v1), (rev2, v2) = series
    assert rev1 < rev2
    assert [b / a for a, b in zip(v1, v2)] == pytest.approx([1.10] * len(v1))
