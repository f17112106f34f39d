"""Precomputed send offsets: closed loop (all at 0, gated by the concurrency limit) or open loop.

Open-loop gaps are gamma distributed with ``shape=burstiness`` and ``scale=1/(rate*burstiness)`` (Poisson at
burstiness 1), as vLLM's ``get_request``, but drawn from the generator the run owns, never global
``np.random``. The first request goes at offset 0. With ``normalize=True`` (the default, as vLLM) the offsets
are rescaled so the last send is at ``(n - 1) / rate``: the realised mean rate is then exactly ``rate``.

Rate and concurrency together (``Workload(request_rate=R, concurrency=C)``) behave as vLLM's ``--request-rate R
--max-concurrency C``: requests are *offered* at ``R`` but at most ``C`` are in flight; a send whose slot is
taken waits for one. When the server is slower than ``R`` allows, the *achieved* send rate falls below ``R``
(:func:`achieved_send_rate_req_s` measures it from the records' send times; a report should show both). There is
no other cap: for a pure open loop give a concurrency at least ``R`` times the longest expected latency. A rate
of 0, a negative or a non-finite rate is refused (:func:`parse_rates` for a comma-separated sweep list).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pytest_llmperf.errors import UsageError

__all__ = ["send_offsets_s", "parse_rates", "achieved_send_rate_req_s"]


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


def parse_rates(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"1,2,4.5"`` (or a sequence of numbers) as request rates in req/s, each finite and > 0, in the order
    given; ``inf`` is refused (a closed loop is no rate: leave the rate unset)."""
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    if not items or items == [""]:
        raise UsageError("request rates: give at least one rate in req/s, e.g. 1,2,4")
    out = []
    for item in items:
        try:
            rate = float(item)
        except (TypeError, ValueError):
            raise UsageError(f"request rate {item!r} is not a number (req/s)") from None
        if isinstance(item, bool) or not math.isfinite(rate) or rate <= 0:
            raise UsageError(f"request rate must be a finite number > 0 req/s, got {item!r}")
        out.append(rate)
    return tuple(out)


def achieved_send_rate_req_s(start_s: Sequence[float]) -> float | None:
    """Sends per second actually made: ``(n - 1) / (last send - first send)``; None for fewer than 2 sends or
    sends all at one instant (a closed loop's first wave)."""
    if len(start_s) < 2:
        return None
    span_s = max(start_s) - min(start_s)
    return (len(start_s) - 1) / span_s if span_s > 0 else None
