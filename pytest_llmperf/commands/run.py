"""``llmperf run``: drive one workload against a running OpenAI-compatible endpoint and report its metrics.

--repeats K measures K runs (one sample each for the regression gate; each run has its own seed). --json PATH
writes a session results file (docs/reports.md, schema_version 1: one test per request rate whose runs carry
per-run summaries and the server's /metrics figures), so llmperf compare, llmperf baseline update and llmperf
report read it like a pytest session's results. The fingerprint is the server's (GET /version, /v1/models) and
the --hardware label, never the client machine's. The same file keeps, for the last run, metrics
(ttft_ms/tpot_ms/itl_ms/e2el_ms each with mean p50 p90 p95 p99; output_throughput_tok_s request_throughput_req_s
completed failed duration_s) and requests (per request ttft_ms e2el_ms output_tokens itl_ms error).
--dataset sends a dataset's prompts (jsonl:PATH, sharegpt:PATH, dist:IN,OUT), --api chat the chat route,
--request-rates R,R,... sweeps open-loop rates (one test each, a sweep table at the end), --slo sets per-request
limits (SLO attainment), --find-max-rate searches the highest rate meeting them. Prints a short table; progress
goes to stderr (an updating counter on a TTY, periodic log lines otherwise).
Exit status: 0 when measured, 1 when --find-max-rate found no rate meeting the SLO, 2 on a usage error (a bad
dataset, a prompt over the server's max_model_len), an unreachable or non-OpenAI endpoint, a run stopped by
--stall-timeout or --run-deadline, or when every request failed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_llmperf.commands.run_sweep import DIST_FIELDS, LATENCY_METRICS, Measured, Target, run_test_id
from pytest_llmperf.errors import LoadAborted, UsageError
from pytest_llmperf.options import choice as _choice
from pytest_llmperf.options import parse_nonneg_int as _non_negative_int
from pytest_llmperf.options import parse_positive_float as _positive_float
from pytest_llmperf.options import parse_positive_int as _positive_int
from pytest_llmperf.options import parse_rates_option as _rates

__all__ = ["DIST_FIELDS", "add_parser", "main", "run_test_id"]

logger = logging.getLogger(__name__)

#: ``--slo`` keys: the per-request limits that define SLO attainment (goodput)
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2el_ms")


def _length(text: str) -> str:
    from pytest_llmperf.load.workload import parse_length

    try:
        return str(parse_length(text).to_spec())
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _endpoint(text: str) -> str:
    url = text.rstrip("/")
    if not url.startswith(("http://", "https://")) or not url.endswith("/v1"):
        raise argparse.ArgumentTypeError(f"expected an OpenAI base URL like http://HOST:PORT/v1, got {text!r}")
    return url


def _slo(text: str) -> Any:
    """``ttft_ms=500,tpot_ms=50`` -> GoodputLimits (each limit > 0 ms)."""
    from pytest_llmperf.stats.slo import SLO

    values: dict[str, float] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        key, sep, value = item.partition("=")
        if not sep or key not in SLO_KEYS:
            raise argparse.ArgumentTypeError(f"expected KEY=MS with KEY one of {', '.join(SLO_KEYS)} "
                                             f"(e.g. ttft_ms=500,tpot_ms=50), got {item!r}")
        values[key] = _positive_float(value)
    if not values:
        raise argparse.ArgumentTypeError("expected at least one limit, e.g. ttft_ms=500,tpot_ms=50")
    return SLO.from_mapping(values, source="--slo").goodput()


def _target_fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction of requests in (0, 1], got {text!r}")
    return value


def _add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", required=True, type=_endpoint, help="OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="served model name (as listed by GET /v1/models)")
    p.add_argument("--concurrency", type=_positive_int, default=1, help="max requests in flight (default 1)")
    p.add_argument("--num-requests", type=_positive_int, default=32, help="measured requests (default 32)")
    p.add_argument("--input-len", type=_length, default="128", help="prompt tokens: N or LOW:HIGH (default 128)")
    p.add_argument("--output-len", type=_length, default="128", help="output tokens: N or LOW:HIGH (default 128)")
    p.add_argument("--dataset", default=None, metavar="SPEC", help="send a dataset's prompts instead of synthetic "
                   "ones: jsonl:PATH, sharegpt:PATH or dist:IN,OUT (e.g. dist:sharegpt-in,sharegpt-out)")
    p.add_argument("--api", type=_choice("completions", "chat"), default="completions",
                   help="completions or chat (/v1/chat/completions) (default completions)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed of prompts and arrivals (default 0)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--request-rate", type=_positive_float, default=None,
                      help="open loop at this many req/s (default: closed loop at --concurrency)")
    rate.add_argument("--request-rates", type=_rates, default=None, metavar="R,R,...",
                      help="sweep: one test per open-loop rate in req/s, a sweep table at the end")
    rate.add_argument("--find-max-rate", action="store_true", help="search the highest request rate at which "
                      "--target of the requests meet --slo (one search per --repeats)")
    p.add_argument("--burstiness", type=_positive_float, default=1.0,
                   help="gamma shape of open-loop gaps; 1 = Poisson (default 1)")


def _add_slo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slo", type=_slo, default=None, metavar="KEY=MS,...", help="per-request limits, e.g. "
                   "ttft_ms=500,tpot_ms=50 (keys ttft_ms, tpot_ms, e2el_ms): runs report SLO attainment")
    p.add_argument("--target", type=_target_fraction, default=0.9,
                   help="--find-max-rate: fraction of requests that must meet --slo (default 0.9)")
    p.add_argument("--start-rate", type=_positive_float, default=1.0, help="--find-max-rate: first rate (default 1)")
    p.add_argument("--max-rate", type=_positive_float, default=64.0,
                   help="--find-max-rate: highest rate tried (default 64)")
    p.add_argument("--min-rate", type=_positive_float, default=None,
                   help="--find-max-rate: lowest rate tried when --start-rate already misses (default: a sixteenth "
                        "of --start-rate; a point takes --num-requests / rate seconds)")
    p.add_argument("--rel-tol", type=_positive_float, default=0.1,
                   help="--find-max-rate: stop bisecting when the bracket is this narrow, relative (default 0.1)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warmup", type=_non_negative_int, default=0, help="unmeasured warmup requests before the "
                   "first run of each rate (default 0)")
    p.add_argument("--repeats", type=_positive_int, default=1, help="measured runs, each one sample for "
                   "llmperf compare / baseline update; run k uses seed + k (default 1)")
    p.add_argument("--timeout", type=_positive_float, default=300.0, help="seconds allowed per request (default 300)")
    p.add_argument("--stall-timeout", type=_positive_float, default=60.0, help="fail the run when no token arrives "
                   "for this many seconds while requests are in flight (default 60)")
    p.add_argument("--run-deadline", type=_positive_float, default=1800.0, help="fail a run (warmup included) that "
                   "takes longer than this many seconds (default 1800)")
    p.add_argument("--vocab-size", type=_positive_int, default=32000,
                   help="vocabulary of the synthetic t<id> tokenizer; ids drawn below min(V, 30000) (default 32000)")
    p.add_argument("--hardware", default=None, metavar="LABEL", help="the hardware behind the endpoint, for the "
                   "fingerprint, e.g. 2xH100-nvlink (default $LLMPERF_ENDPOINT_HARDWARE, else unlabelled)")
    p.add_argument("--server-metrics", type=_choice("on", "off"), default="on",
                   help="scrape the server's /metrics around each run (default on)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write a results file here (read by "
                   "llmperf compare, baseline update and report)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``run`` on the ``llmperf`` subparsers."""
    p = subparsers.add_parser("run", help="measure one workload against a running OpenAI-compatible endpoint",
                              description=__doc__.splitlines()[0])
    _add_load_args(p)
    _add_slo_args(p)
    _add_run_args(p)
    p.set_defaults(func=main)
    return p


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
    if m.get("slo_attainment") is not None:
        tail += f"  SLO attainment {m['slo_attainment']:.0%}"
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


