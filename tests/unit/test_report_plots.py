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
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["single", "tp2", "pp2"]
    assert "H200" in fig._suptitle.get_text() and "PCIe emulated" in fig._suptitle.get_text()
    pp2 = next(c for c in ax.containers if c.get_label() == "pp2")  # errorbar container: data line + bars
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
