"""Measuring and recording for ``llmperf run`` (:mod:`pytest_llmperf.commands.run` parses and prints).

One *test* per request rate (``--request-rates``; one test for a single rate or a closed loop), each measured K
times (``--repeats``) with the server's ``/metrics`` scraped around every run (the window opens after the warmup
requests); or K saturation searches (``--find-max-rate``, :func:`pytest_llmperf.load.saturation.find_max_load`).
:func:`build_report` turns them into a session results file (schema_version 1) that ``llmperf compare``,
``baseline update`` and ``report`` read. The fingerprint is the server's (:class:`ExternalEngine`), never the
client's; credentials are never written.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["DIST_FIELDS", "LATENCY_METRICS", "Target", "Measured", "run_test_id", "saturation_test_id",
           "measure_run", "run_entry", "make_test", "build_report", "sweep_table", "server_line",
           "search_max_rate", "search_lines"]

#: The distribution fields written for each latency metric.
DIST_FIELDS = ("mean", "p50", "p90", "p95", "p99")
LATENCY_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")


@dataclass(frozen=True)
class Target:
    """What every run of one ``llmperf run`` shares: the server (as it describes itself) and how requests are sent.
    ``goodput``: the ``--slo`` per-request limits (a ``GoodputLimits``) or None; ``dataset``: ``Dataset.to_dict()``."""

    endpoint: str
    model: str
    engine_version: str
    fingerprint: dict[str, Any]
    chat: bool = False
    vocab_size: int = 32000
    prompts: tuple[Any, ...] | None = None
    dataset: dict[str, Any] | None = None
    goodput: Any = None
    server_metrics: bool = True

    @property
    def api(self) -> str:
        return "chat" if self.chat else "completions"

    def workload_dict(self, workload: Any) -> dict[str, Any]:
        return {**workload.to_dict(), "api": self.api, **(self.dataset or {})}


@dataclass
class Measured:
    """One measured run: the load run, its metrics, the server's side (None: not scraped) and the run summary."""

    run: Any
    metrics: Any
    server: Any = None
    summary: dict[str, float] = field(default_factory=dict)
    server_record: dict[str, Any] | None = None  #: the run's ``server`` entry in the results file


def run_test_id(model: str, workload: Any, *, api: str = "completions", dataset: str | None = None) -> str:
    """The test id of a ``llmperf run`` workload: equal for equal workloads, so two files compare."""
    w = workload.to_dict()
    extra = (f"-{dataset}" if dataset else "") + ("-chat" if api == "chat" else "")
    rate = f"-r{w['request_rate']:g}" if w.get("request_rate") else ""
    return f"llmperf-run::run[{model}-c{w['concurrency']}-in{w['input_len']}-out{w['output_len']}{extra}{rate}]"


def saturation_test_id(target: Target, workload: Any, target_frac: float) -> str:
    """``llmperf-run::find_max_rate[...-slo<limits>-t<target>]``: the answer depends on the SLO and the target."""
    base = run_test_id(target.model, replace(workload, request_rate=None), api=target.api,
                       dataset=(target.dataset or {}).get("dataset"))
    slo = "-".join(f"{k.removesuffix('_ms')}{v:g}" for k, v in asdict(target.goodput).items() if v is not None)
    return base.replace("::run[", "::find_max_rate[", 1)[:-1] + f"-slo-{slo}-t{target_frac:g}]"


def measure_run(target: Target, workload: Any, *, progress: Callable[[int, int], None] | None = None,
                repeats: int = 1) -> Measured:
    """One run of ``workload`` with the server's ``/metrics`` around it (raises LoadAborted on a stall)."""
    from pytest_llmperf.load.runner import run_load
    from pytest_llmperf.stats.metrics import compute_run_metrics, run_summary
    from pytest_llmperf.telemetry.server_metrics import ServerMetricsMonitor, measure_server, metrics_url_for

    monitor = ServerMetricsMonitor(metrics_url_for(target.endpoint), interval_s=0.5) if target.server_metrics \
        else None
    with measure_server(monitor) as box:
        run = run_load(target.endpoint, target.model, workload, progress=progress, prompts=target.prompts,
                       chat=target.chat, vocab_size=target.vocab_size,
                       on_measure_start=box.mark_start if box is not None else None)
    metrics = compute_run_metrics(run.records, run.duration_s, target.goodput)
    record, server_summary = box.run_record(workload.warmup_requests, repeats) if box is not None else (None, {})
    return Measured(run, metrics, box.result if box is not None else None, {**run_summary(metrics), **server_summary},
                    record)


def _requests(run: Any) -> list[dict[str, Any]]:
    return [{"request_id": r.request_id, "start_s": r.start_s, "prompt_tokens": r.prompt_tokens,
             "ttft_ms": r.ttft_ms, "e2el_ms": r.e2el_ms, "output_tokens": r.output_tokens,
             "itl_ms": list(r.itl_ms), "error": r.error} for r in run.records]


def run_entry(k: int, m: Measured) -> dict[str, Any]:
    """One run of a results file's test (plain types only)."""
    return {"run_index": k, "window": asdict(m.run.window), "summary": m.summary, "metrics": asdict(m.metrics),
            "power": None, "requests": _requests(m.run), "server": m.server_record}


