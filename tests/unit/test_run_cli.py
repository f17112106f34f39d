"""``llmperf run`` end to end against the scripted server: JSON shape, table, progress, usage errors."""

from __future__ import annotations

import argparse
import json
import socket

import pytest

from pytest_llmperf.commands import run as run_cmd
from tests.support.scripted_server import Script, scripted_server

MODEL = Script().model


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llmperf")
    run_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["run", *argv])


def test_run_writes_json_and_table(tmp_path, capsys, caplog):
    out = tmp_path / "sub" / "r.json"
    caplog.set_level("INFO")
    # 20 ms between tokens: at 1 ms a busy 2-core CI runner read several SSE events in one read, so most
    # inter-token gaps measured 0.0 ms and the ITL p50 was 0 (seen in CI).
    with scripted_server(ttft_s=0.005, itl_s=0.02) as srv:
        args = _parse(["--endpoint", srv.endpoint, "--model", MODEL, "--concurrency", "2", "--num-requests", "4",
                       "--input-len", "6:9", "--output-len", "5", "--seed", "3", "--warmup", "1", "--json", str(out)])
        assert args.func is run_cmd.main
        assert args.func(args) == 0
    report = json.loads(out.read_text())
    m = report["metrics"]
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        assert set(m[name]) == {"mean", "p50", "p90", "p95", "p99"}
        assert m[name]["p50"] > 0
    assert m["completed"] == 4 and m["failed"] == 0 and m["duration_s"] > 0
    assert m["output_throughput_tok_s"] > 0 and m["request_throughput_req_s"] > 0
    assert len(report["requests"]) == 4
    for r in report["requests"]:
        assert r["output_tokens"] == 5 and len(r["itl_ms"]) == 4 and r["error"] is None
        assert r["ttft_ms"] <= r["e2el_ms"]
    assert report["workload"]["input_len"] == "6:9" and report["workload"]["warmup_requests"] == 1
    stdout = capsys.readouterr().out
    assert "ttft_ms" in stdout and "completed 4" in stdout
    assert "llmperf run: 4/4 requests" in caplog.text           # progress, non-TTY form


def test_all_failed_exits_2_and_reports_error(tmp_path, capsys):
    with scripted_server(http_status=500) as srv:
        args = _parse(["--endpoint", srv.endpoint, "--model", MODEL, "--num-requests", "2", "--output-len", "3",
                       "--json", str(tmp_path / "r.json")])
        assert run_cmd.main(args) == 2
    assert "HTTP 500" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["failed"] == 2


@pytest.mark.parametrize("bad", [
    ["--concurrency", "0"], ["--num-requests", "-1"], ["--input-len", "9:2"], ["--request-rate", "0"],
    ["--burstiness", "x"], ["--endpoint", "localhost:8000"],
])
def test_usage_errors_exit_2(bad, capsys):
    base = ["--endpoint", "http://127.0.0.1:1/v1", "--model", "m"]
    with pytest.raises(SystemExit) as exc:
        _parse(base + bad)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_unreachable_endpoint_through_cli_main_is_exit_2(capsys, monkeypatch):
    from pytest_llmperf import cli

    monkeypatch.setattr(cli, "COMMANDS", {"run": "run"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = cli.main(["run", "--endpoint", f"http://127.0.0.1:{port}/v1", "--model", "m", "--num-requests", "1"])
    assert code == 2
    assert f"127.0.0.1:{port}/v1/models" in capsys.readouterr().err
