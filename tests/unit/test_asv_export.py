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

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = FIXTURES / "sample_results.json"
asv = pytest.importorskip("asv")


@pytest.fixture
def sample() -> dict:
    return json.loads(SAMPLE.read_text())


def _git_repo(path: Path, branch: str = "main") -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git not installed (asv publish reads commits from a git repository)")
    env = ["-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
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
                          text=True, timeout=300, check=False)
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


def _machines() -> dict[str, dict]:
    """Two CPU sessions (Intel, AMD; fingerprints without id, gpu_count 0) and one GPU session (id removed)."""
    gpu = json.loads(SAMPLE.read_text())
    gpu["fingerprint"].pop("id")
    return {"intel": json.loads((FIXTURES / "cpu_intel_results.json").read_text()),
            "amd": json.loads((FIXTURES / "cpu_amd_results.json").read_text()), "gpu": gpu}


def test_each_machine_has_its_own_name() -> None:
    names = {k: machine_name(v) for k, v in _machines().items()}
    assert names == {"intel": "cpu-intel-xeon-platinum-8488c-2c", "amd": "cpu-amd-epyc-7r13-2c",
                     "gpu": "gpu-2xh200-pcie-emulated"}


@pytest.mark.parametrize("bad_id", ["..", ".", "/", "../.."])
def test_path_like_id_is_refused(tmp_path: Path, sample: dict, bad_id: str) -> None:
    sample["fingerprint"]["id"] = bad_id
    with pytest.raises(UsageError, match="not usable as a folder name"):
        export_asv(tmp_path / "asv", sample, "a" * 40)
    assert not list(tmp_path.rglob("machine.json")) and not list(tmp_path.rglob("*-llmperf-*.json"))


@pytest.mark.parametrize("evil", ["../../outside", "a/../../b", "..\\..\\c"])
def test_path_like_names_stay_inside_results(tmp_path: Path, sample: dict, evil: str) -> None:
    sample["fingerprint"]["id"] = evil
    path = export_asv(tmp_path / "asv", sample, "a" * 40)
    assert path.resolve().is_relative_to((tmp_path / "asv" / "results").resolve())
    assert len(path.relative_to(tmp_path / "asv" / "results").parts) == 2
    path = export_asv(tmp_path / "asv", sample, "a" * 40, machine=evil)
    assert path.resolve().is_relative_to((tmp_path / "asv" / "results").resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asv"]


def test_branch_from_git_project_and_branches_updated(tmp_path: Path, sample: dict) -> None:
    repo = tmp_path / "repo"
    _git_repo(repo, branch="trunk")
    site = tmp_path / "asv"
    export_asv(site, sample, "a" * 40, repo=str(repo))
    conf = json.loads((site / "asv.conf.json").read_text())
    assert conf["branches"] == ["trunk"] and conf["project"] == "pytest-llmperf"  # not "main"
    export_asv(site, sample, "b" * 40, repo=str(repo), branches=["release"], project="acme-serving")
    conf = json.loads((site / "asv.conf.json").read_text())
    assert conf["branches"] == ["release"] and conf["project"] == "acme-serving"  # applied on a later export too
    export_asv(site, sample, "c" * 40, repo=str(repo))
    assert json.loads((site / "asv.conf.json").read_text())["branches"] == ["release"]  # kept when not given


def test_asv_publish_three_machines(tmp_path: Path) -> None:
    """Two CPU machines and one GPU machine, two commits each, on a repository whose branch is not main:
    asv publish builds a site with three machines and a graph per machine."""
    repo = tmp_path / "repo"
    commits = _git_repo(repo, branch="trunk")
    site = tmp_path / "asv"
    for results in _machines().values():
        for i, commit in enumerate(commits):
            export_asv(site, results, commit, 1_700_000_000 + 86_400 * i, repo=str(repo), project="three-machines")
    proc = subprocess.run([sys.executable, "-m", "asv", "publish", "--no-pull"], cwd=site, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = json.loads((site / "html" / "index.json").read_text())
    assert sorted(index["params"]["machine"]) == ["cpu-amd-epyc-7r13-2c", "cpu-intel-xeon-platinum-8488c-2c",
                                                 "gpu-2xh200-pcie-emulated"]
    assert index["project"] == "three-machines"
    for machine in index["params"]["machine"]:
        assert list((site / "html" / "graphs").glob(f"**/machine-{machine}/**/*.ttft_p95_ms.json")), machine
    # the mixed-lengths test (input_len "16:512") is a benchmark of its own on the CPU machines
    assert "test_mixed_lengths.ttft_p95_ms" in index["benchmarks"]
