"""The ``llmperf`` command line surface: --version, and help texts without reStructuredText markup."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from pytest_llmperf import __version__, cli
from pytest_llmperf.commands import COMMANDS

RST = re.compile(r"``|:(?:func|class|meth|mod|attr|data|exc|obj):`")


def _parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _parsers(sub)
    return out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"llmperf (pytest-llmperf) {__version__}"


def test_every_help_text_is_plain() -> None:
    parsers = _parsers(cli.build_parser())
    assert {prog.split()[1] for prog, _ in parsers if len(prog.split()) > 1} == set(COMMANDS)
    for prog, parser in parsers:
        text = parser.format_help()
        assert not RST.search(text), f"{prog} --help shows RST markup:\n{text}"


def test_report_help_keeps_the_words() -> None:
    """The markup goes, the text stays: the report description names the job summary variable plainly."""
    parser = dict(_parsers(cli.build_parser()))["llmperf report"]
    assert "$GITHUB_STEP_SUMMARY" in parser.format_help()


@pytest.mark.parametrize(("rst", "plain"), [
    ("``llmperf compare A.json B.json``: gate", "llmperf compare A.json B.json: gate"),
    ("see :func:`~pytest_llmperf.stats.decision.decide_all` and :class:`Verdict`", "see decide_all and Verdict"),
    ("no markup", "no markup"),
])
def test_plain_text(rst: str, plain: str) -> None:
    assert cli.plain_text(rst) == plain


def test_baseline_update_help_names_real_options() -> None:
    text = dict(_parsers(cli.build_parser()))["llmperf baseline update"].format_help()
    assert "--llmperf-json" not in text


def test_a_reader_that_leaves_early_stops_the_command_quietly(tmp_path: Path) -> None:
    """``llmperf report ... | head``: the pipe closes before the report is written; no traceback, exit 141."""
    import subprocess
    import sys

    data = Path(__file__).parents[2] / "docs" / "gpu-results" / "data" / "results-single.json.gz"
    proc = subprocess.Popen([sys.executable, "-m", "pytest_llmperf.cli", "report", str(data), "--no-plots", "--out",
                             str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line (reading the file takes the child longer)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err
