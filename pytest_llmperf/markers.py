"""The marker table (registered in one loop under --strict-markers) and marker-argument validation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pytest_llmperf.errors import UsageError

__all__ = ["MARKERS", "LLMPERF_MARKER_KWARGS", "parallel_size_from_marker", "validate_llmperf_kwargs"]

MARKERS: dict[str, str] = {
    "tp": "tp(n): run the engine with tensor_parallel_size=n (needs n GPUs, or n cores on the CPU backend)",
    "pp": "pp(n): run the engine with pipeline_parallel_size=n (needs n GPUs, or n cores on the CPU backend)",
    "dp": "dp(n): run the engine with data_parallel_size=n: n replicas behind one API server (needs n GPUs)",
    "ep": "ep: expert parallel for mixture-of-experts models; with tp(n): TP n + --enable-expert-parallel, "
          "with dp(n): DP n + EP (needs GPUs: vLLM's CPU backend crashes on it)",
    "single": "single: one-device engine (added automatically to single-mode items; usable with -m)",
    "nvlink": "nvlink: requires the engine's GPUs to be NVLink-connected",
    "pcie": "pcie: the PCIe-interconnect study; on NVLink GPUs it runs with PCIe emulation (NCCL P2P off, "
            "custom and symmetric-memory all-reduce off, all-reduce fusion off; proven from the engine log)",
    "gpu": "gpu: runs on the GPU backend (added automatically; skipped on machines without GPUs)",
    "cpu": "cpu: runs on vLLM's CPU backend (added automatically)",
    "llmperf": "llmperf(slo={...}, tolerance=0.05, repeats=K, num_requests=N, output_len=L, warmup=W, "
               "metrics=[...]): per-test performance settings",
    "engine": "engine: a test of the plugin that starts real vLLM engines (slow)",
}

#: keyword -> expected type(s) of @pytest.mark.llmperf(...)
LLMPERF_MARKER_KWARGS: dict[str, tuple[type, ...]] = {
    "slo": (dict,),
    "tolerance": (int, float),
    "repeats": (int,),
    "num_requests": (int,),
    "output_len": (int,),
    "warmup": (int,),
    "metrics": (list, tuple),
}


def parallel_size_from_marker(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> int:
    """Validate ``tp(n)`` / ``pp(n)`` / ``dp(n)``: exactly one positive int (positional or ``n=``)."""
    values = list(args) + ([kwargs["n"]] if "n" in kwargs else [])
    extra = set(kwargs) - {"n"}
    if extra or len(values) != 1 or isinstance(values[0], bool) or not isinstance(values[0], int) or values[0] < 1:
        raise UsageError(f"{where}: @pytest.mark.{name} takes one positive integer, e.g. "
                         f"@pytest.mark.{name}(2); got args={args!r} kwargs={kwargs!r}")
    return int(values[0])


def validate_llmperf_kwargs(args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    if args:
        raise UsageError(f"{where}: @pytest.mark.llmperf accepts only keyword arguments, got {args!r}")
    unknown = set(kwargs) - set(LLMPERF_MARKER_KWARGS)
    if unknown:
        raise UsageError(f"{where}: unknown @pytest.mark.llmperf argument(s) {sorted(unknown)}; "
                         f"known: {sorted(LLMPERF_MARKER_KWARGS)}")
    for key, given in kwargs.items():
        types = LLMPERF_MARKER_KWARGS[key]
        if isinstance(given, bool) or not isinstance(given, types):
            raise UsageError(f"{where}: @pytest.mark.llmperf({key}=...) must be "
                             f"{' or '.join(t.__name__ for t in types)}, got {given!r}")
        value: Any = kwargs[key]
        if key in {"repeats", "num_requests", "output_len"} and value < 1:
            raise UsageError(f"{where}: @pytest.mark.llmperf({key}={value}) must be >= 1")
        if key == "tolerance" and not 0 < value < 1:
            raise UsageError(f"{where}: @pytest.mark.llmperf(tolerance={value}) must be a fraction in (0, 1)")
        if key == "warmup" and value < 0:
            raise UsageError(f"{where}: @pytest.mark.llmperf(warmup={value}) must be >= 0")
        if key == "metrics":
            from pytest_llmperf.stats.metrics import direction_of

            if not value or not all(isinstance(m, str) for m in value):
                raise UsageError(f"{where}: @pytest.mark.llmperf(metrics=...) must be a non-empty list of metric "
                                 f"names, got {value!r}")
            for name in value:
                try:
                    direction_of(name)
                except UsageError as exc:
                    raise UsageError(f"{where}: @pytest.mark.llmperf(metrics=...): {exc}") from None
        if key == "slo":
            from pytest_llmperf.stats.slo import SLO

            SLO.from_mapping(value, source=f"{where}: @pytest.mark.llmperf(slo=...)")
    return dict(kwargs)


def marker_names(items: Iterable[str]) -> list[str]:
    return [n for n in items if n in MARKERS]
