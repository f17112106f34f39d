"""Cross-link validation: calibrate on one link, predict the other, compare with what was measured.

From results files holding a single-GPU run and TP=n / PP=n runs on two links of the same machine (the study's
2 x H200 files: NVLink, and PCIe emulated by removing every peer path), for each ordered pair of links A -> B:
the TP overhead shares are calibrated on A's TP runs (:func:`.predict.calibrate`, A's preset), then TP=n and PP=n
on B are predicted with B's preset (PP needs no calibration) and compared with B's measured medians. The error is
``predicted / measured - 1`` per metric and concurrency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_llmperf.errors import UsageError
from pytest_llmperf.plan import model as m
from pytest_llmperf.plan.links import resolve_link
from pytest_llmperf.plan.predict import calibrate, predict, single_compute

if TYPE_CHECKING:
    from pytest_llmperf.models.arch import ArchFacts
    from pytest_llmperf.plan.data import Measured
    from pytest_llmperf.plan.links import Link
    from pytest_llmperf.plan.predict import Overhead

__all__ = ["ValidationRow", "Validation", "validate", "STUDY_LINKS", "METRICS", "markdown_table", "text_lines"]

#: the link names of the study's results (report/study.py::link_of) -> the preset that describes them; the
#: emulated PCIe of an H200 pair routes NCCL through host memory over each GPU's PCIe 5.0 x16 host link
STUDY_LINKS = {"NVLink": "nvlink4", "emulated PCIe": "pcie5-nop2p", "PCIe": "pcie4-nop2p"}
#: (attribute of Prediction/Measured, label)
METRICS = (("tpot_ms", "TPOT p50 ms"), ("ttft_ms", "TTFT p50 ms"), ("throughput_tok_s", "throughput tok/s"))


@dataclass(frozen=True)
class ValidationRow:
    """One predicted engine at one concurrency, next to its measurement."""

    calibrated_on: str
    predicted_on: str
    mode: str
    concurrency: int
    predicted: Mapping[str, float]
    measured: Mapping[str, float | None]

    def error(self, metric: str) -> float | None:
        meas = self.measured.get(metric)
        return None if not meas else self.predicted[metric] / meas - 1.0


@dataclass(frozen=True)
class Validation:
    rows: tuple[ValidationRow, ...]
    calibrations: Mapping[str, Overhead]
    implied_lines: tuple[str, ...]

    def max_abs_error(self, metric: str, concurrencies: Sequence[int]) -> float | None:
        errs = [abs(e) for r in self.rows if r.concurrency in concurrencies
                if (e := r.error(metric)) is not None]
        return max(errs) if errs else None


def validate(arch: ArchFacts, points: Sequence[Measured], *, link_presets: Mapping[str, str] | None = None,
             dtype_bytes: int = 2) -> Validation:
    """Every ordered pair of links that both have a TP=n run (see the module docstring)."""
    presets = dict(STUDY_LINKS, **(link_presets or {}))
    compute = single_compute(points)
    same = [p for p in points if (p.input_len, p.output_len) == (compute.input_len, compute.output_len)]
    multi = [p for p in same if p.mode != "single" and p.tpot_ms]
    links = sorted({p.link for p in multi})
    unknown = [lk for lk in links if lk not in presets]
    if unknown:
        raise UsageError(f"no link preset for {', '.join(unknown)}: known {', '.join(presets)}")
    by = {(p.link, p.mode, p.concurrency): p for p in multi}
    tp_modes = sorted({p.mode for p in multi if p.tp > 1 and p.pp == 1})
    rows, calibrations, implied = [], {}, []
    for a in links:
        for tp_mode in tp_modes:
            n = int(tp_mode[2:])
            runs_a = {c: (p.tpot_ms or 0.0, p.ttft_ms or 0.0) for (lk, mode, c), p in by.items()
                      if lk == a and mode == tp_mode and p.tpot_ms and p.ttft_ms}
            if not runs_a:
                continue
            link_a = resolve_link(presets[a])
            overhead = calibrate(arch, compute, runs_a, n=n, link=link_a, dtype_bytes=dtype_bytes)
            calibrations[f"{tp_mode} on {a}"] = overhead
            for b in links:
                if b == a:
                    continue
                link_b = resolve_link(presets[b])
                for (lk, mode, c), meas in sorted(by.items()):
                    if lk != b or mode not in (tp_mode, f"pp{n}"):
                        continue
                    pred = predict(arch, compute, tp=meas.tp, pp=meas.pp, link=link_b, concurrency=c,
                                   overhead=overhead, dtype_bytes=dtype_bytes)
                    rows.append(ValidationRow(a, b, mode, c, {k: getattr(pred, k) for k, _ in METRICS},
                                              {k: getattr(meas, k) for k, _ in METRICS}))
                    if mode == tp_mode and (a, mode, c) in by and a < b:
                        implied.append(_implied_line(arch, n, c, by[(a, mode, c)], meas, a, b, link_a, link_b,
                                                     dtype_bytes))
    if not rows:
        raise UsageError("validation needs a single-GPU run and TP runs on at least two links (with PP runs to "
                         "check PP) for the same prompt/output lengths")
    return Validation(tuple(rows), calibrations, tuple(implied))


def _implied_line(arch: ArchFacts, n: int, c: int, meas_a: Measured, meas_b: Measured, a: str, b: str,
                  link_a: Link, link_b: Link, dtype_bytes: int) -> str:
    """The per-all-reduce cost difference the two TP runs imply, next to the presets' difference."""
    count = m.ALLREDUCES_PER_LAYER * arch.layers
    measured_us = ((meas_b.tpot_ms or 0) - (meas_a.tpot_ms or 0)) * 1000 / count
    size = arch.hidden * c * dtype_bytes
    preset_us = m.allreduce_us(size, n, link_b) - m.allreduce_us(size, n, link_a)
    return (f"tp{n} concurrency {c}: one all-reduce of {size / 1024:.0f} KiB costs {measured_us:+.1f} us more on "
            f"{b} than on {a} by the TPOT difference over {count} all-reduces; the presets say {preset_us:+.1f} us")


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _err(e: float | None) -> str:
    return "-" if e is None else f"{e:+.1%}"


