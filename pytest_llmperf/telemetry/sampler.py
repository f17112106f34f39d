"""Background NVML sampler and the trace it records.

:class:`NvmlSampler` runs one daemon thread that reads, for each GPU, the instant power field
(``NVML_FI_DEV_POWER_INSTANT``, together with ``NVML_FI_DEV_POWER_AVERAGE`` in the same
``nvmlDeviceGetFieldValues`` call), the energy counter, the SM clock, and every ``slow_every``-th
iteration the utilisation, temperature and clock-event (throttle) reasons, which NVML updates slowly
anyway. Where the power field is not supported it falls back to ``nvmlDeviceGetPowerUsage`` (a 1-s
average on Ampere and newer) and says so in ``PowerTrace.power_source``. An NVML error during a run is
logged once, the field is marked missing (NaN) and sampling goes on; a lost GPU stops being sampled. The
problems are in ``PowerTrace.notes`` and are warned (``TelemetryWarning``) in the thread calling
:meth:`NvmlSampler.stop`, never from the sampler thread. :class:`PowerTrace` is the frozen result.
"""

from __future__ import annotations

import csv
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pytest_llmperf.errors import UsageError
from pytest_llmperf.telemetry import nvml as _nvml

__all__ = ["PowerTrace", "NvmlSampler", "TelemetryWarning"]

log = logging.getLogger(__name__)

_NAN = float("nan")
_ARRAYS = ("t_unix_s", "gpu", "power_w", "power_avg_w", "energy_j", "sm_clock_mhz", "util_pct", "temp_c",
           "throttle_mask")


class TelemetryWarning(UserWarning):
    """A telemetry reading failed or is degraded; the affected figures are missing, not invented."""


