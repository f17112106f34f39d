"""``llmperf report RESULTS.json [RESULTS.json ...] [--out DIR] [--markdown PATH] [--asv DIR --commit SHA]``.

Regenerates every report from stored session results files (.json or .json.gz; several files, e.g. a study
recorded in several sessions, are reported as one: their tests together, the study lines computed over all of
them): the terminal table (stdout), the plots and
summary.md (into --out, default .llmperf/report: the same files the pytest session writes), the Markdown
summary also to --markdown PATH (in $GITHUB_STEP_SUMMARY as one block that replaces an earlier one, so a job
never shows it twice) and, with --asv, an asv results tree entry for --commit. Exit code: 0 when the stored
verdicts pass, 1 on any FAIL, so a workflow can gate on a stored file too (--no-gate always returns 0).
"""

from __future__ import annotations

import argparse
import sys

from pytest_llmperf.errors import UsageError

__all__ = ["add_parser", "main"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="regenerate terminal table, Markdown, plots and asv export from a "
                                             "stored results file",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("results", metavar="RESULTS.json", nargs="+", help="session results files (pytest "
                   "--llmperf-results, llmperf run --json; .json.gz too)")
    p.add_argument("--out", metavar="DIR", default=".llmperf/report", help="folder for plots and summary.md "
                   "(default: %(default)s)")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown summary here; \"$GITHUB_STEP_SUMMARY\" "
                   "gets it as one block, replacing the one pytest wrote")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--asv", metavar="DIR", help="add these results to an asv results tree in DIR (needs --commit)")
    p.add_argument("--commit", metavar="SHA", help="git commit the results were measured at (for --asv)")
    p.add_argument("--commit-date", metavar="UNIX_S", type=float, help="commit date for --asv, seconds since "
                   "the epoch (default: the results' creation time)")
    p.add_argument("--asv-repo", metavar="PATH", default="..", help="git repository asv reads commits from, "
                   "relative to the asv DIR (default: %(default)s); used when asv.conf.json is first written")
    p.add_argument("--asv-branch", metavar="NAME", action="append", help="branch asv plots (repeatable; "
                   "default: the branch checked out in the repository, else its default branch)")
    p.add_argument("--asv-project", metavar="NAME", help="project name on the asv pages (default: "
                   "pytest-llmperf, or what asv.conf.json already says)")
    p.add_argument("--asv-machine", metavar="NAME", help="asv machine name (default: the fingerprint's hardware "
                   "class, e.g. cpu-amd-epyc-7r13-2c or gpu-2xh200-nvlink)")
    p.add_argument("--no-gate", action="store_true", help="exit 0 even when the stored verdicts have a FAIL")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from pytest_llmperf.report.json_io import load_results_any, merge_results
    from pytest_llmperf.report.summary import write_reports
    from pytest_llmperf.report.terminal import overall_verdict, render_terminal

    if args.asv and not args.commit:
        raise UsageError("--asv needs --commit SHA (the git commit the results were measured at)")
    parts = [load_results_any(path) for path in args.results]
    results = merge_results(parts)
    lines = _study_lines(parts)
    results["study_lines"] = list(dict.fromkeys([*(results.get("study_lines") or []), *lines]))
    files = write_reports(results, args.out, plots=not args.no_plots, markdown=args.markdown, step_summary=False)
    text = render_terminal(results)
    text += "".join(f"note: {note}\n" for note in results.get("notes") or [])
    text += "".join(f"plot {name}: not drawn: {why}\n" for name, why in files.plot_notes.items())
    text += "".join(f"plot {name}: {path}\n" for name, path in files.plots.items())
    text += "".join(f"{line}\n" for line in files.messages)
    if results.get("verdicts"):
        text += ("verdicts: as judged when the session ran; against the baselines as they are now: "
                 "llmperf baseline update RESULTS.json --dry-run\n")
    sys.stdout.write(text)
    if args.asv:
        from pytest_llmperf.report.asv_export import export_asv

        for part in parts:  # each session keeps its own machine (fingerprint)
            written = export_asv(args.asv, part, args.commit, args.commit_date, repo=args.asv_repo,
                                 branches=args.asv_branch, project=args.asv_project, machine=args.asv_machine)
            sys.stdout.write(f"asv results: {written} (build the site: cd {args.asv} && asv publish --no-pull)\n")
    return 1 if overall_verdict(results) == "FAIL" and not args.no_gate else 0


def _study_lines(parts: list[dict]) -> list[str]:
    """The study's sentences (TP/PP crossover, roofline) over every file; none where the data hold no study."""
    from pytest_llmperf.report.study import study_lines

    return study_lines(parts)
