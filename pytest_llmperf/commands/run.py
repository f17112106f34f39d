"""``llmperf run``: drive one workload against a running OpenAI-compatible endpoint and report its metrics.

--repeats K measures K runs (one sample each for the regression gate; each run has its own seed). --json PATH
writes a session results file (docs/reports.md, schema_version 1: one test whose runs carry per-run summaries),
so llmperf compare, llmperf baseline update and llmperf report read it like a pytest session's results.
The same file keeps, for the last run, metrics (ttft_ms/tpot_ms/itl_ms/e2el_ms each with mean p50 p90 p95 p99;
output_throughput_tok_s request_throughput_req_s completed failed duration_s) and requests (per request
ttft_ms e2el_ms output_tokens itl_ms error). Prints a short table; progress goes to stderr (an updating counter
on a TTY, periodic log lines otherwise).
Exit status: 0 when measured, 2 on a usage error, an unreachable endpoint, a run stopped by --stall-timeout or
--run-deadline, or when every request failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import LoadAborted, UsageError
from pytest_llmperf.options import parse_nonneg_int as _non_negative_int
from pytest_llmperf.options import parse_positive_float as _positive_float
from pytest_llmperf.options import parse_positive_int as _positive_int

__all__ = ["DIST_FIELDS", "add_parser", "build_report", "main", "run_test_id"]

logger = logging.getLogger(__name__)

#: The distribution fields written for each latency metric.
DIST_FIELDS = ("mean", "p50", "p90", "p95", "p99")
LATENCY_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")


def _length(text: str) -> str:
    from pytest_llmperf.load.workload import parse_length

    try:
        return str(parse_length(text).to_spec())
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _endpoint(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected an http(s) URL like http://HOST:PORT/v1, got {text!r}")
    return text.rstrip("/")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``run`` on the ``llmperf`` subparsers."""
    p = subparsers.add_parser("run", help="measure one workload against a running OpenAI-compatible endpoint",
                              description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, type=_endpoint, help="OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="served model name (as listed by GET /v1/models)")
    p.add_argument("--concurrency", type=_positive_int, default=1, help="max requests in flight (default 1)")
    p.add_argument("--num-requests", type=_positive_int, default=32, help="measured requests (default 32)")
    p.add_argument("--input-len", type=_length, default="128", help="prompt tokens: N or LOW:HIGH (default 128)")
    p.add_argument("--output-len", type=_length, default="128", help="output tokens: N or LOW:HIGH (default 128)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of prompts and arrivals (default 0)")
    p.add_argument("--request-rate", type=_positive_float, default=None,
                   help="open loop at this many req/s (default: closed loop at --concurrency)")
    p.add_argument("--burstiness", type=_positive_float, default=1.0,
                   help="gamma shape of open-loop gaps; 1 = Poisson (default 1)")
    p.add_argument("--warmup", type=_non_negative_int, default=0, help="unmeasured warmup requests before the "
                   "first run (default 0)")
    p.add_argument("--repeats", type=_positive_int, default=1, help="measured runs, each one sample for "
                   "llmperf compare / baseline update; run k uses seed + k (default 1)")
    p.add_argument("--timeout", type=_positive_float, default=300.0, help="seconds allowed per request (default 300)")
    p.add_argument("--stall-timeout", type=_positive_float, default=60.0, help="fail the run when no token arrives "
                   "for this many seconds while requests are in flight (default 60)")
    p.add_argument("--run-deadline", type=_positive_float, default=1800.0, help="fail a run (warmup included) that "
                   "takes longer than this many seconds (default 1800)")
    p.add_argument("--vocab-size", type=_positive_int, default=32000,
                   help="vocabulary of the synthetic t<id> tokenizer; ids drawn below min(V, 30000) (default 32000)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write a results file here (read by "
                   "llmperf compare, baseline update and report)")
    p.set_defaults(func=main)
    return p


def _dist(d: Any) -> dict[str, float] | None:
    return None if d is None else {k: getattr(d, k) for k in DIST_FIELDS}


def run_test_id(model: str, workload: Any) -> str:
    """The test id of a ``llmperf run`` workload: equal for equal workloads, so two files compare."""
    w = workload.to_dict()
    rate = f"-r{w['request_rate']:g}" if w.get("request_rate") else ""
    return f"llmperf-run::run[{model}-c{w['concurrency']}-in{w['input_len']}-out{w['output_len']}{rate}]"


def _server_version(endpoint: str) -> str | None:
    """``vllm 0.x`` from the server's ``/version`` (vLLM serves one), else None."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(endpoint.removesuffix("/v1") + "/version", timeout=3) as resp:
            version = json.loads(resp.read()).get("version")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None
    return f"vllm {version}" if isinstance(version, str) and version else None


def build_report(endpoint: str, model: str, workload: Any, runs: list[tuple[Any, Any]],
                 engine_version: str | None = None, created_unix_s: float | None = None) -> dict[str, Any]:
    """The JSON document written by ``--json`` (plain types only): a session results file with one test whose
    runs are ``runs`` (``(load run, metrics)`` pairs), plus the last run's ``metrics`` and ``requests``."""
    from pytest_llmperf import __version__
    from pytest_llmperf.records import SCHEMA_VERSION
    from pytest_llmperf.stats.metrics import run_summary
    from pytest_llmperf.storage.fingerprint import Fingerprint

    def requests(run: Any) -> list[dict[str, Any]]:
        return [{"request_id": r.request_id, "start_s": r.start_s, "prompt_tokens": r.prompt_tokens,
                 "ttft_ms": r.ttft_ms, "e2el_ms": r.e2el_ms, "output_tokens": r.output_tokens,
                 "itl_ms": list(r.itl_ms), "error": r.error} for r in run.records]

    last_run, last = runs[-1]
    m: dict[str, Any] = {name: _dist(getattr(last, name)) for name in LATENCY_METRICS}
    for name in ("output_throughput_tok_s", "request_throughput_req_s", "completed", "failed", "duration_s"):
        m[name] = getattr(last, name)
    version = engine_version or "unknown"
    engine_name, _, engine_ver = version.partition(" ")
    fingerprint = Fingerprint.build(engine=f"endpoint-{engine_name}" if engine_ver else "endpoint",
                                    engine_version=engine_ver or version, model=model, cpu_facts={}).to_dict()
    test_id = run_test_id(model, workload)
    wl = workload.to_dict()
    return {
        "schema_version": SCHEMA_VERSION,
        "created_unix_s": created_unix_s if created_unix_s is not None else runs[0][0].window.start_unix_s,
        "header": {"topology": f"external endpoint {endpoint}", "engine_version": version, "emulation": None,
                   "backend": "external", "endpoint": endpoint, "model": model, "plugin_version": __version__},
        "fingerprint": fingerprint,
        "tests": [{
            "test_id": test_id,
            "engine": {"mode": "single", "tp": 1, "pp": 1, "backend": "external", "model": model,
                       "engine_version": version},
            "workload": wl,
            "runs": [{"run_index": k, "window": asdict(run.window), "summary": run_summary(metrics),
                      "metrics": asdict(metrics), "power": None, "requests": requests(run)}
                     for k, (run, metrics) in enumerate(runs)],
            "engine_startup_s": None,
            "verdicts": [],
        }],
        "verdicts": [],
        "endpoint": endpoint,
        "model": model,
        "workload": wl | {"timeout_s": workload.timeout_s},
        "window": asdict(last_run.window),
        "metrics": m,
        "requests": requests(last_run),
    }


def _table(report: dict[str, Any]) -> str:
    from tabulate import tabulate

    m = report["metrics"]
    rows = [[name] + ([m[name][k] for k in DIST_FIELDS] if m[name] else ["-"] * len(DIST_FIELDS))
            for name in LATENCY_METRICS]
    lat = tabulate(rows, headers=["metric", *DIST_FIELDS], floatfmt=".2f")
    tput = m["output_throughput_tok_s"]
    rps = m["request_throughput_req_s"]
    tail = (f"completed {m['completed']}  failed {m['failed']}  duration {m['duration_s']:.2f} s  "
            f"output {tput if tput is None else f'{tput:.1f}'} tok/s  "
            f"requests {rps if rps is None else f'{rps:.2f}'} req/s")
    return f"{lat}\n{tail}"


class _Progress:
    """Counter on stderr: rewritten in place on a TTY, a log line every ~10% / 5 s otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last_log_s = time.monotonic()
        self.last_pct = 0

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            sys.stderr.write(f"\rllmperf run: {done}/{total} requests")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()
            return
        pct = done * 100 // total
        now = time.monotonic()
        if done == total or pct >= self.last_pct + 10 or now - self.last_log_s >= 5.0:
            logger.info("llmperf run: %d/%d requests", done, total)
            self.last_pct, self.last_log_s = pct, now


def main(args: argparse.Namespace) -> int:
    """Run the workload described by ``args``; print the table, write ``--json``; return the exit status."""
    from pytest_llmperf.load.runner import run_load
    from pytest_llmperf.load.workload import Workload
    from pytest_llmperf.stats.metrics import compute_run_metrics

    workload = Workload(
        num_requests=args.num_requests, warmup_requests=args.warmup, input_len=args.input_len,
        output_len=args.output_len, concurrency=args.concurrency, request_rate=args.request_rate,
        burstiness=args.burstiness, seed=args.seed, timeout_s=args.timeout, stall_timeout_s=args.stall_timeout,
        deadline_s=args.run_deadline,
    )
    runs = []
    for k in range(args.repeats):
        wl = replace(workload, seed=workload.seed + k, warmup_requests=workload.warmup_requests if k == 0 else 0)
        if args.repeats > 1:
            logger.info("llmperf run: run %d/%d", k + 1, args.repeats)
        try:
            run = run_load(args.endpoint, args.model, wl, progress=_Progress(), vocab_size=args.vocab_size)
        except LoadAborted as exc:  # a stall or the run deadline: one line, the finished requests counted
            print(f"llmperf run: run {k + 1}/{args.repeats} stopped: {exc} ({len(exc.records)} requests had "
                  f"finished)", file=sys.stderr)
            return 2
        runs.append((run, compute_run_metrics(run.records, run.duration_s)))
    report = build_report(args.endpoint, args.model, workload, runs, _server_version(args.endpoint))
    if args.json is not None:
        from pytest_llmperf.report.json_io import write_results

        write_results(args.json, report)
    if args.repeats > 1:
        tputs = [m.output_throughput_tok_s for _, m in runs if m.output_throughput_tok_s is not None]
        spread = f"; output tok/s per run: {', '.join(f'{t:.1f}' for t in tputs)}" if tputs else ""
        print(f"{args.repeats} runs (table: the last run{spread})")
    print(_table(report))
    if args.json is not None:
        print(f"wrote {args.json}")
    records = [r for run, _ in runs for r in run.records]
    failed = [r for r in records if r.error]
    if failed:
        print(f"llmperf run: {len(failed)} of {len(records)} requests failed; first: {failed[0].error}",
              file=sys.stderr)
    return 2 if len(failed) == len(records) else 0
