"""Telemetry self-check: sample the GPUs for a few seconds and print what the sampler achieves.

``python -m pytest_llmperf.telemetry.selfcheck --seconds 5 --rate-hz 100 [--gpus 0,1] [--json PATH]``
prints per GPU the achieved samples/s, how often the power value really changed, the power source
(instant field or 1-s average), mean/peak power, energy from the counter vs the integral of power, and
the sampler's CPU time per second of wall time. Exit codes: 0 fine, 1 degraded (a GPU sampled at less
than half the asked rate, or telemetry notes), 2 NVML not available. ``--replay CSV`` replays a
recorded trace through :class:`ReplayNvml`, a stand-in for ``pynvml``, so the whole pipeline can be
checked (and tested) on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import numpy as np

from pytest_llmperf.errors import UsageError
from pytest_llmperf.records import LoadWindow
from pytest_llmperf.telemetry import nvml as _nvml
from pytest_llmperf.telemetry.power import analyze_power
from pytest_llmperf.telemetry.sampler import NvmlSampler, PowerTrace

__all__ = ["ReplayNvml", "run_selfcheck", "main"]


class _NVMLError(Exception):
    def __init__(self, value: int = 999) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class ReplayNvml:
    """A pynvml stand-in that replays a :class:`PowerTrace` in real time (looping), for GPU-less checks.

    Every value is the sample at or before ``elapsed`` seconds since construction; the energy counter
    keeps rising across loops. ``fail`` maps a function name to an error value to raise (tests).
    """

    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_FI_DEV_POWER_AVERAGE = 185
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0
    NVML_ERROR_GPU_IS_LOST = 15
    NVMLError = _NVMLError

    def __init__(self, trace: PowerTrace, *, name: str = "Replayed GPU", clock: Any = time.monotonic,
                 fail: dict[str, int] | None = None) -> None:
        self._cols = [trace.for_gpu(g) for g in trace.gpus]
        self._t0 = [c["t_unix_s"][0] for c in self._cols]
        self._clock = clock
        self._start = clock()
        self.name = name
        self.fail = dict(fail or {})
        self.calls = 0

    def _check(self, fn: str) -> None:
        self.calls += 1
        if fn in self.fail:
            raise _NVMLError(self.fail[fn])

    def _row(self, handle: int) -> tuple[dict[str, np.ndarray], int, int]:
        cols = self._cols[handle]
        t = cols["t_unix_s"] - self._t0[handle]
        span = float(t[-1]) or 1.0
        elapsed = self._clock() - self._start
        loops, rest = divmod(elapsed, span)
        return cols, max(0, int(np.searchsorted(t, rest, side="right")) - 1), int(loops)

    def _get(self, handle: int, name: str) -> float:
        cols, i, _ = self._row(handle)
        return float(cols[name][i])

    def nvmlInit(self) -> None: self._check("nvmlInit")  # noqa: E704
    def nvmlShutdown(self) -> None: pass  # noqa: E704

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self._cols)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self._cols):
            raise _NVMLError(2)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str: return self.name  # noqa: E704
    def nvmlDeviceGetUUID(self, handle: int) -> str: return f"GPU-replay-{handle:04d}"  # noqa: E704

    def nvmlDeviceGetFieldValues(self, handle: int, field_ids: Sequence[int]) -> list[Any]:
        self._check("nvmlDeviceGetFieldValues")
        out = []
        for fid in field_ids:
            name = "power_w" if fid == self.NVML_FI_DEV_POWER_INSTANT else "power_avg_w"
            value = self._get(handle, name)
            ok = np.isfinite(value)
            out.append(SimpleNamespace(nvmlReturn=0 if ok else 3, valueType=1,
                                       value=SimpleNamespace(uiVal=int(value * 1000) if ok else 0)))
        return out

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self._check("nvmlDeviceGetPowerUsage")
        return int(self._get(handle, "power_avg_w") * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self._check("nvmlDeviceGetTotalEnergyConsumption")
        cols, i, loops = self._row(handle)
        e = cols["energy_j"]
        return int((e[i] + loops * (e[-1] - e[0])) * 1000)

    def nvmlDeviceGetClockInfo(self, handle: int, kind: int) -> int:
        self._check("nvmlDeviceGetClockInfo")
        return int(self._get(handle, "sm_clock_mhz"))

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._check("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=int(self._get(handle, "util_pct")), memory=0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        self._check("nvmlDeviceGetTemperature")
        value = self._get(handle, "temp_c")
        return int(value) if np.isfinite(value) else 40

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        self._check("nvmlDeviceGetCurrentClocksEventReasons")
        return max(0, int(self._get(handle, "throttle_mask")))


def _cpu_seconds_of_thread_work(seconds: float, sampler: NvmlSampler) -> tuple[float, float]:
    """Run the sampler ``seconds`` while this thread sleeps; (process CPU s, wall s)."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    with sampler:
        threading.Event().wait(seconds)
    return time.process_time() - cpu0, time.monotonic() - wall0


