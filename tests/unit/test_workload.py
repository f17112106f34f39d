"""Workload validation and dict shape; seeded length and prompt generation for the synthetic tokenizer."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmperf.errors import UsageError
from pytest_llmperf.load.prompts import build_requests, synthetic_prompt
from pytest_llmperf.load.runner import run_generators
from pytest_llmperf.load.workload import LengthSpec, Workload, parse_length

WORKLOAD_KEYS = {"concurrency", "input_len", "output_len", "num_requests", "warmup_requests", "request_rate",
                 "burstiness", "seed"}


def test_to_dict_has_exactly_the_shared_keys():
    wl = Workload(num_requests=10, input_len="128:512", output_len=64, concurrency=4, warmup_requests=2,
                  request_rate=5, burstiness=0.5, seed=7)
    d = wl.to_dict()
    assert set(d) == WORKLOAD_KEYS
    assert d == {"concurrency": 4, "input_len": "128:512", "output_len": 64, "num_requests": 10,
                 "warmup_requests": 2, "request_rate": 5.0, "burstiness": 0.5, "seed": 7}
    assert Workload(num_requests=1).to_dict()["request_rate"] is None


@pytest.mark.parametrize("kwargs, field", [
    (dict(num_requests=0), "num_requests"),
    (dict(num_requests=-3), "num_requests"),
    (dict(concurrency=0), "concurrency"),
    (dict(warmup_requests=-1), "warmup_requests"),
    (dict(input_len=0), "input_len"),
    (dict(output_len="512:128"), "output_len"),
    (dict(input_len="abc"), "input_len"),
    (dict(request_rate=0), "request_rate"),
    (dict(request_rate=float("inf")), "request_rate"),
    (dict(burstiness=0), "burstiness"),
    (dict(timeout_s=0), "timeout_s"),
    (dict(seed=-1), "seed"),
    (dict(num_requests=True), "num_requests"),
])
def test_invalid_workload_raises_usage_error_naming_field(kwargs, field):
    args = dict(num_requests=1) | kwargs
    with pytest.raises(UsageError, match=field):
        Workload(**args)


def test_parse_length_forms():
    assert parse_length(128) == LengthSpec(128, 128)
    assert parse_length("64") == LengthSpec(64, 64)
    assert parse_length(" 128:512 ") == LengthSpec(128, 512)
    for bad in ("1:2:3", "", "x:5", 2.5):
        with pytest.raises(UsageError):
            parse_length(bad)


@given(low=st.integers(1, 300), span=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_uniform_lengths_in_range_and_seeded(low, span, seed):
    spec = LengthSpec(low, low + span)
    a = spec.sample(np.random.default_rng(seed), 50)
    assert np.array_equal(a, spec.sample(np.random.default_rng(seed), 50))
    assert a.min() >= low and a.max() <= low + span


def test_synthetic_prompt_is_exact_words_in_id_range():
    text = synthetic_prompt(300, np.random.default_rng(0), vocab_size=500)
    words = text.split(" ")
    assert len(words) == 300 and "  " not in text
    ids = [int(re.fullmatch(r"t(\d+)", w).group(1)) for w in words]
    assert min(ids) >= 100 and max(ids) < 500
    big = synthetic_prompt(2000, np.random.default_rng(0), vocab_size=128000)
    assert max(int(w[1:]) for w in big.split()) < 30000
    with pytest.raises(UsageError, match="vocab_size"):
        synthetic_prompt(3, np.random.default_rng(0), vocab_size=100)


def test_build_requests_ids_lengths_and_determinism():
    wl = Workload(num_requests=20, warmup_requests=3, input_len="5:40", output_len=8, seed=11)
    reqs = build_requests(wl, run_generators(wl.seed)[0])
    assert len(reqs) == 23
    ids = [r.request_id for r in reqs]
    assert len(set(ids)) == 23 and ids[:3] == ["warmup-0", "warmup-1", "warmup-2"] and ids[3] == "req-0"
    for r in reqs:
        assert len(r.prompt.split(" ")) == r.prompt_len and 5 <= r.prompt_len <= 40 and r.output_len == 8
    again = build_requests(wl, run_generators(wl.seed)[0])
    assert again == reqs
    # the arrival settings do not change the prompts
    open_loop = Workload(num_requests=20, warmup_requests=3, input_len="5:40", output_len=8, seed=11,
                         request_rate=3.0, burstiness=0.3)
    assert build_requests(open_loop, run_generators(11)[0]) == reqs
    other = build_requests(wl, run_generators(12)[0])
    assert [r.prompt for r in other] != [r.prompt for r in reqs]


def test_user_prompts_cycle_with_approximate_lengths():
    wl = Workload(num_requests=5, output_len="3:4")
    reqs = build_requests(wl, np.random.default_rng(0), prompts=["hello world", "one two three"])
    assert [r.prompt for r in reqs] == ["hello world", "one two three"] * 2 + ["hello world"]
    assert [r.prompt_len for r in reqs][:2] == [2, 3] and all(r.approx_prompt_len for r in reqs)
    with pytest.raises(UsageError, match="empty"):
        build_requests(wl, np.random.default_rng(0), prompts=[])
