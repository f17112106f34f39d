"""Power analysis of a :class:`PowerTrace` over the measured load window (pure numpy, no NVML).

Every statistic is windowed to ``[window.start_unix_s, window.end_unix_s]``: the recorded H200 traces
start with ~20 s of idle that would otherwise dominate the variance. Per GPU: mean / std / CV / peak of
power (sample statistics of the instant power), energy from the NVML counter (delta over the window, a
negative step = counter reset is replaced by the trapezoid of power over that step) and from the
trapezoid of instant power, their disagreement, the idle share, and throttling.

Idle share rule (``IDLE_MARGIN_W``): a sample is idle when its power is below ``idle floor + 15 W``. The
idle floor is the median power of the samples in the 10 s before the window (or, failing that, after it;
failing both, the window minimum, with a note). Why: on the recorded traces the idle floor is flat
(H200 serving a model: 122-124 W, std <= 0.6 W; GPU without a process: 79-81 W), and the pipeline
bubbles of PP drop to the floor itself, so the share barely moves for margins of 10-30 W (2.3-2.7 % on
PP c32) while a fraction-of-peak rule would call an idle GPU "busy" (GPU 1 of the single trace never
rises above 82 W, its peak) and changes with the spikes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pytest_llmperf.records import LoadWindow
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_llmperf.telemetry.sampler import PowerTrace

__all__ = [
    "GpuPower",
    "PowerReport",
    "analyze_power",
    "power_summary",
    "detect_active_window",
    "throttle_reason_names",
    "IDLE_MARGIN_W",
    "IDLE_FLOOR_LOOKBACK_S",
    "THROTTLE_REASONS",
    "SLOWDOWN_MASK",
]

#: Margin above the idle floor below which a sample counts as idle.
IDLE_MARGIN_W = 15.0
#: How far before (or after) the window idle samples are taken from.
IDLE_FLOOR_LOOKBACK_S = 10.0
_MIN_FLOOR_SAMPLES = 3

#: NVML clock-event (throttle) reason bits.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
#: Bits that mean the GPU ran below the clocks it asked for (power cap, thermal, hardware slowdown).
SLOWDOWN_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


@dataclass(frozen=True)
class GpuPower:
    """Power figures of one GPU over the load window. Energies in joules, powers in watts."""

    gpu: int
    samples: int
    sample_rate_hz: float
    power_update_rate_hz: float  # how often the power value actually changed
    power_source: str  # "instant" | "average" | "missing"
    mean_power_w: float
    std_power_w: float
    cv: float
    peak_power_w: float
    energy_j: float
    energy_source: str  # "counter" | "integral"
    energy_integral_j: float
    energy_counter_j: float | None
    counter_vs_integral_pct: float | None  # (counter - integral) / integral * 100
    idle_floor_w: float
    idle_floor_source: str  # "given" | "before" | "after" | "window-min"
    idle_threshold_w: float
    idle_share: float
    throttled: bool
    throttled_share: float
    throttle_reasons: tuple[str, ...]
    mean_sm_clock_mhz: float
    mean_util_pct: float
    max_temp_c: float


@dataclass(frozen=True)
class PowerReport:
    """All GPUs of one run. ``missing`` says, in words, what could not be measured and why."""

    window_s: float
    gpus: tuple[GpuPower, ...]
    energy_j: float | None
    energy_per_output_token_j: float | None
    missing: tuple[str, ...] = ()


def throttle_reason_names(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in THROTTLE_REASONS.items() if mask & bit)


def _counter_energy(t: np.ndarray, counter: np.ndarray, power: np.ndarray) -> tuple[float | None, int]:
    """Counter delta over the samples; negative steps (reset/wrap) use the trapezoid. Returns (J, resets)."""
    if t.size < 2 or not np.all(np.isfinite(counter)):
        return None, 0
    steps = np.diff(counter)
    resets = steps < 0
    if resets.any():
        trap = 0.5 * (power[1:] + power[:-1]) * np.diff(t)
        steps = np.where(resets, np.nan_to_num(trap), steps)
    return float(steps.sum()), int(resets.sum())


def _idle_floor(t: np.ndarray, p: np.ndarray, window: LoadWindow, in_window: np.ndarray) -> tuple[float, str]:
    ok = np.isfinite(p)
    before = ok & (t < window.start_unix_s) & (t >= window.start_unix_s - IDLE_FLOOR_LOOKBACK_S)
    if before.sum() >= _MIN_FLOOR_SAMPLES:
        return float(np.median(p[before])), "before"
    after = ok & (t > window.end_unix_s) & (t <= window.end_unix_s + IDLE_FLOOR_LOOKBACK_S)
    if after.sum() >= _MIN_FLOOR_SAMPLES:
        return float(np.median(p[after])), "after"
    inside = p[in_window & ok]
    return (float(inside.min()) if inside.size else math.nan), "window-min"


def _mean_finite(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def _analyze_gpu(trace: PowerTrace, gpu: int, window: LoadWindow, idle_threshold_w: float | None,
                 missing: list[str]) -> GpuPower | None:
    cols = trace.for_gpu(gpu)
    t, p = cols["t_unix_s"], cols["power_w"]
    w = (t >= window.start_unix_s) & (t <= window.end_unix_s)
    good = w & np.isfinite(p)
    n = int(good.sum())
    if n < 2:
        missing.append(f"GPU {gpu}: {n} power samples inside the load window ({window.duration_s:.3f} s)")
        return None
    tw, pw = t[good], p[good]
    span_s = float(tw[-1] - tw[0])
    mean_w = float(pw.mean())
    std_w = float(pw.std())
    integral_j = float(np.trapezoid(pw, tw))
    counter_j, resets = _counter_energy(t[w], cols["energy_j"][w], np.nan_to_num(p[w]))
    if resets:
        missing.append(f"GPU {gpu}: energy counter went backwards {resets} time(s) (reset); those steps integrated")
    source = "counter"
    if counter_j is None:
        source = "integral"
        missing.append(f"GPU {gpu}: energy counter not available; energy is the integral of sampled power")
    elif counter_j <= 0 < integral_j:
        source = "integral"
        missing.append(f"GPU {gpu}: energy counter did not advance over {span_s:.3f} s; energy is the integral")
    energy_j = counter_j if source == "counter" and counter_j is not None else integral_j
    pct = None if counter_j is None or integral_j <= 0 else 100.0 * (counter_j - integral_j) / integral_j

    power_source = trace.power_source.get(gpu, "instant")
    if power_source != "instant":
        missing.append(f"GPU {gpu}: instant power unavailable; power statistics use the 1-s average")
    if idle_threshold_w is not None:
        floor_w, floor_src, threshold_w = math.nan, "given", float(idle_threshold_w)
    else:
        floor_w, floor_src = _idle_floor(t, p, window, w)
        threshold_w = floor_w + IDLE_MARGIN_W
        if floor_src == "window-min":
            missing.append(f"GPU {gpu}: no idle samples outside the load window; idle floor = window minimum")
    masks = cols["throttle_mask"][w]
    masks = masks[masks >= 0]
    all_bits = int(np.bitwise_or.reduce(masks)) if masks.size else 0
    slow = (masks & SLOWDOWN_MASK) != 0
    temps = cols["temp_c"][w]
    return GpuPower(
        gpu=gpu, samples=n, sample_rate_hz=(n - 1) / span_s if span_s > 0 else math.nan,
        power_update_rate_hz=float(np.count_nonzero(np.diff(pw))) / span_s if span_s > 0 else math.nan,
        power_source=power_source, mean_power_w=mean_w, std_power_w=std_w,
        cv=std_w / mean_w if mean_w > 0 else math.nan, peak_power_w=float(pw.max()),
        energy_j=energy_j, energy_source=source, energy_integral_j=integral_j, energy_counter_j=counter_j,
        counter_vs_integral_pct=pct, idle_floor_w=floor_w, idle_floor_source=floor_src,
        idle_threshold_w=threshold_w, idle_share=float(np.mean(pw < threshold_w)),
        throttled=bool(slow.any()), throttled_share=float(slow.mean()) if masks.size else 0.0,
        throttle_reasons=throttle_reason_names(all_bits),
        mean_sm_clock_mhz=_mean_finite(cols["sm_clock_mhz"][w]), mean_util_pct=_mean_finite(cols["util_pct"][w]),
        max_temp_c=float(np.nanmax(temps)) if np.isfinite(temps).any() else math.nan,
    )


def analyze_power(trace: PowerTrace, window: LoadWindow, *, output_tokens: int | None,
                  idle_threshold_w: float | None = None, gpus: Iterable[int] | None = None) -> PowerReport:
    """Per-GPU power figures of ``trace`` inside ``window``; total energy and energy per output token.

    ``idle_threshold_w`` overrides the idle rule (module docstring). ``gpus`` restricts the GPUs
    (default: all in the trace). Nothing raises for missing data: it is listed in ``missing``.
    """
    missing = list(trace.notes)
    if window.duration_s <= 0:
        missing.append(f"load window is empty ({window.duration_s:.3f} s)")
    selected = sorted(trace.gpus if gpus is None else {int(g) for g in gpus})
    if not selected:
        missing.append("power trace holds no samples")
    results = []
    for gpu in selected:
        result = _analyze_gpu(trace, gpu, window, idle_threshold_w, missing)
        if result is not None:
            results.append(result)
    if 0 < window.duration_s < 1.0 and results:
        missing.append(f"load window is {window.duration_s:.3f} s: the energy counter updates every ~0.1 s, "
                       "so energy figures are coarse")
    complete = bool(results) and len(results) == len(selected)
    energy_j = sum(g.energy_j for g in results) if complete else None
    per_token = None
    if energy_j is not None and output_tokens:
        per_token = energy_j / output_tokens
    elif energy_j is not None and output_tokens is not None:
        missing.append("no output tokens: energy per output token undefined")
    return PowerReport(window_s=window.duration_s, gpus=tuple(results), energy_j=energy_j,
                       energy_per_output_token_j=per_token, missing=tuple(missing))


def power_summary(report: PowerReport) -> dict[str, float]:
    """The gated per-run scalars: gpu{i}_power_mean_w/_power_cv/_power_peak_w/_energy_j/_idle_share and
    energy_per_output_token_j. Undefined (NaN/None) values are left out rather than reported as 0."""
    out: dict[str, float] = {}
    for g in report.gpus:
        for key, value in (("power_mean_w", g.mean_power_w), ("power_cv", g.cv), ("power_peak_w", g.peak_power_w),
                           ("energy_j", g.energy_j), ("idle_share", g.idle_share)):
            if value is not None and math.isfinite(value):
                out[f"gpu{g.gpu}_{key}"] = float(value)
    if report.energy_per_output_token_j is not None and math.isfinite(report.energy_per_output_token_j):
        out["energy_per_output_token_j"] = float(report.energy_per_output_token_j)
    return out


def detect_active_window(trace: PowerTrace, *, rise_w: float = 50.0, gpus: Iterable[int] | None = None,
                         ) -> LoadWindow | None:
    """The span where any GPU's power is more than ``rise_w`` above its first-second median (for traces
    recorded without a client window, e.g. the shared data or ``llmperf report``). None if never."""
    starts, ends = [], []
    for gpu in (trace.gpus if gpus is None else gpus):
        cols = trace.for_gpu(gpu)
        t, p = cols["t_unix_s"], cols["power_w"]
        head = np.isfinite(p) & (t <= t[0] + 1.0) if t.size else np.zeros(0, bool)
        if not head.any():
            continue
        hot = np.nonzero(p > float(np.median(p[head])) + rise_w)[0]
        if hot.size:
            starts.append(float(t[hot[0]]))
            ends.append(float(t[hot[-1]]))
    if not starts:
        return None
    return LoadWindow(start_unix_s=min(starts), end_unix_s=max(ends))
