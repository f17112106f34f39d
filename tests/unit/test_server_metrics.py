"""vLLM /metrics: parsing with prometheus-client, windowed deltas, gauge peaks, quantiles, and degradation."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pytest_llmperf.load.runner import run_load
from pytest_llmperf.load.workload import Workload
from pytest_llmperf.telemetry.server_metrics import (
    VLLM_METRICS,
    ServerMetricsMonitor,
    histogram_quantile,
    metrics_url_for,
    parse_metrics,
    scrape,
    window,
)
from tests.support.scripted_server import scripted_server

BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
REAL_PAGE = Path(__file__).parents[1] / "data" / "vllm-0.32-cpu-metrics.txt"


class _FakeVllm:
    """A registry with vLLM's metric names, two engines (label ``engine``) as a data-parallel server has."""

    def __init__(self, legacy_kv: bool = False) -> None:
        self.reg = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "ttft", labels, buckets=BOUNDS, registry=self.reg)
        self.queue = Histogram("vllm:request_queue_time_seconds", "queue", labels, buckets=BOUNDS, registry=self.reg)
        self.pre = Counter("vllm:num_preemptions", "preemptions", labels, registry=self.reg)
        self.running = Gauge("vllm:num_requests_running", "running", labels, registry=self.reg)
        self.kv = Gauge("vllm:gpu_cache_usage_perc" if legacy_kv else "vllm:kv_cache_usage_perc", "kv", labels,
                        registry=self.reg)
        Gauge("process_open_fds", "not vllm", registry=self.reg).set(12)

    def page(self) -> str:
        return generate_latest(self.reg).decode()


def test_window_counts_only_the_run():
    fake = _FakeVllm()
    for v in (0.2, 0.3, 4.0):  # history before the run: must not leak into it
        fake.ttft.labels("m", "0").observe(v)
    fake.pre.labels("m", "0").inc(5)
    before = parse_metrics(fake.page())
    run_ttft = [0.02, 0.04, 0.03, 0.07]
    for i, v in enumerate(run_ttft):
        fake.ttft.labels("m", str(i % 2)).observe(v)
        fake.queue.labels("m", str(i % 2)).observe(v / 2)
    fake.pre.labels("m", "1").inc(2)
    fake.running.labels("m", "0").set(3)
    fake.running.labels("m", "1").set(4)
    fake.kv.labels("m", "0").set(0.25)
    fake.kv.labels("m", "1").set(0.75)
    during = parse_metrics(fake.page())
    fake.running.labels("m", "0").set(0)
    fake.running.labels("m", "1").set(0)
    fake.kv.labels("m", "0").set(0.0)
    fake.kv.labels("m", "1").set(0.1)
    after = parse_metrics(fake.page())
    w = window(before, after, [during])
    assert w.available and w.requests == len(run_ttft)
    assert w.server_ttft_mean_ms == pytest.approx(1000 * sum(run_ttft) / len(run_ttft))
    assert w.queue_time_mean_ms == pytest.approx(500 * sum(run_ttft) / len(run_ttft))
    assert w.preemptions == 2
    assert w.running_peak == 7            # summed over the two engines
    assert w.kv_cache_usage_peak_pct == pytest.approx(75.0)  # the fullest engine
    assert w.samples == 1
    assert all(k.startswith("server_") for k in w.summary())
    assert w.summary()["server_preemptions"] == 2.0
    # without the sample taken during the run the peak is missed: sampling matters
    assert window(before, after).running_peak == 0


def test_every_metric_name_is_on_a_real_vllm_page():
    # captured from a real vLLM 0.32.0 CPU engine: the names and types we read are the ones vLLM serves
    snap = parse_metrics(REAL_PAGE.read_text())
    for key in ("ttft", "e2e", "queue", "prefill", "decode"):
        assert snap.find(key, "histogram") is not None, VLLM_METRICS[key]
    for key in ("kv_cache_usage", "running", "waiting"):
        assert snap.find(key, "gauge") is not None, VLLM_METRICS[key]
    assert snap.find("preemptions", "counter") is not None
    w = window(snap, snap)
    assert w.available and w.requests == 0 and w.preemptions == 0 and w.server_ttft_mean_ms is None


def test_legacy_kv_cache_metric_name_is_read():
    fake = _FakeVllm(legacy_kv=True)
    fake.kv.labels("m", "0").set(0.5)
    snap = parse_metrics(fake.page())
    assert window(snap, snap).kv_cache_usage_peak_pct == pytest.approx(50.0)


def test_page_without_vllm_series_degrades_with_reason():
    reg = CollectorRegistry()
    Gauge("process_open_fds", "x", registry=reg).set(1)
    snap = parse_metrics(generate_latest(reg).decode())
    w = window(snap, snap)
    assert not w.available and "no vLLM series" in w.reason


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 50), min_size=len(BOUNDS) + 1, max_size=len(BOUNDS) + 1),
       q1=st.floats(0, 1), q2=st.floats(0, 1))
