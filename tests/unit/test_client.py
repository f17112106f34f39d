"""The streaming client and runner against the scripted SSE server: counts, errors, timeouts, preflight."""

from __future__ import annotations

import socket
import time

import pytest

from pytest_llmperf.errors import EndpointUnreachable, UsageError
from pytest_llmperf.load.client import StreamAccount
from pytest_llmperf.load.runner import run_load
from pytest_llmperf.load.workload import Workload
from tests.support.scripted_server import Script, scripted_server

MODEL = Script().model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- StreamAccount: pure parsing and accounting -------------------------------------------------------

def _chunk(completion_tokens: int, text: str = "x") -> bytes:
    return (b'data: {"choices":[{"text":"%s"}],"usage":{"prompt_tokens":3,"completion_tokens":%d}}\n\n'
            % (text.encode(), completion_tokens))


def test_account_multi_token_chunk_is_token_weighted():
    acct = StreamAccount(start_perf_s=0.0)
    acct.feed(b": ping\n\n" + _chunk(1), 0.100)
    acct.feed(_chunk(4), 0.160)            # 3 tokens after 60 ms -> 3 x 20 ms
    acct.feed(_chunk(5), 0.170)            # 1 token after 10 ms
    acct.feed(b'data: {"choices":[],"usage":{"completion_tokens":5}}\n\ndata: [DONE]\n\n', 0.5)
    rec = acct.record("r", 0.0, prompt_len=99)
    assert rec.error is None and acct.done
    assert rec.output_tokens == 5 and rec.prompt_tokens == 3
    assert rec.ttft_ms == pytest.approx(100.0)
    assert rec.itl_ms == pytest.approx((20.0, 20.0, 20.0, 10.0))
    assert rec.e2el_ms == pytest.approx(170.0)   # the usage-only chunk does not move the end time
    assert len(rec.itl_ms) == rec.output_tokens - 1


def test_account_handles_events_split_across_reads():
    data = _chunk(1) + _chunk(2)
    acct = StreamAccount(0.0)
    acct.feed(data[:17], 0.01)
    assert acct.tokens == 0
    acct.feed(data[17:len(_chunk(1)) + 5], 0.02)
    assert acct.tokens == 1 and acct.ttft_s == pytest.approx(0.02)
    acct.feed(data[len(_chunk(1)) + 5:], 0.05)
    assert acct.tokens == 2 and acct.itl_ms == pytest.approx([30.0])


def test_account_without_usage_counts_one_token_per_text_chunk():
    acct = StreamAccount(0.0)
    for i in range(3):
        acct.feed(b'data: {"choices":[{"text":"a"}]}\n\n', 0.1 * (i + 1))
    acct.feed(b'data: {"choices":[{"text":""}]}\n\n', 0.5)  # empty text: no token
    assert acct.record("r", 0.0, 1).output_tokens == 3


def test_account_mid_stream_error_and_malformed_json_are_recorded():
    acct = StreamAccount(0.0)
    acct.feed(_chunk(1) + b'data: {"error":{"message":"boom"}}\n\n', 0.1)
    rec = acct.record("r", 0.0, 1)
    assert "boom" in rec.error and rec.output_tokens == 1
    bad = StreamAccount(0.0)
    bad.feed(b"data: {not json\n\n", 0.1)
    assert "malformed" in bad.record("r", 0.0, 1).error


def test_empty_stream_is_a_failure():
    acct = StreamAccount(0.0)
    acct.feed(b"data: [DONE]\n\n", 0.1)
    assert acct.record("r", 0.0, 1).error == "stream ended without any token"


# --- against the scripted server ----------------------------------------------------------------------

