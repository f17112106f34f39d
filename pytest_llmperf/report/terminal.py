"""Terminal report: verdicts first, one table per test group, the server's side (vLLM ``/metrics``), the
saturation searches, then the seed-study comparison.

Also the small table model the other renderers share (:func:`config_rows`, :func:`seed_study`,
:func:`verdicts_by_state`): every figure shown is the median across a configuration's runs of the per-run
summary value, so the report shows the same numbers the regression gate compared. Pure functions over the
session results dict (see ``docs/reports.md``); nothing here prints.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

from tabulate import tabulate

from pytest_llmperf.report.server_tables import (
    SERVER_TITLE,
    identity_columns,
    saturation_lines,
    saturation_points_table,
    saturation_tests,
    server_table,
    server_unavailable_line,
)

__all__ = [
    "NOT_MEASURABLE",
    "SEED_METRICS",
    "VERDICT_ORDER",
    "cell",
    "config_rows",
    "engine_starts_line",
    "grouped_rows",
    "group_name",
    "header_title",
    "input_label",
    "input_len_key",
    "measurable",
    "metric_table",
    "mode_label",
    "no_baseline_line",
    "overall_verdict",
    "rate_label",
    "render_header",
    "render_terminal",
    "render_verdicts",
    "seed_study",
    "study_lines",
    "verdicts_by_state",
]

#: Order in which verdict states are reported; the first present one is the overall verdict.
VERDICT_ORDER = ("FAIL", "INCONCLUSIVE", "NO_BASELINE", "MISMATCH", "SKIPPED", "PASS")
#: (summary key, label, better) compared across modes in the seed study.
SEED_METRICS = (
    ("ttft_p95_ms", "TTFT p95 ms", "lower"),
    ("tpot_p50_ms", "TPOT p50 ms", "lower"),
    ("output_throughput_tok_s", "out tok/s", "higher"),
)
#: (column header, summary key or derived name, format) of the per-group tables.
TABLE_COLUMNS = (
    ("TTFT p50 ms", "ttft_p50_ms", ".1f"),
    ("TTFT p95 ms", "ttft_p95_ms", ".1f"),
    ("TTFT p99 ms", "ttft_p99_ms", ".1f"),
    ("TPOT p50 ms", "tpot_p50_ms", ".2f"),
    ("ITL p50 ms", "itl_p50_ms", ".2f"),
    ("out tok/s", "output_throughput_tok_s", ".1f"),
    ("req/s", "request_throughput_req_s", ".2f"),
    ("failed", "failed", ".0f"),
    ("max rate @SLO req/s", "max_rate_at_slo_req_s", ".2f"),
    ("SLO attainment", "slo_attainment_at_max", ".3f"),
    ("power W", "power_total_mean_w", ".0f"),
    ("power CV", "power_cv_max", ".3f"),
)
#: shown instead of a latency that cannot be measured (see :func:`measurable`)
NOT_MEASURABLE = "n/m"
NOT_MEASURABLE_NOTE = ("n/m: not measurable: the streams arrived in one burst (a TPOT/ITL of 0 ms says how the "
                       "server flushed its output, not how fast it generated); such a cell never wins")
_GPU_KEY = re.compile(r"^gpu(\d+)_(power_mean_w|power_cv|idle_share)$")
#: what PCIe emulation turned off, for results written before the header carried its own ``emulation_note``, in
#: each report's register: a plot's caption, the terminal's header line, the Markdown summary (the settings by name)
_EMULATION_TEXTS = {
    "plot": "PCIe emulated (every peer path off, proven from the engine log)",
    "terminal": "PCIe emulated: NCCL P2P/NVLS, custom and symmetric-memory all-reduce and the all-reduce fusion off",
    "markdown": "PCIe emulated (`NCCL_P2P_DISABLE=1`, `NCCL_NVLS_ENABLE=0`, `VLLM_ALLREDUCE_USE_SYMM_MEM=0`, custom "
                "all-reduce and all-reduce fusion off; proven from each engine log)",
}


def emulation_text(header: dict[str, Any], style: str = "terminal") -> str | None:
    """The session's emulation sentence (its own note, else the text for its emulation kind); None without one."""
    emulation = header.get("emulation")
    if not emulation:
        return None
    return header.get("emulation_note") or (_EMULATION_TEXTS[style] if emulation == "pcie" else f"emulation {emulation}")


