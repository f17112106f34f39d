"""EngineSpec: what engine a test needs, as a hashable value (the pool starts one engine per distinct spec).

A spec is built from a mode string, markers and options, and turns into vLLM's argv and environment through
:mod:`pytest_llmperf.engine.backends`. Modes: ``single``; partitioning a model that does not fit: ``tpN``
(tensor parallel), ``ppN`` (pipeline parallel), ``tpNppM``; replicating one that does: ``dpN`` (vLLM's
``--data-parallel-size``: N replicas behind one API server); mixture-of-experts: ``epN`` (TP=N with
``--enable-expert-parallel``: attention split N ways, experts spread over the N GPUs) and ``dpNep`` (N
data-parallel replicas whose experts are spread over all of them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from pytest_llmperf.errors import UsageError

__all__ = ["EngineSpec", "ModeShape", "parse_mode", "parse_mode_shape", "mode_label", "BACKENDS"]

BACKENDS = ("cpu", "gpu")
_MODE_RE = re.compile(r"^(?:single|(?:tp(?P<tp>\d+))?(?:pp(?P<pp>\d+))?(?:dp(?P<dp>\d+))?(?P<ep>ep(?P<epn>\d+)?)?)$")
_MODE_HELP = "use single, tpN, ppN, tpNppM, dpN, epN or dpNep (e.g. tp2, pp2, dp2, ep2)"


@dataclass(frozen=True)
class ModeShape:
    """The parallel layout a mode string names."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: bool = False

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def label(self) -> str:
        return mode_label(self.tp, self.pp, self.dp, self.ep)


def parse_mode_shape(mode: str) -> ModeShape:
    """``single`` -> 1 GPU; ``tp2``/``pp2``/``tp2pp2``; ``dp2``; ``ep2`` = TP 2 + expert parallel; ``dp2ep``."""
    text = mode.strip().lower()
    m = _MODE_RE.match(text)
    if not m or (text != "single" and not any(m.group(g) for g in ("tp", "pp", "dp", "ep"))):
        raise UsageError(f"unknown engine mode {mode!r}: {_MODE_HELP}")
    tp, pp, dp = (int(m.group(g) or 1) for g in ("tp", "pp", "dp"))
    ep = m.group("ep") is not None
    if m.group("epn"):
        if m.group("tp") or m.group("dp"):
            raise UsageError(f"engine mode {mode!r}: write epN alone (TP=N + expert parallel) or dpNep / tpNep")
        tp = int(m.group("epn"))
    if min(tp, pp, dp) < 1:
        raise UsageError(f"engine mode {mode!r}: parallel sizes must be >= 1")
    if ep and tp * dp < 2:
        raise UsageError(f"engine mode {mode!r}: expert parallel needs at least 2 GPUs (ep2, tp2ep or dp2ep)")
    return ModeShape(tp, pp, dp, ep)


def parse_mode(mode: str) -> tuple[int, int]:
    """``"single"`` -> (1, 1); ``"tp2"`` -> (2, 1); ``"pp2"`` -> (1, 2); ``"tp2pp2"`` -> (2, 2).

    For TP/PP-only callers; a data- or expert-parallel mode is an error here (use :func:`parse_mode_shape`)."""
    shape = parse_mode_shape(mode)
    if shape.dp > 1 or shape.ep:
        raise UsageError(f"engine mode {mode!r} is data/expert parallel: not a TP/PP layout")
    return shape.tp, shape.pp


def mode_label(tp: int, pp: int, dp: int = 1, ep: bool = False) -> str:
    """The inverse of :func:`parse_mode_shape`: (1, 1) -> ``single``, (2, 1) -> ``tp2``, dp 2 -> ``dp2``,
    TP 2 + EP -> ``ep2``, DP 2 + EP -> ``dp2ep``."""
    if ep and pp == 1 and dp == 1:
        return f"ep{tp}"
    if tp * pp * dp == 1:
        return "single"
    return ((f"tp{tp}" if tp > 1 else "") + (f"pp{pp}" if pp > 1 else "") + (f"dp{dp}" if dp > 1 else "")
            + ("ep" if ep else ""))


