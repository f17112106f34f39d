"""Per-run metrics: hand-computed values, None-not-zero, order invariance, monotone percentiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.errors import UsageError
from pytest_llmperf.records import RequestRecord
from pytest_llmperf.stats.metrics import (
    METRIC_DIRECTIONS,
    SUMMARY_KEYS,
    Distribution,
    compute_run_metrics,
    direction_of,
    run_summary,
)
from pytest_llmperf.stats.slo import SLO


def rec(i: int, ttft: float, tpot: float, tokens: int = 11) -> RequestRecord:
    e2el = ttft + tpot * (tokens - 1)
    return RequestRecord(f"r{i}", 0.0, 16, tokens, ttft, e2el, itl_ms=(tpot,) * (tokens - 1))


RECORDS = [rec(1, 10, 10), rec(2, 20, 20), rec(3, 30, 30),
           RequestRecord("bad", 0.0, 16, 0, None, None, error="HTTP 500")]  # fmt: skip


def test_hand_computed_run() -> None:
    m = compute_run_metrics(RECORDS, duration_s=2.0)
    assert (m.completed, m.failed, m.total_output_tokens) == (3, 1, 33)
    assert m.ttft_ms == Distribution(count=3, mean=20.0, std=pytest.approx(math.sqrt(200 / 3)),
                                     p50=20.0, p90=pytest.approx(28.0), p95=pytest.approx(29.0), p99=pytest.approx(29.8))  # fmt: skip
    assert m.tpot_ms is not None and m.tpot_ms.p50 == pytest.approx(20.0)
    assert m.e2el_ms is not None and m.e2el_ms.p50 == pytest.approx(220.0)
    assert m.itl_ms is not None and (m.itl_ms.count, m.itl_ms.p50, m.itl_ms.p99) == (30, 20.0, 30.0)
    assert m.output_throughput_tok_s == pytest.approx(16.5)
    assert m.request_throughput_req_s == pytest.approx(1.5)
    assert m.goodput_req_s is None  # no SLO -> no goodput, not 0


def test_goodput_counts_requests_meeting_every_limit() -> None:
    assert compute_run_metrics(RECORDS, 2.0, SLO(ttft_ms=25)).goodput_req_s == pytest.approx(1.0)
    assert compute_run_metrics(RECORDS, 2.0, SLO(ttft_ms=25, tpot_ms=15)).goodput_req_s == pytest.approx(0.5)
    assert compute_run_metrics(RECORDS, 2.0, SLO(e2el_ms=100)).goodput_req_s == 0.0
    assert compute_run_metrics(RECORDS, 2.0, SLO(ttft_p95_ms=1)).goodput_req_s is None  # no per-request limit


def test_linear_percentile_method() -> None:
    d = Distribution.of([1, 2, 3, 4])
    assert d is not None and d.p50 == 2.5 and d.p90 == pytest.approx(3.7)
    assert Distribution.of([]) is None


def test_summary_keys_and_missing_data() -> None:
    s = run_summary(compute_run_metrics(RECORDS, 2.0))
    assert set(s) == set(SUMMARY_KEYS) - {"goodput_req_s"}
    assert s["ttft_p95_ms"] == pytest.approx(29.0) and s["failed"] == 1.0
    only_failed = compute_run_metrics([RECORDS[-1]], 1.0)
    assert only_failed.ttft_ms is None and only_failed.output_throughput_tok_s is None
    assert run_summary(only_failed) == {"failed": 1.0}


def test_bad_duration_names_it() -> None:
    with pytest.raises(UsageError, match="duration_s"):
        compute_run_metrics(RECORDS, 0.0)


def test_directions() -> None:
    assert set(SUMMARY_KEYS) <= set(METRIC_DIRECTIONS)
    assert direction_of("ttft_p95_ms") == "lower" and direction_of("output_throughput_tok_s") == "higher"
    assert direction_of("gpu3_power_cv") == "lower" and direction_of("gpu12_idle_share") == "lower"
    assert direction_of("energy_per_output_token_j") == "lower"
    with pytest.raises(UsageError, match="'gpu0_power_bogus'"):
        direction_of("gpu0_power_bogus")


@given(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_percentiles_monotone(values: list[float]) -> None:
    d = Distribution.of(values)
    assert d is not None
    assert min(values) <= d.p50 <= d.p90 <= d.p95 <= d.p99 <= max(values)


record_st = st.builds(
    lambda i, ttft, tpot, n, fail: rec(i, ttft, tpot, n) if not fail else RequestRecord(f"f{i}", 0, 1, 0, None, None, error="x"),
    st.integers(0, 10**6), st.floats(0.1, 1e4), st.floats(0.1, 1e3), st.integers(1, 20), st.booleans(),
)  # fmt: skip


@settings(max_examples=60)
@given(st.lists(record_st, min_size=1, max_size=15), st.randoms(use_true_random=False))
def test_metrics_invariant_to_record_order(records: list[RequestRecord], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(records)
    rnd.shuffle(shuffled)
    a = run_summary(compute_run_metrics(records, 3.0, SLO(ttft_ms=500)))
    b = run_summary(compute_run_metrics(shuffled, 3.0, SLO(ttft_ms=500)))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12), key


def test_slo_attainment_counts_failed_requests_as_misses() -> None:
    m = compute_run_metrics(RECORDS, 2.0, SLO(ttft_ms=25))
    assert m.slo_attainment == pytest.approx(2 / 4)  # 2 of 3 successes meet it; the failed one is a miss
    assert run_summary(m)["slo_attainment"] == pytest.approx(0.5)
    assert compute_run_metrics(RECORDS, 2.0).slo_attainment is None
    assert "slo_attainment" not in run_summary(compute_run_metrics(RECORDS, 2.0))
    assert direction_of("slo_attainment") == "higher" and direction_of("server_preemptions") == "lower"


@settings(max_examples=60)
@given(st.lists(record_st, min_size=1, max_size=15), st.floats(1.0, 1e4), st.floats(0.1, 100.0))
def test_slo_attainment_is_goodput_over_requests_sent(records: list[RequestRecord], limit_ms: float,
                                                      duration_s: float) -> None:
    m = compute_run_metrics(records, duration_s, SLO(ttft_ms=limit_ms))
    assert m.slo_attainment is not None
    assert 0.0 <= m.slo_attainment <= m.completed / len(records)
    assert m.slo_attainment == pytest.approx((m.goodput_req_s or 0.0) * duration_s / len(records))
