"""Markdown report for ``$GITHUB_STEP_SUMMARY`` or a pull-request comment.

Order: a title carrying the overall verdict, the regressions and other failures (one line each, the verdict's
own ``message``), the verdict table (each interval with its own confidence level), a metrics table for every
test group, the server's side (vLLM ``/metrics``: the median of the runs' ``server_*`` keys), the saturation
searches (the answer, and each search's points in a ``<details>`` block), the seed-study comparison (a cell that cannot be measured never wins), study lines, the run's
header (hardware or endpoint, emulation, engine version, engine start times, notes) and the plots. GitHub
renders pipe tables; every cell is escaped so a ``|`` in a test id cannot break a row.

Plot links: in a file next to the plots (``summary.md``) they are relative; in ``$GITHUB_STEP_SUMMARY``
local files cannot be shown, so ``plots_note`` replaces the links (e.g. a link to the run's artifacts).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pytest_llmperf.report.server_tables import (
    saturation_lines,
    saturation_points_table,
    saturation_tests,
    server_table,
    server_unavailable_line,
)
from pytest_llmperf.report.terminal import (
    NOT_MEASURABLE_NOTE,
    VERDICT_ORDER,
    cell,
    emulation_text,
    engine_starts_line,
    grouped_rows,
    header_title,
    metric_table,
    no_baseline_line,
    overall_verdict,
    seed_study,
    study_lines,
    verdicts_by_state,
)

__all__ = ["ci_level", "markdown_table", "render_markdown"]

_ICON = {"FAIL": ":x:", "INCONCLUSIVE": ":warning:", "PASS": ":white_check_mark:", "NO_CHECKS": ":grey_question:"}


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A GitHub pipe table; ``align`` is one letter per column (``l``/``r``), default all left."""
    align = align or "l" * len(headers)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: Any, spec: str = ".4g") -> str | None:
    return None if value is None else format(value, spec)


def ci_level(alpha: float | None) -> str | None:
    """The two-sided level of a verdict's ratio interval: the gate's ``ci_low..ci_high`` is the
    ``(1 - 2 alpha)`` interval (two one-sided tests at ``alpha``), e.g. 90% at alpha 0.05, 97.5% at 0.0125."""
    return None if alpha is None else f"{(1 - 2 * float(alpha)) * 100:.4g}%"


def _verdict_table(results: dict[str, Any], states: tuple[str, ...]) -> str | None:
    rows = []
    for state, items in verdicts_by_state(results).items():
        if state not in states:
            continue
        if state == "NO_BASELINE":
            items = [v for v in items if v["metric"] != "*"]  # said once, above the table
        for v in items:
            ratio = v.get("ratio")
            ci = (f"{v['ci_low']:.3f}–{v['ci_high']:.3f}" + (f" ({ci_level(v.get('alpha'))})" if v.get("alpha")
                                                              else "")
                  if v.get("ci_low") is not None and v.get("ci_high") is not None else None)
            rows.append([f"**{state}**" if state in ("FAIL", "INCONCLUSIVE") else state, v["kind"], v["metric"],
                         f"`{v['test_id'].split('::')[-1]}`", _num(v.get("baseline_value")),
                         _num(v.get("candidate_value")), _num(ratio, ".3f"), ci, _num(v.get("p_value"), ".3g")])
    if not rows:
        return None
    return markdown_table(["verdict", "kind", "metric", "test", "baseline", "candidate", "ratio",
                           "ratio CI (level)", "p"], rows, "llllrrrrr")


def _align(align: tuple[str, ...]) -> str:
    return "".join("l" if a == "left" else "r" for a in align)


def _metrics_tables(results: dict[str, Any]) -> list[str]:
    """One table per test group: the same median-of-runs figures as the terminal table."""
    out = []
    for group, rows in grouped_rows(results).items():
        body, headers, align = metric_table(rows)
        out += [f"**`{group}`** (median of K runs)", "",
                markdown_table(headers, body, _align(align)), ""]
    return out[:-1]


def _server_section(results: dict[str, Any]) -> list[str]:
    """The server-side table (median of the runs' ``server_*`` keys) and the line naming the tests without."""
    body, headers, align = server_table([r for rows in grouped_rows(results).values() for r in rows])
    out = []
    if body:
        note = ("Median of K runs; times in ms. The client's TTFT includes the network, HTTP and detokenisation time the "
                "server's does not.")
        out += [note, "", markdown_table(headers, body, _align(align))]
    unavailable = server_unavailable_line(results)
    if unavailable:
        out += ["", unavailable] if out else [unavailable]
    return out


def _saturation_section(results: dict[str, Any]) -> list[str]:
    """Per saturation test: its answer as a list, the points of every search in a ``<details>`` block."""
    out: list[str] = []
    for test in saturation_tests(results):
        title, *lines = saturation_lines(test)
        body, headers, align = saturation_points_table(test)
        name, _, rest = title.partition(": ")
        n = len(test["searches"])
        summary = f"<details><summary>{len(body)} points of {n} search{'es' if n != 1 else ''}</summary>"
        out += [*([""] if out else []), f"**`{name}`**: {rest}", "", *(f"- {line}" for line in lines), "",
                summary, "", markdown_table(headers, body, _align(align)), "", "</details>"]
    return out