@dataclass(frozen=True)
class EngineSpec:
    """Everything that decides which engine process serves a test. Frozen and hashable.

    ``model`` is a preset name (see :mod:`pytest_llmperf.models.presets`) or a real model path / hub name.
    ``enforce_eager`` None means the backend's default. ``emulate_pcie`` turns NVLink into a PCIe-like link
    without any peer path (NCCL P2P and NVLS off, vLLM's custom and symmetric-memory all-reduce off, the
    all-reduce fusion off; see :mod:`pytest_llmperf.engine.allreduce`), proven from the engine's log.
    ``allreduce_fusion`` (``auto``/``on``/``off``) decides the FlashInfer all-reduce + RMSNorm fusion for TP.
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
    allreduce_fusion: str = "auto"
    dp: int = 1
    expert_parallel: bool = False
    devices: tuple[int, ...] | None = None
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=())
    startup_timeout_s: float = 600.0
    python: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.tp < 1 or self.pp < 1 or self.dp < 1:
            raise UsageError(f"parallel sizes must be >= 1 (got tp={self.tp}, pp={self.pp}, dp={self.dp})")
        if self.expert_parallel and self.tp * self.dp < 2:
            raise UsageError("expert parallel needs tp or dp >= 2")
        if self.max_model_len < 16:
            raise UsageError(f"max_model_len {self.max_model_len} is too small")
        if self.allreduce_fusion not in ("auto", "on", "off"):
            raise UsageError(f"allreduce_fusion {self.allreduce_fusion!r}: use auto, on or off")
        if self.devices is not None and len(self.devices) != self.world_size:
            raise UsageError(f"{self.label} needs {self.world_size} devices, got {list(self.devices)}")

    @classmethod
    def from_mode(cls, mode: str, **kwargs: object) -> EngineSpec:
        shape = parse_mode_shape(mode)
        return cls(tp=shape.tp, pp=shape.pp, dp=shape.dp, expert_parallel=shape.ep, **kwargs)  # type: ignore[arg-type]

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def parallelism(self) -> str:
        """The kind of layout: ``single``, ``tp``, ``pp``, ``tp+pp``, ``dp`` or ``ep`` (the *mode* is the label:
        ``tp2``, the one meaning of "mode" in options, fixtures, test ids and reports)."""
        if self.expert_parallel:
            return "ep"
        if self.dp > 1:
            return "dp"
        if self.tp > 1 and self.pp > 1:
            return "tp+pp"
        return "tp" if self.tp > 1 else "pp" if self.pp > 1 else "single"

    @property
    def label(self) -> str:
        """Short id used in test ids and reports: ``single``, ``tp2``, ``pp2``, ``tp2pp2``, ``dp2``, ``ep2``."""
        return mode_label(self.tp, self.pp, self.dp, self.expert_parallel)

    def with_(self, **changes: object) -> EngineSpec:
        return replace(self, **changes)  # type: ignore[arg-type]

    def sort_key(self) -> tuple:
        return (self.backend, self.model, self.world_size, self.tp, self.pp, self.dp, self.expert_parallel,
                self.emulate_pcie, repr(self))

    def to_dict(self) -> dict[str, object]:
        """The engine dict of CONTRIBUTING-LAYERS.md (without engine_version, added once started)."""
        return {
            "mode": self.label, "label": self.label, "parallelism": self.parallelism, "tp": self.tp, "pp": self.pp,
            "dp": self.dp,
            "expert_parallel": self.expert_parallel, "model": self.model,
            "dtype": self.dtype, "backend": self.backend, "emulation": "pcie" if self.emulate_pcie else None,
            "max_model_len": self.max_model_len, "enforce_eager": self.enforce_eager,
            "extra_args": list(self.extra_args),
        }
