"""CPU cost of the client per streamed token: parse + account a pre-recorded vLLM-style SSE byte stream.

No network: the stream is fed to :class:`StreamAccount` in reads of one event each (the usual case) and in
reads of 16 events. Reported as µs/token in ``extra_info['us_per_token']``::

    .venv/bin/python -m pytest tests/bench/test_client_cpu_cost.py -q -p no:cacheprovider --benchmark-only
"""

from __future__ import annotations

import json

import pytest

from pytest_llmperf.load.client import StreamAccount

N_TOKENS = 512


def _recorded_stream(n_tokens: int) -> list[bytes]:
    events = []
    for i in range(1, n_tokens + 1):
        chunk = {"id": "cmpl-0123456789abcdef", "object": "text_completion", "created": 1700000000,
                 "model": "tiny-llama", "choices": [{"index": 0, "text": f" t{100 + i}", "logprobs": None,
                                                     "finish_reason": None, "stop_reason": None}],
                 "usage": {"prompt_tokens": 128, "total_tokens": 128 + i, "completion_tokens": i}}
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events.append(b'data: {"id":"cmpl-0","choices":[],"usage":{"prompt_tokens":128,"completion_tokens":%d}}\n\n'
                  % n_tokens)
    events.append(b"data: [DONE]\n\n")
    return events


@pytest.mark.parametrize("events_per_read", [1, 16])
def test_client_cpu_cost_per_token(benchmark, events_per_read):
    events = _recorded_stream(N_TOKENS)
    reads = [b"".join(events[i:i + events_per_read]) for i in range(0, len(events), events_per_read)]

    def parse() -> StreamAccount:
        acct = StreamAccount(0.0)
        t = 0.0
        for data in reads:
            t += 0.001
            acct.feed(data, t)
        return acct

    acct = benchmark(parse)
    assert acct.done and acct.tokens == N_TOKENS and len(acct.itl_ms) == N_TOKENS - 1
    us_per_token = benchmark.stats.stats.median * 1e6 / N_TOKENS
    benchmark.extra_info["us_per_token"] = us_per_token
    print(f"\nclient CPU cost, {events_per_read} event(s) per read: {us_per_token:.2f} us/token (median)")
