"""report.server_tables and its renderers: the server-side table (vLLM /metrics, median of the runs), the line for
tests whose server had no /metrics, and the saturation searches' answers and points."""

from __future__ import annotations

import re
import statistics
from typing import Any

import pytest

from pytest_llmperf.load.saturation import LoadPoint, SaturationResult, wilson_interval
from pytest_llmperf.report.markdown import render_markdown
from pytest_llmperf.report.server_tables import (
    saturation_lines,
    saturation_points_table,
    saturation_tests,
    server_table,
    server_unavailable_line,
)
from pytest_llmperf.report.terminal import config_rows, render_terminal
from pytest_llmperf.telemetry.server_metrics import ServerMetrics

SERVER_TTFT_P50 = (41.0, 47.5, 44.3)  # median 44.3
CLIENT_TTFT_P50 = (52.0, 50.0, 55.0)  # median 52.0


def _window() -> dict[str, float]:
    return {"start_unix_s": 0.0, "end_unix_s": 1.0}


def _served_run(i: int) -> dict[str, Any]:
    server = ServerMetrics(available=True, requests=64, server_ttft_mean_ms=45.0,
                           server_ttft_p50_ms=SERVER_TTFT_P50[i], server_ttft_p95_ms=90.0,
                           queue_time_mean_ms=3.0 + i, queue_time_p95_ms=12.0, prefill_time_mean_ms=30.0,
                           decode_time_mean_ms=400.0, kv_cache_usage_peak_pct=37.5, preemptions=i,
                           running_peak=8)  # no waiting gauge on this server: that column stays out
    summary = {"ttft_p50_ms": CLIENT_TTFT_P50[i], "output_throughput_tok_s": 900.0 + i, **server.summary()}
    return {"run_index": i, "window": _window(), "summary": summary, "metrics": {}, "server": server.to_dict()}


def _unavailable_run(i: int, reason: str) -> dict[str, Any]:
    server = ServerMetrics(available=False, reason=reason)
    return {"run_index": i, "window": _window(), "summary": {"ttft_p50_ms": 10.0}, "metrics": {},
            "server": server.to_dict()}


def _search(points: list[tuple[float, int, int]], max_load: float | None, first_miss: float | None,
            achieved: bool = True) -> dict[str, Any]:
    """A search's run as the saturation test records it (``SaturationResult.to_dict()`` in ``metrics``)."""
    pts = tuple(LoadPoint(load, good, total, confident=abs(good / total - 0.9) > 0.05,
                          extra=(("achieved_rate_req_s", load * 0.98),) if achieved else ())
                for load, good, total in points)
    at = next((p for p in pts if p.load == max_load), None)
    result = SaturationResult(
        variable="request_rate", target=0.9, confidence=0.95, max_load=max_load, first_miss=first_miss,
        attainment_at_max=at.attainment if at else None,
        attainment_ci_at_max=wilson_interval(at.good, at.total, 0.95) if at else None,
        confident=at is not None and at.confident,
        reason=(f"90% SLO attainment met at {max_load:g}, missed at {first_miss:g}" if at and first_miss
                else f"no load met 90% SLO attainment (lowest tried {first_miss:g})"),
        points=pts)
    return {"run_index": 0, "window": _window(), "summary": result.summary(), "metrics": result.to_dict()}


def _workload(conc: int, **extra: Any) -> dict[str, Any]:
    return {"concurrency": conc, "input_len": 128, "output_len": 64, "num_requests": 64, "warmup_requests": 2,
            "request_rate": None, "burstiness": 1.0, "seed": 0, **extra}


