"""The one writer of the report files: ``summary.md`` and the plots in the report folder, and the job summary.

Both the pytest session (at its end) and ``llmperf report`` call :func:`write_reports`, so they write the
same files under the same names. The pytest session writes the job summary (``$GITHUB_STEP_SUMMARY``) when it
is set; ``llmperf report`` only when asked (``--markdown "$GITHUB_STEP_SUMMARY"``). Either way it goes inside
``<!-- llmperf-summary -->`` markers, so a second writer in the same job replaces the block instead of adding
a copy.
A job summary cannot show files of the runner, so there the plot links are replaced by a link to the run's
artifacts (``GITHUB_SERVER_URL/GITHUB_REPOSITORY/actions/runs/GITHUB_RUN_ID``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import BaselineError

__all__ = ["BEGIN", "END", "SUMMARY_NAME", "ReportFiles", "step_summary_note", "write_markdown", "write_reports"]

SUMMARY_NAME = "summary.md"
BEGIN = "<!-- llmperf-summary:begin -->"
END = "<!-- llmperf-summary:end -->"


@dataclass
class ReportFiles:
    """What :func:`write_reports` wrote: the summary, the plots drawn, the plots not drawn (with the reason)
    and one line per file for the user."""

    summary: Path
    plots: dict[str, str] = field(default_factory=dict)
    plot_notes: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def step_summary_note(plots: Mapping[str, str], env: Mapping[str, str] | None = None) -> str | None:
    """The line that stands for the plots in a GitHub job summary (None when no plot was drawn)."""
    if not plots:
        return None
    env = os.environ if env is None else env
    names = ", ".join(f"`{Path(p).name}`" for p in plots.values())
    server, repo, run_id = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if server and repo and run_id:
        url = f"{server.rstrip('/')}/{repo}/actions/runs/{run_id}#artifacts"
        return f"The plots ({names}) are in [this run's artifacts]({url}); a job summary cannot show runner files."
    return f"The plots ({names}) are next to `{SUMMARY_NAME}` in the report folder; a job summary cannot show them."


def _is_step_summary(path: Path, env: Mapping[str, str]) -> bool:
    target = env.get("GITHUB_STEP_SUMMARY")
    return target is not None and target != "" and Path(target).resolve() == path.resolve()


def write_markdown(path: str | os.PathLike[str], text: str, *, block: bool = False) -> Path:
    """Write ``text`` to ``path``; with ``block``, as a marked block that replaces an earlier block in the file
    (kept: everything outside it), appended when the file has none."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if not block:
            p.write_text(text, encoding="utf-8")
            return p
        old = p.read_text(encoding="utf-8") if p.exists() else ""
        new = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
        start, end = old.find(BEGIN), old.find(END)
        if start >= 0 and end > start:
            old = old[:start] + new + old[end + len(END):].lstrip("\n")
            p.write_text(old, encoding="utf-8")
        else:
            with p.open("a", encoding="utf-8") as fh:
                fh.write(("\n" if old and not old.endswith("\n") else "") + new)
    except OSError as exc:
        raise BaselineError(f"cannot write Markdown report {p}: {exc}") from exc
    return p


def _draw(results: dict[str, Any], out: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    from pytest_llmperf.report.plots import (
        MISSING_MATPLOTLIB,
        make_plots,
        plot_notes,
        plots_available,
    )

    if not plots_available():
        return {}, {"all plots": MISSING_MATPLOTLIB}, []
    try:
        return make_plots(results, out), plot_notes(results), []
    except Exception as exc:  # noqa: BLE001 - a broken plot must not lose the results or the summary
        return {}, {}, [f"llmperf: plots failed: {exc!r}"]


def write_reports(results: dict[str, Any], out_dir: str | os.PathLike[str], *, plots: bool = True,
                  markdown: str | os.PathLike[str] | None = None, step_summary: bool = True,
                  env: Mapping[str, str] | None = None) -> ReportFiles:
    """Draw the plots and write ``out_dir/summary.md``; also the job summary when ``step_summary`` and
    ``$GITHUB_STEP_SUMMARY`` is set, and ``markdown`` (any path; the job summary's path is recognised and
    written as the block, once)."""
    from pytest_llmperf.report.markdown import render_markdown

    env = os.environ if env is None else env
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn, notes, messages = _draw(results, out) if plots else ({}, {}, [])
    summary = write_markdown(out / SUMMARY_NAME, render_markdown(
        results, {k: os.path.relpath(v, out) for k, v in drawn.items()}, notes))
    files = ReportFiles(summary, drawn, notes, messages)
    files.messages.append(f"llmperf: report written to {out}/ ({SUMMARY_NAME}, {len(drawn)} plots)")
    targets = [Path(env["GITHUB_STEP_SUMMARY"])] if step_summary and env.get("GITHUB_STEP_SUMMARY") else []
    if markdown is not None and not any(Path(markdown).resolve() == t.resolve() for t in targets):
        targets.append(Path(markdown))
    for target in targets:
        if _is_step_summary(target, env):
            text = render_markdown(results, drawn, notes, plots_note=step_summary_note(drawn, env))
            write_markdown(target, text, block=True)
            files.messages.append("llmperf: job summary written ($GITHUB_STEP_SUMMARY)")
        else:
            rel = {k: os.path.relpath(Path(v).resolve(), target.resolve().parent) for k, v in drawn.items()}
            write_markdown(target, render_markdown(results, rel, notes))
            files.messages.append(f"llmperf: Markdown summary written to {target}")
    return files