def group_name(test_id: str) -> str:
    """The test function name of a pytest node id: ``a/b.py::Cls::test_x[p1-p2]`` -> ``test_x``."""
    return test_id.split("::")[-1].split("[", 1)[0]


def input_len_key(value: Any) -> tuple[int, float, str]:
    """Sort key for input lengths that may be ints, ``"low:high"`` ranges or None (ranges after their low end)."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    text = str(value)
    try:
        return (0, float(text.split(":", 1)[0]), text)
    except ValueError:
        return (1, 0.0, text)


def input_label(workload: dict[str, Any]) -> Any:
    """What the prompts were: the dataset's name when a dataset replaced the synthetic prompts, else the input
    length (an int or a ``low:high`` range)."""
    return workload.get("dataset") or workload.get("input_len")


def measurable(metric: str, value: Any) -> bool:
    """False for a latency (``*_ms``) of 0 or less: on the CPU backend a stream delivered in one burst has a
    TPOT/ITL of 0, which measures the flush, not generation. Such a value is shown as :data:`NOT_MEASURABLE`."""
    return value is not None and not (metric.endswith("_ms") and float(value) <= 0.0)


def rate_label(workload: dict[str, Any]) -> str:
    """``closed`` (closed loop) or ``4 req/s`` (open loop, with ``burstiness`` when not Poisson)."""
    rate = workload.get("request_rate")
    if not rate:
        return "closed"
    burst = workload.get("burstiness")
    return f"{rate:g} req/s" + (f" (burstiness {burst:g})" if burst not in (None, 1, 1.0) else "")


def engine_starts_line(results: dict[str, Any]) -> str | None:
    """``engine starts: single 58.4 s, tp2 66.1 s (failed)`` from the header, else from the tests."""
    starts = (results.get("header") or {}).get("engine_starts") or []
    parts = [f"{s.get('label')} {s['startup_s']:.1f} s" + ("" if s.get("ok", True) else " (failed)")
             for s in starts if s.get("startup_s") is not None]
    if not parts:
        seen: dict[str, float] = {}
        for test in results.get("tests", []):
            if test.get("engine_startup_s") is not None:
                seen.setdefault(mode_label(test.get("engine") or {}), float(test["engine_startup_s"]))
        parts = [f"{label} {secs:.1f} s" for label, secs in seen.items()]
    return "engine starts: " + ", ".join(parts) if parts else None


def header_title(header: dict[str, Any]) -> str:
    """What was measured: the local hardware, or the external endpoint (whose hardware is not known here)."""
    if header.get("endpoint"):
        model = f" (model {header['model']})" if header.get("model") else ""
        return f"external endpoint {header['endpoint']}{model}"
    return str(header.get("topology") or "unknown topology")


def without_plugin_flag(args: list[str]) -> list[str]:
    """``args`` less ``-p pytest_llmperf.plugin``: an installed plugin loads by its entry point, and pytest refuses to
    register it a second time under the module's name ("Plugin already registered under a different name")."""
    out, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "-p" and i + 1 < len(args) and args[i + 1] == "pytest_llmperf.plugin":
            skip = True
        elif arg != "-ppytest_llmperf.plugin":
            out.append(arg)
    return out


def runnable_command(command: str) -> str:
    """A recorded ``pytest ...`` command as a user can run it where the plugin is installed."""
    import shlex

    try:
        return shlex.join(without_plugin_flag(shlex.split(command)))
    except ValueError:  # not shell syntax: shown as recorded
        return command


def no_baseline_line(results: dict[str, Any], n_tests: int, quote: str = "") -> str:
    """One line for a machine without baselines, with the command that records them (``quote`` around
    commands: a backtick for Markdown)."""
    header = results.get("header") or {}
    where = f" in {header['baseline_dir']}/" if header.get("baseline_dir") else ""
    if int(header.get("merged_sessions") or 1) > 1:  # several sessions, machines or links: one line cannot name them
        return (f"NO_BASELINE: {n_tests} test{'s' if n_tests != 1 else ''} of these {header['merged_sessions']} "
                f"sessions had no baseline when they ran; record each session's with the command it was run with plus "
                f"--llmperf-update-baselines (or: {quote}llmperf baseline update RESULTS.json{quote} for each file)")
    command = runnable_command(header.get("record_command") or "pytest <the same arguments> --llmperf-update-baselines")
    machine = _hardware_id(results)
    return (f"NO_BASELINE: no baseline for this machine{f' ({machine})' if machine else ''}{where} "
            f"({n_tests} test{'s' if n_tests != 1 else ''}); record them with: {quote}{command}{quote} "
            f"(or: {quote}llmperf baseline update RESULTS.json{quote})")


