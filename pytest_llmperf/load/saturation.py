"""Saturation search: the highest request rate (or concurrency) whose goodput still meets the SLOs.

A load *meets* the SLOs when its **SLO attainment** -- the fraction of sent requests that succeeded and met
every per-request limit (TTFT, TPOT, E2EL: :class:`~pytest_llmperf.stats.metrics.GoodputLimits`) -- is at
least ``target`` (GuideLLM's "SLO attainment", AIPerf's "good request fraction"; vLLM's ``--goodput`` counts the
same requests per second). :func:`find_max_load` is a pure driver over a ``measure(load) -> LoadPoint``
callback (no I/O of its own; :func:`endpoint_measure` is the callback that drives a real endpoint):

1. measure ``start``; while it meets, multiply the load by ``growth`` up to ``limit``; if ``start`` already
   misses, divide by ``growth`` until a load meets (or ``min_load`` is passed);
2. bisect between the highest load that met and the lowest that missed until they are within ``rel_tol`` of
   each other (integer loads: adjacent) or ``max_steps`` measurements were made.

Confidence. Each point's attainment carries a Wilson score interval at ``confidence``. A point whose
interval straddles ``target`` is *indeterminate*: it is measured again (``retries`` times, counts pooled);
the decision then follows the pooled point estimate and the point is flagged ``confident=False``. The result
reports the bracket ``[max_load, first_miss]`` (the answer lies between), the attainment interval at
``max_load``, and whether every decision that shaped the bracket was confident. Attainment is assumed to fall
as load rises (a server that gets better under more load breaks the search, as it breaks every such search).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.stats.metrics import GoodputLimits, compute_run_metrics

if TYPE_CHECKING:
    from pytest_llmperf.load.prompts import PromptLike
    from pytest_llmperf.load.workload import Workload
    from pytest_llmperf.records import RequestRecord

__all__ = ["LoadPoint", "SaturationResult", "find_max_load", "wilson_interval", "count_good", "slo_attainment",
           "endpoint_measure", "load_text", "point_text", "search_text", "value_text"]


def wilson_interval(good: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval of a binomial proportion ``good / total`` (``(0, 1)`` when total is 0)."""
    if not 0 < confidence < 1:
        raise UsageError(f"confidence must be in (0, 1), got {confidence}")
    if total <= 0:
        return 0.0, 1.0
    if not 0 <= good <= total:
        raise UsageError(f"good requests ({good}) must be between 0 and total ({total})")
    z = statistics.NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = good / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    low = 0.0 if good == 0 else max(0.0, min(p, centre - half))  # the exact bounds at 0 and 1 (no rounding)
    high = 1.0 if good == total else min(1.0, max(p, centre + half))
    return low, high


def count_good(records: Sequence[RequestRecord], limits: GoodputLimits) -> int:
    """Successful requests meeting every limit ``limits`` sets (all successful ones when it sets none)."""
    if not records:
        return 0
    metrics = compute_run_metrics(records, 1.0, limits)  # over 1 s, goodput in req/s is the count
    if metrics.goodput_req_s is None:
        return metrics.completed
    return int(round(metrics.goodput_req_s))


def slo_attainment(records: Sequence[RequestRecord], limits: GoodputLimits) -> float | None:
    """Fraction of all requests (failed ones count as misses) that succeeded and met every limit."""
    return count_good(records, limits) / len(records) if records else None


@dataclass(frozen=True)
class LoadPoint:
    """One measured load: ``good`` of ``total`` requests met the SLOs. ``extra`` carries what the callback
    wants reported (e.g. achieved rate, TTFT p95)."""

    load: float
    good: int
    total: int
    confident: bool = True
    extra: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.total < 1 or not 0 <= self.good <= self.total:
            raise UsageError(f"load point {self.load:g}: need 0 <= good <= total and total >= 1, "
                             f"got {self.good} of {self.total}")

    @property
    def attainment(self) -> float:
        return self.good / self.total

    def to_dict(self) -> dict[str, Any]:
        """The point as results files keep it and :func:`point_text` words it."""
        return {"load": self.load, "good": self.good, "total": self.total, "attainment": self.attainment,
                "confident": self.confident, **dict(self.extra)}


