"""Thin, lazy wrapper over NVML (module ``pynvml`` from the nvidia-ml-py package).

``pynvml`` is imported only inside functions, so importing this module costs nothing on machines without
a GPU and ``pytest_llmperf.plugin`` stays light. :func:`nvml_init` / :func:`nvml_shutdown` are
reference-counted (NVML itself is process-global): every user calls init once and shutdown once, and the
library is shut down when the last user leaves. :func:`resolve_gpu_indices` maps device ids as CUDA numbers
them in this process (``CUDA_VISIBLE_DEVICES`` entries: indices or ``GPU-<uuid>`` prefixes) to physical NVML
indices, which is what the sampler reads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from pytest_llmperf.errors import LLMPerfError, UsageError

__all__ = [
    "NvmlUnavailable",
    "load_pynvml",
    "nvml_available",
    "nvml_unavailable_reason",
    "nvml_init",
    "nvml_shutdown",
    "nvml_session",
    "list_gpus",
    "describe_gpus",
    "parse_visible_devices",
    "resolve_gpu_indices",
    "field_value",
    "decode",
]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_refcount = 0
_module: ModuleType | None = None
#: Test seam: when set, used instead of ``import pynvml`` (a fake module with the same functions).
_override: ModuleType | None = None


class NvmlUnavailable(LLMPerfError):
    """NVML cannot be used here: the package is missing, the driver library is absent, or init failed."""


def load_pynvml() -> ModuleType:
    """Import and return ``pynvml`` (or the installed test fake); raise NvmlUnavailable naming why not."""
    if _override is not None:
        return _override
    try:
        import pynvml  # noqa: PLC0415  (lazy on purpose)
    except ImportError as exc:  # pragma: no cover - the dev venv has it
        raise NvmlUnavailable(f"package nvidia-ml-py (module pynvml) is not installed: {exc}") from exc
    return pynvml


def decode(value: Any) -> str:
    """NVML strings are bytes in old pynvml versions and str in new ones."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def nvml_init() -> ModuleType:
    """Initialise NVML (ref-counted) and return the module. Raise NvmlUnavailable with the cause."""
    global _refcount, _module
    nvml = load_pynvml()
    with _lock:
        if _refcount == 0:
            try:
                nvml.nvmlInit()
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
                raise NvmlUnavailable(f"nvmlInit failed: {type(exc).__name__}: {exc}") from exc
            _module = nvml
        _refcount += 1
        return nvml


def nvml_shutdown() -> None:
    """Drop one reference; shut NVML down when the last one goes. Extra calls are harmless."""
    global _refcount, _module
    with _lock:
        if _refcount == 0:
            return
        _refcount -= 1
        if _refcount == 0 and _module is not None:
            try:
                _module.nvmlShutdown()
            except Exception as exc:  # never let cleanup fail a test
                log.debug("nvmlShutdown failed: %s", exc)
            _module = None


@contextmanager
def nvml_session() -> Iterator[ModuleType]:
    """NVML initialised on entry and shut down on exit; the block receives the pynvml module."""
    nvml = nvml_init()
    try:
        yield nvml
    finally:
        nvml_shutdown()


def nvml_unavailable_reason() -> str | None:
    """None when NVML works and sees at least one GPU, else the reason in words."""
    try:
        with nvml_session() as nvml:
            count = int(nvml.nvmlDeviceGetCount())
    except NvmlUnavailable as exc:
        return str(exc)
    except Exception as exc:
        return f"NVML query failed: {type(exc).__name__}: {exc}"
    return None if count > 0 else "NVML sees no GPU"


def nvml_available() -> bool:
    """True when NVML initialises and reports at least one GPU."""
    return nvml_unavailable_reason() is None


def list_gpus(nvml: ModuleType) -> list[tuple[int, str, str]]:
    """(index, name, uuid) of every GPU NVML sees; NVML must be initialised."""
    out = []
    for i in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        out.append((i, decode(nvml.nvmlDeviceGetName(handle)), decode(nvml.nvmlDeviceGetUUID(handle))))
    return out


def describe_gpus(gpus: Sequence[tuple[int, str, str]]) -> str:
    """``"0 (NVIDIA H200), 1 (NVIDIA H200)"`` for error messages."""
    return ", ".join(f"{i} ({name})" for i, name, _ in gpus) or "none"


def parse_visible_devices(value: str | None) -> list[str] | None:
    """Entries of a ``CUDA_VISIBLE_DEVICES`` value; None when unset (all devices visible).

    CUDA stops at the first invalid entry, and so does this: ``"0,1,-1,2"`` -> ``["0", "1"]``.
    """
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.lstrip("-").isdigit() and int(item) < 0:
            break
        entries.append(item)
    return entries


def _match_entry(entry: str, gpus: Sequence[tuple[int, str, str]]) -> int:
    if entry.isdigit():
        index = int(entry)
        if index >= len(gpus):
            raise UsageError(
                f"CUDA_VISIBLE_DEVICES names GPU {index} but NVML sees {len(gpus)} GPUs: {describe_gpus(gpus)}"
            )
        return index
    if entry.startswith("MIG-"):
        raise UsageError(f"CUDA_VISIBLE_DEVICES entry {entry!r} is a MIG instance; power telemetry needs whole GPUs")
    key = entry if entry.startswith("GPU-") else f"GPU-{entry}"
    hits = [i for i, _, uuid in gpus if uuid.startswith(key)]
    if len(hits) != 1:
        what = "matches no GPU" if not hits else f"is ambiguous (matches GPUs {hits})"
        raise UsageError(f"CUDA_VISIBLE_DEVICES entry {entry!r} {what}; NVML sees {describe_gpus(gpus)}")
    return hits[0]


def resolve_gpu_indices(
    requested: Sequence[int] | None,
    gpus: Sequence[tuple[int, str, str]],
    visible_devices: str | None = None,
    *,
    use_env: bool = True,
) -> list[int]:
    """Map CUDA device ids of this process to physical NVML indices.

    ``requested`` are indices as CUDA numbers devices under ``visible_devices`` (by default the
    ``CUDA_VISIBLE_DEVICES`` of this process); None means every visible device. ``gpus`` is
    :func:`list_gpus`'s answer. Raises UsageError naming the GPUs NVML sees when an id does not exist.
    """
    if visible_devices is None and use_env:
        visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = parse_visible_devices(visible_devices)
    visible = list(range(len(gpus))) if entries is None else [_match_entry(e, gpus) for e in entries]
    if requested is None:
        return visible
    out = []
    for index in requested:
        if not 0 <= int(index) < len(visible):
            where = f"NVML sees {len(gpus)} GPUs: {describe_gpus(gpus)}"
            if entries is not None:
                where += f"; CUDA_VISIBLE_DEVICES={visible_devices!r} leaves {len(visible)} visible"
            raise UsageError(f"GPU {index} requested but {where}")
        out.append(visible[int(index)])
    return out


def field_value(fv: Any) -> float | None:
    """Value of one ``c_nvmlFieldValue_t``; None when NVML reported an error for that field."""
    if int(getattr(fv, "nvmlReturn", 0)) != 0:
        return None
    kind = int(getattr(fv, "valueType", 1))
    v = fv.value
    attr = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}.get(kind, "uiVal")
    return float(getattr(v, attr))
