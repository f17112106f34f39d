"""``llmperf run``: drive one workload against a running OpenAI-compatible endpoint and report its metrics.

Writes ``--json PATH`` with ``metrics`` (``ttft_ms``/``tpot_ms``/``itl_ms``/``e2el_ms`` each with ``mean p50
p90 p95 p99``; ``output_throughput_tok_s request_throughput_req_s completed failed duration_s``) and
``requests`` (per request ``ttft_ms e2el_ms output_tokens itl_ms error``), prints a short table, and shows
progress on stderr (an updating counter on a TTY, periodic log lines otherwise).
Exit status: 0 when measured, 2 on a usage error, an unreachable endpoint, or when every request failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.options import parse_nonneg_int as _non_negative_int
from pytest_llmperf.options import parse_positive_float as _positive_float
from pytest_llmperf.options import parse_positive_int as _positive_int

__all__ = ["add_parser", "main", "build_report", "DIST_FIELDS"]

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
    p.add_argument("--warmup", type=_non_negative_int, default=0, help="unmeasured warmup requests (default 0)")
    p.add_argument("--timeout", type=_positive_float, default=300.0, help="seconds allowed per request (default 300)")
    p.add_argument("--vocab-size", type=_positive_int, default=32000,
                   help="vocabulary of the synthetic t<id> tokenizer; ids drawn below min(V, 30000) (default 32000)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write metrics and requests here")
    p.set_defaults(func=main)
    return p


def _dist(d: Any) -> dict[str, float] | None:
    return None if d is None else {k: getattr(d, k) for k in DIST_FIELDS}


def build_report(endpoint: str, model: str, workload: Any, run: Any, metrics: Any) -> dict[str, Any]:
    """The JSON document written by ``--json`` (plain types only)."""
    m: dict[str, Any] = {name: _dist(getattr(metrics, name)) for name in LATENCY_METRICS}
    for name in ("output_throughput_tok_s", "request_throughput_req_s", "completed", "failed", "duration_s"):
        m[name] = getattr(metrics, name)
    return {
        "endpoint": endpoint,
        "model": model,
        "workload": workload.to_dict() | {"timeout_s": workload.timeout_s},
        "window": asdict(run.window),
        "metrics": m,
        "requests": [
            {"request_id": r.request_id, "start_s": r.start_s, "prompt_tokens": r.prompt_tokens,
             "ttft_ms": r.ttft_ms, "e2el_ms": r.e2el_ms, "output_tokens": r.output_tokens,
             "itl_ms": list(r.itl_ms), "error": r.error}
            for r in run.records
        ],
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
        burstiness=args.burstiness, seed=args.seed, timeout_s=args.timeout,
    )
    run = run_load(args.endpoint, args.model, workload, progress=_Progress(), vocab_size=args.vocab_size)
    metrics = compute_run_metrics(run.records, run.duration_s)
    report = build_report(args.endpoint, args.model, workload, run, metrics)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    print(_table(report))
    if args.json is not None:
        print(f"wrote {args.json}")
    failed = [r for r in run.records if r.error]
    if failed:
        print(f"llmperf run: {len(failed)} of {len(run.records)} requests failed; first: {failed[0].error}",
              file=sys.stderr)
    return 2 if len(failed) == len(run.records) else 0
