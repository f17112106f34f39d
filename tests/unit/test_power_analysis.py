"""Power analysis on the real H200 NVML traces in tests/data, plus properties of the pure parts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.records import LoadWindow
from pytest_llmperf.telemetry.power import (
    IDLE_MARGIN_W,
    analyze_power,
    detect_active_window,
    power_summary,
    throttle_reason_names,
)
from pytest_llmperf.telemetry.sampler import PowerTrace

DATA = Path(__file__).resolve().parents[1] / "data"
SINGLE = "nvml_h200_single_cudagraphs_c32.csv"
PP_C1 = "nvml_h200x2_pp2_nop2p_eager_c1.csv"
PP_C32 = "nvml_h200x2_pp2_nop2p_eager_c32.csv"


def load(name: str) -> PowerTrace:
    return PowerTrace.from_csv(DATA / name)


def load_window_from_data(trace: PowerTrace, rise_w: float = 50.0) -> LoadWindow:
    """Where GPU 0's instant power first and last exceeds its first-5-seconds median by ``rise_w``."""
    cols = trace.for_gpu(0)
    t, p = cols["t_unix_s"], cols["power_w"]
    floor = np.median(p[t < t[0] + 5.0])
    hot = np.nonzero(p > floor + rise_w)[0]
    return LoadWindow(float(t[hot[0]]), float(t[hot[-1]]))


@pytest.fixture(scope="module", params=[SINGLE, PP_C1, PP_C32])
def any_trace(request: pytest.FixtureRequest) -> tuple[PowerTrace, LoadWindow]:
    trace = load(request.param)
    return trace, load_window_from_data(trace)


def test_traces_start_with_about_20s_idle(any_trace: tuple[PowerTrace, LoadWindow]) -> None:
    trace, window = any_trace
    assert 15.0 < window.start_unix_s - trace.t_unix_s.min() < 25.0
    assert window.duration_s > 10.0


def test_detect_active_window_matches_the_data(any_trace: tuple[PowerTrace, LoadWindow]) -> None:
    trace, window = any_trace
    found = detect_active_window(trace)
    assert found is not None
    assert abs(found.start_unix_s - window.start_unix_s) < 2.0
    assert abs(found.end_unix_s - window.end_unix_s) < 2.0


def test_energy_counter_and_integral_agree_within_3_percent(any_trace: tuple[PowerTrace, LoadWindow]) -> None:
    trace, window = any_trace
    report = analyze_power(trace, window, output_tokens=1000)
    assert len(report.gpus) == 2
    for g in report.gpus:
        assert g.energy_source == "counter"
        assert g.counter_vs_integral_pct is not None and abs(g.counter_vs_integral_pct) < 3.0
        # energy ~ mean power x duration
        assert g.energy_j == pytest.approx(g.mean_power_w * window.duration_s, rel=0.05)
    assert report.energy_j == pytest.approx(sum(g.energy_j for g in report.gpus))
    assert report.energy_per_output_token_j == pytest.approx(report.energy_j / 1000)
    assert report.missing == ()


def test_pp_prefill_spikes_hidden_by_one_second_average() -> None:
    trace = load(PP_C32)
    window = load_window_from_data(trace)
    for gpu in (0, 1):
        cols = trace.for_gpu(gpu)
        w = (cols["t_unix_s"] >= window.start_unix_s) & (cols["t_unix_s"] <= window.end_unix_s)
        peak_inst, peak_avg = cols["power_w"][w].max(), cols["power_avg_w"][w].max()
        assert peak_inst > 800.0  # the ~850 W prefill spikes
        assert peak_avg < 450.0
        assert peak_inst > 1.8 * peak_avg


def test_pp_prefill_spikes_repeat_about_every_5_seconds() -> None:
    trace = load(PP_C32)
    window = load_window_from_data(trace)
    cols = trace.for_gpu(0)
    t, p = cols["t_unix_s"], cols["power_w"]
    w = (t >= window.start_unix_s) & (t <= window.end_unix_s)
    t, p = t[w], p[w]
    # peak spacing: group samples above 600 W into events (a gap > 1 s starts a new one)
    hot_t = t[p > 600.0]
    starts = hot_t[np.concatenate(([True], np.diff(hot_t) > 1.0))]
    spacing = np.diff(starts)
    assert len(starts) >= 6
    assert 4.0 < float(np.median(spacing)) < 6.0
    # autocorrelation on a 10 Hz grid: the strongest lag in 2-10 s is ~5 s
    grid = np.arange(t[0], t[-1], 0.1)
    x = np.interp(grid, t, p)
    x = x - x.mean()
    ac = np.correlate(x, x, mode="full")[x.size - 1:]
    lags = np.arange(20, 100)
    best_lag_s = float(lags[np.argmax(ac[lags])]) * 0.1
    assert 4.0 < best_lag_s < 6.0


