"""The seed study's figures, drawn from a session's own results (matplotlib, Agg backend, headless).

``throughput.png``, ``ttft_p95.png``, ``tpot_p50.png``: the metric against concurrency (log-2 axis), one line
per mode (median of the runs, bars from the fastest to the slowest run, said in the legend), one panel per
input length (fixed lengths and ``low:high`` ranges). Where the results carry them, each panel also shows the
SLO limit of the metric (dashed red line) and, per mode, the baseline median the gate compared against with
its tolerance band (dotted line, shaded; the tolerance of the verdict, else of the test's ``gate`` settings).
A latency of 0 (a burst-delivered stream on the CPU backend) is
not measurable and not drawn.
``power.png``: instant power over time per GPU for each traced test (first run), the measured load window
shaded. Without ``telemetry_traces`` there is no power figure; :func:`plot_notes` says why.
matplotlib is an optional dependency (``pip install 'pytest-llmperf[plots]'``), imported inside the functions:
without it :func:`plots_available` is False and the reports say so instead of drawing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pytest_llmperf.report.terminal import (
    emulation_text,
    group_name,
    header_title,
    input_label,
    input_len_key,
    measurable,
    mode_label,
)

__all__ = ["MAX_POWER_PANELS", "METRIC_PLOTS", "MISSING_MATPLOTLIB", "make_plots", "plot_notes", "plots_available"]

MISSING_MATPLOTLIB = "matplotlib is not installed; install the plots extra: pip install 'pytest-llmperf[plots]'"

#: plot name -> (summary key, y label, title stem)
METRIC_PLOTS = {
    "throughput": ("output_throughput_tok_s", "output throughput (tokens/s)", "Output throughput"),
    "ttft_p95": ("ttft_p95_ms", "TTFT p95 (ms)", "Time to first token, p95"),
    "tpot_p50": ("tpot_p50_ms", "TPOT p50 (ms)", "Time per output token, p50"),
}
MAX_POWER_PANELS = 6
_MODE_STYLE = {"single": ("tab:blue", "o"), "tp": ("tab:red", "s"), "pp": ("tab:green", "^"),
               "dp": ("tab:purple", "D"), "ep": ("tab:orange", "v")}


def plots_available() -> bool:
    """True when matplotlib can be imported (the ``plots`` extra)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(MISSING_MATPLOTLIB) from exc

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _subtitle(results: dict[str, Any]) -> str:
    header = results.get("header", {})
    version = header.get("engine_version") or ""
    parts = [header_title(header), "" if version == "unknown" else version]
    parts.append(emulation_text(header, "plot") or "")
    return " | ".join(p for p in parts if p)


