"""report.plots: the four seed-study figures are written, readable, and the power plot is omitted with a reason."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmperf.report.plots import make_plots, plot_notes

SAMPLE = Path(__file__).parent / "fixtures" / "sample_results.json"
CPU = Path(__file__).parent / "fixtures" / "cpu_intel_results.json"


@pytest.fixture
def sample() -> dict:
    return json.loads(SAMPLE.read_text())


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_all_four_figures(tmp_path: Path, sample: dict) -> None:
    plots = make_plots(sample, tmp_path)
    assert set(plots) == {"throughput", "ttft_p95", "tpot_p50", "power"}
    for path in plots.values():
        w, h = _png_size(Path(path))
        assert w >= 800 and h >= 400
    assert plot_notes(sample) == {}


def test_figure_content(tmp_path: Path, sample: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inspect the drawn axes: log2 x, labels with units, one line per mode, hardware in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    make_plots(sample, tmp_path)
    by_title = {f._suptitle.get_text().splitlines()[0]: f for f in figs}
    fig = by_title["Output throughput vs concurrency"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "concurrency" in ax.get_xlabel()
    assert ax.get_ylabel() == "output throughput (tokens/s)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    # the error bars say what they span; the gate's baseline medians are drawn per mode
    assert [t for t in legend if "median, bars" in t] == [f"{m}: median, bars min-max of 2 runs"
                                                          for m in ("single", "tp2", "pp2")]
    assert [t for t in legend if "baseline" in t] == [f"{m} baseline (median)" for m in ("single", "tp2", "pp2")]
    assert "H200" in fig._suptitle.get_text() and "PCIe emulated" in fig._suptitle.get_text()
    pp2 = next(c for c in ax.containers if c.get_label().startswith("pp2:"))  # errorbar: data line + bars
    assert list(pp2.lines[0].get_xdata()) == [1, 4, 8]
    power = by_title["GPU power over time (instant power)"]
    assert len(power.axes) == 2 and power.axes[0].get_ylabel() == "power (W)"
    assert [t.get_text() for t in power.axes[1].get_legend().get_texts()] == ["GPU 0", "GPU 1", "load window"]


def test_no_traces_no_power_plot(tmp_path: Path, sample: dict) -> None:
    data = copy.deepcopy(sample)
    data["telemetry_traces"] = {}
    data["header"]["backend"] = "cpu"
    plots = make_plots(data, tmp_path)
    assert "power" not in plots and not (tmp_path / "power.png").exists()
    assert "no power telemetry" in plot_notes(data)["power"] and "CPU backend" in plot_notes(data)["power"]


def test_plots_module_import_is_light() -> None:
    code = "import sys, pytest_llmperf.report.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _figures(results: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: list = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    make_plots(results, tmp_path)
    return {f._suptitle.get_text().splitlines()[0]: f for f in figs}


def test_slo_line_and_baseline_band(tmp_path: Path, sample: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    data = copy.deepcopy(sample)
    for t in data["tests"]:
        t["gate"] = {"tolerance": 0.10}  # the settings each test was gated with (TestResult.gate)
    ax = _figures(data, tmp_path, monkeypatch)["Time to first token, p95 vs concurrency"].axes[0]
    slo = [ln for ln in ax.get_lines() if ln.get_label().startswith("SLO")]
    limits = {v["baseline_value"] for v in data["verdicts"] if v["kind"] == "slo" and v["metric"] == "ttft_p95_ms"}
    assert [ln.get_label() for ln in slo] == [f"SLO <= {limit:g} ms" for limit in sorted(limits)]
    assert list(slo[0].get_ydata()) == [min(limits)] * 2
    band = next(c for c in ax.collections if c.get_label() == "tp2 baseline tolerance")
    tp2 = sorted((t["workload"]["concurrency"], v["baseline_value"]) for t in data["tests"]
                 for v in data["verdicts"] if v["test_id"] == t["test_id"] and v["metric"] == "ttft_p95_ms"
                 and v["kind"] == "regression" and v["baseline_value"] is not None and t["engine"]["tp"] == 2)
    ys = band.get_paths()[0].vertices[:, 1]
    # the band spans the baseline median up to the tolerance limit (lower is better: x 1.1)
    assert max(ys) == pytest.approx(max(b for _, b in tp2) * 1.10) and min(ys) == pytest.approx(min(b for _, b in tp2))


def test_length_range_beside_fixed_lengths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """input_len "16:512" and 32 in one session: one panel each (the range was a TypeError in sorting), and a
    burst-delivered TPOT of 0 is not drawn as a (winning) point."""
    data = json.loads(CPU.read_text())
    figs = _figures(data, tmp_path, monkeypatch)
    ttft = figs["Time to first token, p95 vs concurrency"]
    assert [ax.get_title() for ax in ttft.axes] == ["input 16:512 tokens", "input 32 tokens"]
    tpot = figs["Time per output token, p50 vs concurrency"].axes[1]
    labels = [c.get_label() for c in tpot.containers]
    assert labels == ["single: median, bars min-max of 3 runs"]  # tp2's TPOT runs are all 0: not measurable
    assert "no GPU (CPU backend)" in ttft._suptitle.get_text()


def test_endpoint_title(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.loads(CPU.read_text())
    data["header"].update(endpoint="http://10.0.0.5:8000/v1", engine_version="unknown")
    title = _figures(data, tmp_path, monkeypatch)["Output throughput vs concurrency"]._suptitle.get_text()
    assert "external endpoint http://10.0.0.5:8000/v1 (model tiny-llama)" in title
    assert "CPU backend" not in title and "unknown" not in title
