"""report.summary: one writer of summary.md, the plots and the job summary (pytest and ``llmperf report`` alike)."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_llmperf.report.summary import (
    BEGIN,
    END,
    SUMMARY_NAME,
    write_markdown,
    write_reports,
)

CPU = Path(__file__).parent / "fixtures" / "cpu_amd_results.json"
GH = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/serving", "GITHUB_RUN_ID": "42"}


def test_session_writer_then_cli_writer_leave_one_summary(tmp_path: Path) -> None:
    results = json.loads(CPU.read_text())
    step = tmp_path / "step_summary.md"
    step.write_text("## Setup\nok\n")
    env = {"GITHUB_STEP_SUMMARY": str(step), **GH}
    first = write_reports(results, tmp_path / "report", env=env)  # what the pytest session does
    assert first.summary == tmp_path / "report" / SUMMARY_NAME
    after_pytest = step.read_text()
    # what `llmperf report RESULTS --markdown "$GITHUB_STEP_SUMMARY"` does next in the same job
    write_reports(results, tmp_path / "report", markdown=step, step_summary=False, env=env)
    text = step.read_text()
    assert text == after_pytest and text.count(BEGIN) == 1 and text.count("LLM performance") == 1
    assert text.startswith("## Setup\nok\n" + BEGIN)
    # plots: no relative links in the job summary, a link to the run's artifacts instead
    assert "](throughput.png)" not in text
    assert "[this run's artifacts](https://github.com/acme/serving/actions/runs/42#artifacts)" in text
    assert "- [throughput](throughput.png)" in first.summary.read_text()


def test_cli_does_not_write_the_job_summary_unasked(tmp_path: Path) -> None:
    step = tmp_path / "step_summary.md"
    write_reports(json.loads(CPU.read_text()), tmp_path / "r", plots=False, step_summary=False,
                  env={"GITHUB_STEP_SUMMARY": str(step)})
    assert not step.exists()


def test_markdown_elsewhere_links_relative_to_itself(tmp_path: Path) -> None:
    files = write_reports(json.loads(CPU.read_text()), tmp_path / "report", markdown=tmp_path / "pr" / "body.md",
                          env={})
    body = (tmp_path / "pr" / "body.md").read_text()
    assert "- [throughput](../report/throughput.png)" in body and files.plots


def test_block_replaced_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "s.md"
    path.write_text("before\n")
    write_markdown(path, "one\n", block=True)
    path.write_text(path.read_text() + "after\n")
    write_markdown(path, "two\n", block=True)
    assert path.read_text() == f"before\n{BEGIN}\ntwo\n{END}\nafter\n"