def _workload(args: argparse.Namespace) -> Any:
    from pytest_llmperf.load.workload import Workload

    return Workload(
        num_requests=args.num_requests, warmup_requests=args.warmup, input_len=args.input_len,
        output_len=args.output_len, concurrency=args.concurrency, request_rate=args.request_rate,
        burstiness=args.burstiness, seed=args.seed, timeout_s=args.timeout, stall_timeout_s=args.stall_timeout,
        deadline_s=args.run_deadline,
    )


def _check_args(args: argparse.Namespace) -> None:
    """Usage errors that argparse cannot see, raised before anything is sent."""
    if args.find_max_rate and args.slo is None:
        raise UsageError("--find-max-rate needs --slo with a per-request limit, e.g. --slo ttft_ms=500,tpot_ms=50")
    if args.find_max_rate and args.start_rate > args.max_rate:
        raise UsageError(f"--start-rate {args.start_rate:g} is above --max-rate {args.max_rate:g}")
    if args.find_max_rate and args.min_rate is not None and args.min_rate > args.start_rate:
        raise UsageError(f"--min-rate {args.min_rate:g} is above --start-rate {args.start_rate:g}")
    if args.json is not None:  # a long search must not end in "cannot write"
        import os

        path = Path(args.json)
        if path.is_dir():
            raise UsageError(f"--json {path}: is a folder; give a file name, e.g. {path / 'results.json'}")
        folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--json {path}: cannot write under {folder}")