def test_windowing_changes_cv_strongly() -> None:
    trace = load(SINGLE)
    window = load_window_from_data(trace)
    whole = LoadWindow(float(trace.t_unix_s.min()), float(trace.t_unix_s.max()))
    cv_window = analyze_power(trace, window, output_tokens=None).gpus[0].cv
    cv_whole = analyze_power(trace, whole, output_tokens=None).gpus[0].cv
    assert cv_whole > 3 * cv_window  # measured: 0.78 vs 0.12
    assert cv_window < 0.2


def test_idle_gpu_of_single_trace_is_idle_and_serving_gpu_is_not() -> None:
    trace = load(SINGLE)
    report = analyze_power(trace, load_window_from_data(trace), output_tokens=None)
    serving, idle = report.gpus
    assert idle.idle_share > 0.99
    assert idle.idle_floor_source == "before" and 75.0 < idle.idle_floor_w < 85.0
    assert serving.idle_share < 0.01
    assert 120.0 < serving.idle_floor_w < 126.0
    assert serving.mean_power_w > 5 * idle.mean_power_w


def test_pp_bubbles_give_small_idle_share_robust_to_margin() -> None:
    trace = load(PP_C32)
    window = load_window_from_data(trace)
    report = analyze_power(trace, window, output_tokens=None)
    for g in report.gpus:
        assert 0.01 < g.idle_share < 0.10
        assert g.idle_threshold_w == pytest.approx(g.idle_floor_w + IDLE_MARGIN_W)
        lo = analyze_power(trace, window, output_tokens=None, idle_threshold_w=g.idle_floor_w + 10, gpus=[g.gpu])
        hi = analyze_power(trace, window, output_tokens=None, idle_threshold_w=g.idle_floor_w + 30, gpus=[g.gpu])
        assert abs(hi.gpus[0].idle_share - lo.gpus[0].idle_share) < 0.02
        assert lo.gpus[0].idle_floor_source == "given"


def test_power_summary_keys_and_values() -> None:
    trace = load(PP_C32)
    report = analyze_power(trace, load_window_from_data(trace), output_tokens=5000)
    summary = power_summary(report)
    expected = {f"gpu{i}_{k}" for i in (0, 1) for k in
                ("power_mean_w", "power_cv", "power_peak_w", "energy_j", "idle_share")}
    assert set(summary) == expected | {"energy_per_output_token_j"}
    assert summary["gpu0_power_peak_w"] > 800
    assert summary["energy_per_output_token_j"] == pytest.approx(report.energy_j / 5000)
    assert all(isinstance(v, float) and math.isfinite(v) for v in summary.values())
    json.dumps(summary)


def test_trace_dict_round_trip() -> None:
    trace = load(PP_C1)
    data = json.loads(json.dumps(trace.to_dict(full=True)))
    back = PowerTrace.from_dict(data)
    assert len(back) == len(trace)
    assert np.allclose(back.power_w, trace.power_w, atol=0.06)
    assert np.array_equal(back.gpu, trace.gpu)
    assert set(trace.to_dict()) == {"t_unix_s", "gpu", "power_w", "power_source"}


def test_from_csv_errors_name_the_file(tmp_path: Path) -> None:
    from pytest_llmperf.errors import UsageError

    bad = tmp_path / "bad.csv"
    bad.write_text("t,gpu\n1,0\n")
    with pytest.raises(UsageError, match="bad.csv"):
        PowerTrace.from_csv(bad)
    with pytest.raises(UsageError, match="missing.csv"):
        PowerTrace.from_csv(tmp_path / "missing.csv")


# -- synthetic traces --------------------------------------------------------------------------------

def synthetic(t: np.ndarray, power_w: np.ndarray, *, energy_j: np.ndarray | None = None, gpu: int = 0,
              throttle: np.ndarray | None = None) -> PowerTrace:
    cols: dict = {"t_unix_s": t, "gpu": np.full(t.size, gpu), "power_w": power_w}
    cols["energy_j"] = energy_j if energy_j is not None else np.concatenate(
        ([0.0], np.cumsum(0.5 * (power_w[1:] + power_w[:-1]) * np.diff(t))))
    if throttle is not None:
        cols["throttle_mask"] = throttle
    return PowerTrace.from_columns(cols)


def test_counter_reset_is_integrated_and_reported() -> None:
    t = np.arange(0.0, 10.0, 0.1)
    p = np.full(t.size, 200.0)
    energy = 1e6 + 200.0 * t
    energy[50:] -= 1e6  # driver reload / wrap
    report = analyze_power(synthetic(t, p, energy_j=energy), LoadWindow(0.0, 9.9), output_tokens=None)
    g = report.gpus[0]
    assert g.energy_source == "counter"
    assert g.energy_j == pytest.approx(200.0 * 9.9, rel=1e-6)
    assert any("reset" in m for m in report.missing)