def test_histogram_quantile_is_monotone_and_bounded(counts, q1, q2):
    cum, total = [], 0
    for le, c in zip((*BOUNDS, float("inf")), counts, strict=True):
        total += c
        cum.append((le, float(total)))
    lo_q, hi_q = sorted((q1, q2))
    a, b = histogram_quantile(lo_q, cum), histogram_quantile(hi_q, cum)
    if total == 0:
        assert a is None and b is None
        return
    assert 0 <= a <= b <= BOUNDS[-1]


def test_histogram_quantile_matches_uniform_fill():
    # 100 observations spread evenly over (0, 1]: the median interpolates to 0.5
    assert histogram_quantile(0.5, [(1.0, 100.0), (float("inf"), 100.0)]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="quantile"):
        histogram_quantile(1.5, [(1.0, 1.0)])


def test_monitor_against_scripted_vllm_metrics():
    with scripted_server(max_num_seqs=1, preempt_every=2, ttft_s=0.005, itl_s=0.001) as srv:
        # history before the measured window
        run_load(srv.endpoint, srv.script.model, Workload(num_requests=3, concurrency=1, output_len=4))
        monitor = ServerMetricsMonitor(srv.metrics_url, interval_s=0.01)
        with monitor.measure() as box:
            run = run_load(srv.endpoint, srv.script.model, Workload(num_requests=6, concurrency=3, output_len=8))
    m = box.result
    assert run.failed == 0 and m.available, m.reason
    assert m.requests == 6                       # the earlier 3 are outside the window
    assert m.preemptions == 3                    # requests 4..9 of the server: 4, 6, 8 preempted
    assert m.queue_time_mean_ms > 0 and m.waiting_peak >= 1   # one slot, three in flight: they queued
    assert m.running_peak == 1
    client_ttft_mean_ms = sum(r.ttft_ms for r in run.records) / len(run.records)
    assert m.server_ttft_mean_ms <= client_ttft_mean_ms  # the client's TTFT contains the server's


def test_window_opens_after_the_warmup_when_the_runner_marks_it():
    with scripted_server(ttft_s=0.005, itl_s=0.01) as srv:
        monitor = ServerMetricsMonitor(srv.metrics_url, interval_s=0.01)
        wl = Workload(num_requests=4, warmup_requests=3, concurrency=2, output_len=4)
        with monitor.measure() as marked:
            run_load(srv.endpoint, srv.script.model, wl, on_measure_start=marked.mark_start)
        with monitor.measure() as unmarked:
            run_load(srv.endpoint, srv.script.model, wl)
    assert marked.restarted and marked.result.requests == 4      # the 3 warmup requests are outside the window
    assert not unmarked.restarted and unmarked.result.requests == 7


def test_run_record_keeps_a_window_holding_the_warmup_out_of_the_gate():
    from pytest_llmperf.telemetry.server_metrics import ServerMetrics, _Box

    box = _Box()
    box.result = ServerMetrics(True, requests=7, server_ttft_p50_ms=12.0)
    record, gated = box.run_record(warmup_requests=3, repeats=3)   # the re-scrape after the warmup failed
    assert record["warmup_requests_in_window"] == 3 and gated == {}
    assert box.run_record(warmup_requests=3, repeats=1)[1] == {"server_requests": 7.0, "server_ttft_p50_ms": 12.0}
    box.restarted = True                                            # the window opened after the warmup
    record, gated = box.run_record(warmup_requests=3, repeats=3)
    assert "warmup_requests_in_window" not in record and gated["server_ttft_p50_ms"] == 12.0
    box.result = ServerMetrics(False, "HTTP 404")
    box.restarted = False
    assert box.run_record(3, 3) == (box.result.to_dict(), {})       # unavailable: no window to speak of
    assert _Box().run_record(3, 3) == (None, {})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_monitor_degrades_when_metrics_absent_or_unreachable():
    with scripted_server(metrics=False) as srv:
        with ServerMetricsMonitor(srv.metrics_url).measure() as box:
            pass
    assert not box.result.available and "HTTP 404" in box.result.reason
    url = f"http://127.0.0.1:{_free_port()}/metrics"
    with ServerMetricsMonitor(url, timeout_s=1.0).measure() as box:
        pass
    assert not box.result.available and box.result.reason.startswith(f"nothing answers at {url}")


def test_scrape_sends_credentials_and_metrics_url():
    assert metrics_url_for("http://h:8000/v1/") == "http://h:8000/metrics"
    with scripted_server() as srv:
        snap = scrape(srv.metrics_url, {"Authorization": "Bearer k"})
    assert "vllm:time_to_first_token_seconds" in snap.histograms
