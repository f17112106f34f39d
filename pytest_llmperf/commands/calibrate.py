"""``llmperf calibrate``: repeated A/A runs on one engine -> run-to-run noise per metric and the K needed.

The regression gate compares K runs with K runs; how many it needs depends on the run-to-run noise of each
metric on *this* machine. Calibrate measures it: it starts one engine (or uses ``--endpoint``), runs the same
workload ``--runs`` times (run k with seed k: fresh prompts each run, like the gate's runs), and prints per
metric the median, the coefficient of variation (std of logs) and the
runs per side needed to detect a change of ``--delta`` at the per-check false-alarm rate ``--alpha`` with 80%
power. ``--json`` keeps every run's summary.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main", "calibrate"]

log = logging.getLogger(__name__)
DEFAULT_METRICS = ("ttft_p50_ms", "ttft_p95_ms", "tpot_p50_ms", "itl_p50_ms", "e2el_p50_ms",
                   "output_throughput_tok_s", "request_throughput_req_s")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from pytest_llmperf.options import parse_fraction, parse_mode_list, parse_positive_int

    p = subparsers.add_parser("calibrate", help="A/A runs on one engine: run-to-run noise and the K needed",
                              description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default=None, help="use this running server (http://HOST:PORT/v1) instead of "
                   "starting vLLM")
    p.add_argument("--model", default=None, help="preset or model path (default tiny-llama on cpu); with "
                   "--endpoint: the served model name")
    p.add_argument("--backend", choices=("cpu", "gpu"), default="cpu", help="engine backend (default cpu)")
    p.add_argument("--mode", type=parse_mode_list, default=("single",), help="engine mode (default single)")
    p.add_argument("--runs", type=parse_positive_int, default=5, help="A/A runs (default 5; at least 2)")
    p.add_argument("--concurrency", type=parse_positive_int, default=4, help="concurrency (default 4)")
    p.add_argument("--num-requests", type=parse_positive_int, default=16, help="requests per run (default 16)")
    p.add_argument("--input-len", type=parse_positive_int, default=64, help="prompt tokens (default 64)")
    p.add_argument("--output-len", type=parse_positive_int, default=32, help="output tokens (default 32)")
    p.add_argument("--delta", type=parse_fraction, default=0.10, help="change to detect (default 10%%)")
    p.add_argument("--alpha", type=parse_fraction, default=0.0025,
                   help="per-check false-alarm rate (default 0.0025 = 0.05 build-wide over 20 checks)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write runs and the table here")
    p.set_defaults(func=main)
    return p


def calibrate(server: Any, *, runs: int, concurrency: int, num_requests: int, input_len: int, output_len: int,
              vocab_size: int | None) -> list[dict[str, float]]:
    """``runs`` runs of one workload on ``server``, each with its own seed (run k uses seed k), so no run replays
    another's prompts (prefix caching would flatter the repeats); one summary dict per run."""
    from pytest_llmperf.load.runner import run_load
    from pytest_llmperf.load.workload import Workload
    from pytest_llmperf.stats.metrics import compute_run_metrics, run_summary

    summaries = []
    for k in range(runs):
        workload = Workload(num_requests=num_requests, input_len=input_len, output_len=output_len,
                            concurrency=concurrency, warmup_requests=concurrency if k == 0 else 0, seed=k)
        load = run_load(server.endpoint, server.served_model_name, workload, vocab_size=vocab_size or 32000)
        server.check_alive()
        metrics = compute_run_metrics(load.records, load.duration_s)
        summaries.append(run_summary(metrics))
        log.info("run %d/%d: TTFT p95 %.1f ms, TPOT p50 %.2f ms, %.1f tok/s, %d failed", k + 1, runs,
                 summaries[-1].get("ttft_p95_ms", float("nan")), summaries[-1].get("tpot_p50_ms", float("nan")),
                 summaries[-1].get("output_throughput_tok_s", float("nan")), metrics.failed)
    return summaries


def main(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from pytest_llmperf.engine.spec import EngineSpec
    from pytest_llmperf.errors import UsageError
    from pytest_llmperf.stats.calibration import calibration_table

    if args.runs < 2:
        raise UsageError("--runs must be at least 2 to measure run-to-run noise")
    spec = EngineSpec.from_mode(args.mode[0], model=args.model or "tiny-llama", backend=args.backend)
    if args.endpoint:
        from pytest_llmperf.engine.external import ExternalEngine

        server: Any = ExternalEngine(spec, args.endpoint, args.model)
        runs = calibrate(server, runs=args.runs, concurrency=args.concurrency, num_requests=args.num_requests,
                         input_len=args.input_len, output_len=args.output_len, vocab_size=None)
    else:
        from pytest_llmperf.engine.server import VLLMServer

        with VLLMServer(spec, progress=lambda m: log.info("%s", m)) as server:
            runs = calibrate(server, runs=args.runs, concurrency=args.concurrency, num_requests=args.num_requests,
                             input_len=args.input_len, output_len=args.output_len,
                             vocab_size=server.plan.model_paths.vocab_size)
    table = [row for row in calibration_table(runs, args.delta, args.alpha) if row["metric"] in DEFAULT_METRICS]
    print(f"A/A calibration: {args.runs} runs of {args.num_requests} requests, concurrency {args.concurrency}, "
          f"{args.input_len} -> {args.output_len} tokens, engine {spec.label} ({spec.backend})")
    print(tabulate([[r["metric"], r["median"], None if r["cv"] is None else f"{r['cv']:.2%}", r["runs_needed"]]
                    for r in table],
                   headers=["metric", "median", "run-to-run CV", f"K for {args.delta:.0%} at a={args.alpha:g}"],
                   floatfmt=".4g"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "table": table, "delta": args.delta, "alpha": args.alpha},
                                        indent=1))
    return 0
