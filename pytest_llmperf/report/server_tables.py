"""Table model of the server's side of a run and of the saturation searches (shared by the terminal and the
Markdown report).

* :func:`server_table`: one row per test with ``server_*`` summary keys (vLLM's ``/metrics``, see
  ``telemetry/server_metrics.py``): the median across the test's runs, the client's TTFT p50 beside the server's
  (the cross-check: the client's is larger by the network, HTTP and detokenisation time), queueing, prefill,
  decode, KV-cache peak, preemptions and the running/waiting peaks. Only columns with data are shown.
* :func:`server_unavailable_line`: the tests whose runs could not read ``/metrics``, with the first reason.
* :func:`saturation_tests`, :func:`saturation_lines`, :func:`saturation_points_table`: a saturation test's
  searches (``run["metrics"]`` is ``SaturationResult.to_dict()``, one search per run): the answer and the
  points each search measured.

Pure functions over :func:`pytest_llmperf.report.terminal.config_rows` rows or the session results dict; nothing
here prints. Values are formatted here (not with ``terminal.cell``): a server time of 0 ms (no queueing) is a
measurement, not a burst artefact.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from pytest_llmperf.load.saturation import search_text, value_text

__all__ = [
    "SERVER_COLUMNS",
    "SERVER_TITLE",
    "identity_columns",
    "is_saturation_run",
    "saturation_lines",
    "saturation_points_table",
    "saturation_tests",
    "server_table",
    "server_unavailable_line",
]

#: (column header, summary key, format) of the server-side table (times in ms, said in its title); the client's
#: TTFT p50 sits beside the server's.
SERVER_COLUMNS = (
    ("client TTFT p50", "ttft_p50_ms", ".1f"),
    ("server TTFT p50", "server_ttft_p50_ms", ".1f"),
    ("queue mean", "server_queue_time_mean_ms", ".1f"),
    ("queue p95", "server_queue_time_p95_ms", ".1f"),
    ("prefill mean", "server_prefill_time_mean_ms", ".1f"),
    ("decode mean", "server_decode_time_mean_ms", ".1f"),
    ("KV cache peak %", "server_kv_cache_usage_peak_pct", ".1f"),
    ("preemptions", "server_preemptions", ".0f"),
    ("running peak", "server_running_peak", ".0f"),
    ("waiting peak", "server_waiting_peak", ".0f"),
)
#: the title of the server-side table
SERVER_TITLE = "server-side (vLLM /metrics), median of K runs, times in ms"
Table = tuple[list[list[str]], list[str], tuple[str, ...]]


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _has_server(row: dict[str, Any]) -> bool:
    return any(k.startswith("server_") and v is not None for k, v in row["median"].items())


def identity_columns(rows: list[dict[str, Any]],
                     name: Callable[[dict[str, Any]], str]) -> tuple[list[list[str]], list[str], tuple[str, ...]]:
    """The leading cells of each ``config_rows`` row (mode, conc, in, rate when any row is rated, K), their headers
    and alignment; when two rows share mode, concurrency, input length and rate, a first ``test`` column holds
    ``name(row)``."""
    rated = any(r.get("rate") not in (None, "closed") for r in rows)
    keys = [(r["mode"], r["concurrency"], str(r["input_len"]), r.get("rate")) for r in rows]
    named = len(set(keys)) < len(keys)
    cells = [[*([name(r)] if named else []), r["mode"], str(r["concurrency"]), str(r["input_len"]),
              *([r["rate"]] if rated else []), str(r["k"])] for r in rows]
    headers = [*(["test"] if named else []), "mode", "conc", "in", *(["rate"] if rated else []), "K"]
    align = (*(["left"] if named else []), "left", "right", "right", *(["left"] if rated else []), "right")
    return cells, headers, align


def server_table(rows: list[dict[str, Any]]) -> Table:
    """(body, headers, column alignment) of the server-side table over ``config_rows`` rows; rows without any
    ``server_*`` value are left out (an empty body: nothing to show). The client TTFT column appears only beside
    a server TTFT. When two rows share mode, concurrency, input length and rate, a first column names the test."""
    rows = [r for r in rows if _has_server(r)]
    cols = [c for c in SERVER_COLUMNS if any(r["median"].get(c[1]) is not None for r in rows)]
    if not any(key == "server_ttft_p50_ms" for _, key, _ in cols):
        cols = [c for c in cols if c[1] != "ttft_p50_ms"]
    ident, headers, align = identity_columns(rows, lambda r: r["test_id"].split("::")[-1])
    body = [[*first, *(_fmt(r["median"].get(key), spec) for _, key, spec in cols)]
            for first, r in zip(ident, rows, strict=True)]
    headers += [c[0] for c in cols]
    align = (*align, *(["right"] * len(cols)))
    return body, headers, align


def server_unavailable_line(results: dict[str, Any]) -> str | None:
    """``server metrics unavailable for N tests: <reason>`` (the first reason) for the tests none of whose runs
    could read the server's ``/metrics``; None when there are none."""
    reasons = []
    for test in results.get("tests", []):
        servers = [run["server"] for run in test.get("runs") or [] if isinstance(run.get("server"), dict)]
        if servers and not any(s.get("available") for s in servers):
            reasons.append(next((s["reason"] for s in servers if s.get("reason")), "no reason given"))
    if not reasons:
        return None
    return f"server metrics unavailable for {len(reasons)} test{'s' if len(reasons) != 1 else ''}: {reasons[0]}"


