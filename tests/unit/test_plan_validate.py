"""The planner against the study's committed 2 x H200 results: the validation the docs report, and the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pytest_llmperf.commands import plan as plan_cmd
from pytest_llmperf.errors import UsageError
from pytest_llmperf.models.arch import preset_arch
from pytest_llmperf.plan.data import measured_points
from pytest_llmperf.report.json_io import load_results_any
from pytest_llmperf.plan.predict import DEFAULT_OVERHEAD
from pytest_llmperf.plan.validate import Validation, markdown_table, validate

ROOT = Path(__file__).parents[2]
DATA = sorted((ROOT / "docs" / "gpu-results" / "data").glob("results-*.json.gz"))
pytestmark = pytest.mark.skipif(len(DATA) < 4, reason="the study's results files are not in this checkout")


@pytest.fixture(scope="module")
def validation() -> Validation:
    points = measured_points([load_results_any(p) for p in DATA])
    return validate(preset_arch("deepseek-r1-distill-qwen-14b"), points)


def test_tpot_within_the_stated_error_below_saturation(validation: Validation) -> None:
    worst = validation.max_abs_error("tpot_ms", (1, 8))
    assert worst is not None
    assert worst <= 0.15
    modes = {(r.calibrated_on, r.predicted_on, r.mode) for r in validation.rows}
    assert {("NVLink", "emulated PCIe", "tp2"), ("emulated PCIe", "NVLink", "tp2"),
            ("NVLink", "emulated PCIe", "pp2")} <= modes


def test_docs_show_the_table_the_command_prints(validation: Validation) -> None:
    assert markdown_table(validation) in (ROOT / "docs" / "planner.md").read_text()


def test_default_overhead_is_the_nvlink_calibration(validation: Validation) -> None:
    nvlink = validation.calibrations["tp2 on NVLink"]
    for c, share in DEFAULT_OVERHEAD.tpot_share:
        assert nvlink.tpot_share_at(c) == pytest.approx(share, abs=0.002)
    for c, share in DEFAULT_OVERHEAD.ttft_share:
        assert nvlink.ttft_share_at(c) == pytest.approx(share, abs=0.002)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="llmperf")
    plan_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", *argv])
    rc = args.func(args)
    return rc, capsys.readouterr().out


def test_cli_validate_passes_and_fails_on_tolerance(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _run(capsys, *map(str, DATA), "--validate")
    assert rc == 0
    assert "validation PASS" in out
    rc, out = _run(capsys, *map(str, DATA), "--validate", "--tolerance", "0.01")
    assert rc == 1
    assert "validation FAIL" in out


def test_cli_predicts_tp_on_a_preset(capsys: pytest.CaptureFixture[str]) -> None:
    single = str(next(p for p in DATA if "single" in p.name))
    rc, out = _run(capsys, single, "--tp", "2", "--link", "pcie4-nop2p", "--concurrency", "1,4")
    rows = [line.split() for line in out.splitlines() if line.startswith("tp2 ")]
    assert rc == 0
    assert [r[1] for r in rows] == ["1", "4"]
    assert float(rows[0][2]) < 9.2  # TP=2 beats the single GPU's 9.2 ms at concurrency 1
    rc, out = _run(capsys, *map(str, DATA), "--what-if", "--slo-tpot-ms", "8")
    assert "pp2 does not overtake tp2" in out
    assert "measured (from RESULTS):" in out


def test_cli_names_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    single = str(next(p for p in DATA if "single" in p.name))
    with pytest.raises(UsageError, match="give --tp N or --pp N"):
        _run(capsys, single)
    with pytest.raises(UsageError, match="needs both --bandwidth-gbs and --latency-us"):
        _run(capsys, single, "--tp", "2", "--bandwidth-gbs", "10")
    with pytest.raises(UsageError, match="pick one with --calibrate-link"):
        _run(capsys, *map(str, DATA), "--tp", "2", "--calibrate", "nvlink4")
    with pytest.raises(UsageError, match="unknown preset 'nope'"):
        _run(capsys, single, "--tp", "2", "--model", "nope")
    with pytest.raises(UsageError, match=r"TP=3 does not split the model's 40 attention heads / 8 KV heads evenly "
                                         r"\(vLLM refuses it\); TP sizes that do: 2, 4, 8"):
        _run(capsys, single, "--tp", "3")
    bad = tmp_path / "x.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(UsageError, match="x.json.gz: cannot read: Not a gzipped file"):
        _run(capsys, str(bad), "--tp", "2")


def test_cli_calibration_reproduces_the_run_it_came_from(capsys: pytest.CaptureFixture[str]) -> None:
    """Calibrated on the NVLink TP=2 runs, a TP=2 prediction on the NVLink preset gives back their medians."""
    points = measured_points([load_results_any(p) for p in DATA])
    measured = {p.concurrency: p.tpot_ms for p in points if p.link == "NVLink" and p.mode == "tp2"}
    rc, out = _run(capsys, *map(str, DATA), "--tp", "2", "--link", "nvlink4", "--calibrate", "nvlink4",
                   "--calibrate-link", "NVLink")
    predicted = {int(r[1]): float(r[2]) for r in (line.split() for line in out.splitlines())
                 if r and r[0] == "tp2"}
    assert rc == 0
    assert "calibrated on a TP=2 run over NVLink 4" in out
    assert predicted == pytest.approx(measured, abs=0.006)  # printed with 2 decimals


def test_cli_model_from_a_config_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    single = str(next(p for p in DATA if "single" in p.name))
    config = ROOT / "pytest_llmperf" / "models" / "configs" / "deepseek-r1-distill-qwen-14b.json"
    (tmp_path / "config.json").write_text(config.read_text())
    _, by_preset = _run(capsys, single, "--pp", "2")
    _, by_path = _run(capsys, single, "--pp", "2", "--model", str(tmp_path))
    assert by_preset == by_path
    assert "pp2" in by_path


def test_replicated_and_expert_parallel_engines_are_not_planner_points() -> None:
    """A DP=2 engine has tp=1, pp=1: counted, it would be a 'single' GPU point and move every calibration (the
    study's DP=2 file moved the NVLink TP share at concurrency 1 from 0.085 to 0.131 before it was left out)."""
    run = {"summary": {"tpot_p50_ms": 9.0, "ttft_p50_ms": 40.0, "output_throughput_tok_s": 100.0}}

    def test(**engine: object) -> dict:
        return {"test_id": "t", "runs": [run], "engine": {"tp": 1, "pp": 1, **engine},
                "workload": {"concurrency": 1, "input_len": 512, "output_len": 128}}

    results = {"fingerprint": {"gpu_model": "NVIDIA H200"},
               "tests": [test(), test(dp=2), test(tp=2, expert_parallel=True)]}
    assert [p.mode for p in measured_points([results])] == ["single"]


def test_cli_refuses_to_mix_models(capsys: pytest.CaptureFixture[str]) -> None:
    """The MoE preset's single-GPU run beside the dense study: the planner models one model, named with --model."""
    moe = ROOT / "docs" / "gpu-results" / "data" / "moe" / "results-moe-single-1xh200.json.gz"
    with pytest.raises(UsageError, match=r"2 models \(deepseek-r1-distill-qwen-14b, qwen3-30b-a3b\).*give --model"):
        _run(capsys, *map(str, DATA), str(moe), "--validate")
    rc, out = _run(capsys, *map(str, DATA), str(moe), "--validate", "--model", "deepseek-r1-distill-qwen-14b")
    assert rc == 0 and "validation PASS" in out
    with pytest.raises(UsageError, match=r"qwen3-30b-a3b: a mixture of experts \(128 experts\)"):
        _run(capsys, str(moe), "--tp", "2", "--link", "pcie4-nop2p")
