"""Precomputed send offsets: closed loop (all at 0, gated by the concurrency limit) or open loop.

Open-loop gaps are gamma distributed with ``shape=burstiness`` and ``scale=1/(rate*burstiness)`` (Poisson at
burstiness 1), as vLLM's ``get_request``, but drawn from the generator the run owns, never global
``np.random``. The first request goes at offset 0. With ``normalize=True`` (the default, as vLLM) the offsets
are rescaled so the last send is at ``(n - 1) / rate``: the realised mean rate is then exactly ``rate``.
"""

from __future__ import annotations

import numpy as np

from pytest_llmperf.errors import UsageError

__all__ = ["send_offsets_s"]


def send_offsets_s(
    n_requests: int,
    request_rate: float | None,
    rng: np.random.Generator,
    *,
    burstiness: float = 1.0,
    normalize: bool = True,
) -> np.ndarray:
    """Send offsets in seconds from the run start, non-decreasing, ``offsets[0] == 0``.

    ``request_rate=None`` (or ``inf``) is a closed loop: every offset is 0 and ``rng`` is not drawn from.
    """
    if n_requests < 0:
        raise UsageError(f"n_requests must be >= 0, got {n_requests}")
    if request_rate is None or request_rate == float("inf"):
        return np.zeros(n_requests, dtype=np.float64)
    if not request_rate > 0:
        raise UsageError(f"request_rate must be > 0 req/s, got {request_rate}")
    if not burstiness > 0:
        raise UsageError(f"burstiness must be > 0, got {burstiness}")
    if n_requests == 0:
        return np.zeros(0, dtype=np.float64)
    gaps_s = rng.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness), size=n_requests - 1)
    offsets_s = np.concatenate(([0.0], np.cumsum(gaps_s)))
    if normalize and n_requests > 1 and offsets_s[-1] > 0:
        offsets_s *= ((n_requests - 1) / request_rate) / offsets_s[-1]
    return offsets_s
