"""The end-of-session report of a real inner session (endpoint mode on the scripted server): a test with an
input-length range beside a fixed-length test used to end the session with an INTERNALERROR in the seed-study
table (ints and ``"16:64"`` sorted together)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_llmperf
from tests.support.scripted_server import scripted_server

INNER = '''
def test_fixed(llmperf_bench):
    llmperf_bench.run()


def test_range(llmperf_bench):
    llmperf_bench.run(input_len="16:64")
'''


def test_length_range_beside_fixed_length(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    with scripted_server(in_subprocess=True, ttft_s=0.002, itl_s=0.001) as srv:
        result = run_llmperf(pytester, "--llmperf-endpoint", srv.endpoint, "--llmperf-model", srv.script.model,
                             "--llmperf-repeats", "1", subprocess=True, timeout=120)
    out = result.stdout.str()
    assert "INTERNALERROR" not in out + result.stderr.str()
    results = json.loads((pytester.path / "results.json").read_text())
    assert {str(t["workload"]["input_len"]) for t in results["tests"]} == {"32", "16:64"}
    section = out[out.index("llmperf results"):]
    assert "test_range (median of K runs)" in section and "16:64" in section
    assert (pytester.path / "report" / "summary.md").is_file()
    assert "16:64" in (pytester.path / "report" / "summary.md").read_text()