def markdown_table(v: Validation) -> str:
    """The validation table as Markdown (docs/planner.md)."""
    head = ("| calibrated on -> predicted | mode | conc | TPOT p50 ms pred / meas | err | TTFT p50 ms pred / meas | "
            "err | tok/s pred / meas | err |\n|---|---|---|---|---|---|---|---|---|\n")
    body = []
    for r in v.rows:
        cells = []
        for key, _ in METRICS:
            digits = 2 if key == "tpot_ms" else 0 if key == "throughput_tok_s" else 1
            cells += [f"{_fmt(r.predicted[key], digits)} / {_fmt(r.measured[key], digits)}", _err(r.error(key))]
        row = f"| {r.calibrated_on} -> {r.predicted_on} | {r.mode} | {r.concurrency} | "
        body.append(row + " | ".join(cells) + " |")
    return head + "\n".join(body) + "\n"


def text_lines(v: Validation) -> list[str]:
    """The table as aligned text, the calibrated shares, the implied all-reduce costs and the headline."""
    lines = [f"{'calibrated on -> predicted':<36} {'mode':<5} {'conc':>4}  {'TPOT pred/meas':>15} {'err':>7}  "
             f"{'TTFT pred/meas':>15} {'err':>7}  {'tok/s pred/meas':>15} {'err':>7}"]
    for r in v.rows:
        p, q = r.predicted, r.measured
        lines.append(f"{r.calibrated_on + ' -> ' + r.predicted_on:<36} {r.mode:<5} {r.concurrency:>4}  "
                     f"{_fmt(p['tpot_ms'], 2) + '/' + _fmt(q['tpot_ms'], 2):>15} {_err(r.error('tpot_ms')):>7}  "
                     f"{_fmt(p['ttft_ms'], 1) + '/' + _fmt(q['ttft_ms'], 1):>15} {_err(r.error('ttft_ms')):>7}  "
                     f"{_fmt(p['throughput_tok_s'], 0) + '/' + _fmt(q['throughput_tok_s'], 0):>15} "
                     f"{_err(r.error('throughput_tok_s')):>7}")
    for name, o in v.calibrations.items():
        shares = ", ".join(f"c{c} {s:.3f}" for c, s in o.tpot_share)
        ttft = ", ".join(f"c{c} {s:.3f}" for c, s in o.ttft_share)
        lines.append(f"calibration, {name}: TP overhead share of the single-GPU TPOT {shares}; of TTFT {ttft}")
    lines += [f"implied: {line}" for line in v.implied_lines]
    for concs in ((1, 8), (32,)):
        worst = v.max_abs_error("tpot_ms", concs)
        if worst is not None:
            lines.append(f"largest |error| of TPOT p50 at concurrency {', '.join(map(str, concs))}: {worst:.1%}")
    return lines
