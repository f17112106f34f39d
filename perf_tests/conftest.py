"""The perf suite's shared settings. Modes, sweeps, lengths and repeats come from the command line
(``--llmperf-*``) or ``[tool.llmperf]`` in pyproject.toml, never from editing the tests. The tests need nothing
from this file: ``llmperf_bench.measure_and_gate()`` runs K runs, checks exact prompt and output lengths, then
applies the SLOs and the regression gate (a team's own suite looks the same)."""
