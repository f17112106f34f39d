"""What load to drive: a frozen :class:`Workload`, validated on construction.

Lengths are either fixed (``128``) or a uniform integer range (``"128:512"``, both ends included), drawn
from the run's own seeded generator (never global random state). ``Workload.to_dict()`` gives the workload
dict of ``docs/CONTRIBUTING-LAYERS.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_llmperf.errors import UsageError

__all__ = ["LengthSpec", "Workload", "parse_length"]


@dataclass(frozen=True)
class LengthSpec:
    """A token-length distribution: ``low == high`` is fixed, otherwise uniform on ``[low, high]``."""

    low_tokens: int
    high_tokens: int

    def __post_init__(self) -> None:
        if self.low_tokens < 1 or self.high_tokens < self.low_tokens:
            raise UsageError(
                f"length range {self.low_tokens}:{self.high_tokens} is invalid: need 1 <= low <= high"
            )

    @property
    def is_fixed(self) -> bool:
        return self.low_tokens == self.high_tokens

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` lengths (int64) drawn from ``rng``; a fixed length draws nothing from it."""
        if self.is_fixed:
            return np.full(n, self.low_tokens, dtype=np.int64)
        return rng.integers(self.low_tokens, self.high_tokens + 1, size=n, dtype=np.int64)

    def to_spec(self) -> int | str:
        """The user-facing form: an int when fixed, ``"low:high"`` otherwise."""
        return self.low_tokens if self.is_fixed else f"{self.low_tokens}:{self.high_tokens}"


def parse_length(value: int | str | LengthSpec, *, name: str = "length") -> LengthSpec:
    """Parse ``128``, ``"128"`` or ``"128:512"`` into a :class:`LengthSpec`; raise UsageError naming ``name``."""
    if isinstance(value, LengthSpec):
        return value
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a token count or 'low:high', got {value!r}")
    if isinstance(value, (int, np.integer)):
        low = high = int(value)
    elif isinstance(value, str):
        parts = value.strip().split(":")
        try:
            if len(parts) == 1:
                low = high = int(parts[0])
            elif len(parts) == 2:
                low, high = int(parts[0]), int(parts[1])
            else:
                raise ValueError(value)
        except ValueError:
            raise UsageError(f"{name} must be a token count or 'low:high', got {value!r}") from None
    else:
        raise UsageError(f"{name} must be a token count or 'low:high', got {value!r}")
    if low < 1 or high < low:
        raise UsageError(f"{name} {value!r} is invalid: need 1 <= low <= high tokens")
    return LengthSpec(low, high)


@dataclass(frozen=True)
class Workload:
    """One load run's shape. ``request_rate=None`` is a closed loop gated only by ``concurrency``.

    ``burstiness`` is the gamma shape of open-loop gaps (1.0 = Poisson). Deadlines (none is part of the
    workload dict: they bound a run, they do not shape it): ``timeout_s`` is the total time allowed per request,
    connection included; ``stall_timeout_s`` fails the run when no token arrives for that long while requests
    are in flight (a stalled engine whose ``/health`` still answers); ``deadline_s`` bounds the whole run,
    warmup included. Defaults: 300 s, 60 s, 1800 s (docs/faults.md).
    """

    num_requests: int
    input_len: int | str = 128
    output_len: int | str = 128
    concurrency: int = 1
    warmup_requests: int = 0
    request_rate: float | None = None
    burstiness: float = 1.0
    seed: int = 0
    timeout_s: float = 300.0
    stall_timeout_s: float = 60.0
    deadline_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("num_requests", "concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UsageError(f"workload {name} must be an integer >= 1, got {value!r}")
        if isinstance(self.warmup_requests, bool) or not isinstance(self.warmup_requests, (int, np.integer)) \
                or self.warmup_requests < 0:
            raise UsageError(f"workload warmup_requests must be an integer >= 0, got {self.warmup_requests!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise UsageError(f"workload seed must be an integer >= 0, got {self.seed!r}")
        # validate lengths now so a bad spec fails before anything starts
        parse_length(self.input_len, name="input_len")
        parse_length(self.output_len, name="output_len")
        if self.request_rate is not None and not (
            isinstance(self.request_rate, (int, float)) and self.request_rate > 0 and math.isfinite(self.request_rate)
        ):
            raise UsageError(
                f"workload request_rate must be a finite number > 0 req/s (or None for a closed loop), "
                f"got {self.request_rate!r}"
            )
        if not (isinstance(self.burstiness, (int, float)) and self.burstiness > 0 and math.isfinite(self.burstiness)):
            raise UsageError(f"workload burstiness must be a finite number > 0, got {self.burstiness!r}")
        for name in ("timeout_s", "stall_timeout_s", "deadline_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise UsageError(f"workload {name} must be a finite number > 0 seconds, got {value!r}")

    @property
    def input_spec(self) -> LengthSpec:
        return parse_length(self.input_len, name="input_len")

    @property
    def output_spec(self) -> LengthSpec:
        return parse_length(self.output_len, name="output_len")

    @property
    def total_requests(self) -> int:
        """Warmup plus measured requests."""
        return int(self.warmup_requests) + int(self.num_requests)

    @property
    def is_open_loop(self) -> bool:
        return self.request_rate is not None

    def to_dict(self) -> dict[str, Any]:
        """The shared workload dict (CONTRIBUTING-LAYERS.md): lengths as int or ``"low:high"``."""
        return {
            "concurrency": int(self.concurrency),
            "input_len": self.input_spec.to_spec(),
            "output_len": self.output_spec.to_spec(),
            "num_requests": int(self.num_requests),
            "warmup_requests": int(self.warmup_requests),
            "request_rate": None if self.request_rate is None else float(self.request_rate),
            "burstiness": float(self.burstiness),
            "seed": int(self.seed),
        }
