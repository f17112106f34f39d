"""``llmperf run`` endpoint features against the scripted server: --dataset, --api chat, --request-rates,
--slo / --find-max-rate, --hardware (the server's fingerprint, never the client's) and the server's /metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llmperf import cli
from pytest_llmperf.report.json_io import read_results
from tests.support.scripted_server import Script, scripted_server

MODEL = Script().model
SHORT = ["--concurrency", "2", "--num-requests", "4", "--input-len", "8", "--output-len", "3"]


def _run(endpoint: str, *extra: str) -> int:
    return cli.main(["run", "--endpoint", endpoint, "--model", MODEL, *extra])


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dataset_prompts_over_the_chat_api(tmp_path: Path) -> None:
    rows = [{"prompt": "one two three four", "output_len": 3}, {"prompt": "a b c d e f", "output_len": 5},
            {"prompt": "hello there", "output_len": 2}]
    data, out = _jsonl(tmp_path / "p.jsonl", rows), tmp_path / "r.json"
    with scripted_server(ttft_s=0.005, itl_s=0.02, max_model_len=4096) as srv:
        assert _run(srv.endpoint, "--dataset", f"jsonl:{data}", "--api", "chat", "--num-requests", "3",
                    "--concurrency", "3", "--json", str(out)) == 0
    (test,) = read_results(out)["tests"]
    wl = test["workload"]
    assert wl["api"] == "chat" and wl["dataset"] == "jsonl:p.jsonl" and wl["dataset_size"] == 3
    assert len(wl["dataset_sha256"]) == 16 and test["test_id"].endswith("-jsonl:p.jsonl-chat]")
    (run,) = test["runs"]
    # each dataset prompt carries its own output length; the prompt tokens are the server's usage (its word count)
    assert sorted(r["output_tokens"] for r in run["requests"]) == sorted(r["output_len"] for r in rows)
    assert sorted(r["prompt_tokens"] for r in run["requests"]) == sorted(len(r["prompt"].split()) for r in rows)
    assert all(r["error"] is None for r in run["requests"])


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("", "is empty"),
    ('{"prompt": "fine"}\n{"prompt": \n', "p.jsonl line 2: not valid JSON"),
    ('{"output_len": 3}\n', "p.jsonl line 1: missing or empty 'prompt'"),
])
def test_bad_dataset_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             content: str | None, message: str) -> None:
    path = tmp_path / "p.jsonl"
    if content is not None:
        path.write_text(content)
    # the file is read before anything is sent: no server is needed to refuse it
    assert _run("http://127.0.0.1:1/v1", "--dataset", f"jsonl:{path}") == 2
    err = capsys.readouterr().err
    assert err.startswith("llmperf: error: ") and message in err and err.count("\n") == 1, err


def test_prompt_over_max_model_len_is_refused_before_sending(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = _jsonl(tmp_path / "p.jsonl", [{"prompt": "short one", "output_len": 4},
                                         {"prompt": " ".join(["w"] * 60), "output_len": 16}])
    with scripted_server(max_model_len=64) as srv:
        assert _run(srv.endpoint, "--dataset", f"jsonl:{data}", "--num-requests", "2") == 2
    err = capsys.readouterr().err
    assert "p.jsonl:2" in err and "exceeds the server's max_model_len 64" in err, err


def test_request_rates_sweep_one_test_per_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    with scripted_server(ttft_s=0.005, itl_s=0.02) as srv:
        assert _run(srv.endpoint, *SHORT, "--request-rates", "20,40", "--repeats", "2", "--slo", "ttft_ms=5000",
                    "--json", str(out)) == 0
    tests = read_results(out)["tests"]
    assert [t["test_id"] for t in tests] == [f"llmperf-run::run[{MODEL}-c2-in8-out3-r20]",
                                             f"llmperf-run::run[{MODEL}-c2-in8-out3-r40]"]
    assert [t["workload"]["request_rate"] for t in tests] == [20.0, 40.0]
    for t in tests:
        assert [r["run_index"] for r in t["runs"]] == [0, 1]
        assert all(r["summary"]["slo_attainment"] == 1.0 for r in t["runs"])  # a 5 s TTFT limit: every request
    stdout = capsys.readouterr().out
    header = next(line for line in stdout.splitlines() if "achieved req/s" in line)
    assert "TTFT p99 ms" in header and "SLO attainment" in header
    rows = [line.split() for line in stdout.splitlines() if line.split()[:1] in (["20.00"], ["40.00"])]
    assert [r[0] for r in rows] == ["20.00", "40.00"] and all(r[-1] == "1.00" for r in rows), stdout


@pytest.mark.parametrize("bad, message", [
    (["--request-rates", "2,0"], "request rate must be"), (["--request-rates", "2,x"], "is not a number"),
    (["--request-rates", "-1"], "request rate must be"), (["--request-rate", "2", "--request-rates", "2,4"],
                                                          "not allowed with"),
    (["--slo", "ttft=5"], "KEY=MS"), (["--slo", "ttft_ms=0"], "a finite number > 0"), (["--target", "1.5"], "(0, 1]"),
    (["--api", "embeddings"], "completions, chat"), (["--endpoint", "http://127.0.0.1:1"], "/v1"),
])
def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str], bad: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        _run("http://127.0.0.1:1/v1", *bad)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_find_max_rate_needs_a_slo(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("http://127.0.0.1:1/v1", "--find-max-rate") == 2
    assert "--find-max-rate needs --slo" in capsys.readouterr().err


def test_find_max_rate_writes_the_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one slot, ~35 ms per request (~28 req/s): a 100 ms TTFT holds at 8 req/s; 10 requests at 256 req/s queue
    # for up to ~300 ms
    out = tmp_path / "r.json"
    with scripted_server(ttft_s=0.005, itl_s=0.01, max_num_seqs=1) as srv:
        code = _run(srv.endpoint, "--concurrency", "16", "--num-requests", "10", "--input-len", "8", "--output-len",
                    "4", "--find-max-rate", "--slo", "ttft_ms=100", "--start-rate", "8", "--max-rate", "256",
                    "--rel-tol", "0.5", "--repeats", "2", "--json", str(out))
    stdout, err = capsys.readouterr()
    assert code == 0, stdout
    (test,) = read_results(out)["tests"]
    assert test["test_id"] == f"llmperf-run::find_max_rate[{MODEL}-c16-in8-out4-slo-ttft100-t0.9]"
    assert test["workload"]["saturation"]["slo"] == {"ttft_ms": 100.0}
    assert len(test["runs"]) == 2
    for run in test["runs"]:
        found = run["metrics"]
        assert found["max_load"] is not None and found["first_miss"] is not None, found["reason"]
        assert 8 <= found["max_load"] < found["first_miss"] <= 256
        assert run["summary"]["max_rate_at_slo_req_s"] == found["max_load"]
        assert run["summary"]["slo_attainment_at_max"] >= 0.9
        assert len(found["points"]) >= 2 and f"max request rate {found['max_load']:g} req/s at SLO" in stdout
    # every point is shown live on stderr as it is measured, each search's points and answer on stdout, then the
    # median of the searches as the reports word it
    assert stdout.count("within the SLO (") == sum(len(r["metrics"]["points"]) for r in test["runs"])
    assert err.count("  measured request rate ") >= stdout.count("within the SLO (") and "warning" not in err
    maxima = [r["metrics"]["max_load"] for r in test["runs"]]
    assert stdout.rstrip().endswith(f"max request rate at SLO: {sum(maxima) / 2:g} req/s (median of 2 searches: "
                                    f"{maxima[0]:g}, {maxima[1]:g})"), stdout


def test_find_max_rate_with_no_rate_meeting_the_slo_exits_1(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    with scripted_server(ttft_s=0.02, itl_s=0.01) as srv:  # a 20 ms first token never meets a 1 ms limit
        code = _run(srv.endpoint, "--num-requests", "2", "--input-len", "4", "--output-len", "2", "--find-max-rate",
                    "--slo", "ttft_ms=1", "--start-rate", "64", "--max-rate", "64", "--min-rate", "16",
                    "--json", str(out))
    assert code == 1
    assert "no request rate from 64 req/s up met 90% SLO attainment" in capsys.readouterr().err
    (run,) = read_results(out)["tests"][0]["runs"]
    assert run["summary"] == {} and run["metrics"]["max_load"] is None
    assert [p["good"] for p in run["metrics"]["points"]] == [0] * len(run["metrics"]["points"])
    assert min(p["load"] for p in run["metrics"]["points"]) == 16  # halved down to --min-rate, not below
    assert _run(srv.endpoint, "--find-max-rate", "--slo", "ttft_ms=1", "--start-rate", "4", "--min-rate", "8") == 2
    assert "--min-rate 8 is above --start-rate 4" in capsys.readouterr().err


@pytest.mark.parametrize("server, message", [
    ({"not_openai": True}, "is not an OpenAI-compatible endpoint"),
    ({"model": "other-model"}, f"model '{MODEL}' is not served at"),
    ({"api_key": "k"}, "set LLMPERF_API_KEY"),
])
def test_endpoint_problems_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], server: dict,
                                              message: str) -> None:
    with scripted_server(**server) as srv:
        assert _run(srv.endpoint, *SHORT) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_hardware_label_and_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.json"
    monkeypatch.setenv("LLMPERF_API_KEY", "sekrit-token")
    monkeypatch.setenv("LLMPERF_ENDPOINT_HARDWARE", "1xL4")  # the option wins over the variable
    with scripted_server(ttft_s=0.005, itl_s=0.02, api_key="sekrit-token", max_model_len=2048) as srv:
        assert _run(srv.endpoint, *SHORT, "--hardware", "2xH100-nvlink", "--json", str(out)) == 0
    fp = read_results(out)["fingerprint"]
    assert (fp["engine"], fp["engine_version"], fp["model"]) == ("endpoint-vllm", "0.32.0", MODEL)
    assert (fp["backend"], fp["gpu_model"], fp["gpu_count"], fp["interconnect"]) == ("gpu", "H100", 2, "nvlink")
    assert fp["endpoint_hardware"] == "2xH100-nvlink" and fp["cpu_model"] is None and fp["cpu_cores"] is None
    assert fp["max_model_len"] == 2048  # nothing of the client machine
    assert "sekrit-token" not in out.read_text()


def test_server_metrics_window_after_warmup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    with scripted_server(ttft_s=0.005, itl_s=0.02, max_num_seqs=1, preempt_every=1) as srv:
        assert _run(srv.endpoint, *SHORT, "--warmup", "1", "--json", str(out)) == 0
    (run,) = read_results(out)["tests"][0]["runs"]
    server = run["server"]
    # the window opens after the warmup request: 4 requests and 4 preemptions, not 5
    assert server["available"] and server["requests"] == 4 and server["preemptions"] == 4
    assert run["summary"]["server_preemptions"] == 4 and run["summary"]["server_ttft_p50_ms"] > 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("server: "))
    assert "(client " in line and "queue mean" in line and "KV-cache peak" in line and line.endswith("preemptions 4")


@pytest.mark.parametrize("flag, expected", [(["--server-metrics", "off"], None), ([], "server metrics unavailable")])
def test_server_metrics_off_or_absent(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str],
                                      expected: str | None) -> None:
    out = tmp_path / "r.json"
    with scripted_server(ttft_s=0.005, itl_s=0.02, metrics=False) as srv:
        assert _run(srv.endpoint, *SHORT, *flag, "--json", str(out)) == 0
    (run,) = read_results(out)["tests"][0]["runs"]
    assert not any(k.startswith("server_") for k in run["summary"])
    stdout = capsys.readouterr().out
    if expected is None:
        assert run["server"] is None and not any(x.startswith("server") for x in stdout.splitlines())
    else:
        assert run["server"]["available"] is False and "HTTP 404" in run["server"]["reason"]
        assert f"{expected}: GET " in stdout


def test_a_search_with_synthetic_prompts_the_server_counts_otherwise_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "max.json"
    with scripted_server(ttft_s=0.002, itl_s=0.001, prompt_tokens_per_word=3.0) as srv:
        assert _run(srv.endpoint, *SHORT, "--find-max-rate", "--slo", "ttft_ms=5000", "--start-rate", "8",
                    "--max-rate", "16", "--json", str(out)) == 0
    err = capsys.readouterr().err
    assert err.count("llmperf run: warning: the server counted 24 prompt tokens") == 1, err
    assert (read_results(out).get("notes") or [""])[0].startswith("the server counted 24 prompt tokens")


@pytest.mark.parametrize("per_word", [1.0, 3.0])
def test_synthetic_prompts_the_server_counts_otherwise_are_said(per_word: float, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The tokenizer trap on any endpoint: a server whose tokenizer is not the synthetic one counts other prompt
    lengths than ``--input-len``. The run stands (exit 0) and says so once, on stderr and in the results' notes."""
    out = tmp_path / "r.json"
    with scripted_server(ttft_s=0.002, itl_s=0.001, prompt_tokens_per_word=per_word) as srv:
        assert _run(srv.endpoint, *SHORT, "--json", str(out)) == 0
    err = capsys.readouterr().err
    notes = read_results(out).get("notes") or []
    if per_word == 1.0:
        assert "warning" not in err and notes == []
        return
    note = ("the server counted 24 prompt tokens (median 24) in 4 of 4 requests where --input-len 8 was asked: "
            "its tokenizer is not the synthetic one")
    assert err.count("llmperf run: warning: ") == 1 and note in err, err
    assert len(notes) == 1 and notes[0].startswith(note)


def test_an_unwritable_json_path_is_refused_before_anything_is_sent(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Port 1 refuses connections: these fail on the path, before the endpoint is asked anything."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for path, why in ((tmp_path, "is a folder; give a file name"), (blocker / "r.json", f"cannot write under {blocker}")):
        assert _run("http://127.0.0.1:1/v1", *SHORT, "--json", str(path)) == 2
        err = capsys.readouterr().err
        assert why in err and "unreachable" not in err.lower(), err