def is_saturation_run(run: dict[str, Any]) -> bool:
    """A saturation search's run: its ``metrics`` is a ``SaturationResult.to_dict()`` (it has ``points``)."""
    return isinstance(run.get("metrics"), dict) and "points" in run["metrics"]


def saturation_tests(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The saturation tests in file order: ``test_id``, ``name`` (the last part of the id), ``settings`` (the
    workload's ``saturation``) and ``searches`` (each run's ``SaturationResult.to_dict()``)."""
    out = []
    for test in results.get("tests", []):
        searches = [run["metrics"] for run in test.get("runs") or [] if is_saturation_run(run)]
        if searches:
            out.append({"test_id": test["test_id"], "name": test["test_id"].split("::")[-1],
                        "settings": (test.get("workload") or {}).get("saturation") or {}, "searches": searches})
    return out


def _variable(test: dict[str, Any]) -> str:
    return str(test["settings"].get("variable") or test["searches"][0].get("variable") or "request_rate")


def saturation_lines(test: dict[str, Any]) -> list[str]:
    """The answer of one :func:`saturation_tests` entry: a title line, the median max load at the SLO over the
    searches (the figure the gate compares), then one line per search (max load, attainment there with its
    interval, confident or not, first miss)."""
    searches, settings, variable = test["searches"], test["settings"], _variable(test)
    target = settings.get("target", searches[0].get("target"))
    span = (f" from {float(settings['start']):g} to {float(settings['limit']):g}"
            if settings.get("start") is not None and settings.get("limit") is not None else "")
    goal = f", target {float(target):.0%} of requests within the SLO" if target is not None else ""
    found = [float(s["max_load"]) for s in searches if s.get("max_load") is not None]
    which = (f"{len(found)} searches" if len(found) == len(searches)
             else f"the {len(found)} of {len(searches)} searches that met it")
    answer = (f"max {variable.replace('_', ' ')} at SLO: {value_text(statistics.median(found), variable)}"
              + (f" (median of {which}: {', '.join(f'{x:g}' for x in found)})" if len(searches) > 1 else "")
              if found else "no search found a load meeting the SLO")
    return [f"{test['name']}: saturation search over {variable}{span}{goal}", answer,
            *(f"search {k}: {search_text({'variable': variable, **s})}" for k, s in enumerate(searches, 1))]


def saturation_points_table(test: dict[str, Any]) -> Table:
    """(body, headers, column alignment) of every point each search measured, in the order measured; the
    achieved request rate column only when a point has it."""
    variable = _variable(test)
    points = [(k, p) for k, s in enumerate(test["searches"], 1) for p in s.get("points") or []]
    achieved = any(p.get("achieved_rate_req_s") is not None for _, p in points)
    body = [[str(k), f"{float(p['load']):g}", *([_fmt(p.get("achieved_rate_req_s"), ".2f")] if achieved else []),
             f"{p['good']}/{p['total']}", _fmt(p.get("attainment"), ".3f"), "yes" if p.get("confident") else "no"]
            for k, p in points]
    headers = ["search", "rate req/s" if variable == "request_rate" else variable,
               *(["achieved req/s"] if achieved else []), "good/total", "attainment", "confident"]
    align = ("right", "right", *(["right"] if achieved else []), "right", "right", "left")
    return body, headers, align
