"""Predictions: measured single-GPU compute combined with the communication model of :mod:`.model`.

``SingleCompute`` holds a single-GPU run's TPOT p50 (~ one decode step) and TTFT p50 (~ the prefill of a wave)
per concurrency, interpolated linearly between measured concurrencies (and extrapolated beyond them, flagged).
``Overhead`` is the share of a step that does not shrink with TP (see :func:`.model.tp_step_ms`), per
concurrency: calibrated from a TP run on a known link (:func:`calibrate`), or the default shares measured on
2 x H200 (docs/planner.md). :func:`predict` returns one :class:`Prediction`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_llmperf.errors import UsageError
from pytest_llmperf.plan import model as m

if TYPE_CHECKING:
    from pytest_llmperf.models.arch import ArchFacts
    from pytest_llmperf.plan.data import Measured
    from pytest_llmperf.plan.links import Link

__all__ = ["SingleCompute", "Overhead", "Prediction", "predict", "calibrate", "single_compute",
           "DEFAULT_OVERHEAD", "interpolate"]


def interpolate(points: tuple[tuple[int, float], ...], x: float) -> tuple[float, bool]:
    """Piecewise-linear value at ``x`` over sorted ``(x, y)`` points; beyond the ends the nearest segment is
    extended (one point: constant). Returns ``(y, outside_the_measured_range)``."""
    if not points:
        raise ValueError("no points to interpolate")
    if len(points) == 1:
        return points[0][1], x != points[0][0]
    outside = x < points[0][0] or x > points[-1][0]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x <= x1 or (x1, y1) == points[-1]:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0), outside
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class SingleCompute:
    """Single-GPU medians per concurrency for one prompt/output length: ``(c, tpot_ms)`` and ``(c, ttft_ms)``."""

    input_len: int
    output_len: int
    tpot_ms: tuple[tuple[int, float], ...]
    ttft_ms: tuple[tuple[int, float], ...]
    model: str | None = None
    dtype: str | None = None
    gpu_model: str | None = None

    def tpot_at(self, concurrency: int) -> tuple[float, bool]:
        return interpolate(self.tpot_ms, concurrency)

    def ttft_at(self, concurrency: int) -> tuple[float, bool]:
        return interpolate(self.ttft_ms, concurrency)

    @property
    def concurrencies(self) -> tuple[int, ...]:
        return tuple(c for c, _ in self.tpot_ms)


def single_compute(points: Iterable[Measured], input_len: int | None = None,
                   output_len: int | None = None) -> SingleCompute:
    """The single-GPU compute of measured points (one prompt/output length; the first found unless given)."""
    singles = [p for p in points if p.mode == "single" and p.tpot_ms and p.ttft_ms]
    if input_len is not None:
        singles = [p for p in singles if p.input_len == input_len]
    if output_len is not None:
        singles = [p for p in singles if p.output_len == output_len]
    if not singles:
        raise UsageError("no single-GPU run (tp=1, pp=1) with TPOT and TTFT in the results given"
                         + (f" for {input_len}->{output_len} tokens" if input_len or output_len else ""))
    first = singles[0]
    same = sorted((p for p in singles if (p.input_len, p.output_len) == (first.input_len, first.output_len)),
                  key=lambda p: p.concurrency)
    by_c = {p.concurrency: p for p in same}
    return SingleCompute(first.input_len, first.output_len,
                         tuple((c, float(p.tpot_ms or 0)) for c, p in sorted(by_c.items())),
                         tuple((c, float(p.ttft_ms or 0)) for c, p in sorted(by_c.items())),
                         first.model, first.dtype, first.gpu_model)


@dataclass(frozen=True)
class Overhead:
    """Share of the single-GPU TPOT / TTFT that TP does not divide, per concurrency, and where it came from."""

    tpot_share: tuple[tuple[int, float], ...]
    ttft_share: tuple[tuple[int, float], ...]
    source: str

    def tpot_share_at(self, concurrency: int) -> float:
        return _held(self.tpot_share, concurrency)

    def ttft_share_at(self, concurrency: int) -> float:
        return _held(self.ttft_share, concurrency)


def _held(points: tuple[tuple[int, float], ...], x: int) -> float:
    """Interpolated inside the calibrated range, held at the nearest end outside it (a share does not trend)."""
    x_clamped = min(max(x, points[0][0]), points[-1][0])
    return interpolate(points, x_clamped)[0]


#: shares calibrated on 2 x H200 NVLink, DeepSeek-R1-Distill-Qwen-14B, 512->128 tokens (TPOT at concurrency 1
#: and 8, below saturation; TTFT at 1, 8, 32): ``llmperf plan --validate docs/gpu-results/data/*.json.gz``
#: prints them, a unit test keeps them equal. Used when no TP run of the user's own is given.
DEFAULT_OVERHEAD = Overhead(((1, 0.085), (8, 0.121)), ((1, 1.0), (8, 0.380), (32, 0.176)),
                            "default shares from the 2 x H200 NVLink calibration (docs/planner.md)")


@dataclass(frozen=True)
class Prediction:
    """One strategy on one link at one concurrency. Times in ms; ``*_comm_ms`` is the communication part."""

    mode: str
    tp: int
    pp: int
    link: str
    concurrency: int
    tpot_ms: float
    ttft_ms: float
    throughput_tok_s: float
    tpot_comm_ms: float
    ttft_comm_ms: float
    decode_bubble: float
    notes: tuple[str, ...] = field(default=())


def predict(arch: ArchFacts, compute: SingleCompute, *, tp: int, pp: int, link: Link, concurrency: int,
            overhead: Overhead = DEFAULT_OVERHEAD, dtype_bytes: int = 2) -> Prediction:
    """TPOT, TTFT and throughput of TP=tp x PP=pp on ``link`` at ``concurrency`` (see :mod:`.model`)."""
    if tp < 1 or pp < 1 or concurrency < 1:
        raise UsageError(f"tp, pp and concurrency must be >= 1 (got tp={tp}, pp={pp}, concurrency={concurrency})")
    if pp > arch.layers:
        raise UsageError(f"pp={pp} exceeds the model's {arch.layers} layers")
    notes = []
    b = m.decode_microbatch_size(concurrency, pp)
    s_tpot, out1 = compute.tpot_at(b)
    s_ttft, out2 = compute.ttft_at(concurrency)
    if out1 or out2:
        notes.append(f"single-GPU times extrapolated beyond the measured concurrencies "
                     f"{', '.join(map(str, compute.concurrencies))}")
    tokens_prefill = concurrency * compute.input_len
    comm_tpot = m.tp_comm_ms(arch, tp, b, link, dtype_bytes) + m.pp_comm_ms(arch, pp, b, link, dtype_bytes)
    comm_ttft = (m.tp_comm_ms(arch, tp, tokens_prefill, link, dtype_bytes)
                 + m.pp_comm_ms(arch, pp, tokens_prefill, link, dtype_bytes))
    tpot = m.tp_step_ms(s_tpot, tp, overhead.tpot_share_at(b) * s_tpot,
                        m.tp_comm_ms(arch, tp, b, link, dtype_bytes)) + m.pp_comm_ms(arch, pp, b, link, dtype_bytes)
    ttft_tp = m.tp_step_ms(s_ttft, tp, overhead.ttft_share_at(concurrency) * s_ttft,
                           m.tp_comm_ms(arch, tp, tokens_prefill, link, dtype_bytes))
    ttft = m.pp_prefill_ms(ttft_tp, concurrency, pp) + m.pp_comm_ms(arch, pp, tokens_prefill, link, dtype_bytes)
    thr = m.throughput_tok_s(concurrency, compute.output_len, ttft, tpot)
    return Prediction(m.mode_label(tp, pp), tp, pp, link.name, concurrency, tpot, ttft, thr, comm_tpot, comm_ttft,
                      m.decode_bubble_fraction(concurrency, pp), tuple(notes))


def calibrate(arch: ArchFacts, compute: SingleCompute, tp_runs: Mapping[int, tuple[float, float]], *, n: int,
              link: Link, dtype_bytes: int = 2) -> Overhead:
    """The overhead shares that reproduce measured TP=n runs on ``link``: ``tp_runs`` maps concurrency ->
    ``(tpot_ms, ttft_ms)`` (medians). Shares are clamped to [0, 1]."""
    if not tp_runs:
        raise UsageError("calibration needs at least one TP run")
    tpot_share, ttft_share = [], []
    for c in sorted(tp_runs):
        tpot_ms, ttft_ms = tp_runs[c]
        s_tpot, _ = compute.tpot_at(c)
        s_ttft, _ = compute.ttft_at(c)
        o = m.calibrate_overhead_ms(s_tpot, tpot_ms, n, m.tp_comm_ms(arch, n, c, link, dtype_bytes))
        o_ttft = m.calibrate_overhead_ms(s_ttft, ttft_ms, n,
                                         m.tp_comm_ms(arch, n, c * compute.input_len, link, dtype_bytes))
        tpot_share.append((c, min(max(o / s_tpot, 0.0), 1.0)))
        ttft_share.append((c, min(max(o_ttft / s_ttft, 0.0), 1.0)))
    return Overhead(tuple(tpot_share), tuple(ttft_share), f"calibrated on a TP={n} run over {link.label}")