def test_missing_counter_falls_back_to_integral() -> None:
    t = np.arange(0.0, 5.0, 0.01)
    report = analyze_power(synthetic(t, np.full(t.size, 100.0), energy_j=np.full(t.size, np.nan)),
                           LoadWindow(0.0, 4.99), output_tokens=10)
    g = report.gpus[0]
    assert g.energy_source == "integral" and g.energy_counter_j is None
    assert g.energy_j == pytest.approx(499.0)
    assert report.energy_per_output_token_j == pytest.approx(49.9)
    assert any("counter not available" in m for m in report.missing)


def test_throttle_flags_slowdowns_not_idle() -> None:
    t = np.arange(0.0, 2.0, 0.1)
    mask = np.zeros(t.size, dtype=np.int64)
    mask[:5] = 0x1  # gpu idle: not throttling
    report = analyze_power(synthetic(t, np.full(t.size, 300.0), throttle=mask), LoadWindow(0.0, 2.0), output_tokens=None)
    assert not report.gpus[0].throttled and report.gpus[0].throttle_reasons == ("gpu_idle",)
    mask[10:12] = 0x4 | 0x40
    report = analyze_power(synthetic(t, np.full(t.size, 300.0), throttle=mask), LoadWindow(0.0, 2.0), output_tokens=None)
    g = report.gpus[0]
    assert g.throttled and g.throttled_share == pytest.approx(0.1)
    assert set(g.throttle_reasons) == {"gpu_idle", "sw_power_cap", "hw_thermal_slowdown"}
    assert throttle_reason_names(0x88) == ("hw_slowdown", "hw_power_brake_slowdown")


def test_too_few_samples_and_no_tokens_are_reported_missing() -> None:
    t = np.arange(0.0, 10.0, 1.0)
    report = analyze_power(synthetic(t, np.full(t.size, 100.0)), LoadWindow(20.0, 30.0), output_tokens=5)
    assert report.gpus == () and report.energy_j is None and report.energy_per_output_token_j is None
    assert any("0 power samples" in m for m in report.missing)
    report = analyze_power(synthetic(t, np.full(t.size, 100.0)), LoadWindow(0.0, 9.0), output_tokens=0)
    assert report.energy_per_output_token_j is None
    assert any("no output tokens" in m for m in report.missing)
    assert power_summary(report).keys() == {f"gpu0_{k}" for k in
                                            ("power_mean_w", "power_cv", "power_peak_w", "energy_j", "idle_share")}


@settings(max_examples=60, deadline=None)
@given(power_w=st.floats(1.0, 2000.0), duration_s=st.floats(0.5, 600.0), n=st.integers(3, 400))
def test_energy_of_constant_power_is_p_times_t(power_w: float, duration_s: float, n: int) -> None:
    t = 1.7e9 + np.linspace(0.0, duration_s, n)
    report = analyze_power(synthetic(t, np.full(n, power_w)), LoadWindow(float(t[0]), float(t[-1])), output_tokens=None)
    g = report.gpus[0]
    assert g.energy_j == pytest.approx(power_w * duration_s, rel=1e-6)
    assert g.energy_integral_j == pytest.approx(power_w * duration_s, rel=1e-6)
    assert g.cv == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 100.0))
def test_cv_is_invariant_to_scaling_power(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(200) * 0.03
    p = rng.uniform(50.0, 900.0, t.size)
    window = LoadWindow(0.0, float(t[-1]))
    a = analyze_power(synthetic(t, p), window, output_tokens=None).gpus[0]
    b = analyze_power(synthetic(t, p * scale), window, output_tokens=None).gpus[0]
    assert b.cv == pytest.approx(a.cv, rel=1e-9)
    assert b.energy_j == pytest.approx(a.energy_j * scale, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), outside_w=st.floats(0.0, 5000.0))
def test_windowing_excludes_outside_samples(seed: int, outside_w: float) -> None:
    rng = np.random.default_rng(seed)
    t_in = np.arange(100, 300) * 0.05  # 5.0 .. 14.95 s
    p_in = rng.uniform(100.0, 800.0, t_in.size)
    window = LoadWindow(5.0, 14.95)
    base = analyze_power(synthetic(t_in, p_in), window, output_tokens=None, idle_threshold_w=200.0).gpus[0]
    t_all = np.arange(0, 400) * 0.05
    p_all = np.full(t_all.size, outside_w)
    p_all[100:300] = p_in
    wide = analyze_power(synthetic(t_all, p_all), window, output_tokens=None, idle_threshold_w=200.0).gpus[0]
    for name in ("samples", "mean_power_w", "std_power_w", "peak_power_w", "energy_j", "energy_integral_j",
                 "idle_share"):
        assert getattr(wide, name) == pytest.approx(getattr(base, name), rel=1e-9), name
