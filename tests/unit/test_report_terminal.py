"""report.terminal: verdict order, per-group tables (medians across runs), seed-study winners, header."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from pytest_llmperf.report.terminal import (
    group_name,
    mode_label,
    overall_verdict,
    render_header,
    render_terminal,
    seed_study,
    config_rows,
)

SAMPLE = Path(__file__).parent / "fixtures" / "sample_results.json"


@pytest.fixture
def sample() -> dict:
    return json.loads(SAMPLE.read_text())


def test_names() -> None:
    assert group_name("perf_tests/t.py::TestX::test_sweep[pp2-c8]") == "test_sweep"
    assert mode_label({"mode": "single", "tp": 1, "pp": 1}) == "single"
    assert mode_label({"mode": "tp", "tp": 2, "pp": 1}) == "tp2"
    assert mode_label({"mode": "pp", "tp": 2, "pp": 2}) == "tp2pp2"


def test_header_pcie_emulation() -> None:
    line = render_header({"topology": "2x H200", "engine_version": "vllm 0.11.0", "backend": "gpu",
                          "emulation": "pcie"})
    assert line == ("llmperf: 2x H200 | engine vllm 0.11.0 | backend gpu | "
                    "PCIe emulated: NCCL_P2P_DISABLE=1, custom all-reduce off")
    assert "\n" not in line and "emulated" not in render_header({"topology": "cpu", "emulation": None})


def test_verdicts_come_first_in_order(sample: dict) -> None:
    text = render_terminal(sample)
    pos = [text.index(f"\n{state} ") for state in ("FAIL", "INCONCLUSIVE", "NO_BASELINE", "MISMATCH", "SKIPPED")]
    assert pos == sorted(pos)
    assert pos[-1] < text.index("test_pcie_sweep (median of K runs)") < text.index("seed study")
    assert "verdicts: 2 FAIL, 1 INCONCLUSIVE, 3 NO_BASELINE, 1 MISMATCH, 1 SKIPPED, 27 PASS -> FAIL" in text
    assert "PASS ttft" not in text  # PASS is only counted


def test_table_shows_median_of_runs(sample: dict) -> None:
    test = next(t for t in sample["tests"] if t["test_id"].endswith("[pp2-c8-in1024]"))
    expected = statistics.median(r["summary"]["output_throughput_tok_s"] for r in test["runs"])
    row = next(r for r in config_rows(sample) if r["mode"] == "pp2" and r["concurrency"] == 8)
    assert row["median"]["output_throughput_tok_s"] == pytest.approx(expected)
    line = next(ln for ln in render_terminal(sample).splitlines() if ln.startswith("pp2") and " 8 " in ln)
    assert f"{expected:.1f}" in line
    gpu_w = [statistics.median(r["summary"][f"gpu{i}_power_mean_w"] for r in test["runs"]) for i in (0, 1)]
    assert row["median"]["power_total_mean_w"] == pytest.approx(sum(gpu_w))


def test_seed_study_winners(sample: dict) -> None:
    rows = {(r["concurrency"], r["metric"]): r for r in seed_study(sample)}
    tput = rows[(8, "output_throughput_tok_s")]
    assert tput["winner"] == max(tput["values"], key=tput["values"].get) == "pp2"
    ttft = rows[(8, "ttft_p95_ms")]
    assert ttft["winner"] == min(ttft["values"], key=ttft["values"].get)
    assert rows[(1, "idle_share_mean")]["values"]["pp2"] > 0.3 > rows[(1, "idle_share_mean")]["values"]["single"]
    assert list(tput["values"]) == ["single", "tp2", "pp2"]


def test_overall_verdict(sample: dict) -> None:
    assert overall_verdict(sample) == "FAIL"
    data = copy.deepcopy(sample)
    data["verdicts"] = [v for v in data["verdicts"] if v["verdict"] != "FAIL"]
    assert overall_verdict(data) == "INCONCLUSIVE"
    data["verdicts"] = [v for v in data["verdicts"] if v["verdict"] == "PASS"]
    assert overall_verdict(data) == "PASS"
    data["verdicts"] = []
    assert overall_verdict(data) == "NO_CHECKS"
    assert "no checks ran" in render_terminal(data)


def test_cpu_results_without_power(sample: dict) -> None:
    data = copy.deepcopy(sample)
    for t in data["tests"]:
        for r in t["runs"]:
            r["summary"] = {k: v for k, v in r["summary"].items() if not k.startswith(("gpu", "energy"))}
    text = render_terminal(data)
    assert "power W" not in text and "GPU idle share" not in text and "TTFT p95 ms" in text