def _target(args: argparse.Namespace, workload: Any) -> Target:
    """Load the dataset (a bad file fails before anything is sent), ask the server what it is, check that the
    dataset's prompts fit its max_model_len."""
    from pytest_llmperf.engine.external import ExternalEngine, backend_from_label
    from pytest_llmperf.engine.spec import EngineSpec
    from pytest_llmperf.load.datasets import check_fits, load_dataset

    dataset = None if args.dataset is None else \
        load_dataset(args.dataset, n=args.num_requests, seed=args.seed, vocab_size=args.vocab_size)
    engine = ExternalEngine(EngineSpec(), args.endpoint, args.model, args.vocab_size, hardware=args.hardware)
    if dataset is not None:
        check_fits(dataset, engine.max_model_len, workload.output_spec.high_tokens)
    fingerprint = engine.fingerprint(backend_from_label(engine.hardware) or "gpu").to_dict()
    return Target(args.endpoint, engine.served_model_name, engine.engine_version(), fingerprint,
                  chat=args.api == "chat", vocab_size=args.vocab_size,
                  prompts=dataset.prompts if dataset is not None else None,
                  dataset=dataset.to_dict() if dataset is not None else None, goodput=args.slo,
                  server_metrics=args.server_metrics == "on")


def _measure_runs(args: argparse.Namespace, target: Target, workload: Any, label: str) -> list[Measured] | None:
    """``--repeats`` runs of ``workload`` (warmup before the first); None when one was stopped (reported)."""
    from pytest_llmperf.commands.run_sweep import measure_run

    runs = []
    for k in range(args.repeats):
        wl = replace(workload, seed=workload.seed + k, warmup_requests=workload.warmup_requests if k == 0 else 0)
        if args.repeats > 1 or label:
            logger.info("llmperf run: %srun %d/%d", label, k + 1, args.repeats)
        try:
            runs.append(measure_run(target, wl, progress=_Progress(), repeats=args.repeats))
        except LoadAborted as exc:  # a stall or the run deadline: one line, the finished requests counted
            print(f"llmperf run: {label}run {k + 1}/{args.repeats} stopped: {exc} ({len(exc.records)} requests had "
                  f"finished)", file=sys.stderr)
            return None
    return runs


