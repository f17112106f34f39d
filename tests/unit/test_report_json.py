"""report.json_io: atomic writes, schema validation with errors naming the file and key."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pytest_llmperf.errors import BaselineError, UsageError
from pytest_llmperf.report.json_io import read_results, write_results

SAMPLE = Path(__file__).parent / "fixtures" / "sample_results.json"


@pytest.fixture
def sample() -> dict:
    return json.loads(SAMPLE.read_text())


def test_sample_round_trips(tmp_path: Path, sample: dict) -> None:
    out = write_results(tmp_path / "sub" / "results.json", sample)
    assert read_results(out) == sample
    assert [p.name for p in out.parent.iterdir()] == ["results.json"]  # no temp file left behind


def test_nan_becomes_null(tmp_path: Path, sample: dict) -> None:
    sample["tests"][0]["runs"][0]["summary"]["ttft_p99_ms"] = float("nan")
    back = read_results(write_results(tmp_path / "r.json", sample))
    assert back["tests"][0]["runs"][0]["summary"]["ttft_p99_ms"] is None


def test_failed_write_keeps_old_file(tmp_path: Path, sample: dict) -> None:
    path = write_results(tmp_path / "r.json", sample)
    before = path.read_text()
    with pytest.raises(BaselineError, match="r.json"):
        write_results(path, {"schema_version": 1, "bad": object()})
    assert path.read_text() == before


def test_missing_file_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nope.json does not exist"):
        read_results(tmp_path / "nope.json")


def test_not_json(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text('{"schema_version": 1,')
    with pytest.raises(UsageError, match=r"r\.json: not valid JSON \(line 1"):
        read_results(p)


def test_wrong_schema_version(tmp_path: Path, sample: dict) -> None:
    sample["schema_version"] = 99
    with pytest.raises(BaselineError, match="schema_version 99 is not supported"):
        read_results(write_results(tmp_path / "r.json", sample))


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda d: d.pop("verdicts"), "'verdicts'"),
    (lambda d: d["header"].pop("topology"), "header.topology"),
    (lambda d: d["tests"][2]["workload"].pop("concurrency"), r"tests\[2\].workload.concurrency"),
    (lambda d: d["tests"][1]["runs"][1].pop("summary"), r"tests\[1\].runs\[1\].summary"),
    (lambda d: d["verdicts"][3].pop("message"), r"verdicts\[3\].message"),
])
def test_missing_key_named(tmp_path: Path, sample: dict, mutate, key: str) -> None:
    data = copy.deepcopy(sample)
    mutate(data)
    with pytest.raises(BaselineError, match=rf"r\.json: missing required key {key}"):
        read_results(write_results(tmp_path / "r.json", data))


def test_unknown_verdict_state(tmp_path: Path, sample: dict) -> None:
    sample["verdicts"][0]["verdict"] = "MAYBE"
    with pytest.raises(BaselineError, match=r"verdicts\[0\].verdict is 'MAYBE'"):
        read_results(write_results(tmp_path / "r.json", sample))


def test_fixture_is_current() -> None:
    """sample_results.json is exactly what make_sample_results.py generates (seeded)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE.with_name("make_sample_results.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert json.loads(json.dumps(mod.build_sample_results())) == json.loads(SAMPLE.read_text())


@pytest.mark.parametrize("stem", ["cpu_intel_results", "cpu_amd_results"])
def test_cpu_fixtures_are_current_and_valid(stem: str) -> None:
    """The CPU fixtures validate and are exactly what make_cpu_results.py generates."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_cpu", SAMPLE.with_name("make_cpu_results.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = SAMPLE.with_name(f"{stem}.json")
    assert read_results(path) == json.loads(json.dumps(mod.build_cpu_results(*mod.MACHINES[stem])))


def test_gzip_and_merge(tmp_path: Path) -> None:
    import gzip

    from pytest_llmperf.report.json_io import merge_results

    intel = json.loads(SAMPLE.with_name("cpu_intel_results.json").read_text())
    amd = json.loads(SAMPLE.with_name("cpu_amd_results.json").read_text())
    packed = tmp_path / "amd.json.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as fh:
        json.dump(amd, fh)
    assert read_results(packed) == amd
    merged = merge_results([intel, read_results(packed)])
    assert len(merged["tests"]) == len(intel["tests"]) + len(amd["tests"])
    assert merged["header"]["topology"] == intel["header"]["topology"]
    assert merged["created_unix_s"] == min(intel["created_unix_s"], amd["created_unix_s"])
    assert len(merged["header"]["engine_starts"]) == 4 and merged["notes"] == intel["notes"] + amd["notes"]
    assert merge_results([intel]) is intel
    # two machines: each row names its machine, so the Intel and the AMD row of a test both show
    labels = {t["engine"]["label"] for t in merged["tests"]}
    assert {f"single ({intel['fingerprint']['cpu_model']}, 2 cores)",
            f"single ({amd['fingerprint']['cpu_model']}, 2 cores)"} <= labels, labels


def test_merging_two_models_names_each_rows_model() -> None:
    """A dense and a MoE session merged: ``single`` of each would read as one mode twice without the model."""
    from pytest_llmperf.report.json_io import merge_results

    dense = json.loads(SAMPLE.with_name("cpu_intel_results.json").read_text())
    moe = json.loads(json.dumps(dense))
    for test in moe["tests"]:
        test["engine"]["model"] = "qwen3-30b-a3b"
    rows = merge_results([dense, moe])["tests"]
    assert {t["engine"]["label"] for t in rows} >= {"single (tiny-llama)", "single (qwen3-30b-a3b)"}
    assert all("Xeon" not in t["engine"]["label"] for t in rows)  # one machine: not named
