"""EngineSpec: what engine a test needs, as a hashable value (the pool starts one engine per distinct spec).

A spec is built from a mode string (``single``, ``tp2``, ``pp2``, ``tp2pp2``), markers and options, and turns
into vLLM's argv and environment through :mod:`pytest_llmperf.engine.backends`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from pytest_llmperf.errors import UsageError

__all__ = ["EngineSpec", "parse_mode", "mode_label", "BACKENDS"]

BACKENDS = ("cpu", "gpu")
_MODE_RE = re.compile(r"^(?:single|(?:tp(?P<tp>\d+))?(?:pp(?P<pp>\d+))?)$")


def parse_mode(mode: str) -> tuple[int, int]:
    """``"single"`` -> (1, 1); ``"tp2"`` -> (2, 1); ``"pp2"`` -> (1, 2); ``"tp2pp2"`` -> (2, 2)."""
    m = _MODE_RE.match(mode.strip().lower())
    if not m or (mode.strip().lower() != "single" and not (m.group("tp") or m.group("pp"))):
        raise UsageError(f"unknown engine mode {mode!r}: use single, tpN, ppN or tpNppM (e.g. tp2, pp2, tp2pp2)")
    tp, pp = int(m.group("tp") or 1), int(m.group("pp") or 1)
    if tp < 1 or pp < 1:
        raise UsageError(f"engine mode {mode!r}: parallel sizes must be >= 1")
    return tp, pp


def mode_label(tp: int, pp: int) -> str:
    """The inverse of :func:`parse_mode`: (1, 1) -> ``single``, (2, 1) -> ``tp2``, (2, 2) -> ``tp2pp2``."""
    if tp * pp == 1:
        return "single"
    return (f"tp{tp}" if tp > 1 else "") + (f"pp{pp}" if pp > 1 else "")


@dataclass(frozen=True)
class EngineSpec:
    """Everything that decides which engine process serves a test. Frozen and hashable.

    ``model`` is a preset name (see :mod:`pytest_llmperf.models.presets`) or a real model path / hub name.
    ``enforce_eager`` None means the backend's default. ``emulate_pcie`` turns NVLink into a PCIe-like link
    without P2P (``NCCL_P2P_DISABLE=1`` and ``--disable-custom-all-reduce``).
    """

    model: str = "tiny-llama"
    backend: str = "cpu"
    tp: int = 1
    pp: int = 1
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    tokenizer: str | None = None
    enforce_eager: bool | None = None
    emulate_pcie: bool = False
    devices: tuple[int, ...] | None = None
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=())
    startup_timeout_s: float = 600.0
    python: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.tp < 1 or self.pp < 1:
            raise UsageError(f"tensor/pipeline parallel sizes must be >= 1 (got tp={self.tp}, pp={self.pp})")
        if self.max_model_len < 16:
            raise UsageError(f"max_model_len {self.max_model_len} is too small")
        if self.devices is not None and len(self.devices) != self.world_size:
            raise UsageError(f"{self.label} needs {self.world_size} devices, got {list(self.devices)}")

    @classmethod
    def from_mode(cls, mode: str, **kwargs: object) -> EngineSpec:
        tp, pp = parse_mode(mode)
        return cls(tp=tp, pp=pp, **kwargs)  # type: ignore[arg-type]

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @property
    def mode(self) -> str:
        """``single``, ``tp``, ``pp`` or ``tp+pp``."""
        if self.tp > 1 and self.pp > 1:
            return "tp+pp"
        return "tp" if self.tp > 1 else "pp" if self.pp > 1 else "single"

    @property
    def label(self) -> str:
        """Short id used in test ids and reports: ``single``, ``tp2``, ``pp2``, ``tp2pp2``."""
        return mode_label(self.tp, self.pp)

    def with_(self, **changes: object) -> EngineSpec:
        return replace(self, **changes)  # type: ignore[arg-type]

    def sort_key(self) -> tuple:
        return (self.backend, self.model, self.world_size, self.tp, self.pp, self.emulate_pcie, repr(self))

    def to_dict(self) -> dict[str, object]:
        """The engine dict of CONTRIBUTING-LAYERS.md (without engine_version, added once started)."""
        return {
            "mode": self.mode, "label": self.label, "tp": self.tp, "pp": self.pp, "model": self.model,
            "dtype": self.dtype, "backend": self.backend, "emulation": "pcie" if self.emulate_pcie else None,
            "max_model_len": self.max_model_len, "enforce_eager": self.enforce_eager,
            "extra_args": list(self.extra_args),
        }