@dataclass(frozen=True, eq=False)
class PowerTrace:
    """Samples of several GPUs in one table (one row per GPU per sample), time-ordered per GPU.

    ``power_w`` is instant power where ``power_source[gpu] == "instant"`` and the 1-s average otherwise;
    ``power_avg_w`` is NVML's 1-s average. ``energy_j`` is the raw energy counter (since driver load; NaN
    where unread). ``throttle_mask`` is the clock-event reason bitmask, -1 where unknown.
    """

    t_unix_s: np.ndarray
    gpu: np.ndarray
    power_w: np.ndarray
    power_avg_w: np.ndarray
    energy_j: np.ndarray
    sm_clock_mhz: np.ndarray
    util_pct: np.ndarray
    temp_c: np.ndarray
    throttle_mask: np.ndarray
    power_source: dict[int, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def gpus(self) -> tuple[int, ...]:
        return tuple(int(g) for g in np.unique(self.gpu))

    def __len__(self) -> int:
        return int(self.t_unix_s.size)

    def for_gpu(self, gpu: int) -> dict[str, np.ndarray]:
        """The columns of one GPU, sorted by time."""
        mask = self.gpu == gpu
        order = np.argsort(self.t_unix_s[mask], kind="stable")
        return {name: getattr(self, name)[mask][order] for name in _ARRAYS}

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[float | None] | None], *, power_source: dict[int, str] | None = None,
                     notes: Sequence[str] = ()) -> PowerTrace:
        """Build from column lists; missing optional columns become NaN (or -1 for the throttle mask)."""
        times = columns.get("t_unix_s")
        if times is None:
            raise UsageError("a power trace needs its t_unix_s column")
        n = len(times)
        arrays: dict[str, np.ndarray] = {}
        for name in _ARRAYS:
            values = columns.get(name)
            if name == "throttle_mask":
                raw = np.full(n, -1) if values is None else np.asarray([-1 if v is None else v for v in values])
                arrays[name] = raw.astype(np.int64)
            elif name == "gpu":
                arrays[name] = np.asarray(values, dtype=np.int64)
            elif values is None:
                arrays[name] = np.full(n, np.nan)
            else:
                arrays[name] = np.asarray([_NAN if v is None else v for v in values], dtype=np.float64)
            if arrays[name].shape != (n,):
                raise UsageError(f"trace column {name!r} has {arrays[name].size} values, expected {n}")
        gpus = {int(g) for g in arrays["gpu"]}
        source = {g: "instant" for g in gpus} | dict(power_source or {})
        return cls(**arrays, power_source=source, notes=tuple(notes))

    @classmethod
    def from_csv(cls, path: str | Path) -> PowerTrace:
        """Read the shared-data CSV (t,gpu,power_avg_mw,power_inst_mw,energy_mj,sm_clock,util[,temp_c,throttle])."""
        path = Path(path)
        try:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise UsageError(f"cannot read power trace {path}: {exc}") from exc
        need = {"t", "gpu", "power_avg_mw", "power_inst_mw", "energy_mj"}
        if not rows or not need <= set(rows[0]):
            raise UsageError(f"power trace {path} lacks columns {sorted(need - set(rows[0] if rows else {}))}")

        def col(name: str, scale: float = 1.0) -> list[float] | None:
            if name not in rows[0]:
                return None
            return [float(r[name]) * scale if r[name] not in ("", "nan", "NaN") else _NAN for r in rows]

        try:
            columns = {"t_unix_s": col("t"), "gpu": [int(r["gpu"]) for r in rows],
                       "power_w": col("power_inst_mw", 1e-3), "power_avg_w": col("power_avg_mw", 1e-3),
                       "energy_j": col("energy_mj", 1e-3), "sm_clock_mhz": col("sm_clock"),
                       "util_pct": col("util"), "temp_c": col("temp_c"),
                       "throttle_mask": [int(float(r["throttle"])) for r in rows] if "throttle" in rows[0] else None}
        except ValueError as exc:
            raise UsageError(f"power trace {path} has a non-numeric value: {exc}") from exc
        return cls.from_columns(columns)

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """Compact JSON-ready lists (NaN -> None): t_unix_s, gpu, power_w; ``full`` adds every column."""
        def floats(a: np.ndarray, digits: int) -> list[float | None]:
            return [None if not math.isfinite(v) else round(v, digits) for v in a.tolist()]

        out: dict[str, Any] = {"t_unix_s": floats(self.t_unix_s, 4), "gpu": self.gpu.tolist(),
                               "power_w": floats(self.power_w, 1),
                               "power_source": {str(k): v for k, v in self.power_source.items()}}
        if full:
            out |= {"power_avg_w": floats(self.power_avg_w, 1), "energy_j": floats(self.energy_j, 3),
                    "sm_clock_mhz": floats(self.sm_clock_mhz, 0), "util_pct": floats(self.util_pct, 0),
                    "temp_c": floats(self.temp_c, 0), "throttle_mask": self.throttle_mask.tolist(),
                    "notes": list(self.notes)}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PowerTrace:
        source = {int(k): str(v) for k, v in data.get("power_source", {}).items()}
        return cls.from_columns({k: data[k] for k in _ARRAYS if k in data}, power_source=source,
                                notes=data.get("notes", ()))


class _GpuState:
    """What is known to work on one GPU; fields are switched off after their first error."""

    def __init__(self, index: int, handle: Any) -> None:
        self.index = index
        self.handle = handle
        self.power_source = "instant"
        self.off: set[str] = set()
        self.lost = False
        self.slow = (_NAN, _NAN, -1)  # util, temp, throttle mask