def _write(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if args.json is not None:
        from pytest_llmperf.report.json_io import write_results

        write_results(args.json, report)


def _print_runs(args: argparse.Namespace, points: list[tuple[Any, list[Measured]]], report: dict[str, Any],
                sweep: bool) -> None:
    from pytest_llmperf.commands.run_sweep import server_line, sweep_table

    if sweep:
        for wl, runs in points:
            line = server_line(runs[-1])
            if line:
                print(f"rate {wl.request_rate:g} req/s: {line}")
        print(sweep_table(points, with_slo=args.slo is not None))
    else:
        runs = points[-1][1]
        if args.repeats > 1:
            tputs = [m.metrics.output_throughput_tok_s for m in runs if m.metrics.output_throughput_tok_s is not None]
            spread = f"; output tok/s per run: {', '.join(f'{t:.1f}' for t in tputs)}" if tputs else ""
            print(f"{args.repeats} runs (table: the last run{spread})")
        print(_table(report))
        line = server_line(runs[-1])
        if line:
            print(line)
    if args.json is not None:
        print(f"wrote {args.json}")


def _exit_status(points: list[tuple[Any, list[Measured]]]) -> int:
    records = [r for _, runs in points for m in runs for r in m.run.records]
    failed = [r for r in records if r.error]
    if failed:
        print(f"llmperf run: {len(failed)} of {len(records)} requests failed; first: {failed[0].error}",
              file=sys.stderr)
    return 2 if len(failed) == len(records) else 0


def prompt_length_note(spec: Any, counts: list[int]) -> str | None:
    """The synthetic prompts' lengths as the server counted them (``usage.prompt_tokens`` of each successful
    request), when they miss the asked ``--input-len``: the server's tokenizer is not the synthetic one, so the
    figures are for other lengths (the pytest gate fails such a run; here the measurement stands, said once)."""
    wrong = sorted(c for c in counts if not spec.low_tokens <= c <= spec.high_tokens)
    if not wrong:
        return None
    span = f"{wrong[0]}" if wrong[0] == wrong[-1] else f"{wrong[0]}-{wrong[-1]}"
    return (f"the server counted {span} prompt tokens (median {statistics.median(wrong):g}) in {len(wrong)} of "
            f"{len(counts)} requests where --input-len {spec.to_spec()} was asked: its tokenizer is not the synthetic "
            f"one (prompts of t<id> words), so these figures are for those lengths; for exact lengths send the "
            f"model's own text with --dataset")


def _prompt_counts(records: Any) -> list[int]:
    return [r.prompt_tokens for r in records if r.error is None]


def _warn_prompt_lengths(target: Target, spec: Any, counts: list[int], report: dict[str, Any]) -> None:
    """Synthetic prompts only (a dataset's lengths are the server's by definition): the note, once."""
    note = None if target.prompts is not None else prompt_length_note(spec, counts)
    if note is not None:
        report["notes"] = [note]
        print(f"llmperf run: warning: {note}", file=sys.stderr)


def _run_rates(args: argparse.Namespace, target: Target, base: Any) -> int:
    """One test per rate (``--request-rates``, else the one ``--request-rate`` or closed loop), K runs each."""
    from pytest_llmperf.commands.run_sweep import build_report, make_test, run_entry

    sweep = args.request_rates is not None
    points = []
    for rate in args.request_rates or (args.request_rate,):
        wl = replace(base, request_rate=rate)
        runs = _measure_runs(args, target, wl, f"rate {rate:g} req/s: " if sweep else "")
        if runs is None:
            return 2
        points.append((wl, runs))
    dataset = (target.dataset or {}).get("dataset")
    tests = [make_test(target, run_test_id(target.model, wl, api=target.api, dataset=dataset),
                       target.workload_dict(wl), [run_entry(k, m) for k, m in enumerate(runs)])
             for wl, runs in points]
    created = points[0][1][0].run.window.start_unix_s
    report = build_report(target, tests, created, last=(points[-1][0], points[-1][1][-1]))
    _warn_prompt_lengths(target, base.input_spec,
                         [c for _, runs in points for m in runs for c in _prompt_counts(m.run.records)], report)
    _write(args, report)
    _print_runs(args, points, report, sweep)
    return _exit_status(points)


def _find_max_rate(args: argparse.Namespace, target: Target, base: Any) -> int:
    """``--repeats`` saturation searches, one test whose runs' summaries are the answers."""
    from dataclasses import asdict

    from pytest_llmperf.commands.run_sweep import (build_report, make_test, saturation_test_id, search_lines,
                                                   search_max_rate)
    from pytest_llmperf.load.saturation import point_text
    from pytest_llmperf.report.server_tables import saturation_lines, saturation_tests

    workload = {**target.workload_dict(base), "saturation": {
        "variable": "request_rate", "start": args.start_rate, "limit": args.max_rate, "target": args.target,
        "rel_tol": args.rel_tol, "slo": {k: v for k, v in asdict(target.goodput).items() if v is not None}}}
    runs, found, counts = [], [], []

    def on_point(point: Any, run: Any) -> None:  # live: a search point can take minutes at a low rate
        counts.extend(_prompt_counts(run.records))
        print(f"  measured {point_text(point.to_dict(), 'request_rate')} in {run.duration_s:.1f} s", file=sys.stderr,
              flush=True)

    for k in range(args.repeats):
        print(f"saturation search {k + 1}/{args.repeats}: request rate {args.start_rate:g} to {args.max_rate:g} "
              f"req/s, target {args.target:.0%} of requests within the SLO")
        try:
            entry, result = search_max_rate(target, base, start=args.start_rate, limit=args.max_rate,
                                            target_frac=args.target, rel_tol=args.rel_tol, on_point=on_point,
                                            min_rate=args.min_rate)
        except LoadAborted as exc:
            print(f"llmperf run: saturation search {k + 1}/{args.repeats} stopped: {exc}", file=sys.stderr)
            return 2
        print("\n".join(search_lines(result)))
        runs.append({**entry, "run_index": k})
        found.append(result.max_load)
    test = make_test(target, saturation_test_id(target, base, args.target), workload, runs)
    report = build_report(target, [test], runs[0]["window"]["start_unix_s"])
    _warn_prompt_lengths(target, base.input_spec, counts, report)
    _write(args, report)
    if args.json is not None:
        print(f"wrote {args.json}")
    if any(x is None for x in found):
        print(f"llmperf run: no request rate from {args.start_rate:g} req/s up met {args.target:.0%} SLO attainment",
              file=sys.stderr)
        return 1
    if args.repeats > 1:  # the answer the gate compares, worded as the reports word it
        print(saturation_lines(saturation_tests({"tests": [test]})[0])[1])
    return 0


def main(args: argparse.Namespace) -> int:
    """Run what ``args`` describe; print the table, write ``--json``; return the exit status."""
    _check_args(args)
    base = _workload(args)
    target = _target(args, base)
    if args.find_max_rate:
        return _find_max_rate(args, target, base)
    return _run_rates(args, target, base)
