"""Agreement with the field's reference client: our TTFT and TPOT against ``vllm bench serve``'s request
function on the same engine, same prompts and lengths, interleaved (ours, vLLM's, ours, vLLM's, ...) so drift
hits both alike. Shares the single-mode engine with the pcie suite (tests are ordered by engine spec).

The figures go to the end-of-run report and the results file (``notes``). The test checks that both clients
complete every request of the same workload; how far apart their figures are is reported, not asserted:
see docs/load.md for the differences measured and their causes.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.pcie, pytest.mark.single]

ROUNDS = 3


@pytest.mark.parametrize("concurrency", [1, 4])
def test_agrees_with_vllm_bench(llmperf_engine, llmperf_session, concurrency):
    from pytest_llmperf.load.reference import ours_run, p50, vllm_client_run
    from pytest_llmperf.load.workload import Workload

    cfg = llmperf_session.cfg
    vocab = llmperf_engine.plan.model_paths.vocab_size or 32000
    workload = Workload(num_requests=max(8, 2 * concurrency), input_len=cfg.input_lens[0], output_len=cfg.output_len,
                        concurrency=concurrency, warmup_requests=concurrency)
    ours: dict[str, list[float]] = {"ttft": [], "tpot": []}
    theirs: dict[str, list[float]] = {"ttft": [], "tpot": []}
    for _ in range(ROUNDS):
        for side, run in ((ours, ours_run), (theirs, vllm_client_run)):
            ttft, tpot, _, failed = run(llmperf_engine.endpoint, llmperf_engine.served_model_name, workload, vocab)
            assert failed == 0, f"{run.__name__}: {failed} requests failed"
            side["ttft"].append(p50(ttft))
            side["tpot"].append(p50(tpot))
        llmperf_engine.check_alive()
    row = {m: (p50(ours[m]), p50(theirs[m])) for m in ("ttft", "tpot")}
    llmperf_session.add_note(
        f"agreement with vllm bench serve ({llmperf_engine.spec.label}, concurrency {concurrency}, "
        f"{workload.input_len}->{workload.output_len} tokens, median of {ROUNDS} interleaved rounds): "
        + "; ".join(f"{m.upper()} p50 ours {a:.2f} ms vs vLLM {b:.2f} ms ({(a - b) / b:+.1%})" for m, (a, b) in row.items()))
    assert all(v is not None and v > 0 for pair in row.values() for v in pair), row