class NvmlSampler:
    """Sample power/energy/clock/utilisation/temperature/throttle of ``gpu_indices`` (physical NVML indices).

    ``with NvmlSampler([0, 1], rate_hz=100) as s: ...`` then ``s.trace``; or ``start()`` / ``stop()``
    (both idempotent). ``nvml`` injects a pynvml-like module (tests); by default NVML is initialised
    through :func:`pytest_llmperf.telemetry.nvml.nvml_init` on start and shut down on stop.
    """

    def __init__(self, gpu_indices: Sequence[int], rate_hz: float = 100.0, *, slow_every: int = 10,
                 nvml: ModuleType | None = None, clock: Callable[[], float] = time.time) -> None:
        if not gpu_indices:
            raise UsageError("NvmlSampler needs at least one GPU index")
        if not 0 < rate_hz <= 1000:
            raise UsageError(f"sampling rate must be in (0, 1000] Hz, got {rate_hz}")
        self.gpu_indices = tuple(int(i) for i in gpu_indices)
        self.rate_hz = float(rate_hz)
        self.slow_every = max(1, int(slow_every))
        self._nvml_injected = nvml
        self._nvml: ModuleType | None = None
        self._clock = clock
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._rows: list[tuple[float, int, float, float, float, float, float, float, int]] = []
        self._notes: list[str] = []
        self._gpus: list[_GpuState] = []
        self._iteration = 0
        self._trace: PowerTrace | None = None
        self._owns_nvml = False
        self.iterations = 0

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Initialise NVML and get the device handles (done by :meth:`start`; separate for benchmarks)."""
        if self._nvml is not None:
            return
        if self._nvml_injected is not None:
            nvml = self._nvml_injected
        else:
            nvml = _nvml.nvml_init()
            self._owns_nvml = True
        try:
            count = int(nvml.nvmlDeviceGetCount())
            for index in self.gpu_indices:
                if not 0 <= index < count:
                    gpus = _nvml.list_gpus(nvml)
                    raise UsageError(f"GPU {index} requested but NVML sees {count} GPUs: {_nvml.describe_gpus(gpus)}")
                self._gpus.append(_GpuState(index, nvml.nvmlDeviceGetHandleByIndex(index)))
        except BaseException:
            self._gpus.clear()
            self._release()
            raise
        self._nvml = nvml

    def start(self) -> NvmlSampler:
        if self._thread is not None:
            return self
        self.open()
        self._stop_event.clear()
        self._trace = None
        self._thread = threading.Thread(target=self._run, name="llmperf-nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> PowerTrace:
        """Stop the thread, release NVML and return the trace; later calls return the same trace."""
        if self._trace is not None:
            return self._trace
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():  # pragma: no cover - an NVML call hung
                self._note("sampler thread did not stop within 10 s (NVML call hung?)")
        self._thread = None
        self._release()
        self._trace = self._build_trace()
        for note in self._trace.notes:
            warnings.warn(note, TelemetryWarning, stacklevel=2)
        return self._trace

    def _release(self) -> None:
        if self._owns_nvml:
            _nvml.nvml_shutdown()
            self._owns_nvml = False
        self._nvml = None

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def trace(self) -> PowerTrace:
        if self._trace is None:
            raise UsageError("the sampler's trace is available after stop() (or the end of its with block)")
        return self._trace

    # -- sampling --------------------------------------------------------------------------------------
    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        next_t = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # defensive: never let the thread die silently
                self._note(f"sampler iteration failed: {type(exc).__name__}: {exc}; sampling stopped")
                return
            if all(g.lost for g in self._gpus):
                return
            next_t += period
            now = time.monotonic()
            if next_t < now - period:  # fell behind (slow NVML, busy CPU): do not burst to catch up
                next_t = now
            self._stop_event.wait(max(0.0, next_t - now))

    def sample_once(self) -> None:
        """Read every GPU once and append the rows (one sampler iteration)."""
        nvml = self._nvml
        if nvml is None:
            raise UsageError("NvmlSampler.sample_once() before open()/start()")
        slow = self._iteration % self.slow_every == 0
        self._iteration += 1
        for g in self._gpus:
            if g.lost:
                continue
            power_w, power_avg_w = self._read_power(nvml, g)
            energy_j = self._read(g, "energy", lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle) * 1e-3)
            clock = self._read(g, "sm_clock", lambda: float(nvml.nvmlDeviceGetClockInfo(g.handle, nvml.NVML_CLOCK_SM)))
            if slow:
                util = self._read(g, "util", lambda: float(nvml.nvmlDeviceGetUtilizationRates(g.handle).gpu))
                temp = self._read(g, "temp", lambda: float(
                    nvml.nvmlDeviceGetTemperature(g.handle, nvml.NVML_TEMPERATURE_GPU)))
                mask = self._read(g, "throttle", lambda: float(self._throttle_reasons(nvml, g.handle)))
                g.slow = (util, temp, -1 if math.isnan(mask) else int(mask))
            if g.lost:
                continue
            row = (self._clock(), g.index, power_w, power_avg_w, energy_j, clock, *g.slow)
            with self._lock:
                self._rows.append(row)
        self.iterations += 1

    def _read_power(self, nvml: ModuleType, g: _GpuState) -> tuple[float, float]:
        if g.power_source == "instant":
            try:
                values = nvml.nvmlDeviceGetFieldValues(
                    g.handle, [nvml.NVML_FI_DEV_POWER_INSTANT, nvml.NVML_FI_DEV_POWER_AVERAGE])
                inst, avg = (_nvml.field_value(v) for v in values)
            except Exception as exc:
                if self._is_lost(nvml, exc):
                    self._lose(g, exc)
                    return _NAN, _NAN
                inst, avg = None, None
            if inst is not None:
                return inst * 1e-3, _NAN if avg is None else avg * 1e-3
            g.power_source = "average"
            self._note(f"GPU {g.index}: instant power field not readable; power is nvmlDeviceGetPowerUsage, "
                       "a 1-s average on Ampere and newer (spikes and bubbles are smoothed)")
        if g.power_source == "average":
            avg_w = self._read(g, "power", lambda: nvml.nvmlDeviceGetPowerUsage(g.handle) * 1e-3)
            if "power" in g.off:
                g.power_source = "missing"
            return avg_w, avg_w
        return _NAN, _NAN

    @staticmethod
    def _throttle_reasons(nvml: ModuleType, handle: Any) -> int:
        fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if fn is not None:
            try:
                return int(fn(handle))
            except Exception as exc:
                if type(exc).__name__ != "NVMLError_FunctionNotFound":
                    raise
        return int(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))

    def _read(self, g: _GpuState, name: str, fn: Callable[[], float]) -> float:
        if name in g.off or g.lost:
            return _NAN
        try:
            return float(fn())
        except Exception as exc:
            if self._nvml is not None and self._is_lost(self._nvml, exc):
                self._lose(g, exc)
            else:
                g.off.add(name)
                self._note(f"GPU {g.index}: reading {name} failed ({type(exc).__name__}: {exc}); marked missing")
            return _NAN

    @staticmethod
    def _is_lost(nvml: ModuleType, exc: Exception) -> bool:
        lost = getattr(nvml, "NVML_ERROR_GPU_IS_LOST", 15)
        return getattr(exc, "value", None) == lost or type(exc).__name__ == "NVMLError_GPUIsLost"

    def _lose(self, g: _GpuState, exc: Exception) -> None:
        g.lost = True
        self._note(f"GPU {g.index}: lost during sampling ({exc}); its samples end here")

    def _note(self, message: str) -> None:
        with self._lock:
            if message not in self._notes:
                self._notes.append(message)
                log.warning("%s", message)

    def _build_trace(self) -> PowerTrace:
        with self._lock:
            rows = list(self._rows)
            notes = list(self._notes)
        if not rows:
            notes.append(f"no samples recorded for GPUs {list(self.gpu_indices)}")
        columns = {name: [r[i] for r in rows] for i, name in enumerate(_ARRAYS)}
        source = {g.index: g.power_source for g in self._gpus}
        return PowerTrace.from_columns(columns, power_source=source, notes=notes)
