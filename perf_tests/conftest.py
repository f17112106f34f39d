"""The perf suite's shared settings. Modes, sweeps, lengths and repeats come from the command line
(``--llmperf-*``) or ``[tool.llmperf]`` in pyproject.toml, never from editing the tests."""