def make_test(target: Target, test_id: str, workload: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One test of a results file: the endpoint's engine as the server describes it, the workload, the runs."""
    return {"test_id": test_id,
            "engine": {"mode": "single", "tp": 1, "pp": 1, "backend": "external", "model": target.model,
                       "engine_version": target.engine_version},
            "workload": workload, "runs": runs, "engine_startup_s": None, "verdicts": []}


def _dist(d: Any) -> dict[str, float] | None:
    return None if d is None else {k: getattr(d, k) for k in DIST_FIELDS}


def _last_view(target: Target, workload: Any, m: Measured) -> dict[str, Any]:
    """The last run's ``metrics`` and ``requests`` at the top level (kept for readers of the older format)."""
    metrics: dict[str, Any] = {name: _dist(getattr(m.metrics, name)) for name in LATENCY_METRICS}
    for name in ("output_throughput_tok_s", "request_throughput_req_s", "completed", "failed", "duration_s",
                 "goodput_req_s", "slo_attainment"):
        metrics[name] = getattr(m.metrics, name)
    return {"workload": target.workload_dict(workload) | {"timeout_s": workload.timeout_s},
            "window": asdict(m.run.window), "metrics": metrics, "requests": _requests(m.run)}


def build_report(target: Target, tests: list[dict[str, Any]], created_unix_s: float, *,
                 last: tuple[Any, Measured] | None = None) -> dict[str, Any]:
    """The session results file (plain types only) holding ``tests``; ``last`` = (workload, its last run) adds
    the top-level ``workload``/``window``/``metrics``/``requests`` of a plain run."""
    from pytest_llmperf import __version__
    from pytest_llmperf.records import SCHEMA_VERSION

    doc = {
        "schema_version": SCHEMA_VERSION, "created_unix_s": created_unix_s,
        "header": {"topology": f"external endpoint {target.endpoint}", "engine_version": target.engine_version,
                   "emulation": None, "backend": "external", "endpoint": target.endpoint, "model": target.model,
                   "plugin_version": __version__},
        "fingerprint": target.fingerprint, "tests": tests, "verdicts": [],
        "endpoint": target.endpoint, "model": target.model,
    }
    if last is not None:
        doc.update(_last_view(target, *last))
    return doc


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _achieved_rate(m: Measured) -> float | None:
    from pytest_llmperf.load.arrivals import achieved_send_rate_req_s

    return achieved_send_rate_req_s([r.start_s for r in m.run.records])


def sweep_table(points: list[tuple[Any, list[Measured]]], with_slo: bool) -> str:
    """One row per (workload, runs): medians over the runs of the achieved send rate and the headline figures."""
    from tabulate import tabulate

    keys = ["ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "output_throughput_tok_s"]
    headers = ["rate req/s", "achieved req/s", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "out tok/s"]
    if with_slo:
        keys.append("slo_attainment")
        headers.append("SLO attainment")
    rows = [[w.request_rate if w.request_rate else "closed", _median([_achieved_rate(m) for m in runs]),
             *(_median([m.summary.get(k) for m in runs]) for k in keys)] for w, runs in points]
    return tabulate(rows, headers=headers, floatfmt=".2f", missingval="-")


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def server_line(m: Measured) -> str | None:
    """The server's figures of one run beside the client's TTFT, the reason when /metrics failed, None unscraped."""
    s = m.server
    if s is None:
        return None
    if not s.available:
        return f"server metrics unavailable: {s.reason}"
    client = m.metrics.ttft_ms.p50 if m.metrics.ttft_ms is not None else None
    return (f"server: TTFT p50 {_fmt(s.server_ttft_p50_ms)} ms (client {_fmt(client)} ms)  queue mean "
            f"{_fmt(s.queue_time_mean_ms)} ms  KV-cache peak {_fmt(s.kv_cache_usage_peak_pct)}%  preemptions "
            f"{_fmt(s.preemptions, 'd') if s.preemptions is not None else '-'}")


def search_max_rate(target: Target, workload: Any, *, start: float, limit: float, target_frac: float,
                    rel_tol: float, on_point: Callable[[Any, Any], None] | None = None,
                    min_rate: float | None = None) -> tuple[dict[str, Any], Any]:
    """One saturation search over the request rate: (its run entry for the results file, the SaturationResult).
    ``on_point(point, run)`` sees each measurement as it is made. Raises LoadAborted / UsageError as
    :func:`~pytest_llmperf.load.saturation.find_max_load` does."""
    from pytest_llmperf.load.saturation import endpoint_measure, find_max_load

    measure = endpoint_measure(target.endpoint, target.model, workload, target.goodput, variable="request_rate",
                               prompts=target.prompts, chat=target.chat, vocab_size=target.vocab_size,
                               on_point=on_point)
    t0 = time.time()
    result = find_max_load(measure, start=start, limit=limit, target=target_frac, rel_tol=rel_tol, min_load=min_rate)
    entry = {"run_index": 0, "window": {"start_unix_s": t0, "end_unix_s": time.time()},
             "summary": result.summary(), "metrics": result.to_dict(), "power": None, "requests": [], "server": None}
    return entry, result


def search_lines(result: Any) -> list[str]:
    """Each measured point of a search (as the search kept it: retries pooled) and its answer, worded as in the
    pytest progress and the reports."""
    from pytest_llmperf.load.saturation import point_text, search_text

    search = result.to_dict()
    return [*(f"  {point_text(p, result.variable)}" for p in search["points"]), f"  {search_text(search)}"]
