"""Real vLLM CPU engines through the plugin: modes single, tp2 and pp2, two tests each, every test streaming
completions of exactly N tokens. Each spec's engine starts once, engines never overlap, and nothing is left
running afterwards. Slow (pp2 on CPU starts in about 140 s): marked ``engine``."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_llmperf, servers_on_port, wait_for_no_vllm

pytestmark = pytest.mark.engine

N_TOKENS = 6
INNER = f"""
from pytest_llmperf.load.runner import run_load
from pytest_llmperf.load.workload import Workload


def stream(engine):
    workload = Workload(num_requests=2, input_len=16, output_len={N_TOKENS}, concurrency=1)
    load = run_load(engine.endpoint, engine.served_model_name, workload,
                    vocab_size=engine.plan.model_paths.vocab_size)
    assert load.failed == 0, [r.error for r in load.records]
    assert [r.output_tokens for r in load.records] == [{N_TOKENS}, {N_TOKENS}]
    print(f"STREAMED {{engine.spec.label}} port={{engine.port}}")


def test_first(llmperf_mode, llmperf_engine):
    stream(llmperf_engine)


def test_second(llmperf_mode, llmperf_engine):
    stream(llmperf_engine)
"""
MODES = ("single", "tp2", "pp2")


def test_each_mode_starts_once_and_streams_exact_tokens(pytester: pytest.Pytester,
                                                        record_property: pytest.RecordProperty) -> None:
    pytester.makepyfile(test_modes=INNER)
    wait_for_no_vllm()
    result = run_llmperf(pytester, "-s", "-rA", "--llmperf-modes", ",".join(MODES), subprocess=True, timeout=900)
    out = result.stdout.str()
    result.assert_outcomes(passed=6)
    for mode in MODES:
        assert out.count(f"starting vLLM engine {mode} (cpu, model tiny-llama)") == 1, mode
        assert out.count(f"STREAMED {mode} ") == 2, mode
    starts = re.findall(r"starting vLLM engine (\w+) \(cpu, model tiny-llama\) on port (\d+)", out)
    healthy = dict(re.findall(r"engine (\w+) healthy after ([\d.]+) s", out))
    assert [label for label, _ in starts] == list(MODES)
    for label, seconds in healthy.items():
        print(f"engine {label} startup {seconds} s")
        record_property(f"startup_s_{label}", float(seconds))
    assert sorted(healthy) == sorted(MODES)
    # never two engines at once: each engine is stopped before the next one starts
    lines = [ln for ln in out.splitlines() if "starting vLLM engine" in ln or "stopping engine" in ln]
    expected = [f"{verb} {m}" for m in MODES for verb in ("starting vLLM engine", "stopping engine")]
    assert [" ".join(re.search(r"(starting vLLM engine|stopping engine) (\w+)", ln).groups())  # type: ignore[union-attr]
            for ln in lines] == expected
    for _, port in starts:
        assert servers_on_port(int(port)) == [], f"a vLLM server on port {port} survived the session"
