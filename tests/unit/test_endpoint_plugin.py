"""The plugin in endpoint mode, end to end without vLLM: an inner pytest session measures a scripted server that
serves a Hugging Face model name and wants an API key. The name is taken as a served model name (not a missing
path), the key comes from the environment, and it is written nowhere in the results or baselines."""

from __future__ import annotations

import pytest

from tests.conftest import run_llmperf
from tests.support.scripted_server import scripted_server

HF_NAME = "Qwen/Qwen2.5-0.5B-Instruct"
SECRET = "sk-plugin-test-9f8e7d6c5b4a"
BODY = ("def test_serving(llmperf_mode, llmperf_concurrency, llmperf_input_len, llmperf_bench):\n"
        "    llmperf_bench.measure_and_gate()\n")


def test_hf_model_name_and_api_key_in_endpoint_mode(pytester: pytest.Pytester):
    pytester.makepyfile(test_inner=BODY)
    with scripted_server(in_subprocess=True, model=HF_NAME, api_key=SECRET, ttft_s=0.005, itl_s=0.001) as srv:
        result = run_llmperf(pytester, "-rA", "--llmperf-endpoint", srv.endpoint, "--llmperf-model", HF_NAME,
                             "--llmperf-output-len", "4", "--llmperf-input-lens", "8", "--llmperf-repeats", "1",
                             "--llmperf-no-plots", "--llmperf-update-baselines",
                             env={"LLMPERF_API_KEY": SECRET}, timeout=120)
    result.assert_outcomes(passed=1)
    written = [p for p in pytester.path.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".txt", ".log")]
    assert any(p.name == "results.json" for p in written)
    assert HF_NAME in (pytester.path / "results.json").read_text()
    for path in written:
        assert SECRET not in path.read_text(errors="replace"), path


def test_missing_api_key_is_one_readable_failure(pytester: pytest.Pytester):
    pytester.makepyfile(test_inner=BODY)
    with scripted_server(in_subprocess=True, model=HF_NAME, api_key=SECRET) as srv:
        result = run_llmperf(pytester, "--llmperf-endpoint", srv.endpoint, "--llmperf-model", HF_NAME,
                             "--llmperf-repeats", "1", "--llmperf-no-plots", env={"LLMPERF_API_KEY": ""})
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*wants credentials; set LLMPERF_API_KEY*"])