@pytest.fixture
def results() -> dict[str, Any]:
    engine = {"mode": "single", "label": "single", "tp": 1, "pp": 1}
    # search 1: 2 ok, 4 ok, 8 miss, 6 ok -> 6; search 2: 2 ok, 4 ok, 8 miss, 6 miss -> 4
    search1 = _search([(2.0, 50, 50), (4.0, 49, 50), (8.0, 20, 50), (6.0, 48, 50)], 6.0, 8.0)
    search2 = _search([(2.0, 50, 50), (4.0, 48, 50), (8.0, 10, 50), (6.0, 30, 50)], 4.0, 6.0)
    search2["run_index"] = 1
    sat = {"variable": "request_rate", "start": 2.0, "limit": 16.0, "target": 0.9, "rel_tol": 0.3}
    return {
        "schema_version": 1, "created_unix_s": 0.0, "header": {"topology": "1x H100", "backend": "gpu"},
        "fingerprint": {}, "verdicts": [],
        "tests": [
            {"test_id": "t.py::test_serving[single-c8]", "engine": engine, "workload": _workload(8),
             "runs": [_served_run(i) for i in range(3)]},
            {"test_id": "t.py::test_serving[single-c1]", "engine": engine, "workload": _workload(1),
             "runs": [_unavailable_run(i, "GET http://h:8000/metrics answered HTTP 404") for i in range(2)]},
            {"test_id": "t.py::test_other[single-c2]", "engine": engine, "workload": _workload(2),
             "runs": [_unavailable_run(0, "nothing answers at http://h:8000/metrics")]},
            {"test_id": "t.py::test_sat[single-c16]", "engine": engine, "workload": _workload(16, saturation=sat),
             "runs": [search1, search2]},
        ],
    }


def test_server_table_medians_and_columns(results: dict[str, Any]) -> None:
    body, headers, align = server_table(config_rows(results))
    assert len(body) == 1 and len(headers) == len(align) == len(body[0])  # only the test with server_* keys
    row = dict(zip(headers, body[0]))
    assert row["server TTFT p50"] == f"{statistics.median(SERVER_TTFT_P50):.1f}" == "44.3"
    assert row["client TTFT p50"] == "52.0"
    assert row["queue mean"] == "4.0" and row["preemptions"] == "1" and row["KV cache peak %"] == "37.5"
    assert row["mode"] == "single" and row["conc"] == "8" and row["K"] == "3"
    assert "waiting peak" not in headers and "rate" not in headers and "test" not in headers
    assert headers.index("client TTFT p50") + 1 == headers.index("server TTFT p50")


def test_client_ttft_only_beside_server_ttft(results: dict[str, Any]) -> None:
    for run in results["tests"][0]["runs"]:
        del run["summary"]["server_ttft_p50_ms"]
    _, headers, _ = server_table(config_rows(results))
    assert "client TTFT p50" not in headers and "server TTFT p50" not in headers and "queue mean" in headers


def test_unavailable_line(results: dict[str, Any]) -> None:
    assert server_unavailable_line(results) == (
        "server metrics unavailable for 2 tests: GET http://h:8000/metrics answered HTTP 404")
    for test in results["tests"][1:3]:
        for run in test["runs"]:
            run.pop("server")
    assert server_unavailable_line(results) is None


def test_saturation_answer_and_points(results: dict[str, Any]) -> None:
    (test,) = saturation_tests(results)
    title, answer, first, second = saturation_lines(test)
    assert title == ("test_sat[single-c16]: saturation search over request_rate from 2 to 16, "
                     "target 90% of requests within the SLO")
    assert answer == "max request rate at SLO: 5 req/s (median of 2 searches: 6, 4)"
    assert re.fullmatch(r"search 1: max request rate 6 req/s at SLO, attainment 0\.960 \(95% CI 0\.\d{3}-0\.\d{3}\), "
                        r"(not )?confident; first miss 8 req/s", first), first
    assert second.startswith("search 2: max request rate 4 req/s at SLO, attainment 0.960") and second.endswith("first miss 6 req/s")
    body, headers, _ = saturation_points_table(test)
    assert headers == ["search", "rate req/s", "achieved req/s", "good/total", "attainment", "confident"]
    assert len(body) == 8
    assert body[2] == ["1", "8", "7.84", "20/50", "0.400", "yes"]
    assert body[7][:5] == ["2", "6", "5.88", "30/50", "0.600"]


