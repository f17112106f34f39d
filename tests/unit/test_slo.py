"""SLOs: parsing with named errors, precedence, medians vs limits, SKIPPED when unmeasured; calibration."""

from __future__ import annotations

import pytest

from pytest_llmperf.errors import UsageError
from pytest_llmperf.stats.calibration import calibration_table, noise_cv, runs_needed
from pytest_llmperf.stats.slo import SLO, check_slo

RUNS = [
    {"ttft_p95_ms": 400.0, "output_throughput_tok_s": 60.0, "failed": 0.0, "gpu0_power_cv": 0.05, "gpu1_power_cv": 0.30},
    {"ttft_p95_ms": 600.0, "output_throughput_tok_s": 64.0, "failed": 1.0, "gpu0_power_cv": 0.06, "gpu1_power_cv": 0.25},
    {"ttft_p95_ms": 450.0, "output_throughput_tok_s": 70.0, "failed": 0.0, "gpu0_power_cv": 0.04, "gpu1_power_cv": 0.28},
]


def test_from_mapping_and_errors_name_key_and_source() -> None:
    slo = SLO.from_mapping({"ttft_p95_ms": 500, "max_failed": 0}, source="pyproject [tool.llmperf.slo]")
    assert slo.ttft_p95_ms == 500.0 and slo.max_failed == 0 and slo.tpot_p50_ms is None
    with pytest.raises(UsageError, match=r"unknown SLO key 'ttft_p95' in marker llmperf_slo of t1"):
        SLO.from_mapping({"ttft_p95": 1}, source="marker llmperf_slo of t1")
    with pytest.raises(UsageError, match=r"SLO key 'tpot_p50_ms' in pyproject must be a non-negative number, got 'fast'"):
        SLO.from_mapping({"tpot_p50_ms": "fast"}, source="pyproject")
    with pytest.raises(UsageError, match="whole number"):
        SLO.from_mapping({"max_failed": 0.5})
    with pytest.raises(UsageError, match="non-negative"):
        SLO.from_mapping({"ttft_ms": True})


def test_merged_other_wins() -> None:
    base = SLO(ttft_p95_ms=500, tpot_p50_ms=20)
    assert base.merged(SLO(ttft_p95_ms=300)) == SLO(ttft_p95_ms=300, tpot_p50_ms=20)
    assert base.merged(None) is base


def test_check_slo_median_limits_and_messages() -> None:
    slo = SLO(ttft_p95_ms=500, min_output_throughput_tok_s=65, max_failed=0)
    out = {v.metric: v for v in check_slo(slo, "t", RUNS)}
    assert out["ttft_p95_ms"].verdict == "PASS" and out["ttft_p95_ms"].candidate_value == 450.0
    assert out["ttft_p95_ms"].message == "PASS t ttft_p95_ms 450 <= limit 500 (SLO; median of 3 runs)"
    assert out["output_throughput_tok_s"].verdict == "FAIL"
    assert out["output_throughput_tok_s"].message == "FAIL t output_throughput_tok_s 64 < limit 65 (SLO; median of 3 runs)"
    assert out["failed"].verdict == "FAIL" and out["failed"].candidate_value == 1.0  # worst run, not median
    assert all(v.kind == "slo" for v in out.values())


def test_power_cv_applies_per_gpu_and_skips_without_nvml() -> None:
    got = check_slo(SLO(max_power_cv=0.1), "t", RUNS)
    assert [(v.metric, v.verdict) for v in got] == [("gpu0_power_cv", "PASS"), ("gpu1_power_cv", "FAIL")]
    cpu = check_slo(SLO(max_power_cv=0.1, tpot_p50_ms=20), "t", [{"ttft_p95_ms": 1.0}])
    assert [v.verdict for v in cpu] == ["SKIPPED", "SKIPPED"]
    assert "no NVML" in cpu[1].message or "no NVML" in cpu[0].message
    assert check_slo(SLO(), "t", RUNS) == []


def test_noise_cv_and_runs_needed_match_research_table() -> None:
    assert noise_cv([100.0, 100.0]) == 0.0
    assert noise_cv([1.0, 2.0]) == pytest.approx(0.693147 / 2**0.5, rel=1e-5)
    # regression-detection.md §6 (normal approximation): alpha .05, power .8, delta 5%: CV 5% -> 13, CV 10% -> ~50
    assert runs_needed(0.05, 0.05, 0.05) == 13
    assert 49 <= runs_needed(0.10, 0.05, 0.05) <= 53
    assert runs_needed(0.02, 0.02, 0.01) in range(20, 24)  # table: 21
    assert runs_needed(0.01, 0.05, 0.05) == 2
    with pytest.raises(UsageError):
        noise_cv([1.0])


def test_calibration_table() -> None:
    rows = calibration_table(RUNS, delta=0.05, alpha=0.05)
    by = {r["metric"]: r for r in rows}
    assert [r["metric"] for r in rows] == sorted(by)
    assert by["ttft_p95_ms"]["median"] == 450.0 and by["ttft_p95_ms"]["k"] == 3
    assert by["failed"]["cv"] is None and by["failed"]["runs_needed"] is None
    assert by["output_throughput_tok_s"]["runs_needed"] >= 2


def test_goodput_and_server_limits() -> None:
    slo = SLO.from_mapping({"ttft_ms": 100, "min_slo_attainment": 0.9, "max_preemptions": 0})
    runs = [{"slo_attainment": 0.95, "server_preemptions": 0.0}, {"slo_attainment": 0.85, "server_preemptions": 2.0},
            {"slo_attainment": 0.97, "server_preemptions": 0.0}]
    verdicts = {v.metric: v for v in check_slo(slo, "t", runs)}
    assert verdicts["slo_attainment"].verdict == "PASS"  # the median, 0.95
    assert verdicts["server_preemptions"].verdict == "FAIL"  # the worst run: one preempting run breaks it
    assert verdicts["server_preemptions"].candidate_value == 2.0
    with pytest.raises(UsageError, match="fraction of requests in"):
        SLO.from_mapping({"min_slo_attainment": 1.5})
    with pytest.raises(UsageError, match="whole number"):
        SLO.from_mapping({"max_preemptions": 0.5})
    (skipped,) = check_slo(SLO(min_slo_attainment=0.9), "t", [{"ttft_p95_ms": 1.0}])
    assert skipped.verdict == "SKIPPED" and "per-request limit" in skipped.message
    (floor,) = check_slo(SLO(min_max_rate_at_slo_req_s=20), "t", [{"max_rate_at_slo_req_s": 16.0}] * 3)
    assert floor.verdict == "FAIL" and floor.metric == "max_rate_at_slo_req_s"