def _wrap(text: str, width_in: float) -> str:
    """Wrap a title to the figure width (about 11 characters per inch at 11 pt)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width=max(40, int(width_in * 11))))


def _title_and_layout(fig: Any, title: str) -> None:
    """A figure title of any number of lines, with the panels laid out below it (never under it)."""
    fig.suptitle(title, fontsize=11)
    fig.set_layout_engine("constrained")  # reserves the title's real height, unlike tight_layout


def _mode_order(mode: str) -> tuple[int, str]:
    return (0 if mode == "single" else 1 if mode.startswith("tp") else 2, mode)


def _style(mode: str) -> tuple[str, str]:
    key = "single" if mode == "single" else next((k for k in _MODE_STYLE if mode.startswith(k)), "pp")
    return _MODE_STYLE[key]


def _linestyle(mode: str) -> str:
    """Dashed for an engine under PCIe emulation, so a merged NVLink + emulated report tells the links apart."""
    return "--" if "emulated" in mode else "-"


def _series(results: dict[str, Any], key: str) -> dict[Any, dict[str, list[tuple[int, list[float]]]]]:
    """input_len -> mode -> sorted [(concurrency, per-run values)]; first test wins per point."""
    seen: set[tuple[Any, str, int]] = set()
    out: dict[Any, dict[str, list[tuple[int, list[float]]]]] = {}
    for test in results.get("tests", []):
        wl = test.get("workload", {})
        conc, input_len, mode = wl.get("concurrency"), input_label(wl), mode_label(test["engine"])
        values = [float(r["summary"][key]) for r in test.get("runs", [])
                  if measurable(key, r.get("summary", {}).get(key))]
        if conc is None or not values or (input_len, mode, conc) in seen:
            continue
        seen.add((input_len, mode, conc))
        out.setdefault(input_len, {}).setdefault(mode, []).append((int(conc), values))
    for modes in out.values():
        for points in modes.values():
            points.sort()
    return out


_BasePoints = dict[Any, dict[str, list[tuple[int, float, float | None]]]]


def _references(results: dict[str, Any], key: str) -> tuple[dict[Any, set[float]], _BasePoints]:
    """SLO limits per input length, and baseline (concurrency, median, tolerance) per input length and mode."""
    tests = {t["test_id"]: t for t in results.get("tests", [])}
    slo: dict[Any, set[float]] = {}
    base: _BasePoints = {}
    seen: set[tuple[Any, str, int]] = set()
    for v in results.get("verdicts", []):
        test = tests.get(v.get("test_id"))
        if test is None or v.get("metric") != key or v.get("baseline_value") is None:
            continue
        wl = test.get("workload", {})
        input_len, conc, mode = input_label(wl), wl.get("concurrency"), mode_label(test["engine"])
        if v.get("kind") == "slo":
            slo.setdefault(input_len, set()).add(float(v["baseline_value"]))
        elif v.get("kind") == "regression" and conc is not None and (input_len, mode, conc) not in seen:
            seen.add((input_len, mode, conc))
            tolerance = v.get("tolerance", (test.get("gate") or {}).get("tolerance"))
            base.setdefault(input_len, {}).setdefault(mode, []).append(
                (int(conc), float(v["baseline_value"]), None if tolerance is None else float(tolerance)))
    for modes in base.values():
        for points in modes.values():
            points.sort()
    return slo, base


def _draw_references(ax: Any, slo: set[float], base: dict[str, list[tuple[int, float, float | None]]],
                     higher_is_better: bool, unit: str) -> None:
    for limit in sorted(slo):
        ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1.2,
                   label=f"SLO {'>=' if higher_is_better else '<='} {limit:g} {unit}")
    for mode in sorted(base, key=_mode_order):
        points = base[mode]
        color, marker = _style(mode)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, color=color, linestyle=":", marker=marker, markerfacecolor="none", linewidth=1.0,
                label=f"{mode} baseline (median)")
        tols = [p[2] for p in points if p[2] is not None]
        if len(tols) == len(points):
            edge = [y / (1 + t) if higher_is_better else y * (1 + t) for y, t in zip(ys, tols)]
            ax.fill_between(xs, ys, edge, color=color, alpha=0.12, label=f"{mode} baseline tolerance")


def _panel_title(input_len: Any) -> str:
    """``input 512 tokens``, ``input 16:512 tokens`` or, for a dataset's prompts, ``prompts: sharegpt:...``."""
    if input_len is None:
        return "input length unknown"
    if isinstance(input_len, int) or re.fullmatch(r"\d+(:\d+)?", str(input_len)):
        return f"input {input_len} tokens"
    return f"prompts: {input_len}"


