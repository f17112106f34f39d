"""Energy meters: a window-based context manager behind a protocol, with a null implementation.

``with meter.measure() as m: <run load>`` then ``m.trace`` and ``m.report(window, output_tokens)``.
:class:`NvmlMeter` samples with :class:`NvmlSampler` while the block runs; :class:`NullMeter` is used on
the CPU backend or where NVML is absent, and its reports carry the reason in ``missing`` so a power
check can skip with that reason instead of passing silently. :func:`make_meter` picks one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import ModuleType
from typing import Protocol, runtime_checkable, TYPE_CHECKING

from pytest_llmperf.errors import UsageError
from pytest_llmperf.telemetry import nvml as _nvml
from pytest_llmperf.telemetry.power import PowerReport, analyze_power
from pytest_llmperf.telemetry.sampler import NvmlSampler, PowerTrace

if TYPE_CHECKING:
    from pytest_llmperf.records import LoadWindow

__all__ = ["EnergyMeter", "Measurement", "NvmlMeter", "NullMeter", "make_meter"]

log = logging.getLogger(__name__)


class Measurement:
    """Handle yielded by ``measure()``: ``trace`` and ``report()`` become available after the block."""

    def __init__(self, gpu_indices: Sequence[int], unavailable_reason: str | None = None) -> None:
        self.gpu_indices = tuple(gpu_indices)
        self.unavailable_reason = unavailable_reason
        self._trace: PowerTrace | None = None
        self._done = False

    def _finish(self, trace: PowerTrace | None) -> None:
        self._trace = trace
        self._done = True

    @property
    def trace(self) -> PowerTrace | None:
        """The recorded trace (None for a null meter). Raises UsageError inside the block."""
        if not self._done:
            raise UsageError("measurement trace is available only after the measure() block ends")
        return self._trace

    def report(self, window: LoadWindow, output_tokens: int | None = None, *,
               idle_threshold_w: float | None = None) -> PowerReport:
        trace = self.trace
        if trace is None:
            reason = self.unavailable_reason or "no trace recorded"
            return PowerReport(window_s=window.duration_s, gpus=(), energy_j=None, energy_per_output_token_j=None,
                               missing=(f"NVML not available: {reason}",))
        return analyze_power(trace, window, output_tokens=output_tokens, idle_threshold_w=idle_threshold_w,
                             gpus=self.gpu_indices)


@runtime_checkable
class EnergyMeter(Protocol):
    """Something that measures GPU power over a block of code."""

    available: bool
    reason: str | None

    def measure(self) -> AbstractContextManager[Measurement]: ...


class NullMeter:
    """No NVML (CPU backend, no driver): measures nothing and says why."""

    available = False

    def __init__(self, reason: str) -> None:
        self.reason: str | None = reason

    @contextmanager
    def measure(self) -> Iterator[Measurement]:
        m = Measurement((), unavailable_reason=self.reason)
        try:
            yield m
        finally:
            m._finish(None)


class NvmlMeter:
    """Samples ``gpu_indices`` (physical NVML indices) at ``rate_hz`` during each ``measure()`` block."""

    available = True
    reason: str | None = None

    def __init__(self, gpu_indices: Sequence[int], rate_hz: float = 100.0, *, slow_every: int = 10,
                 nvml: ModuleType | None = None) -> None:
        self.gpu_indices = tuple(int(i) for i in gpu_indices)
        self.rate_hz = rate_hz
        self.slow_every = slow_every
        self._nvml = nvml

    @contextmanager
    def measure(self) -> Iterator[Measurement]:
        sampler = NvmlSampler(self.gpu_indices, self.rate_hz, slow_every=self.slow_every, nvml=self._nvml)
        m = Measurement(self.gpu_indices)
        sampler.start()
        try:
            yield m
        finally:
            m._finish(sampler.stop())


def make_meter(gpu_indices: Sequence[int] | None, backend: str, *, rate_hz: float = 100.0,
               visible_devices: str | None = None) -> NvmlMeter | NullMeter:
    """An NvmlMeter for ``backend == "gpu"`` when NVML works, else a NullMeter with the reason.

    ``gpu_indices`` are CUDA device ids of this process (``CUDA_VISIBLE_DEVICES`` applied, see
    :func:`pytest_llmperf.telemetry.nvml.resolve_gpu_indices`); None = every visible GPU. An id that
    does not exist raises UsageError naming the GPUs NVML sees.
    """
    if backend != "gpu":
        return NullMeter(f"{backend} backend (no GPU power to measure)")
    try:
        with _nvml.nvml_session() as nvml:
            gpus = _nvml.list_gpus(nvml)
    except _nvml.NvmlUnavailable as exc:
        log.info("power telemetry off: %s", exc)
        return NullMeter(str(exc))
    except Exception as exc:
        return NullMeter(f"NVML query failed: {type(exc).__name__}: {exc}")
    if not gpus:
        return NullMeter("NVML sees no GPU")
    physical = _nvml.resolve_gpu_indices(gpu_indices, gpus, visible_devices)
    return NvmlMeter(physical, rate_hz)
