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


# --- faults (issue 14): a stream is a success only if complete; nothing hangs past its deadline ---------------

def _established_to(port: int) -> int:
    """Client-side TCP connections of this machine to 127.0.0.1:``port`` still ESTABLISHED (/proc/net/tcp)."""
    count = 0
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if remote.endswith(f":{port:04X}") and state == "01":
            count += 1
    return count


def _summary(records):
    from pytest_llmperf.stats.metrics import compute_run_metrics, run_summary
    from pytest_llmperf.stats.slo import SLO, check_slo

    metrics = compute_run_metrics(records, 1.0, SLO())
    summary = run_summary(metrics)
    verdicts = check_slo(SLO.from_mapping({"max_failed": 0}), "t", [summary])
    return metrics, summary, verdicts


@pytest.mark.parametrize(("mode", "cause"), [
    ({"truncate_after_tokens": 3}, "stream delivered 3 of 8 requested tokens (truncated)"),
    ({"omit_done": True}, "stream ended without data: [DONE] after 8 of 8 tokens"),
    ({"truncate_after_tokens": 3, "omit_done": True}, "stream ended without data: [DONE] after 3 of 8 tokens"),
    ({"usage_factor": 10.0}, "inflated usage: the server reported 80 completion tokens for max_tokens=8"),
    ({"usage_factor": 10.0, "usage_per_chunk": False}, "inflated usage: the server reported 80 completion"),
])
def test_incomplete_or_overcounted_stream_is_a_failure_with_its_cause(mode, cause):
    wl = Workload(num_requests=3, output_len=8, concurrency=3)
    with scripted_server(ttft_s=0.002, itl_s=0.001, **mode) as srv:
        run = run_load(srv.endpoint, MODEL, wl)
    assert run.failed == 3
    assert all(cause in r.error for r in run.records), run.records[0].error
    metrics, summary, verdicts = _summary(run.records)
    assert summary["failed"] == 3 and metrics.total_output_tokens == 0          # nothing counted
    assert [v.verdict for v in verdicts if v.metric == "failed"] == ["FAIL"]     # max_failed sees it


def test_inflated_usage_does_not_inflate_throughput_next_to_an_honest_server():
    wl = Workload(num_requests=4, output_len=16, concurrency=2)
    with scripted_server(ttft_s=0.002, itl_s=0.001) as honest:
        good = run_load(honest.endpoint, MODEL, wl)
    with scripted_server(ttft_s=0.002, itl_s=0.001, usage_factor=10.0) as liar:
        bad = run_load(liar.endpoint, MODEL, wl)
    assert good.failed == 0 and sum(r.output_tokens for r in good.records) == 4 * 16
    assert bad.failed == 4 and _summary(bad.records)[0].total_output_tokens == 0
    assert _summary(good.records)[0].total_output_tokens == 4 * 16


def test_multi_token_events_without_running_usage_take_the_final_usage_count():
    """A server that sends no per-chunk usage and several tokens per event: the final usage is the count
    (consistent: more than the events, at most max_tokens), and a success."""
    wl = Workload(num_requests=2, output_len=10, concurrency=2)
    with scripted_server(tokens_per_chunk=4, usage_per_chunk=False, itl_s=0.001) as srv:
        run = run_load(srv.endpoint, MODEL, wl)
    assert run.failed == 0 and all(r.output_tokens == 10 for r in run.records)


def test_usage_only_chunk_without_token_events_is_not_a_success():
    acct = StreamAccount(0.0, expected_tokens=5)
    acct.feed(b'data: {"choices":[],"usage":{"completion_tokens":5}}\n\ndata: [DONE]\n\n', 0.1)
    rec = acct.record("r", 0.0, 1)
    assert "no token event" in rec.error and rec.output_tokens == 0


def test_final_usage_disagreeing_with_running_count_is_noted():
    acct = StreamAccount(0.0, expected_tokens=2)
    acct.feed(_chunk(1) + _chunk(2) + b'data: {"choices":[],"usage":{"completion_tokens":1}}\n\ndata: [DONE]\n\n', 0.1)
    rec = acct.record("r", 0.0, 1)
    assert rec.error is None and rec.output_tokens == 2
    assert acct.note == "final usage 1 != 2 tokens counted from the stream"


def test_stalled_engine_fails_the_run_promptly_naming_it_and_cancels_requests_in_flight():
    """The engine streams 2 tokens, then goes silent with /health still 200: the run fails after the stall
    timeout (not the 300 s request timeout), names engine and endpoint, and leaves no connection open."""
    from pytest_llmperf.errors import RunStalled

    wl = Workload(num_requests=4, output_len=8, concurrency=2, stall_timeout_s=0.5)
    with scripted_server(ttft_s=0.002, itl_s=0.001, stall_after_tokens=2) as srv:
        t0 = time.monotonic()
        with pytest.raises(RunStalled) as exc:
            run_load(srv.endpoint, MODEL, wl, engine_label="single")
        elapsed_s = time.monotonic() - t0
        assert elapsed_s < wl.timeout_s / 10
        assert _established_to(srv.port) == 0
    msg = str(exc.value)
    assert f"engine single at {srv.endpoint} stalled: no token for" in msg
    assert "2 request(s) were in flight" in msg and "stall timeout 0.5 s" in msg
    print(f"stall detected after {elapsed_s:.2f} s (stall timeout 0.5 s)")


def test_a_server_that_never_answers_is_a_stall_too():
    from pytest_llmperf.errors import RunStalled

    wl = Workload(num_requests=2, output_len=4, concurrency=2, stall_timeout_s=0.3)
    stalled = r"endpoint http://127\.0\.0\.1:\d+/v1 stalled"
    t0 = time.monotonic()
    with scripted_server(stall=True) as srv, pytest.raises(RunStalled, match=stalled):
        run_load(srv.endpoint, MODEL, wl)
    print(f"never-answering server: stall detected after {time.monotonic() - t0:.2f} s (stall timeout 0.3 s)")


def test_run_deadline_stops_a_slow_but_live_run_and_keeps_finished_records():
    from pytest_llmperf.errors import RunDeadlineExceeded

    wl = Workload(num_requests=50, output_len=20, concurrency=1, deadline_s=0.6, stall_timeout_s=5.0)
    with scripted_server(ttft_s=0.01, itl_s=0.01) as srv:     # ~0.2 s per request, tokens keep coming
        t0 = time.monotonic()
        with pytest.raises(RunDeadlineExceeded) as exc:
            run_load(srv.endpoint, MODEL, wl, engine_label="single")
        elapsed_s = time.monotonic() - t0
        assert _established_to(srv.port) == 0
    assert elapsed_s < 5.0
    assert "passed its deadline of 0.6 s" in str(exc.value) and srv.endpoint in str(exc.value)
    assert 0 < len(exc.value.records) < 50 and all(r.error is None for r in exc.value.records)
    print(f"deadline hit after {elapsed_s:.2f} s (deadline 0.6 s)")


@pytest.mark.parametrize("field", ["timeout_s", "stall_timeout_s", "deadline_s"])
@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), True, "10"])
def test_deadlines_are_validated(field, bad):
    with pytest.raises(UsageError, match=f"workload {field} must be a finite number > 0 seconds"):
        Workload(num_requests=1, **{field: bad})