def _metric_figure(results: dict[str, Any], name: str, path: Path) -> bool:
    key, ylabel, title = METRIC_PLOTS[name]
    series = _series(results, key)
    if not series:
        return False
    import statistics

    plt = _pyplot()
    from matplotlib.ticker import FixedLocator, NullLocator

    input_lens = sorted(series, key=input_len_key)
    slo, base = _references(results, key)
    higher = key.endswith(("_tok_s", "_req_s"))
    unit = ylabel.rsplit("(", 1)[-1].rstrip(")") if "(" in ylabel else ""
    width_in = max(9.5, 7.4 * len(input_lens) + 0.8)
    fig, axes = plt.subplots(1, len(input_lens), figsize=(width_in, 4.8), squeeze=False)
    for ax, input_len in zip(axes[0], input_lens):
        concs: set[int] = set()
        for mode in sorted(series[input_len], key=_mode_order):
            points = series[input_len][mode]
            xs = [c for c, _ in points]
            med = [statistics.median(v) for _, v in points]
            lo = [m - min(v) for m, (_, v) in zip(med, points)]
            hi = [max(v) - m for m, (_, v) in zip(med, points)]
            color, marker = _style(mode)
            k = max(len(v) for _, v in points)
            ax.errorbar(xs, med, yerr=[lo, hi], color=color, marker=marker, capsize=3, linewidth=1.8,
                        linestyle=_linestyle(mode), label=f"{mode}: median, bars min-max of {k} runs")
            concs.update(xs)
        _draw_references(ax, slo.get(input_len, set()), base.get(input_len, {}), higher, unit)
        concs.update(c for points in base.get(input_len, {}).values() for c, _, _ in points)
        ax.set_xscale("log", base=2)
        ticks = sorted(concs)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("concurrency (requests in flight, log2)")
        ax.set_ylabel(ylabel)
        ax.set_title(_panel_title(input_len))
        ax.set_ylim(bottom=0)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    _title_and_layout(fig, f"{title} vs concurrency\n{_wrap(_subtitle(results), width_in)}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _traced(results: dict[str, Any]) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(test, run index, trace) for the first traced run of each test that has a trace."""
    traces = results.get("telemetry_traces") or {}
    tests = {t["test_id"]: t for t in results.get("tests", [])}
    out = []
    for test_id, runs in traces.items():
        if test_id in tests and runs:
            run_index = min(runs, key=int)
            trace = runs[run_index]
            if trace.get("t_unix_s") and trace.get("power_w"):
                out.append((tests[test_id], run_index, trace))
    return out


def plot_notes(results: dict[str, Any]) -> dict[str, str]:
    """Plots that will not be drawn, with the reason (shown by the Markdown and terminal reports)."""
    notes = {}
    if not _traced(results):
        backend = results.get("header", {}).get("backend")
        why = "no power telemetry in the results (telemetry_traces is empty"
        why += "; the CPU backend has no NVML)" if backend == "cpu" else "; NVML unavailable or tracing off)"
        notes["power"] = why
    elif len(_traced(results)) > MAX_POWER_PANELS:
        notes["power"] = f"only the first {MAX_POWER_PANELS} of {len(_traced(results))} traced tests are drawn"
    for name, (key, _, _) in METRIC_PLOTS.items():
        if not _series(results, key):
            notes[name] = f"no run reports {key}"
    return notes


def _power_figure(results: dict[str, Any], path: Path) -> bool:
    traced = _traced(results)[:MAX_POWER_PANELS]
    if not traced:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(len(traced), 1, figsize=(10, 2.9 * len(traced) + 0.9), squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    for ax, (test, run_index, trace) in zip(axes[:, 0], traced):
        run = next((r for r in test.get("runs", []) if str(r.get("run_index")) == str(run_index)), None)
        t0 = run["window"]["start_unix_s"] if run else min(trace["t_unix_s"])
        gpus = trace.get("gpu") or [0] * len(trace["t_unix_s"])
        for i, gpu in enumerate(sorted(set(gpus))):
            pts = [(t - t0, p) for t, g, p in zip(trace["t_unix_s"], gpus, trace["power_w"]) if g == gpu]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[i % len(colors)], linewidth=0.8,
                    label=f"GPU {gpu}")
        if run:
            ax.axvspan(0.0, run["window"]["end_unix_s"] - t0, color="gold", alpha=0.25, label="load window")
        wl = test.get("workload", {})
        ax.set_title(f"{group_name(test['test_id'])}: {mode_label(test['engine'])}, concurrency "
                     f"{wl.get('concurrency')}, input {wl.get('input_len')} tokens (run {run_index})", fontsize=10)
        ax.set_xlabel("time since first request (s)")
        ax.set_ylabel("power (W)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    _title_and_layout(fig, f"GPU power over time (instant power)\n{_wrap(_subtitle(results), 10.0)}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def make_plots(results: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Draw every figure the results allow into ``out_dir``; return ``{name: path}`` of the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for name in METRIC_PLOTS:
        path = out / f"{name}.png"
        if _metric_figure(results, name, path):
            written[name] = str(path)
    path = out / "power.png"
    if _power_figure(results, path):
        written["power"] = str(path)
    return written
