"""``llmperf plan RESULTS... [--tp N | --pp N] [--link NAME | --bandwidth-gbs X --latency-us Y]``.

Predicts TPOT, TTFT and throughput of TP or PP on a link you may not own, from a single-GPU run in RESULTS (its
TPOT p50 ~ one decode step, its TTFT p50 ~ the prefill) and an analytical communication model (docs/planner.md).
--what-if prints, for --gpus GPUs and an SLO, the best strategy per link preset and the concurrency where PP
overtakes TP, with the crossover measured in RESULTS where they hold TP and PP runs. --validate calibrates on
one link of RESULTS and predicts the other (the study's NVLink and emulated-PCIe files); exit 1 when TPOT p50 at
concurrency 1 and 8 is off by more than --tolerance.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "main"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _concurrency_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"concurrencies must be >= 1, got {text!r}")
    return tuple(sorted(set(values)))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from pytest_llmperf.plan.links import ALGORITHMS, LINKS

    p = subparsers.add_parser("plan", help="predict TP/PP latency on another link from a single-GPU run",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("results", nargs="+", metavar="RESULTS.json[.gz]", help="session results files: one with a "
                   "single-GPU run; TP/PP runs in them feed --validate, --calibrate and the measured crossover")
    p.add_argument("--model", default=None, help="architecture: a preset name or a config.json path (default: the "
                   "single-GPU run's model)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size to predict (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size to predict (default 1)")
    p.add_argument("--link", default="pcie4-nop2p", choices=sorted(LINKS), help="link preset (default %(default)s)")
    p.add_argument("--bandwidth-gbs", type=_positive_float, default=None, help="custom link: GB/s per direction "
                   "(with --latency-us; overrides --link)")
    p.add_argument("--latency-us", type=float, default=None, help="custom link: microseconds per step")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="ring", help="custom link's all-reduce (default ring)")
    p.add_argument("--concurrency", type=_concurrency_list, default=None, help="e.g. 1,8,32 (default: the "
                   "single-GPU run's concurrencies)")
    p.add_argument("--calibrate", default=None, choices=sorted(LINKS), metavar="PRESET", help="calibrate the TP "
                   "overhead on the TP runs in RESULTS, measured on this link preset (default: the shares "
                   "calibrated on 2 x H200)")
    p.add_argument("--calibrate-link", default=None, metavar="NAME", help="with --calibrate: use the TP runs on "
                   "this link as the report names it (e.g. NVLink) when RESULTS hold several")
    p.add_argument("--what-if", action="store_true", help="best strategy per link preset and PP/TP crossover")
    p.add_argument("--gpus", type=int, default=2, help="GPUs for --what-if (default 2)")
    p.add_argument("--slo-tpot-ms", type=_positive_float, default=None, help="SLO for --what-if: TPOT p50 limit")
    p.add_argument("--slo-ttft-ms", type=_positive_float, default=None, help="SLO for --what-if: TTFT p50 limit")
    p.add_argument("--validate", action="store_true", help="calibrate on one link of RESULTS, predict the other")
    p.add_argument("--tolerance", type=_positive_float, default=0.15, help="--validate: allowed |error| of TPOT "
                   "p50 at concurrency 1 and 8 (default 0.15)")
    p.add_argument("--markdown", action="store_true", help="--validate: print the table as Markdown")
    p.set_defaults(func=main)
    return p


def _arch(spec: str | None, fallback: str | None) -> Any:
    import json
    from pathlib import Path

    from pytest_llmperf.errors import UsageError
    from pytest_llmperf.models.arch import arch_facts, preset_arch

    name = spec or fallback
    if not name:
        raise UsageError("no model architecture: the single-GPU run names none; give --model PRESET or a config.json")
    path = Path(name)
    if path.is_dir():
        path = path / "config.json"
    try:
        if path.suffix == ".json" and path.is_file():
            return arch_facts(json.loads(path.read_text(encoding="utf-8")))
        return preset_arch(name)
    except (ValueError, OSError) as exc:
        from pytest_llmperf.models.presets import PRESETS

        raise UsageError(f"model {name!r}: {exc} (presets: {', '.join(PRESETS)}; or a config.json path)") from exc


def _link(args: argparse.Namespace) -> Any:
    from pytest_llmperf.errors import UsageError
    from pytest_llmperf.plan.links import custom_link, resolve_link

    if args.bandwidth_gbs is not None or args.latency_us is not None:
        if args.bandwidth_gbs is None or args.latency_us is None:
            raise UsageError("a custom link needs both --bandwidth-gbs and --latency-us")
        return custom_link(args.bandwidth_gbs, args.latency_us, args.algorithm)
    return resolve_link(args.link)


def _overhead(args: argparse.Namespace, arch: Any, compute: Any, points: list[Any]) -> Any:
    from pytest_llmperf.errors import UsageError
    from pytest_llmperf.plan.links import resolve_link
    from pytest_llmperf.plan.predict import DEFAULT_OVERHEAD, calibrate

    if not args.calibrate:
        return DEFAULT_OVERHEAD
    tp_runs = [p for p in points if p.tp > 1 and p.pp == 1 and p.tpot_ms and p.ttft_ms
               and (p.input_len, p.output_len) == (compute.input_len, compute.output_len)]
    links = sorted({p.link for p in tp_runs})
    if args.calibrate_link:
        tp_runs = [p for p in tp_runs if p.link == args.calibrate_link]
    elif len(links) > 1:
        raise UsageError(f"RESULTS hold TP runs on {', '.join(links)}: pick one with --calibrate-link")
    sizes = sorted({p.tp for p in tp_runs})
    if len(sizes) != 1:
        raise UsageError("--calibrate needs TP runs of one size in RESULTS" + (f" (found {sizes})" if sizes else ""))
    return calibrate(arch, compute, {p.concurrency: (p.tpot_ms, p.ttft_ms) for p in tp_runs}, n=sizes[0],
                     link=resolve_link(args.calibrate))


def main(args: argparse.Namespace) -> int:
    from pytest_llmperf.errors import UsageError
    from pytest_llmperf.models.arch import DTYPE_BYTES
    from pytest_llmperf.plan.data import measured_points
    from pytest_llmperf.report.json_io import load_results_any
    from pytest_llmperf.plan.predict import predict, single_compute

    results = [load_results_any(path) for path in args.results]
    points = measured_points(results)
    models = sorted({p.model for p in points if p.model})
    if len(models) > 1:  # one model's points at a time: a MoE single run must not calibrate the dense model's TP
        if args.model not in models:
            raise UsageError(f"RESULTS hold runs of {len(models)} models ({', '.join(models)}); the planner models "
                             f"one: give --model with one of them")
        points = [p for p in points if p.model == args.model]
    compute = single_compute(points)
    arch = _arch(args.model, compute.model)
    if arch.experts > 1:  # its expert traffic (all-to-all under EP) and routed compute are not in the model
        raise UsageError(f"model {args.model or compute.model}: a mixture of experts ({arch.experts} experts); the "
                         f"planner models dense models' TP and PP only: measure it (the moe study phase)")
    dtype_bytes = DTYPE_BYTES.get(compute.dtype or "bfloat16", 2)
    out = sys.stdout
    if args.validate:
        from pytest_llmperf.plan.validate import markdown_table, text_lines, validate

        v = validate(arch, points, dtype_bytes=dtype_bytes)
        out.write(markdown_table(v) if args.markdown else "")
        out.write("".join(f"{line}\n" for line in text_lines(v)))
        worst = v.max_abs_error("tpot_ms", (1, 8))
        ok = worst is not None and worst <= args.tolerance
        out.write(f"validation {'PASS' if ok else 'FAIL'}: TPOT p50 at concurrency 1 and 8 within "
                  f"{args.tolerance:.0%}: largest |error| {'-' if worst is None else f'{worst:.1%}'}\n")
        return 0 if ok else 1
    if args.what_if and args.gpus < 2:
        raise UsageError(f"--gpus must be >= 2 for --what-if, got {args.gpus}")
    if not args.what_if and (args.tp < 1 or args.pp < 1 or args.tp * args.pp < 2):
        raise UsageError("give --tp N or --pp N (N >= 2), or --what-if")
    problem = arch.tp_problem(args.gpus if args.what_if else args.tp)
    if problem is not None:
        raise UsageError(f"model {args.model or compute.model}: {problem}")
    overhead = _overhead(args, arch, compute, points)
    concurrencies = args.concurrency or compute.concurrencies
    out.write(f"single-GPU compute: {compute.model or 'model'} on {compute.gpu_model or 'GPU'}, "
              f"{compute.input_len}->{compute.output_len} tokens, measured at concurrency "
              f"{', '.join(map(str, compute.concurrencies))}; TP overhead: {overhead.source}\n")
    if args.what_if:
        _what_if(args, arch, compute, overhead, concurrencies, results, dtype_bytes)
        return 0
    link = _link(args)
    out.write(f"link: {link.label}: {link.bandwidth_gbs:g} GB/s per direction, {link.latency_us:g} us per step, "
              f"{link.algorithm} all-reduce ({link.source})\n")
    out.write(f"{'mode':<8} {'conc':>4} {'TPOT p50 ms':>12} {'(comm)':>8} {'TTFT p50 ms':>12} {'(comm)':>8} "
              f"{'tok/s':>8} {'bubble':>7}\n")
    for c in concurrencies:
        p = predict(arch, compute, tp=args.tp, pp=args.pp, link=link, concurrency=c, overhead=overhead,
                    dtype_bytes=dtype_bytes)
        out.write(f"{p.mode:<8} {c:>4} {p.tpot_ms:>12.2f} {p.tpot_comm_ms:>8.2f} {p.ttft_ms:>12.1f} "
                  f"{p.ttft_comm_ms:>8.1f} {p.throughput_tok_s:>8.0f} {p.decode_bubble:>7.0%}"
                  + "".join(f"  ({note})" for note in p.notes) + "\n")
    return 0


def _what_if(args: argparse.Namespace, arch: Any, compute: Any, overhead: Any, concurrencies: Any,
             results: list[Any], dtype_bytes: int) -> None:
    from pytest_llmperf.plan.links import LINKS
    from pytest_llmperf.plan.whatif import crossover_sentence, outlook
    from pytest_llmperf.report.study import crossover_lines

    out = sys.stdout
    slo = " and ".join(s for s in (f"TPOT p50 <= {args.slo_tpot_ms:g} ms" if args.slo_tpot_ms else "",
                                   f"TTFT p50 <= {args.slo_ttft_ms:g} ms" if args.slo_ttft_ms else "") if s)
    out.write(f"what if: {args.gpus} GPUs, SLO {slo or 'none'}; best = highest predicted throughput meeting it\n")
    for o in outlook(arch, compute, list(LINKS.values()), gpus=args.gpus, concurrencies=concurrencies,
                     overhead=overhead, slo_tpot_ms=args.slo_tpot_ms, slo_ttft_ms=args.slo_ttft_ms,
                     dtype_bytes=dtype_bytes):
        best = ", ".join(f"c{c}: {mode or 'none meets the SLO'}" for c, mode in o.best)
        out.write(f"{o.link.label}: best {best}\n")
        for metric in ("tpot_ms", "throughput_tok_s"):
            out.write(f"  {crossover_sentence(o, args.gpus, metric)}\n")
    measured = crossover_lines(results)
    if measured:
        out.write("measured (from RESULTS):\n" + "".join(f"  {line}\n" for line in measured))


if __name__ == "__main__":  # pragma: no cover - ``python -m pytest_llmperf.commands.plan FILES ...``
    from pytest_llmperf.errors import LLMPerfError

    _parser = argparse.ArgumentParser(prog="llmperf")
    add_parser(_parser.add_subparsers(dest="command"))
    _args = _parser.parse_args(["plan", *sys.argv[1:]])
    try:
        sys.exit(_args.func(_args))
    except LLMPerfError as _exc:
        print(f"llmperf: error: {_exc}", file=sys.stderr)
        sys.exit(2)
