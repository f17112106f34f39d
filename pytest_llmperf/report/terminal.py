"""Terminal report: verdicts first, one table per test group, then the seed-study comparison.

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

__all__ = [
    "render_terminal",
    "render_header",
    "render_verdicts",
    "group_name",
    "mode_label",
    "config_rows",
    "seed_study",
    "verdicts_by_state",
    "overall_verdict",
    "SEED_METRICS",
    "VERDICT_ORDER",
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
    ("power W", "power_total_mean_w", ".0f"),
    ("power CV", "power_cv_max", ".3f"),
)
_GPU_KEY = re.compile(r"^gpu(\d+)_(power_mean_w|power_cv|idle_share)$")
_EMULATION_TEXT = {"pcie": "PCIe emulated: NCCL_P2P_DISABLE=1, custom all-reduce off"}


def group_name(test_id: str) -> str:
    """The test function name of a pytest node id: ``a/b.py::Cls::test_x[p1-p2]`` -> ``test_x``."""
    return test_id.split("::")[-1].split("[", 1)[0]


def mode_label(engine: dict[str, Any]) -> str:
    """``single``, ``tp2``, ``pp2`` or ``tp2pp2`` from an engine dict."""
    tp, pp = int(engine.get("tp") or 1), int(engine.get("pp") or 1)
    if tp == 1 and pp == 1:
        return "single"
    return ("" if tp == 1 else f"tp{tp}") + ("" if pp == 1 else f"pp{pp}")


def _median(values: list[float]) -> float | None:
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
            "concurrency": wl.get("concurrency"), "input_len": wl.get("input_len"),
            "output_len": wl.get("output_len"), "k": len(runs), "median": _derived(med),
        })
    return rows


def _mode_sort_key(mode: str) -> tuple[int, str]:
    return ({"single": 0}.get(mode, 1 if mode.startswith("tp") else 2), mode)


def seed_study(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (input length, concurrency, metric): each mode's median and the winner.

    Rows hold ``input_len, concurrency, metric, label, better, values {mode: value}, winner`` and, after the
    metric rows of each point, an ``idle share`` row (winner None) when any mode has GPU idle-share data.
    When several tests share a mode and point (different groups), the first one in the file is used.
    """
    points: dict[tuple[Any, Any], dict[str, dict[str, Any]]] = {}
    for row in config_rows(results):
        points.setdefault((row["input_len"], row["concurrency"]), {}).setdefault(row["mode"], row["median"])
    out = []
    for (input_len, conc) in sorted(points, key=lambda p: (p[0] or 0, p[1] or 0)):
        modes = dict(sorted(points[(input_len, conc)].items(), key=lambda kv: _mode_sort_key(kv[0])))
        for key, label, better in SEED_METRICS:
            values = {m: med.get(key) for m, med in modes.items()}
            present = {m: v for m, v in values.items() if v is not None}
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


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_header(header: dict[str, Any]) -> str:
    """One line: topology, engine version, backend and (if any) interconnect emulation."""
    parts = [f"llmperf: {header.get('topology') or 'unknown topology'}",
             f"engine {header.get('engine_version') or 'unknown'}", f"backend {header.get('backend') or '?'}"]
    emulation = header.get("emulation")
    if emulation:
        parts.append(_EMULATION_TEXT.get(emulation, f"emulation {emulation}"))
    return " | ".join(parts)


def render_verdicts(results: dict[str, Any]) -> str:
    """FAIL and INCONCLUSIVE lines in full, then the other non-PASS lines, then the count per state."""
    grouped = verdicts_by_state(results)
    lines = []
    for state in ("FAIL", "INCONCLUSIVE", "NO_BASELINE", "MISMATCH", "SKIPPED"):
        lines += [f"{v['message']}" if v["message"].startswith(state) else f"{state} {v['message']}"
                  for v in grouped.get(state, [])]
    counts = Counter({s: len(v) for s, v in grouped.items()})
    summary = ", ".join(f"{counts[s]} {s}" for s in VERDICT_ORDER if counts[s]) or "no checks ran"
    lines.append(f"verdicts: {summary} -> {overall_verdict(results)}")
    return "\n".join(lines)


def _group_tables(results: dict[str, Any]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in config_rows(results):
        groups.setdefault(row["group"], []).append(row)
    blocks = []
    for group, rows in groups.items():
        rows.sort(key=lambda r: (_mode_sort_key(r["mode"]), r["concurrency"] or 0, r["input_len"] or 0))
        cols = [c for c in TABLE_COLUMNS if any(r["median"].get(c[1]) is not None for r in rows)]
        body = [[r["mode"], r["concurrency"], r["input_len"], r["k"],
                 *(_fmt(r["median"].get(key), spec) for _, key, spec in cols)] for r in rows]
        table = tabulate(body, headers=["mode", "conc", "in", "K", *(c[0] for c in cols)],
                         tablefmt="simple", disable_numparse=True,
                         colalign=("left", *(["right"] * (3 + len(cols)))))
        blocks.append(f"{group} (median of K runs)\n{table}")
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
        cells = [_fmt(r["values"].get(m), spec) + (winner_mark if m == r["winner"] else "") for m in modes]
        body.append([r["input_len"], r["concurrency"], r["label"], *cells, r["winner"] or "-"])
    return tabulate(body, headers=["in", "conc", "metric", *modes, "winner"], tablefmt="simple",
                    disable_numparse=True, colalign=("right", "right", "left", *(["right"] * len(modes)), "left"))


def render_terminal(results: dict[str, Any]) -> str:
    """The full terminal report (verdicts, per-group tables, seed study) as one string."""
    parts = [render_header(results.get("header", {})), "", render_verdicts(results)]
    for block in _group_tables(results):
        parts += ["", block]
    seed = _seed_table(results)
    if seed is not None:
        parts += ["", "seed study: modes side by side (* = winner: lowest TTFT p95 / TPOT p50, highest out tok/s)",
                  seed]
    return "\n".join(parts) + "\n"