def test_exact_token_counts_and_progress():
    calls = []
    wl = Workload(num_requests=6, warmup_requests=2, input_len=8, output_len=12, concurrency=3, seed=1)
    with scripted_server(ttft_s=0.02, itl_s=0.002) as srv:
        run = run_load(srv.endpoint, MODEL, wl, progress=lambda d, t: calls.append((d, t)))
    assert len(run.records) == 6                                      # warmup excluded
    assert {r.request_id for r in run.records} == {f"req-{i}" for i in range(6)}
    for rec in run.records:
        assert rec.error is None
        assert rec.output_tokens == 12 and rec.prompt_tokens == 8
        assert len(rec.itl_ms) == 11
        assert rec.ttft_ms >= 20.0 * 0.9                               # server cannot answer early
        assert rec.e2el_ms >= rec.ttft_ms
    assert calls == [(i, 6) for i in range(1, 7)]
    assert min(r.start_s for r in run.records) == 0.0
    assert run.window.duration_s == pytest.approx(run.duration_s, abs=1e-3)  # wall clock vs perf_counter
    assert run.window.start_unix_s <= time.time()


@pytest.mark.parametrize("chat", [False, True])
def test_multi_token_chunks_counted_right(chat):
    wl = Workload(num_requests=2, input_len=4, output_len=10, concurrency=2)
    with scripted_server(tokens_per_chunk=4, itl_s=0.001) as srv:
        from pytest_llmperf.load.runner import run_load as rl
        run = rl(srv.endpoint, MODEL, wl, chat=chat)
    for rec in run.records:
        assert rec.error is None and rec.output_tokens == 10 and len(rec.itl_ms) == 9


def test_http_error_recorded_not_raised():
    wl = Workload(num_requests=3, output_len=4, concurrency=2)
    with scripted_server(http_status=503) as srv:
        run = run_load(srv.endpoint, MODEL, wl)
    assert run.failed == 3
    assert all(r.error.startswith("HTTP 503") and "scripted failure" in r.error for r in run.records)
    assert all(r.ttft_ms is None and r.tpot_ms is None for r in run.records)


def test_mid_stream_error_recorded():
    wl = Workload(num_requests=2, output_len=8, concurrency=1)
    with scripted_server(error_after_tokens=3) as srv:
        run = run_load(srv.endpoint, MODEL, wl)
    for rec in run.records:
        assert "scripted mid-stream error" in rec.error and rec.output_tokens == 3


def test_stall_records_timeout_and_run_ends():
    wl = Workload(num_requests=2, output_len=4, concurrency=2, timeout_s=0.5)
    with scripted_server(stall=True) as srv:
        run = run_load(srv.endpoint, MODEL, wl)
    assert run.failed == 2
    assert all("timeout after 0.5 s" in r.error and srv.endpoint in r.error for r in run.records)


def test_unreachable_endpoint_fails_fast_naming_url():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(EndpointUnreachable, match=f"127.0.0.1:{url.split(':')[2]}"):
        run_load(url, MODEL, Workload(num_requests=1))


def test_wrong_model_lists_served_names():
    with scripted_server() as srv:
        with pytest.raises(UsageError, match=r"'nope' is not served .* served models: scripted-model"):
            run_load(srv.endpoint, "nope", Workload(num_requests=1))


def test_open_loop_run_completes():
    wl = Workload(num_requests=5, output_len=3, concurrency=5, request_rate=200.0, seed=3)
    with scripted_server(ttft_s=0.001, itl_s=0.001) as srv:
        run = run_load(srv.endpoint, MODEL, wl)
    starts = sorted(r.start_s for r in run.records)
    assert run.failed == 0 and starts[0] == 0.0 and starts[-1] > 0.0


def test_heap_frozen_during_measured_requests_only():
    """No full GC of the pre-existing heap during the measured burst (it stalled the loop 100+ ms at 256
    concurrent); the freeze is undone after the run, and never undone when someone else had frozen first."""
    import gc
    counts = []
    wl = Workload(num_requests=4, warmup_requests=1, input_len=8, output_len=4, concurrency=2, seed=1)
    assert gc.get_freeze_count() == 0
    with scripted_server(ttft_s=0.001, itl_s=0.001) as srv:
        run_load(srv.endpoint, MODEL, wl, progress=lambda d, t: counts.append(gc.get_freeze_count()))
        assert len(counts) == 4 and min(counts) > 0
        assert gc.get_freeze_count() == 0
        gc.freeze()
        try:
            run_load(srv.endpoint, MODEL, wl)
            assert gc.get_freeze_count() > 0                          # the other party's freeze kept
        finally:
            gc.unfreeze()
