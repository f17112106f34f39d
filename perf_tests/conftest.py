"""The perf suite's shared settings. Modes, sweeps, lengths and repeats come from the command line
(``--llmperf-*``) or ``[tool.llmperf]`` in pyproject.toml, never from editing the tests."""

from __future__ import annotations

from typing import Any


def measure_and_gate(llmperf_bench: Any) -> Any:
    """The body every study test shares: K runs, exact prompt and output lengths, then SLOs and the gate."""
    result = llmperf_bench.run()
    assert result.runs, "no run was measured"
    want_in, want_out = result.workload["input_len"], result.workload["output_len"]
    for run in result.runs:
        ok = [r for r in run.requests if r.error is None]
        wrong_out = [r.output_tokens for r in ok if r.output_tokens != want_out]
        assert not wrong_out, f"requests streamed {wrong_out} tokens instead of {want_out}"
        wrong_in = [r.prompt_tokens for r in ok if r.prompt_tokens != want_in]
        assert not wrong_in, f"prompts were {wrong_in} tokens instead of {want_in} (tokenizer mismatch?)"
    llmperf_bench.gate()
    return result
