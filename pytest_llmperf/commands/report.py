"""``llmperf report RESULTS.json [--out DIR] [--markdown PATH] [--asv DIR --commit SHA]``.

Regenerates every report from a stored session results file: the terminal table (stdout), the plots (into
``--out``, default ``.llmperf/report``), the Markdown summary (``--markdown``; appended when the path is
``$GITHUB_STEP_SUMMARY`` so earlier steps' summaries survive, written otherwise) and, with ``--asv``, an asv
results tree entry for ``--commit``. Exit code: 0 when the stored verdicts pass, 1 on any FAIL, so a workflow
can gate on a stored file too (``--no-gate`` always returns 0).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pytest_llmperf.errors import BaselineError, UsageError

__all__ = ["add_parser", "main"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # noqa: SLF001
    p = subparsers.add_parser("report", help="regenerate terminal table, Markdown, plots and asv export from a "
                                             "stored results file",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("results", metavar="RESULTS.json", help="session results file (pytest --llmperf-results)")
    p.add_argument("--out", metavar="DIR", default=".llmperf/report", help="folder for plots and report.md "
                   "(default: %(default)s)")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown summary here (e.g. "
                   "\"$GITHUB_STEP_SUMMARY\", which is appended to)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--asv", metavar="DIR", help="add these results to an asv results tree in DIR (needs --commit)")
    p.add_argument("--commit", metavar="SHA", help="git commit the results were measured at (for --asv)")
    p.add_argument("--commit-date", metavar="UNIX_S", type=float, help="commit date for --asv, seconds since "
                   "the epoch (default: the results' creation time)")
    p.add_argument("--asv-repo", metavar="PATH", default="..", help="git repository asv reads commits from, "
                   "relative to the asv DIR (default: %(default)s); used when asv.conf.json is first written")
    p.add_argument("--asv-branch", metavar="NAME", action="append", help="branch asv plots (repeatable; "
                   "default: main)")
    p.add_argument("--no-gate", action="store_true", help="exit 0 even when the stored verdicts have a FAIL")
    p.set_defaults(func=main)
    return p


def _write_markdown(path: Path, text: str) -> None:
    append = os.environ.get("GITHUB_STEP_SUMMARY") and Path(os.environ["GITHUB_STEP_SUMMARY"]) == path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a" if append else "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise BaselineError(f"cannot write Markdown report {path}: {exc}") from exc


def main(args: argparse.Namespace) -> int:
    from pytest_llmperf.report.json_io import read_results
    from pytest_llmperf.report.markdown import render_markdown
    from pytest_llmperf.report.terminal import overall_verdict, render_terminal

    if args.asv and not args.commit:
        raise UsageError("--asv needs --commit SHA (the git commit the results were measured at)")
    results = read_results(args.results)
    out_dir = Path(args.out)
    plots: dict[str, str] = {}
    notes: dict[str, str] = {}
    if not args.no_plots:
        from pytest_llmperf.report.plots import make_plots, plot_notes

        plots = make_plots(results, out_dir)
        notes = plot_notes(results)
    text = render_terminal(results)
    for name, why in notes.items():
        text += f"plot {name}: not drawn: {why}\n"
    for name, path in plots.items():
        text += f"plot {name}: {path}\n"
    sys.stdout.write(text)

    # Links in report.md are relative to out_dir; in an external Markdown file they are the paths as written.
    rel = {name: os.path.relpath(path, out_dir) for name, path in plots.items()}
    _write_markdown(out_dir / "report.md", render_markdown(results, rel, notes))
    if args.markdown:
        _write_markdown(Path(args.markdown), render_markdown(results, plots, notes))
    if args.asv:
        from pytest_llmperf.report.asv_export import export_asv

        written = export_asv(args.asv, results, args.commit, args.commit_date, repo=args.asv_repo,
                             branches=args.asv_branch)
        sys.stdout.write(f"asv results: {written} (build the site: cd {args.asv} && asv publish --no-pull)\n")
    return 1 if overall_verdict(results) == "FAIL" and not args.no_gate else 0