@dataclass(frozen=True)
class SaturationResult:
    """``max_load``: the highest load that met the target (None: none did); ``first_miss``: the lowest that missed
    (None: every load up to ``limit`` met). ``confident``: every decision that set the bracket had an attainment
    interval clear of the target. ``points`` in the order measured."""

    variable: str
    target: float
    confidence: float
    max_load: float | None
    first_miss: float | None
    attainment_at_max: float | None
    attainment_ci_at_max: tuple[float, float] | None
    confident: bool
    reason: str
    points: tuple[LoadPoint, ...]

    def summary(self) -> dict[str, float]:
        """Gateable keys: ``max_rate_at_slo_req_s`` (or ``max_concurrency_at_slo``) and the attainment there."""
        key = "max_rate_at_slo_req_s" if self.variable == "request_rate" else "max_concurrency_at_slo"
        out: dict[str, float] = {}
        if self.max_load is not None:
            out[key] = float(self.max_load)
        if self.attainment_at_max is not None:
            out["slo_attainment_at_max"] = float(self.attainment_at_max)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"variable": self.variable, "target": self.target, "confidence": self.confidence,
                "max_load": self.max_load, "first_miss": self.first_miss, "attainment_at_max": self.attainment_at_max,
                "attainment_ci_at_max": list(self.attainment_ci_at_max) if self.attainment_ci_at_max else None,
                "confident": self.confident, "reason": self.reason,
                "points": [p.to_dict() for p in self.points]}


def value_text(value: Any, variable: str) -> str:
    """``6 req/s`` (a request rate) or ``6`` (a concurrency)."""
    return f"{float(value):g}" + (" req/s" if variable == "request_rate" else "")


def load_text(value: Any, variable: str) -> str:
    """``request rate 6 req/s`` or ``concurrency 6``."""
    return f"{variable.replace('_', ' ')} {value_text(value, variable)}"


def point_text(point: Mapping[str, Any], variable: str) -> str:
    """One measured point of a search (a ``SaturationResult.to_dict()`` point): the one wording of the live
    progress of ``llmperf run --find-max-rate`` and ``Bench.saturation``."""
    return (f"{load_text(point['load'], variable)}: {point['good']}/{point['total']} within the SLO "
            f"({float(point['attainment']):.0%}{'' if point.get('confident', True) else ', not confident'})")


def search_text(search: Mapping[str, Any]) -> str:
    """A search's answer (a ``SaturationResult.to_dict()``, live or read back from a results file): the max load
    at the SLO, the attainment there with its interval, confident or not, and the first load that missed. The
    one wording of the CLI, the pytest notes and the reports."""
    variable = str(search.get("variable") or "request_rate")
    if search.get("max_load") is None:
        return str(search.get("reason") or "no load met the target")
    ci = search.get("attainment_ci_at_max")
    level = f"{float(search['confidence']):.0%} " if search.get("confidence") is not None else ""
    attain = "" if search.get("attainment_at_max") is None else (
        f", attainment {float(search['attainment_at_max']):.3f}"
        + (f" ({level}CI {float(ci[0]):.3f}-{float(ci[1]):.3f})" if ci else ""))
    miss = ("none up to the search limit (not saturated)" if search.get("first_miss") is None
            else value_text(search["first_miss"], variable))
    return (f"max {load_text(search['max_load'], variable)} at SLO{attain}, "
            f"{'confident' if search.get('confident') else 'not confident'}; first miss {miss}")


MeasureFn = Callable[[float], LoadPoint]


