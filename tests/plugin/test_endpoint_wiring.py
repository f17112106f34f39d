"""Issue 16's options wired into the plugin, each shown end to end without vLLM: inner pytest sessions measure a
scripted server (tests/support/scripted_server.py, its own process) through ``--llmperf-endpoint``.

Fingerprint and defaults from the server and its hardware label, tp/pp items skipped against one endpoint,
``--llmperf-dataset`` and ``--llmperf-api chat``, vLLM's ``/metrics`` per run (and ``max_preemptions``),
``--llmperf-require-baseline``, paths from the rootdir, ``--llmperf-request-rates`` as a sweep, and
``llmperf_bench.saturation()`` gated by its summary key.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import run_llmperf
from tests.support.scripted_server import scripted_server

BODY = ("def test_serving(llmperf_mode, llmperf_concurrency, llmperf_input_len, llmperf_bench):\n"
        "    llmperf_bench.measure_and_gate()\n")
ARGS = ("--llmperf-model", "scripted-model", "--llmperf-repeats", "1", "--llmperf-no-plots")


def results(pytester: pytest.Pytester, name: str = "results.json") -> dict[str, Any]:
    return json.loads((pytester.path / name).read_text())


def run(pytester: pytest.Pytester, *args: str, env: dict[str, str] | None = None, **script: Any) -> pytest.RunResult:
    script = {"ttft_s": 0.005, "itl_s": 0.001, **script}
    with scripted_server(in_subprocess=True, **script) as srv:
        return run_llmperf(pytester, "-rA", "--llmperf-endpoint", srv.endpoint, *ARGS, *args,
                           env={"LLMPERF_ENDPOINT_HARDWARE": "", **(env or {})}, timeout=120)


def test_fingerprint_engine_version_and_gpu_defaults_come_from_the_endpoint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    result = run(pytester, "--llmperf-endpoint-hardware", "2xH100-nvlink", "--llmperf-modes", "single,tp2",
                 version="0.31.5")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*tp2: endpoint mode measures the server as it is configured*"])
    data = results(pytester)
    fp = data["fingerprint"]
    assert (fp["backend"], fp["gpu_model"], fp["gpu_count"], fp["interconnect"]) == ("gpu", "H100", 2, "nvlink")
    assert (fp["engine"], fp["engine_version"], fp["model"]) == ("endpoint-vllm", "0.31.5", "scripted-model")
    assert data["header"]["engine_version"] == "vllm 0.31.5"
    assert data["header"]["endpoint_hardware"] == "2xH100-nvlink"
    (test,) = data["tests"]
    assert test["engine"]["engine_version"] == "vllm 0.31.5"
    assert test["gate"]["default_metrics"] == ["ttft_p95_ms", "tpot_p50_ms", "output_throughput_tok_s"]
    assert test["gate"]["tolerance"] == pytest.approx(0.10)
    assert not any(k.startswith("gpu0_") for k in test["runs"][0]["summary"])  # no client-side NVML for a remote GPU


def test_cpu_label_from_the_environment_gives_the_cpu_defaults(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    result = run(pytester, env={"LLMPERF_ENDPOINT_HARDWARE": "cpu-xeon-8488c"})
    result.assert_outcomes(passed=1)
    data = results(pytester)
    assert (data["fingerprint"]["backend"], data["fingerprint"]["cpu_model"]) == ("cpu", "cpu-xeon-8488c")
    assert data["tests"][0]["gate"]["default_metrics"] == ["e2el_p50_ms", "output_throughput_tok_s"]


def test_explicit_gpu_backend_is_accepted_for_an_endpoint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    result = run(pytester, "--llmperf-backend", "gpu", "--llmperf-endpoint-hardware", "A100-80GB")
    result.assert_outcomes(passed=1)
    fp = results(pytester)["fingerprint"]
    assert (fp["backend"], fp["gpu_model"], fp["gpu_count"]) == ("gpu", "A100-80GB", 1)


def test_hardware_label_without_endpoint_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    result = run_llmperf(pytester, "--llmperf-endpoint-hardware", "2xH100-nvlink")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-endpoint-hardware only applies with --llmperf-endpoint*"])


def test_dataset_and_chat_api(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    lines = [{"prompt": "tell me a story about a red fox", "output_len": 3},
             {"prompt": "what is the capital of france", "output_len": 5},
             {"prompt": "say hello to the world please"}]
    (pytester.path / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = run(pytester, "--llmperf-dataset", "jsonl:prompts.jsonl", "--llmperf-api", "chat",
                 "--llmperf-output-len", "7", "--llmperf-num-requests", "6", "--llmperf-warmup", "0")
    result.assert_outcomes(passed=1)
    (test,) = results(pytester)["tests"]
    assert test["workload"]["api"] == "chat"
    assert test["workload"]["dataset"].startswith("jsonl:") and test["workload"]["dataset_size"] == 3
    sent = sorted(r["output_tokens"] for r in test["runs"][0]["requests"])
    assert sent == [3, 3, 5, 5, 7, 7]  # each prompt's own output length, the workload's where it has none
    assert {r["prompt_tokens"] for r in test["runs"][0]["requests"]} == {6, 8}  # the server's usage counts


def test_bad_dataset_is_one_usage_error_before_any_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    (pytester.path / "bad.jsonl").write_text('{"prompt": "ok"}\n{not json\n')
    result = run_llmperf(pytester, "--llmperf-endpoint", "http://127.0.0.1:9/v1", "--llmperf-dataset",
                         "jsonl:bad.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad.jsonl*line 2*"])


def test_dataset_prompt_over_max_model_len_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    (pytester.path / "long.jsonl").write_text(json.dumps({"prompt": "word " * 50, "output_len": 20}) + "\n")
    result = run(pytester, "--llmperf-dataset", "jsonl:long.jsonl", max_model_len=40)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*exceeds the server's max_model_len 40*"])


def test_server_metrics_per_run_and_max_preemptions_slo(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner="import pytest\n\n@pytest.mark.llmperf(slo={'max_preemptions': 0})\n" + BODY)
    result = run(pytester, preempt_every=2)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*FAIL*server_preemptions*> limit 0*"])
    run0 = results(pytester)["tests"][0]["runs"][0]
    assert run0["server"]["available"] is True
    assert run0["summary"]["server_preemptions"] >= 1
    assert run0["server"]["requests"] == len(run0["requests"])  # the window opens after the warmup request
    assert run0["summary"]["server_ttft_p50_ms"] > 0


def test_server_window_opens_after_the_warmup_so_every_run_is_gated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    run(pytester, "--llmperf-repeats", "3", "--llmperf-warmup", "2").assert_outcomes(passed=1)
    runs = results(pytester)["tests"][0]["runs"]
    for r in runs:  # the first run's 2 warmup requests are not in its window: the server counts the measured ones
        assert "warmup_requests_in_window" not in r["server"]
        assert r["server"]["requests"] == len(r["requests"])
        assert r["summary"]["server_requests"] == len(r["requests"])


def test_server_metrics_off_and_missing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    run(pytester, "--llmperf-server-metrics", "off").assert_outcomes(passed=1)
    run0 = results(pytester)["tests"][0]["runs"][0]
    assert run0["server"] is None and not any(k.startswith("server_") for k in run0["summary"])
    result = run(pytester, metrics=False)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*server metrics unavailable: GET */metrics answered HTTP 404*"])
    assert results(pytester)["tests"][0]["runs"][0]["server"]["available"] is False


def test_require_baseline_fails_a_test_without_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=BODY)
    result = run(pytester, "--llmperf-require-baseline")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NO_BASELINE*", "*--llmperf-require-baseline: a missing baseline fails*"])
    recorded = run(pytester, "--llmperf-require-baseline", "--llmperf-update-baselines", "--llmperf-repeats", "3")
    recorded.assert_outcomes(passed=1)
    assert recorded.ret == 0
    run(pytester, "--llmperf-require-baseline", "--llmperf-repeats", "3").assert_outcomes(passed=1)


def test_relative_paths_are_taken_from_the_rootdir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_inner=BODY)
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    (pytester.path / "prompts.jsonl").write_text(json.dumps({"prompt": "one two three", "output_len": 4}) + "\n")
    sub = pytester.mkdir("sub")
    monkeypatch.chdir(sub)
    with scripted_server(in_subprocess=True, ttft_s=0.005, itl_s=0.001) as srv:
        result = run_llmperf(pytester, str(pytester.path / "test_inner.py"), "--llmperf-endpoint", srv.endpoint,
                             *ARGS, "--llmperf-dataset", "jsonl:prompts.jsonl", "--llmperf-update-baselines",
                             "--llmperf-repeats", "3",
                             env={"LLMPERF_ENDPOINT_HARDWARE": ""}, timeout=120)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "results.json").exists() and not (sub / "results.json").exists()
    assert list((pytester.path / "baselines").glob("*/*.json")) and not (sub / "baselines").exists()
    assert (pytester.path / "report").is_dir() and not (sub / "report").exists()


RATE_BODY = ("def test_rate(llmperf_concurrency, llmperf_request_rate, llmperf_bench):\n"
             "    result = llmperf_bench.run()\n"
             "    assert result.workload['request_rate'] == llmperf_request_rate\n")


def test_request_rates_are_a_sweep_beside_concurrency(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=RATE_BODY)
    result = run(pytester, "--llmperf-request-rates", "50,100.5", "--llmperf-burstiness", "0.5")
    result.assert_outcomes(passed=2)
    assert {t["workload"]["burstiness"] for t in results(pytester)["tests"]} == {0.5}
    ids = sorted(t["test_id"] for t in results(pytester)["tests"])
    assert ids == ["test_inner.py::test_rate[single-c2-in32-r100.5]", "test_inner.py::test_rate[single-c2-in32-r50]"]
    rates = sorted(t["workload"]["request_rate"] for t in results(pytester)["tests"])
    assert rates == [50.0, 100.5]
    run(pytester).assert_outcomes(passed=1)
    assert [t["test_id"] for t in results(pytester)["tests"]] == ["test_inner.py::test_rate[single-c2-in32-closed]"]


@pytest.mark.parametrize("rates", ["0", "-2", "1,x"])
def test_bad_request_rate_is_a_usage_error(pytester: pytest.Pytester, rates: str) -> None:
    pytester.makepyfile(test_inner=RATE_BODY)
    result = run_llmperf(pytester, "--llmperf-request-rates", rates)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-request-rates*request rate*"])


SATURATION_BODY = """import json
import pytest

