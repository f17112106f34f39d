"""report.markdown: title verdict, failures first, tables GitHub renders, header and plot links."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from pytest_llmperf.report.markdown import markdown_table, render_markdown

SAMPLE = Path(__file__).parent / "fixtures" / "sample_results.json"


@pytest.fixture
def sample() -> dict:
    return json.loads(SAMPLE.read_text())


def test_title_and_failures_first(sample: dict) -> None:
    md = render_markdown(sample, {"throughput": "report/throughput.png"}, {"power": "no telemetry"})
    lines = md.splitlines()
    assert lines[0] == "# :x: LLM performance: FAIL"
    fails = [v["message"] for v in sample["verdicts"] if v["verdict"] == "FAIL"]
    first_table = md.index("| verdict |")
    for msg in fails:
        assert f"- {msg}" in lines and md.index(msg) < first_table
    assert md.index("## Regressions") < md.index("## Verdicts") < md.index("## Seed study") < md.index("## Run")
    assert "- [throughput](report/throughput.png)" in lines
    assert "- power: not drawn: no telemetry" in lines
    assert "PCIe emulated (`NCCL_P2P_DISABLE=1`, custom all-reduce off)" in md and "vllm 0.11.0" in md


def test_tables_are_well_formed(sample: dict) -> None:
    md = render_markdown(sample)
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        rows = block.strip().splitlines()
        widths = {len(re.findall(r"(?<!\\)\|", r)) for r in rows}
        assert len(widths) == 1, block
        assert re.fullmatch(r"\|( (:---|---:) \|)+", rows[1])


def test_seed_winner_bold(sample: dict) -> None:
    md = render_markdown(sample)
    row = next(ln for ln in md.splitlines() if ln.startswith("| 1024 | 8 | out tok/s"))
    assert row.endswith("| pp2 |") and row.count("**") == 2
    assert re.search(r"\| \*\*[0-9.]+\*\* \| pp2 \|$", row)


def test_pipe_escaped() -> None:
    table = markdown_table(["a", "b"], [["x|y", None]])
    assert table.splitlines()[2] == "| x\\|y | – |"


def test_pass_only(sample: dict) -> None:
    data = copy.deepcopy(sample)
    data["verdicts"] = [v for v in data["verdicts"] if v["verdict"] == "PASS"]
    md = render_markdown(data)
    assert md.startswith("# :white_check_mark: LLM performance: PASS")
    assert "## Regressions" not in md and "27 passing checks" in md


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``llmperf report`` regenerates table, plots, report.md, appends to $GITHUB_STEP_SUMMARY, exports asv."""
    import argparse

    from pytest_llmperf.commands import report

    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(SAMPLE), "--out", str(tmp_path / "out"), "--markdown", str(summary),
                              "--asv", str(tmp_path / "asv"), "--commit", "b" * 40])
    assert args.func(args) == 1  # the stored verdicts have a FAIL
    out = capsys.readouterr().out
    assert out.startswith("llmperf: 2x NVIDIA H200") and "plot power:" in out and "asv results:" in out
    assert summary.read_text().startswith("earlier step\n# :x: LLM performance: FAIL")
    assert "- [throughput](throughput.png)" in (tmp_path / "out" / "report.md").read_text()
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {"throughput.png", "ttft_p95.png",
                                                                  "tpot_p50.png", "power.png"}
    assert (tmp_path / "asv" / "results" / "h200x2-pcie-emu" / f"{'b' * 8}-llmperf-gpu-pcie.json").is_file()
    args = parser.parse_args(["report", str(SAMPLE), "--out", str(tmp_path / "o2"), "--no-plots", "--no-gate"])
    assert args.func(args) == 0
    from pytest_llmperf.errors import UsageError

    args = parser.parse_args(["report", str(SAMPLE), "--asv", str(tmp_path / "a2")])
    with pytest.raises(UsageError, match="--asv needs --commit"):
        args.func(args)
