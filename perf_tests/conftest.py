"""The perf suite's shared settings. Modes, sweeps, lengths and repeats come from the command line
(``--llmperf-*``) or ``[tool.llmperf]`` in pyproject.toml, never from editing the tests."""

from __future__ import annotations

from typing import Any


def measure_and_gate(llmperf_bench: Any) -> Any:
    """The body every study test shares: K runs, exact output lengths, then SLOs and the regression gate."""
    result = llmperf_bench.run()
    assert result.runs, "no run was measured"
    for run in result.runs:
        wrong = [r.output_tokens for r in run.requests if r.error is None and r.output_tokens != result.workload["output_len"]]
        assert not wrong, f"requests streamed {wrong} tokens instead of {result.workload['output_len']}"
    llmperf_bench.gate()
    return result
