"""Datasets: JSONL and ShareGPT files, length distributions, bad input named by line, max_model_len checks, and a
dataset driven through the runner with the prompt token counts taken from the server's usage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.errors import UsageError
from pytest_llmperf.load.datasets import (
    SHAREGPT_MEAN_INPUT_TOKENS,
    SHAREGPT_MEAN_OUTPUT_TOKENS,
    LengthDistribution,
    check_fits,
    fit_lognormal,
    load_dataset,
    load_jsonl,
    load_sharegpt,
    parse_distribution,
)
from pytest_llmperf.load.prompts import DatasetPrompt, build_requests
from pytest_llmperf.load.runner import run_load
from pytest_llmperf.load.workload import Workload
from tests.support.scripted_server import scripted_server


def _conv(human: str, gpt: str) -> dict:
    return {"id": "x", "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}


def test_jsonl_prompts_and_optional_output_lengths(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hello there world", "output_len": 7}\n\n{"prompt": "second prompt"}\n')
    ds = load_jsonl(path)
    assert [p.prompt for p in ds.prompts] == ["hello there world", "second prompt"]
    assert [p.output_len for p in ds.prompts] == [7, None]
    assert ds.prompts[1].source == "p.jsonl:3"
    assert ds.to_dict()["dataset"] == "jsonl:p.jsonl" and ds.to_dict()["dataset_size"] == 2


@pytest.mark.parametrize(("content", "expected"), [
    ('{"prompt": "ok"}\n{"prompt": "broken"\n', "line 2: not valid JSON"),
    ('{"prompt": "ok"}\n["a list"]\n', "line 2: expected a JSON object"),
    ('{"text": "no prompt key"}\n', "line 1: missing or empty 'prompt'"),
    ('{"prompt": "x", "output_len": 0}\n', "line 1: 'output_len' must be an integer >= 1"),
])
def test_jsonl_malformed_line_is_named(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=expected):
        load_jsonl(path)


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(f"jsonl:{tmp_path / 'nope.jsonl'}")
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(UsageError, match="is empty"):
        load_dataset(f"sharegpt:{empty}")
    with pytest.raises(UsageError, match="unknown dataset kind"):
        load_dataset(f"csv:{empty}")


def test_sharegpt_first_human_turn_and_reply_length(tmp_path):
    path = tmp_path / "sg.json"
    data = [_conv("what is the capital of france please", "the capital of france is paris " * 4),
            {"conversations": [{"from": "human", "value": "only one turn here"}]},  # skipped: no reply
            _conv("hi", "too short prompt is skipped by the vllm rule")]
    path.write_text(json.dumps(data))
    ds = load_sharegpt(path, count_tokens=lambda text: len(text.split()))
    assert len(ds.prompts) == 1
    assert ds.prompts[0].prompt.startswith("what is the capital")
    assert ds.prompts[0].output_len == 24  # the reply's token count (here: words)
    assert ds.name == "sharegpt:sg.json"


def test_sharegpt_jsonl_and_role_content_keys(tmp_path):
    path = tmp_path / "sg.jsonl"
    line = {"messages": [{"role": "user", "content": "tell me a long story about dragons"},
                         {"role": "assistant", "content": "once upon a time there was a dragon"}]}
    path.write_text(json.dumps(line) + "\n" + "{not json\n")
    with pytest.raises(UsageError, match="sg.jsonl line 2: not valid JSON"):
        load_sharegpt(path)
    path.write_text(json.dumps(line) + "\n" + json.dumps({"conversations": "nope"}) + "\n")
    with pytest.raises(UsageError, match="sg.jsonl line 2: not a ShareGPT conversation"):
        load_sharegpt(path)


def test_sharegpt_malformed_array_names_the_line(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text('[\n  {"conversations": []},\n  {"conversations": [}\n]')
    with pytest.raises(UsageError, match="sg.json line 3: not valid JSON"):
        load_sharegpt(path)


def test_prompt_longer_than_max_model_len_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "short one", "output_len": 8}) + "\n"
                    + json.dumps({"prompt": " ".join(["w"] * 300), "output_len": 8}) + "\n")
    ds = load_jsonl(path)
    check_fits(ds, 4096, 16)  # fits
    with pytest.raises(UsageError, match=r"p.jsonl:2: prompt of ~390 tokens \+ 8 output tokens exceeds the "
                                         r"server's max_model_len 256"):
        check_fits(ds, 256, 16)
    check_fits(ds, None, 16)  # unknown max_model_len: nothing to check


@pytest.mark.parametrize("text", ["fixed:0", "uniform:9:3", "normal:-1:2", "lognormal:1:-1", "gamma:1:2",
                                  "lognormal:1", "uniform:a:b", "lognormal-mean:0.5:1"])
def test_bad_distribution_specs_are_refused(text):
    with pytest.raises(UsageError):
        parse_distribution(text)


def test_dist_dataset_needs_output_distribution():
    with pytest.raises(UsageError, match="needs an output distribution"):
        load_dataset("dist:fixed:8")


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["fixed", "uniform", "normal", "lognormal"]),
       a=st.floats(1, 500), b=st.floats(0, 3), cap=st.integers(1, 4096), seed=st.integers(0, 2**16))
def test_distribution_draws_are_clipped_integers(kind, a, b, cap, seed):
    if kind == "uniform":
        a, b = a, a + b * 100
    dist = LengthDistribution(kind, a, b, max_tokens=cap)
    x = dist.sample(np.random.default_rng(seed), 50)
    assert x.dtype == np.int64 and x.min() >= 1 and x.max() <= cap
    again = dist.sample(np.random.default_rng(seed), 50)
    assert (x == again).all()  # seeded, no global state


def test_sharegpt_presets_have_the_published_means():
    rng = np.random.default_rng(1)
    for name, mean in (("sharegpt-in", SHAREGPT_MEAN_INPUT_TOKENS), ("sharegpt-out", SHAREGPT_MEAN_OUTPUT_TOKENS)):
        dist = parse_distribution(name)
        assert dist.kind == "lognormal" and math.isclose(dist.mean_tokens, mean, rel_tol=1e-9)
        draws = dist.sample(rng, 200_000)
        assert abs(draws.mean() / mean - 1) < 0.03


def test_fit_lognormal_recovers_parameters():
    draws = np.random.default_rng(3).lognormal(5.0, 0.8, size=50_000)
    fit = fit_lognormal(draws)
    assert abs(fit.a - 5.0) < 0.02 and abs(fit.b - 0.8) < 0.02
    with pytest.raises(UsageError):
        fit_lognormal([3])


def test_synthetic_dataset_is_seeded_and_exact(tmp_path):
    a = load_dataset("dist:uniform:4:12,fixed:6", n=20, seed=5)
    b = load_dataset("dist:uniform:4:12,fixed:6", n=20, seed=5)
    assert a == b
    assert all(len(p.prompt.split()) == p.prompt_tokens and 4 <= p.prompt_tokens <= 12 for p in a.prompts)
    assert {p.output_len for p in a.prompts} == {6}
    c = load_dataset("dist:uniform:4:12,fixed:6", n=20, seed=6)
    assert a.prompts != c.prompts


def test_dist_fit_from_sharegpt_file(tmp_path):
    path = tmp_path / "sg.json"
    rng = np.random.default_rng(0)
    data = [_conv(" ".join(["w"] * int(rng.integers(5, 40))), " ".join(["r"] * int(rng.integers(10, 80))))
            for _ in range(60)]
    path.write_text(json.dumps(data))
    ds = load_dataset(f"dist:fit={path}", n=30)
    assert len(ds.prompts) == 30 and ds.name == "dist:fit=sg.json"


def test_build_requests_takes_dataset_output_lengths():
    w = Workload(num_requests=3, output_len=9)
    prompts = [DatasetPrompt("a b c", 4), DatasetPrompt("d e", None)]
    reqs = build_requests(w, np.random.default_rng(0), prompts=prompts)
    assert [r.output_len for r in reqs] == [4, 9, 4]
    assert [r.prompt for r in reqs] == ["a b c", "d e", "a b c"]
    assert all(r.approx_prompt_len for r in reqs)
    with pytest.raises(UsageError, match="must be a string or a DatasetPrompt"):
        build_requests(w, np.random.default_rng(0), prompts=[3])  # type: ignore[list-item]


def test_dataset_through_runner_records_server_prompt_tokens(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "one two three four five", "output_len": 3}, {"prompt": "six seven", "output_len": 5}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_jsonl(path)
    # the server's tokenizer counts 3 tokens per word: the record must carry the server's count, not ours
    with scripted_server(prompt_tokens_per_word=3.0, ttft_s=0.002, itl_s=0.001) as srv:
        run = run_load(srv.endpoint, srv.script.model, Workload(num_requests=4, output_len=16, concurrency=2),
                       prompts=ds.prompts)
    assert run.failed == 0
    by_id = {r.request_id: r for r in run.records}
    assert [by_id[f"req-{i}"].prompt_tokens for i in range(4)] == [15, 6, 15, 6]
    assert [by_id[f"req-{i}"].output_tokens for i in range(4)] == [3, 5, 3, 5]


def test_server_refuses_a_prompt_over_max_model_len(tmp_path):
    with scripted_server(max_model_len=64, ttft_s=0.002, itl_s=0.001) as srv:
        run = run_load(srv.endpoint, srv.script.model, Workload(num_requests=1, output_len=8),
                       prompts=[DatasetPrompt(" ".join(["w"] * 100), 8)])
    assert run.failed == 1
    assert "HTTP 400" in run.records[0].error and "maximum context length is 64" in run.records[0].error