def test_points_without_achieved_rate_and_failed_search(results: dict[str, Any]) -> None:
    results["tests"][3]["runs"] = [_search([(2.0, 5, 50), (1.0, 6, 50)], None, 1.0, achieved=False)]
    (test,) = saturation_tests(results)
    lines = saturation_lines(test)
    assert lines[1] == "no search found a load meeting the SLO"
    assert lines[2].startswith("search 1: no load met 90% SLO attainment")
    _, headers, _ = saturation_points_table(test)
    assert "achieved req/s" not in headers


def test_terminal_shows_server_and_saturation(results: dict[str, Any]) -> None:
    text = render_terminal(results)
    server = text.split("server-side (vLLM /metrics), median of K runs, times in ms\n", 1)[1]
    head, _, row = server.splitlines()[:3]
    assert "server TTFT p50" in head and "waiting peak" not in head
    assert "44.3" in row and "52.0" in row
    assert "server metrics unavailable for 2 tests: GET http://h:8000/metrics answered HTTP 404" in text
    assert text.index("test_serving (median of K runs)") < text.index("server-side") < text.index("saturation search")
    sat = text.split("test_sat[single-c16]: saturation search", 1)[1]
    assert "  max request rate at SLO: 5 req/s" in sat and "  search 2: max request rate 4 req/s" in sat
    assert re.search(r"^\s+1\s+8\s+7\.84\s+20/50\s+0\.400\s+yes$", sat, flags=re.MULTILINE)


def test_markdown_shows_server_and_saturation(results: dict[str, Any]) -> None:
    md = render_markdown(results)
    assert md.index("## Metrics") < md.index("## Server side (vLLM /metrics)") < md.index("## Saturation search")
    lines = md.splitlines()
    head = next(ln for ln in lines if "server TTFT p50" in ln)
    row = lines[lines.index(head) + 2]
    assert "| 44.3 |" in row and "| 52.0 |" in row and "waiting peak" not in head
    assert "server metrics unavailable for 2 tests: GET http://h:8000/metrics answered HTTP 404" in lines
    assert "- max request rate at SLO: 5 req/s (median of 2 searches: 6, 4)" in lines
    details = md.split("<details><summary>8 points of 2 searches</summary>", 1)[1].split("</details>", 1)[0]
    assert "| 1 | 8 | 7.84 | 20/50 | 0.400 | yes |" in details
    assert "| search | rate req/s | achieved req/s | good/total | attainment | confident |" in details


def test_nothing_shown_without_server_or_saturation(results: dict[str, Any]) -> None:
    results["tests"] = results["tests"][:1]
    for run in results["tests"][0]["runs"]:
        run["summary"] = {k: v for k, v in run["summary"].items() if not k.startswith("server_")}
        run.pop("server")
    text, md = render_terminal(results), render_markdown(results)
    assert "server-side" not in text and "saturation search" not in text
    assert "## Server side" not in md and "## Saturation" not in md


def test_concurrency_search_and_a_miss(results: dict[str, Any]) -> None:
    """A concurrency search has no req/s unit; a search that found nothing is left out of the median."""
    test = results["tests"][3]
    test["workload"]["saturation"]["variable"] = "concurrency"
    ok = _search([(2.0, 50, 50), (4.0, 30, 50)], 2.0, 4.0)
    miss = _search([(2.0, 20, 50), (1.0, 30, 50)], None, 1.0)
    for run in (ok, miss):
        run["metrics"]["variable"] = "concurrency"
    test["runs"] = [ok, miss]
    (sat,) = saturation_tests(results)
    lines = saturation_lines(sat)
    assert lines[1] == "max concurrency at SLO: 2 (median of the 1 of 2 searches that met it: 2)"
    assert lines[2].startswith("search 1: max concurrency 2 at SLO,") and lines[2].endswith("first miss 4")
    assert lines[3] == "search 2: no load met 90% SLO attainment (lowest tried 1)"
    assert saturation_points_table(sat)[1][1] == "concurrency"


def test_rows_sharing_a_configuration_are_named(results: dict[str, Any]) -> None:
    twin = {**results["tests"][0], "test_id": "t.py::test_serving[single-c8-b]"}
    results["tests"].append(twin)
    body, headers, _ = server_table(config_rows(results))
    assert headers[0] == "test" and [r[0] for r in body] == ["test_serving[single-c8]", "test_serving[single-c8-b]"]