def find_max_load(
    measure: MeasureFn,
    *,
    start: float,
    limit: float,
    target: float = 0.9,
    confidence: float = 0.95,
    rel_tol: float = 0.1,
    growth: float = 2.0,
    max_steps: int = 12,
    retries: int = 1,
    integer: bool = False,
    min_load: float | None = None,
    variable: str = "request_rate",
) -> SaturationResult:
    """Search the highest load meeting ``target`` attainment (module docstring); ``measure`` is called at most
    ``max_steps`` times plus ``retries`` per indeterminate point."""
    if not (start > 0 and limit >= start and math.isfinite(limit)):
        raise UsageError(f"saturation search needs 0 < start <= limit (finite), got start={start}, limit={limit}")
    if not 0 < target <= 1:
        raise UsageError(f"target attainment must be in (0, 1], got {target}")
    if not growth > 1 or not rel_tol > 0 or max_steps < 1 or retries < 0:
        raise UsageError("saturation search needs growth > 1, rel_tol > 0, max_steps >= 1, retries >= 0")
    floor = min_load if min_load is not None else (1.0 if integer else start / growth**4)
    points: list[LoadPoint] = []
    decisions: dict[float, LoadPoint] = {}

    def norm(x: float) -> float:
        return float(max(1, round(x))) if integer else float(x)

    def probe(x: float) -> bool:
        point = measure(x)
        if point.load != x:
            point = replace(point, load=x)
        for _ in range(retries):
            low, high = wilson_interval(point.good, point.total, confidence)
            if low >= target or high < target:
                break
            more = measure(x)
            point = replace(point, good=point.good + more.good, total=point.total + more.total)
        low, high = wilson_interval(point.good, point.total, confidence)
        point = replace(point, confident=low >= target or high < target)
        points.append(point)
        decisions[x] = point
        return point.attainment >= target

    lo: float | None = None
    hi: float | None = None
    x = norm(start)
    steps = 0
    if probe(x):
        lo = x
        while lo < limit and steps < max_steps - 1:
            x = norm(min(lo * growth, limit))
            if x <= lo:  # integer loads with a small growth: step by one
                x = min(lo + 1, limit)
            steps += 1
            if probe(x):
                lo = x
            else:
                hi = x
                break
    else:
        hi = x
        while steps < max_steps - 1:
            x = norm(hi / growth)
            if x < floor or x >= hi:
                break
            steps += 1
            if probe(x):
                lo = x
                break
            hi = x
    while lo is not None and hi is not None and steps < max_steps - 1:
        if integer and hi - lo <= 1:
            break
        if not integer and (hi - lo) / lo <= rel_tol:
            break
        mid = norm((lo + hi) / 2)
        if mid in (lo, hi):
            break
        steps += 1
        if probe(mid):
            lo = mid
        else:
            hi = mid
    bracket = [decisions[k] for k in (lo, hi) if k is not None]
    confident = all(p.confident for p in bracket)
    if lo is None:
        reason = f"no load met {target:.0%} SLO attainment (lowest tried {hi:g})"
    elif hi is None:
        reason = f"every load up to {lo:g} met {target:.0%} SLO attainment (the search limit; not saturated)"
    else:
        reason = f"{target:.0%} SLO attainment met at {lo:g}, missed at {hi:g}"
    at = decisions[lo] if lo is not None else None
    return SaturationResult(
        variable=variable, target=target, confidence=confidence, max_load=lo, first_miss=hi,
        attainment_at_max=at.attainment if at else None,
        attainment_ci_at_max=wilson_interval(at.good, at.total, confidence) if at else None,
        confident=confident, reason=reason, points=tuple(points))


def endpoint_measure(endpoint: str, model: str, workload: Workload, limits: GoodputLimits, *,
                     variable: str = "request_rate", prompts: Sequence[PromptLike] | None = None,
                     chat: bool = False, vocab_size: int = 32000,
                     on_point: Callable[[LoadPoint, Any], None] | None = None) -> MeasureFn:
    """A ``measure`` callback that runs ``workload`` at the given request rate (its concurrency stays the cap
    on requests in flight) or concurrency (closed loop) and counts the requests meeting ``limits``.
    ``on_point(point, run)`` sees each measurement as it is made (live progress, the run's records)."""
    from pytest_llmperf.load.arrivals import achieved_send_rate_req_s
    from pytest_llmperf.load.runner import run_load

    if variable not in ("request_rate", "concurrency"):
        raise UsageError(f"saturation variable must be 'request_rate' or 'concurrency', got {variable!r}")
    calls = [0]

    def measure(load: float) -> LoadPoint:
        calls[0] += 1
        if variable == "request_rate":
            w = replace(workload, request_rate=float(load), seed=workload.seed + calls[0])
        else:
            w = replace(workload, concurrency=int(load), request_rate=None, seed=workload.seed + calls[0])
        run = run_load(endpoint, model, w, prompts=prompts, chat=chat, vocab_size=vocab_size)
        achieved = achieved_send_rate_req_s([r.start_s for r in run.records])
        extra = (("achieved_rate_req_s", achieved),) if achieved is not None else ()
        point = LoadPoint(float(load), count_good(run.records, limits), len(run.records), extra=extra)
        if on_point is not None:
            on_point(point, run)
        return point

    return measure