def _seed_table(results: dict[str, Any]) -> str | None:
    rows = seed_study(results)
    modes: list[str] = []
    for r in rows:
        modes += [m for m in r["values"] if m not in modes]
    if len(modes) < 2:
        return None
    body = []
    for r in rows:
        spec = ".3f" if r["metric"] == "idle_share_mean" else ".1f" if "tok_s" in r["metric"] else ".2f"
        cells = []
        for m in modes:
            value = r["values"].get(m)
            text = None if value is None else cell(r["metric"], value, spec)
            cells.append(f"**{text}**" if text is not None and m == r["winner"] else text)
        body.append([r["input_len"], r["concurrency"], r["label"], *cells, r["winner"]])
    return markdown_table(["input", "concurrency", "metric", *modes, "winner"], body, "rrl" + "r" * len(modes) + "l")


def _header_lines(results: dict[str, Any]) -> list[str]:
    header, fp = results.get("header", {}), results.get("fingerprint", {})
    emulation = emulation_text(header, "markdown") or "none"
    if header.get("endpoint"):
        lines = [f"- **Measured:** {header_title(header)}; its hardware is not known to this report",
                 f"- **Engine:** {header.get('engine_version') or 'unknown'}"]
    else:
        lines = [f"- **Hardware:** {header.get('topology') or 'unknown'}",
                 f"- **Interconnect emulation:** {emulation}",
                 f"- **Engine:** {header.get('engine_version') or 'unknown'} (backend {header.get('backend') or '?'})"]
    starts = engine_starts_line(results)
    if starts:
        lines.append(f"- **Engine starts:** {starts.split(': ', 1)[1]}")
    lines += [f"- **Engine restarted:** {line}" for line in header.get("engine_restarts") or []]
    extras = [f"{k} `{fp[k]}`" for k in ("driver", "cuda", "model", "dtype") if fp.get(k)]
    if extras:
        lines.append("- **Fingerprint:** " + ", ".join(extras))
    if header.get("plugin_version"):
        lines.append(f"- **pytest-llmperf:** {header['plugin_version']}")
    lines += [f"- **Note:** {note}" for note in results.get("notes") or []]
    return lines


def render_markdown(results: dict[str, Any], plots: dict[str, str] | None = None,
                    plot_notes: dict[str, str] | None = None, *, plots_note: str | None = None) -> str:
    """The Markdown summary. ``plots`` maps a plot name to a path or URL (listed as links);
    ``plot_notes`` maps a plot name to the reason it was not drawn (e.g. no power telemetry);
    ``plots_note`` replaces the links with one line (where local files cannot be linked)."""
    overall = overall_verdict(results)
    grouped = verdicts_by_state(results)
    counts = Counter({s: len(v) for s, v in grouped.items()})
    out = [f"# {_ICON.get(overall, '')} LLM performance: {overall}".replace("#  ", "# "), ""]
    out.append(", ".join(f"{counts[s]} {s}" for s in VERDICT_ORDER if counts[s]) or "No checks ran.")
    failures = grouped.get("FAIL", [])
    if failures:
        out += ["", "## Regressions and SLO breaches", ""]
        out += [f"- {v['message']}" for v in failures]
    if grouped.get("INCONCLUSIVE"):
        out += ["", "## Inconclusive", ""] + [f"- {v['message']}" for v in grouped["INCONCLUSIVE"]]
    whole = [v for v in grouped.get("NO_BASELINE", []) if v["metric"] == "*"]
    if whole:
        out += ["", no_baseline_line(results, len({v["test_id"] for v in whole}), quote="`")]
    not_pass = _verdict_table(results, tuple(s for s in VERDICT_ORDER if s != "PASS"))
    if not_pass is not None:
        out += ["", "## Verdicts", "", not_pass]
    passed = _verdict_table(results, ("PASS",))
    if passed is not None:
        out += ["", f"<details><summary>{counts['PASS']} passing checks</summary>", "", passed, "", "</details>"]
    tables = _metrics_tables(results)
    if tables:
        out += ["", "## Metrics", "", *tables]
    server = _server_section(results)
    if server:
        out += ["", "## Server side (vLLM /metrics)", "", *server]
    saturation = _saturation_section(results)
    if saturation:
        out += ["", "## Saturation search", "", *saturation]
    seed = _seed_table(results)
    if seed is not None:
        out += ["", "## Seed study: modes side by side", "",
                ("Median of the runs per configuration; **bold** marks the winner (lowest TTFT p95 and TPOT p50, "
                 "highest output throughput). GPU idle share is the time below the idle threshold during load "
                 "(pipeline bubbles for PP)."), "", seed]
    if "n/m" in "\n".join(tables) + (seed or ""):
        out += ["", NOT_MEASURABLE_NOTE.replace("n/m:", "*n/m*:", 1)]
    lines = study_lines(results)
    if lines:
        out += ["", "## Study", "", *(f"- {line}" for line in lines)]
    out += ["", "## Run", "", *_header_lines(results)]
    if plots or plot_notes or plots_note:
        out += ["", "## Plots", ""]
        if plots_note:
            out.append(plots_note)
        else:
            for name, path in (plots or {}).items():
                out.append(f"- [{name}]({Path(path).as_posix() if '://' not in str(path) else path})")
        for name, why in (plot_notes or {}).items():
            out.append(f"- {name}: not drawn: {why}")
    return "\n".join(out) + "\n"