def _hardware_id(results: dict[str, Any]) -> str | None:
    try:
        from pytest_llmperf.storage.fingerprint import Fingerprint

        return Fingerprint.from_dict(results.get("fingerprint") or {}).hardware_id()
    except Exception:  # noqa: BLE001 - a partial fingerprint (old files) just omits the name
        return None


def mode_label(engine: dict[str, Any]) -> str:
    """``single``, ``tp2``, ``pp2``, ``tp2pp2``, ``dp2``, ``ep2`` from an engine dict (its ``label`` when it has one:
    reports merged from an NVLink and an emulated-PCIe session label the emulated engines ``tp2 (PCIe emulated)``,
    see :func:`pytest_llmperf.report.json_io.merge_results`)."""
    if engine.get("label"):
        return str(engine["label"])
    tp, pp, dp = int(engine.get("tp") or 1), int(engine.get("pp") or 1), int(engine.get("dp") or 1)
    if tp * pp * dp == 1:
        return "single"
    return ("" if tp == 1 else f"tp{tp}") + ("" if pp == 1 else f"pp{pp}") + ("" if dp == 1 else f"dp{dp}")


def _median(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _derived(summary: dict[str, float | None]) -> dict[str, float | None]:
    """Add GPU aggregates: total mean power, worst CV, mean idle share (None when no GPU keys)."""
    per: dict[str, list[float]] = {}
    for key, value in summary.items():
        m = _GPU_KEY.match(key)
        if m and value is not None:
            per.setdefault(m.group(2), []).append(float(value))
    out = dict(summary)
    out["power_total_mean_w"] = sum(per["power_mean_w"]) if per.get("power_mean_w") else None
    out["power_cv_max"] = max(per["power_cv"]) if per.get("power_cv") else None
    out["idle_share_mean"] = statistics.fmean(per["idle_share"]) if per.get("idle_share") else None
    return out


def config_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per test: identity, mode/concurrency/input length, K and the median summary across runs."""
    rows = []
    for test in results.get("tests", []):
        runs = test.get("runs") or []
        keys = sorted({k for run in runs for k in (run.get("summary") or {})})
        med = {k: _median([(run.get("summary") or {}).get(k) for run in runs]) for k in keys}
        wl = test.get("workload", {})
        rows.append({
            "test_id": test["test_id"], "group": group_name(test["test_id"]), "mode": mode_label(test["engine"]),
            "concurrency": wl.get("concurrency"), "input_len": input_label(wl),
            "output_len": wl.get("output_len"), "k": len(runs), "median": _derived(med),
            "rate": rate_label(wl), "engine_startup_s": test.get("engine_startup_s"),
        })
    return rows


def _mode_sort_key(mode: str) -> tuple[int, str]:
    return ({"single": 0}.get(mode, 1 if mode.startswith("tp") else 2 if mode.startswith("pp") else 3), mode)


def seed_study(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (input length, concurrency, metric): each mode's median and the winner.

    A value that is not :func:`measurable` (a burst-delivered TPOT of 0) never wins; with fewer than two
    measurable modes there is no winner.

    Rows hold ``input_len, concurrency, metric, label, better, values {mode: value}, winner`` and, after the
    metric rows of each point, an ``idle share`` row (winner None) when any mode has GPU idle-share data.
    When several tests share a mode and point (different groups), the first one in the file is used.
    """
    points: dict[tuple[Any, Any], dict[str, dict[str, Any]]] = {}
    for row in config_rows(results):
        points.setdefault((row["input_len"], row["concurrency"]), {}).setdefault(row["mode"], row["median"])
    out = []
    for (input_len, conc) in sorted(points, key=lambda p: (input_len_key(p[0]), p[1] or 0)):
        modes = dict(sorted(points[(input_len, conc)].items(), key=lambda kv: _mode_sort_key(kv[0])))
        for key, label, better in SEED_METRICS:
            values = {m: med.get(key) for m, med in modes.items()}
            present = {m: float(v) for m, v in values.items() if v is not None and measurable(key, v)}
            winner = None
            if len(present) > 1:
                pick = min if better == "lower" else max
                winner = pick(present, key=present.__getitem__)
            out.append({"input_len": input_len, "concurrency": conc, "metric": key, "label": label,
                        "better": better, "values": values, "winner": winner})
        idle = {m: med.get("idle_share_mean") for m, med in modes.items()}
        if any(v is not None for v in idle.values()):
            out.append({"input_len": input_len, "concurrency": conc, "metric": "idle_share_mean",
                        "label": "GPU idle share", "better": None, "values": idle, "winner": None})
    return out


def verdicts_by_state(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Verdict dicts grouped by state, in :data:`VERDICT_ORDER` (states absent from the results omitted)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for v in results.get("verdicts", []):
        grouped.setdefault(v["verdict"], []).append(v)
    return {s: grouped[s] for s in VERDICT_ORDER if s in grouped}


def overall_verdict(results: dict[str, Any]) -> str:
    """FAIL if any check failed, else INCONCLUSIVE if any was, else PASS (or NO_CHECKS when none ran)."""
    states = {v["verdict"] for v in results.get("verdicts", [])}
    for state in ("FAIL", "INCONCLUSIVE"):
        if state in states:
            return state
    return "PASS" if "PASS" in states else "NO_CHECKS"


def render_header(header: dict[str, Any]) -> str:
    """One line: topology, model, engine version, backend and (if any) interconnect emulation."""
    parts = [f"llmperf: {header_title(header)}"]
    if header.get("model") and not header.get("endpoint"):  # an endpoint's title names its served model
        parts.append(f"model {header['model']}")
    if header.get("engine_version") and header["engine_version"] != "unknown":
        parts.append(f"engine {header['engine_version']}")
    if not header.get("endpoint"):
        parts.append(f"backend {header.get('backend') or '?'}")
    emulation = emulation_text(header)
    if emulation:
        parts.append(emulation)
    return " | ".join(parts)


def render_verdicts(results: dict[str, Any]) -> str:
    """FAIL and INCONCLUSIVE lines in full, then the other non-PASS lines, then the count per state."""
    grouped = verdicts_by_state(results)
    lines = []
    for state in ("FAIL", "INCONCLUSIVE", "NO_BASELINE", "MISMATCH", "SKIPPED"):
        items = grouped.get(state, [])
        if state == "NO_BASELINE":
            whole = [v for v in items if v["metric"] == "*"]  # the test has no baseline at all: say it once
            if whole:
                lines.append(no_baseline_line(results, len({v["test_id"] for v in whole})))
            items = [v for v in items if v["metric"] != "*"]
        lines += [f"{v['message']}" if v["message"].startswith(state) else f"{state} {v['message']}"
                  for v in items]
    counts = Counter({s: len(v) for s, v in grouped.items()})
    summary = ", ".join(f"{counts[s]} {s}" for s in VERDICT_ORDER if counts[s]) or "no checks ran"
    lines.append(f"verdicts: {summary} -> {overall_verdict(results)}")
    return "\n".join(lines)


def cell(metric: str, value: Any, spec: str) -> str:
    """A formatted value, ``-`` when missing, :data:`NOT_MEASURABLE` when not :func:`measurable`."""
    if value is None:
        return "-"
    return format(value, spec) if measurable(metric, value) else NOT_MEASURABLE


def metric_table(rows: list[dict[str, Any]]) -> tuple[list[list[str]], list[str], tuple[str, ...]]:
    """(body, headers, column alignment) of a per-group metrics table (shared with the Markdown report).

    When two rows share mode, concurrency, input length and rate (a test parametrized further), a first column
    ``test`` names each row by its parameter id."""
    cols = [c for c in TABLE_COLUMNS if any(r["median"].get(c[1]) is not None for r in rows)]
    ident, headers, align = identity_columns(rows, lambda r: _param_id(r["test_id"]))
    body = [[*first, *(cell(key, r["median"].get(key), spec) for _, key, spec in cols)]
            for first, r in zip(ident, rows, strict=True)]
    headers += [c[0] for c in cols]
    align = (*align, *(["right"] * len(cols)))
    return body, headers, align


def _param_id(test_id: str) -> str:
    """``[c2-0]`` of ``t.py::test_x[c2-0]`` (the whole name when it has no parameters)."""
    name = test_id.split("::")[-1]
    return name[name.index("["):] if "[" in name else name


def _any_not_measurable(results: dict[str, Any]) -> bool:
    return any(not measurable(key, r["median"].get(key)) and r["median"].get(key) is not None
               for r in config_rows(results) for _, key, _ in TABLE_COLUMNS)


def grouped_rows(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """:func:`config_rows` by test group, each group in table order (mode, concurrency, input length)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in config_rows(results):
        groups.setdefault(row["group"], []).append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: (_mode_sort_key(r["mode"]), r["concurrency"] or 0, input_len_key(r["input_len"])))
    return groups


def _group_tables(results: dict[str, Any]) -> list[str]:
    blocks = []
    for group, rows in grouped_rows(results).items():
        body, headers, align = metric_table(rows)
        table = tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True, colalign=align)
        blocks.append(f"{group} (median of K runs)\n{table}")
    return blocks


def _server_block(results: dict[str, Any]) -> str | None:
    """The server-side table (medians of the runs' ``server_*`` keys) and the line naming the tests without."""
    body, headers, align = server_table([r for rows in grouped_rows(results).values() for r in rows])
    lines = []
    if body:
        lines += [SERVER_TITLE,
                  tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True, colalign=align)]
    unavailable = server_unavailable_line(results)
    if unavailable:
        lines.append(unavailable)
    return "\n".join(lines) or None


def _saturation_blocks(results: dict[str, Any]) -> list[str]:
    """Per saturation test: its answer lines, then the points of every search."""
    blocks = []
    for test in saturation_tests(results):
        title, *lines = saturation_lines(test)
        body, headers, align = saturation_points_table(test)
        table = tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True, colalign=align)
        blocks.append("\n".join([title, *(f"  {line}" for line in [*lines, *table.splitlines()])]))
    return blocks


def _seed_table(results: dict[str, Any], winner_mark: str = "*") -> str | None:
    rows = seed_study(results)
    if not rows:
        return None
    modes = sorted({m for r in rows for m in r["values"]}, key=_mode_sort_key)
    if len(modes) < 2:
        return None
    body = []
    for r in rows:
        spec = ".3f" if r["metric"] == "idle_share_mean" else ".1f" if "tok_s" in r["metric"] else ".2f"
        cells = [cell(r["metric"], r["values"].get(m), spec) + (winner_mark if m == r["winner"] else "")
                 for m in modes]
        body.append([r["input_len"], r["concurrency"], r["label"], *cells, r["winner"] or "-"])
    return tabulate(body, headers=["in", "conc", "metric", *modes, "winner"], tablefmt="simple",
                    disable_numparse=True, colalign=("right", "right", "left", *(["right"] * len(modes)), "left"))


def study_lines(results: dict[str, Any]) -> list[str]:
    """Lines of study results computed elsewhere (e.g. the TP/PP crossover, a roofline), in results order."""
    return [str(line) for line in results.get("study_lines") or []]


def render_terminal(results: dict[str, Any]) -> str:
    """The full terminal report (verdicts, per-group tables, the server-side table, saturation searches, seed
    study, study lines) as one string."""
    parts = [render_header(results.get("header", {}))]
    starts = engine_starts_line(results)
    if starts:
        parts.append(starts)
    parts += [f"engine restarted: {line}" for line in (results.get("header") or {}).get("engine_restarts") or []]
    parts += ["", render_verdicts(results)]
    for block in _group_tables(results):
        parts += ["", block]
    server = _server_block(results)
    if server is not None:
        parts += ["", server]
    for block in _saturation_blocks(results):
        parts += ["", block]
    seed = _seed_table(results)
    if seed is not None:
        parts += ["", "modes side by side (* = winner: lowest TTFT p95 / TPOT p50, highest out tok/s)",
                  seed]
    if _any_not_measurable(results):
        parts += ["", NOT_MEASURABLE_NOTE]
    lines = study_lines(results)
    if lines:
        parts += ["", "study:", *(f"  {line}" for line in lines)]
    return "\n".join(parts) + "\n"
