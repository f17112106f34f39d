"""What if: for a model, a GPU count and an SLO, the predicted best strategy per link and where PP overtakes TP.

Strategies for ``gpus`` GPUs: ``tp{n}``, ``pp{n}`` and ``dp{n}`` (n copies of the single-GPU engine, the
concurrency split evenly; possible because the single-GPU run shows the model fits one GPU). At each concurrency
the best strategy is the one with the highest predicted output throughput among those meeting the SLO (TPOT p50
and TTFT p50 at most the limits given). The crossover follows the study's rule (:mod:`pytest_llmperf.stats.
crossover`): the lowest concurrency from which PP is ahead of TP at every higher concurrency of the grid; here
on point predictions, so without an interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pytest_llmperf.plan.predict import DEFAULT_OVERHEAD, Overhead, Prediction, predict

if TYPE_CHECKING:
    from pytest_llmperf.models.arch import ArchFacts
    from pytest_llmperf.plan.links import Link
    from pytest_llmperf.plan.predict import SingleCompute

__all__ = ["LinkOutlook", "outlook", "crossover_concurrency", "crossover_sentence", "meets_slo", "grid"]


@dataclass(frozen=True)
class LinkOutlook:
    """Predictions of every strategy on one link, the best per concurrency (None: no strategy meets the SLO),
    and the PP-overtakes-TP concurrency for TPOT and for throughput (None: not in range)."""

    link: Link
    predictions: tuple[Prediction, ...]
    best: tuple[tuple[int, str | None], ...]
    tpot_crossover: int | None
    throughput_crossover: int | None


def grid(concurrencies: Sequence[int]) -> tuple[int, ...]:
    """The measured concurrencies plus the powers of two between 1 and the highest."""
    top = max(concurrencies)
    return tuple(sorted(set(concurrencies) | {2 ** k for k in range(top.bit_length()) if 2 ** k <= top}))


def meets_slo(p: Prediction, slo_tpot_ms: float | None, slo_ttft_ms: float | None) -> bool:
    return (slo_tpot_ms is None or p.tpot_ms <= slo_tpot_ms) and (slo_ttft_ms is None or p.ttft_ms <= slo_ttft_ms)


def _data_parallel(arch: ArchFacts, compute: SingleCompute, n: int, link: Link, c: int,
                   overhead: Overhead, dtype_bytes: int) -> Prediction:
    """n single-GPU engines sharing ``c`` requests (ceil(c/n) each); throughput adds up."""
    each = predict(arch, compute, tp=1, pp=1, link=link, concurrency=max(1, -(-c // n)), overhead=overhead,
                   dtype_bytes=dtype_bytes)
    share = c / max(1, -(-c // n))
    return replace(each, mode=f"dp{n}", concurrency=c, throughput_tok_s=each.throughput_tok_s * share)


def crossover_concurrency(tp: Sequence[Prediction], pp: Sequence[Prediction], metric: str) -> int | None:
    """Lowest concurrency from which PP beats TP on ``metric`` at every higher one (lower TPOT, higher
    throughput); None when PP is not ahead at the highest concurrency."""
    pp_at = {p.concurrency: p for p in pp}
    at = None
    for t in sorted(tp, key=lambda p: p.concurrency, reverse=True):
        q = pp_at.get(t.concurrency)
        if q is None:
            continue
        ahead = q.tpot_ms < t.tpot_ms if metric == "tpot_ms" else q.throughput_tok_s > t.throughput_tok_s
        if not ahead:
            break
        at = t.concurrency
    return at


def crossover_sentence(o: LinkOutlook, n: int, metric: str) -> str:
    """The study's sentence for a prediction, e.g. ``TPOT p50 on PCIe 4.0 x16, no P2P (predicted): pp2 overtakes
    tp2 from concurrency 16 (pp2/tp2 0.97 at 16; at 8: 1.04)``."""
    label = "TPOT p50" if metric == "tpot_ms" else "throughput"
    tp = {p.concurrency: getattr(p, metric) for p in o.predictions if p.mode == f"tp{n}"}
    pp = {p.concurrency: getattr(p, metric) for p in o.predictions if p.mode == f"pp{n}"}
    cs = sorted(set(tp) & set(pp))
    at = o.tpot_crossover if metric == "tpot_ms" else o.throughput_crossover
    where = f"{label} on {o.link.label} (predicted)"
    if at is not None:
        start = "at every concurrency in range" if at == cs[0] else f"from concurrency {at}"
        before = [c for c in cs if c < at]
        prev = f"; at {before[-1]}: {pp[before[-1]] / tp[before[-1]]:.2f}" if before else ""
        return f"{where}: pp{n} overtakes tp{n} {start} (pp{n}/tp{n} {pp[at] / tp[at]:.2f} at {at}{prev})"
    last = cs[-1]
    return (f"{where}: pp{n} does not overtake tp{n} in range {cs[0]}-{last} (tp{n} leads at {last}; "
            f"pp{n}/tp{n} {pp[last] / tp[last]:.2f})")


def outlook(arch: ArchFacts, compute: SingleCompute, links: Sequence[Link], *, gpus: int = 2,
            concurrencies: Sequence[int] | None = None, overhead: Overhead = DEFAULT_OVERHEAD,
            slo_tpot_ms: float | None = None, slo_ttft_ms: float | None = None,
            dtype_bytes: int = 2) -> list[LinkOutlook]:
    """One :class:`LinkOutlook` per link."""
    cs = grid(concurrencies or compute.concurrencies)
    out = []
    for link in links:
        preds: list[Prediction] = []
        for c in cs:
            preds.append(predict(arch, compute, tp=gpus, pp=1, link=link, concurrency=c, overhead=overhead,
                                 dtype_bytes=dtype_bytes))
            preds.append(predict(arch, compute, tp=1, pp=gpus, link=link, concurrency=c, overhead=overhead,
                                 dtype_bytes=dtype_bytes))
            preds.append(_data_parallel(arch, compute, gpus, link, c, overhead, dtype_bytes))
        best = []
        for c in cs:
            ok = [p for p in preds if p.concurrency == c and meets_slo(p, slo_tpot_ms, slo_ttft_ms)]
            best.append((c, max(ok, key=lambda p: p.throughput_tok_s).mode if ok else None))
        tp = [p for p in preds if p.mode == f"tp{gpus}"]
        pp = [p for p in preds if p.mode == f"pp{gpus}"]
        out.append(LinkOutlook(link, tuple(preds), tuple(best), crossover_concurrency(tp, pp, "tpot_ms"),
                               crossover_concurrency(tp, pp, "throughput_tok_s")))
    return out