def run_selfcheck(seconds: float, rate_hz: float, gpus: Sequence[int] | None, *,
                  nvml: Any = None) -> dict[str, Any]:
    """Sample for ``seconds`` and return the figures (raises NvmlUnavailable without NVML)."""
    if nvml is None:
        with _nvml.nvml_session() as module:
            known = _nvml.list_gpus(module)
    else:
        known = _nvml.list_gpus(nvml)
    physical = _nvml.resolve_gpu_indices(gpus, known, use_env=nvml is None)
    sampler = NvmlSampler(physical, rate_hz, nvml=nvml)
    cpu_s, wall_s = _cpu_seconds_of_thread_work(seconds, sampler)
    trace = sampler.trace
    t = trace.t_unix_s
    window = LoadWindow(float(t.min()), float(t.max())) if len(trace) else LoadWindow(0.0, 0.0)
    report = analyze_power(trace, window, output_tokens=None, gpus=physical)
    names = {i: name for i, name, _ in known}
    per_gpu = [{
        "gpu": g.gpu, "name": names.get(g.gpu, "?"), "samples": g.samples, "sample_rate_hz": g.sample_rate_hz,
        "power_update_rate_hz": g.power_update_rate_hz, "power_source": g.power_source,
        "mean_power_w": g.mean_power_w, "peak_power_w": g.peak_power_w, "std_power_w": g.std_power_w,
        "energy_counter_j": g.energy_counter_j, "energy_integral_j": g.energy_integral_j,
        "counter_vs_integral_pct": g.counter_vs_integral_pct, "mean_sm_clock_mhz": g.mean_sm_clock_mhz,
        "max_temp_c": g.max_temp_c, "throttle_reasons": list(g.throttle_reasons),
    } for g in report.gpus]
    return {"seconds": wall_s, "rate_hz_asked": rate_hz, "iterations": sampler.iterations,
            "sampler_cpu_s_per_s": cpu_s / wall_s if wall_s > 0 else None, "gpus": per_gpu,
            "missing": [m for m in report.missing if "idle floor" not in m]}


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def _render(result: dict[str, Any], out: TextIO) -> None:
    out.write(f"NVML sampler self-check: {result['seconds']:.1f} s at {result['rate_hz_asked']:g} Hz asked, "
              f"{result['iterations']} iterations, sampler CPU {_fmt(result['sampler_cpu_s_per_s'], '.3f')} s/s\n")
    for g in result["gpus"]:
        out.write(
            f"  GPU {g['gpu']} ({g['name']}): {_fmt(g['sample_rate_hz'], '.1f')} samples/s, power value changed "
            f"{_fmt(g['power_update_rate_hz'], '.1f')}/s, source {g['power_source']}; mean "
            f"{_fmt(g['mean_power_w'], '.1f')} W, peak {_fmt(g['peak_power_w'], '.1f')} W; energy counter "
            f"{_fmt(g['energy_counter_j'], '.1f')} J vs integral {_fmt(g['energy_integral_j'], '.1f')} J "
            f"({_fmt(g['counter_vs_integral_pct'], '+.2f')} %); SM {_fmt(g['mean_sm_clock_mhz'], '.0f')} MHz, "
            f"max {_fmt(g['max_temp_c'], '.0f')} C, throttle: {', '.join(g['throttle_reasons']) or 'none'}\n")
    for note in result["missing"]:
        out.write(f"  note: {note}\n")


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_llmperf.telemetry.selfcheck", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate-hz", type=float, default=100.0)
    parser.add_argument("--gpus", type=lambda s: [int(x) for x in s.split(",") if x.strip()], default=None,
                        help="CUDA device ids, comma separated (default: all visible)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--replay", type=Path, default=None, help="replay a recorded CSV trace instead of NVML")
    args = parser.parse_args(argv)
    nvml = ReplayNvml(PowerTrace.from_csv(args.replay)) if args.replay else None
    try:
        result = run_selfcheck(args.seconds, args.rate_hz, args.gpus, nvml=nvml)
    except _nvml.NvmlUnavailable as exc:
        out.write(f"NVML not available: {exc}\n")
        return 2
    except UsageError as exc:
        out.write(f"error: {exc}\n")
        return 2
    _render(result, out)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))
    degraded = bool(result["missing"]) or any(
        not g["samples"] or not np.isfinite(g["sample_rate_hz"]) or g["sample_rate_hz"] < 0.5 * args.rate_hz
        for g in result["gpus"]) or len(result["gpus"]) == 0
    return 1 if degraded else 0


if __name__ == "__main__":
    raise SystemExit(main())
