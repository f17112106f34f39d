"""Load shapes: request-rate lists, the concurrency cap on an open loop, and the saturation search (a pure driver
tested on a simulated server, then on the scripted server)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.errors import UsageError
from pytest_llmperf.load.arrivals import achieved_send_rate_req_s, parse_rates
from pytest_llmperf.load.runner import run_load
from pytest_llmperf.load.saturation import (
    LoadPoint,
    count_good,
    endpoint_measure,
    find_max_load,
    slo_attainment,
    wilson_interval,
)
from pytest_llmperf.load.workload import Workload
from pytest_llmperf.records import RequestRecord
from pytest_llmperf.stats.metrics import GoodputLimits
from tests.support.scripted_server import scripted_server

# --- rates --------------------------------------------------------------------------------------------

def test_parse_rates():
    assert parse_rates("1, 2.5,8") == (1.0, 2.5, 8.0)
    assert parse_rates([3, 4]) == (3.0, 4.0)


@pytest.mark.parametrize("text", ["0", "-1", "1,0", "inf", "nan", "fast", "", "2,,3"])
def test_zero_negative_and_non_numbers_are_refused(text):
    with pytest.raises(UsageError, match="rate"):
        parse_rates(text)


@pytest.mark.parametrize("rate", [0, -2.0, float("inf"), float("nan")])
def test_workload_refuses_bad_rate(rate):
    with pytest.raises(UsageError, match="request_rate"):
        Workload(num_requests=2, request_rate=rate)


def test_concurrency_caps_the_open_loop_and_the_achieved_rate_shows_it():
    # offered 200 req/s, but one request in flight at a time on a ~25 ms service: the achieved rate must fall
    with scripted_server(ttft_s=0.01, itl_s=0.002) as srv:
        capped = run_load(srv.endpoint, srv.script.model,
                          Workload(num_requests=8, output_len=8, request_rate=200.0, concurrency=1))
        free = run_load(srv.endpoint, srv.script.model,
                        Workload(num_requests=8, output_len=8, request_rate=200.0, concurrency=8))
    capped_rate = achieved_send_rate_req_s([r.start_s for r in capped.records])
    free_rate = achieved_send_rate_req_s([r.start_s for r in free.records])
    assert capped_rate is not None and free_rate is not None
    assert capped_rate < free_rate
    assert capped_rate < 200.0 / 2
    assert achieved_send_rate_req_s([0.0]) is None and achieved_send_rate_req_s([1.0, 1.0]) is None


# --- attainment --------------------------------------------------------------------------------------

def _rec(i: int, ttft_ms: float | None, error: str | None = None) -> RequestRecord:
    return RequestRecord(f"r{i}", 0.0, 4, 4, ttft_ms, None if ttft_ms is None else ttft_ms + 30.0,
                         (10.0, 10.0, 10.0), error)


def test_count_good_and_attainment_count_failures_as_misses():
    recs = [_rec(0, 50.0), _rec(1, 150.0), _rec(2, None, "HTTP 500"), _rec(3, 80.0)]
    limits = GoodputLimits(ttft_ms=100.0)
    assert count_good(recs, limits) == 2
    assert slo_attainment(recs, limits) == 0.5
    assert count_good(recs, GoodputLimits()) == 3  # no limit: every success is good
    assert slo_attainment([], limits) is None


@settings(max_examples=80, deadline=None)
@given(total=st.integers(1, 500), frac=st.floats(0, 1), conf=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_interval_contains_the_estimate(total, frac, conf):
    good = int(round(frac * total))
    lo, hi = wilson_interval(good, total, conf)
    assert 0 <= lo <= good / total <= hi <= 1
    lo4, hi4 = wilson_interval(good * 4, total * 4, conf)
    assert hi4 - lo4 <= hi - lo + 1e-12  # more samples, narrower


# --- the search on a simulated server ------------------------------------------------------------------

def _sim(capacity: float, n: int = 400, calls: list[float] | None = None):
    """Attainment 1 up to ``capacity``, then falling as capacity / load (deterministic)."""
    def measure(load: float) -> LoadPoint:
        if calls is not None:
            calls.append(load)
        att = 1.0 if load <= capacity else capacity / load
        return LoadPoint(load, int(math.floor(att * n)), n)
    return measure


@settings(max_examples=60, deadline=None)
@given(capacity=st.floats(0.5, 500), start=st.floats(0.5, 50), tol=st.sampled_from([0.05, 0.1, 0.25]))
def test_search_brackets_the_capacity(capacity, start, tol):
    # target 0.9: loads up to capacity / 0.9 still meet (attainment = capacity / load)
    true_max = capacity / 0.9
    res = find_max_load(_sim(capacity), start=start, limit=10_000, target=0.9, rel_tol=tol, max_steps=40,
                        min_load=1e-6)
    assert res.max_load is not None and res.first_miss is not None
    assert res.max_load <= true_max * (1 + 1e-9) and res.first_miss > true_max * (1 - 1e-9)
    assert (res.first_miss - res.max_load) / res.max_load <= tol + 1e-9
    assert res.attainment_at_max >= 0.9
    assert res.summary()["max_rate_at_slo_req_s"] == res.max_load


def test_search_never_saturated_reports_the_limit():
    res = find_max_load(_sim(1e9), start=1, limit=64)
    assert res.max_load == 64 and res.first_miss is None and "not saturated" in res.reason


def test_search_nothing_meets():
    res = find_max_load(_sim(0.001), start=8, limit=64, min_load=1)
    assert res.max_load is None and res.first_miss == 1 and "no load met" in res.reason
    assert res.summary() == {}


def test_integer_search_for_concurrency_ends_on_adjacent_values():
    calls: list[float] = []
    res = find_max_load(_sim(13.0, calls=calls), start=1, limit=256, target=1.0, integer=True,
                        variable="concurrency")
    assert (res.max_load, res.first_miss) == (13, 14)
    assert all(float(c).is_integer() for c in calls)
    assert "max_concurrency_at_slo" in res.summary()


def test_integer_search_with_small_growth_still_advances():
    calls: list[float] = []
    res = find_max_load(_sim(3.0, calls=calls), start=1, limit=8, target=1.0, integer=True, growth=1.2,
                        retries=0)
    assert (res.max_load, res.first_miss) == (3, 4)
    assert calls == sorted(set(calls))  # never the same load twice


def test_indeterminate_point_is_remeasured_and_flagged():
    calls: list[float] = []

    def measure(load: float) -> LoadPoint:  # always 9 of 10: the interval straddles 0.9
        calls.append(load)
        return LoadPoint(load, 9, 10)

    res = find_max_load(measure, start=4, limit=4, target=0.9, retries=2)
    assert calls == [4, 4, 4]  # measured, then twice more, counts pooled
    assert res.points[0].total == 30 and res.points[0].good == 27
    assert res.max_load == 4 and not res.confident
    lo, hi = res.attainment_ci_at_max
    assert lo < 0.9 < hi


@pytest.mark.parametrize("kwargs", [dict(start=0, limit=1), dict(start=2, limit=1), dict(start=1, limit=2, target=0),
                                    dict(start=1, limit=2, growth=1), dict(start=1, limit=float("inf"))])
def test_search_refuses_bad_settings(kwargs):
    with pytest.raises(UsageError):
        find_max_load(_sim(1.0), **kwargs)


# --- the search against a server that saturates ---------------------------------------------------------

def test_search_against_scripted_server_finds_a_bounded_rate():
    # two slots, ~35 ms per request: ~57 req/s capacity. TTFT <= 150 ms holds at 10 req/s and fails at 320.
    with scripted_server(max_num_seqs=2, ttft_s=0.01, itl_s=0.002) as srv:
        measure = endpoint_measure(srv.endpoint, srv.script.model,
                                   Workload(num_requests=20, output_len=12, concurrency=64),
                                   GoodputLimits(ttft_ms=150.0))
        res = find_max_load(measure, start=10, limit=320, target=0.9, rel_tol=0.25, max_steps=8, retries=0)
    assert res.max_load is not None and res.first_miss is not None, res.reason
    assert 10 <= res.max_load < res.first_miss <= 320
    assert all("achieved_rate_req_s" in p for p in res.to_dict()["points"])


def test_concurrency_search_against_scripted_server():
    # two slots: at concurrency 2 nothing queues; at 32 the last requests wait ~15 service times (TTFT >> 80 ms)
    with scripted_server(max_num_seqs=2, ttft_s=0.01, itl_s=0.002) as srv:
        measure = endpoint_measure(srv.endpoint, srv.script.model, Workload(num_requests=16, output_len=12),
                                   GoodputLimits(ttft_ms=80.0), variable="concurrency")
        res = find_max_load(measure, start=2, limit=32, target=0.9, integer=True, max_steps=8, retries=0,
                            variable="concurrency")
    assert res.max_load is not None and res.first_miss is not None, res.reason
    assert 2 <= res.max_load < res.first_miss <= 32
    assert all(float(p.load).is_integer() for p in res.points)
    with pytest.raises(UsageError, match="saturation variable"):
        endpoint_measure(srv.endpoint, srv.script.model, Workload(num_requests=1), GoodputLimits(), variable="qps")
