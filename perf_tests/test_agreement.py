"""Agreement with the field's reference client: our TTFT, TPOT and throughput against ``vllm bench serve``'s
request function on the same engine, same prompts and lengths, interleaved (ours, vLLM's, ours, vLLM's, ...)
so drift hits both alike. Shares the engines of the pcie suite (tests are ordered by engine spec).

- ``test_agrees_with_vllm_bench``: the single engine at concurrency 1 and 4 (runs on the CPU backend too);
- ``test_agrees_on_tp2``: the TP=2 engine (on NVLink GPUs: the PCIe-emulated one) at concurrency 1 and 32.

The figures go to the end-of-run report and the results file (``notes``). The tests check that both clients
complete every request of the same workload; how far apart their figures are is reported, not asserted:
see docs/load.md for the differences measured and their causes.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.pcie]

ROUNDS = 3
#: a stream whose tokens all arrived in one burst (TPOT under this) was held up between server and client;
#: on a shared 2-core machine this happens to both clients at random (docs/load.md), so it is counted and shown
BURST_TPOT_MS = 0.2


def _agreement(engine: Any, session: Any, concurrency: int) -> None:
    pytest.importorskip("vllm.benchmarks.lib.endpoint_request_func",
                        reason="the reference client is vLLM's (vllm bench serve): install vllm on this runner")
    from pytest_llmperf.load.reference import ours_run, p50, vllm_client_run
    from pytest_llmperf.load.workload import Workload

    cfg = session.cfg
    vocab = engine.plan.model_paths.vocab_size or 32000
    workload = Workload(num_requests=max(8, 2 * concurrency), input_len=cfg.input_lens[0], output_len=cfg.output_len,
                        concurrency=concurrency, warmup_requests=concurrency)
    sides: dict[str, tuple[Any, dict[str, Any]]] = {
        "ours": (ours_run, {"ttft": [], "tpot": [], "tok_s": [], "burst": 0}),
        "vLLM": (vllm_client_run, {"ttft": [], "tpot": [], "tok_s": [], "burst": 0})}
    for _ in range(ROUNDS):
        for name, (run, acc) in sides.items():
            fig = run(engine.endpoint, engine.served_model_name, workload, vocab)
            assert fig.failed == 0, f"{name} client: {fig.failed} of {workload.num_requests} requests failed"
            assert len(fig.ttft_ms) == len(fig.tpot_ms) == workload.num_requests, f"{name} client: incomplete streams"
            acc["ttft"].append(p50(fig.ttft_ms))
            acc["tpot"].append(p50(fig.tpot_ms))
            acc["tok_s"].append(fig.output_tok_s)
            acc["burst"] += sum(t < BURST_TPOT_MS for t in fig.tpot_ms)
        engine.check_alive()
    ours, theirs = sides["ours"][1], sides["vLLM"][1]
    parts = []
    for key, label, unit in (("ttft", "TTFT p50", "ms"), ("tpot", "TPOT p50", "ms"), ("tok_s", "throughput", "tok/s")):
        a, b = p50([v for v in ours[key] if v is not None]), p50([v for v in theirs[key] if v is not None])
        if a is None or b is None:
            parts.append(f"{label} not measured")
            continue
        rel = f" ({(a - b) / b:+.1%})" if b else ""
        parts.append(f"{label} ours {a:.2f} {unit} vs vLLM {b:.2f} {unit}{rel}")
    total = ROUNDS * workload.num_requests
    parts.append(f"streams delivered in one burst: ours {ours['burst']}/{total}, vLLM {theirs['burst']}/{total}")
    session.add_note(
        f"agreement with vllm bench serve ({engine.spec.label}{', PCIe emulated' if engine.spec.emulate_pcie else ''}, "
        f"concurrency {concurrency}, {workload.input_len}->{workload.output_len} tokens, median of {ROUNDS} "
        f"interleaved rounds): " + "; ".join(parts))


@pytest.mark.single
@pytest.mark.parametrize("concurrency", [1, 4])
def test_agrees_with_vllm_bench(llmperf_engine, llmperf_session, concurrency):
    _agreement(llmperf_engine, llmperf_session, concurrency)


@pytest.mark.gpu
@pytest.mark.tp(2)
@pytest.mark.parametrize("concurrency", [1, 32])
def test_agrees_on_tp2(llmperf_engine, llmperf_session, concurrency):
    _agreement(llmperf_engine, llmperf_session, concurrency)