@pytest.mark.llmperf(slo={{'ttft_ms': 60, 'min_max_rate_at_slo_req_s': {floor}}})
def test_capacity(llmperf_bench):
    result = llmperf_bench.saturation(start=16, limit=128, rel_tol=0.25, max_steps=6, num_requests=16,
                                      warmup_requests=0, concurrency=64)
    print("SATURATION", json.dumps(result.to_dict()))
    llmperf_bench.gate()
"""


def test_saturation_search_finds_the_knee_and_is_gated(pytester: pytest.Pytester) -> None:
    """One request at a time, ~25 ms each: about 40 req/s; above it the queue pushes TTFT past 60 ms."""
    pytester.makepyfile(test_inner=SATURATION_BODY.format(floor=1))
    script = {"ttft_s": 0.01, "itl_s": 0.002, "max_num_seqs": 1}
    result = run(pytester, "--llmperf-output-len", "8", "--llmperf-repeats", "3", "--llmperf-update-baselines",
                 **script)
    result.assert_outcomes(passed=1)
    assert result.ret == 0  # three searches: a baseline was recorded
    (test,) = results(pytester)["tests"]
    assert len(test["runs"]) == 3
    for run_k in test["runs"]:
        found = run_k["metrics"]
        assert found["max_load"] is not None and found["first_miss"] is not None
        assert found["max_load"] < found["first_miss"] <= 128  # the knee is inside the searched range
        assert run_k["summary"]["max_rate_at_slo_req_s"] == found["max_load"]
    assert list((pytester.path / "baselines").glob("*/*.json"))
    # each point live, each search's answer as a note: the wording of llmperf run and the reports
    result.stdout.fnmatch_lines(["*search 1: request rate * req/s: */* within the SLO (*",
                                 "*saturation search 1: max request rate * req/s at SLO, attainment *; first miss *"])
    result = run(pytester, "--llmperf-output-len", "8", "--llmperf-repeats", "3", **script)
    result.assert_outcomes(passed=1)
    checked = {v["metric"]: v["verdict"] for v in results(pytester)["verdicts"] if v["kind"] == "regression"}
    assert "max_rate_at_slo_req_s" in checked  # compared with the recorded searches
    pytester.makepyfile(test_inner=SATURATION_BODY.format(floor=1000))
    result = run(pytester, "--llmperf-output-len", "8", "--llmperf-repeats", "1", **script)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*FAIL*max_rate_at_slo_req_s*< limit 1000*"])
