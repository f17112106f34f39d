"""The study's sentences, computed from results files: where PP overtakes TP on each link, and how close each
GPU engine's decode came to the memory-bandwidth floor.

``study_lines(results...)`` takes one or more session results dicts (the study is often recorded in several
sessions: single, the emulated-PCIe half and the NVLink half) and returns plain-text lines for the terminal,
the Markdown summary and the JSON (``results["study_lines"]``).

- Crossover (:func:`pytest_llmperf.stats.crossover.find_crossover`): for TTFT p95, TPOT p50 and output
  throughput, per link and prompt length, PP=n against TP=n over the concurrencies both ran.
- Roofline: at concurrency 1 a decode step reads every weight once, so TPOT >= weight bytes / HBM bandwidth
  (per GPU; TP=n splits the weights over n GPUs that read in parallel, PP=n stages run one after the other
  for one token). The line gives TPOT p50, that floor, and the share of the floor reached.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_llmperf.stats.crossover import find_crossover

__all__ = ["study_lines", "crossover_lines", "roofline_lines", "link_lines", "hbm_bandwidth_gbs", "link_of",
           "run_values"]

#: the metrics of the seed study's sentence, with their direction and label
CROSSOVER_METRICS = (("ttft_p95_ms", "lower", "TTFT p95"), ("tpot_p50_ms", "lower", "TPOT p50"),
                     ("output_throughput_tok_s", "higher", "throughput"))
#: peak HBM bandwidth per GPU in GB/s, from the vendors' data sheets; first matching substring wins
HBM_GBS = (("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("B200", 8000.0),
           ("A100-SXM4-80GB", 2039.0), ("A100-PCIE-80GB", 1935.0), ("A100", 1555.0), ("L40S", 864.0),
           ("L40", 864.0), ("L4", 300.0), ("A10", 600.0), ("RTX 4090", 1008.0), ("RTX 3090", 936.0),
           ("RTX A6000", 768.0))
_LINKS = {"nvlink": "NVLink", "pcie": "PCIe", "pcie-emulated": "emulated PCIe", "none": "one GPU"}


def hbm_bandwidth_gbs(gpu_model: str | None) -> float | None:
    """Peak memory bandwidth of a GPU model name (NVML's), or None when unknown."""
    for key, gbs in HBM_GBS:
        if gpu_model and key.lower() in gpu_model.lower():
            return gbs
    return None


def link_of(test: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> str:
    """The link a test's engine used: emulated PCIe, or the machine's interconnect; "one GPU" for single;
    "the CPU backend" for vLLM's CPU backend (ranks share host memory)."""
    engine = test.get("engine") or {}
    if engine.get("backend") == "cpu":
        return "the CPU backend"
    if int(engine.get("tp") or 1) * int(engine.get("pp") or 1) * int(engine.get("dp") or 1) == 1:
        return "one GPU"
    if engine.get("emulation") == "pcie":
        return "emulated PCIe"
    return _LINKS.get(str(fingerprint.get("interconnect")), str(fingerprint.get("interconnect") or "unknown link"))


def _plain_label(engine: Mapping[str, Any]) -> str:
    """``tp2``, ``pp2``, ``dp2``, ``ep2`` from the engine's sizes (a display label may carry a link suffix)."""
    from pytest_llmperf.engine.spec import mode_label

    return mode_label(int(engine.get("tp") or 1), int(engine.get("pp") or 1), int(engine.get("dp") or 1),
                      bool(engine.get("expert_parallel")))


def run_values(test: Mapping[str, Any], metric: str) -> list[float]:
    """The positive per-run values of ``metric`` in a test (one sample per run, as the gate counts them)."""
    out = []
    for run in test.get("runs") or []:
        v = (run.get("summary") or {}).get(metric)
        if isinstance(v, (int, float)) and v > 0:
            out.append(float(v))
    return out


def _collect(results: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """(link, test, fingerprint) for every measured test of every results dict."""
    rows = []
    for res in results:
        fp = res.get("fingerprint") or {}
        for test in res.get("tests") or []:
            if test.get("runs"):
                rows.append((link_of(test, fp), test, fp))
    return rows


#: (A, B) pairs of the study's questions, for a GPU count n: does B overtake A? PP vs TP (partitioning on a slow
#: link), DP vs TP ("two replicas, or one model split in two?"), EP vs TP (MoE: experts spread or split)
PAIRS = (("tp{n}", "pp{n}"), ("tp{n}", "dp{n}"), ("tp{n}", "ep{n}"))


def crossover_lines(results: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[str]:
    """One line per metric, link, model and prompt length where both modes of a pair ran at a common concurrency."""
    groups: dict[tuple[str, Any, Any, Any], dict[str, dict[int, Any]]] = defaultdict(lambda: defaultdict(dict))
    for link, test, _ in _collect(results):
        engine, wl = test.get("engine") or {}, test.get("workload") or {}
        label = _plain_label(engine)
        if label == "single":
            continue
        groups[(link, engine.get("model"), wl.get("input_len"), wl.get("output_len"))][label][
            int(wl.get("concurrency") or 0)] = test
    lines = []
    for (link, model, in_len, out_len), modes in sorted(groups.items(), key=lambda kv: str(kv[0])):
        for n in sorted({int(d) for m in modes for d in re.findall(r"\d+", m)}):
            for a_fmt, b_fmt in PAIRS:
                mode_a, mode_b = a_fmt.format(n=n), b_fmt.format(n=n)
                if mode_a not in modes or mode_b not in modes:
                    continue
                for metric, direction, label in CROSSOVER_METRICS:
                    xo = find_crossover(metric, direction, {c: run_values(t, metric) for c, t in modes[mode_a].items()},
                                        {c: run_values(t, metric) for c, t in modes[mode_b].items()},
                                        mode_a=mode_a, mode_b=mode_b, confidence=confidence)
                    if xo is not None:
                        lines.append(f"crossover, {in_len}->{out_len} tokens: " + xo.sentence(label, link))
    return lines


def roofline_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Decode TPOT p50 at the lowest concurrency of each GPU engine vs the weight-read floor."""
    from pytest_llmperf.models.arch import preset_arch

    best: dict[tuple[str, str, Any], tuple[int, Mapping[str, Any], Mapping[str, Any]]] = {}
    for link, test, fp in _collect(results):
        engine, wl = test.get("engine") or {}, test.get("workload") or {}
        if engine.get("backend") != "gpu":
            continue
        key = (_plain_label(engine), link, wl.get("input_len"))
        c = int(wl.get("concurrency") or 0)
        if key not in best or c < best[key][0]:
            best[key] = (c, test, fp)
    lines = []
    for (label, link, in_len), (c, test, fp) in sorted(best.items(), key=lambda kv: str(kv[0])):
        engine = test.get("engine") or {}
        gbs = hbm_bandwidth_gbs(fp.get("gpu_model"))
        tpot = run_values(test, "tpot_p50_ms")
        try:
            arch = preset_arch(str(engine.get("model")))
        except ValueError:
            continue  # a real checkpoint: no preset arithmetic
        if gbs is None or not tpot:
            continue
        tp = int(engine.get("tp") or 1)  # an EP engine spreads the experts over its tp (or dp) GPUs
        n = tp * (int(engine.get("dp") or 1) if engine.get("expert_parallel") else 1)
        gb = arch.active_weight_bytes(str(engine.get("dtype") or "bfloat16")) / 1e9
        floor_ms = gb / (n * gbs) * 1e3
        median = statistics.median(tpot)
        read = f"{gb:.1f} GB" + (f", {arch.active_params / 1e9:.1f}B of {arch.params / 1e9:.1f}B parameters active"
                                 if arch.experts > 1 else "")
        lines.append(f"roofline, {label} on {link}, concurrency {c}, {in_len}-token prompts: TPOT p50 {median:.2f} ms "
                     f"vs weight-read floor {floor_ms:.2f} ms ({read} / {n} x "
                     f"{gbs / 1000:.1f} TB/s {fp.get('gpu_model')}): decode at {floor_ms / median:.0%} of peak "
                     f"memory bandwidth")
    return lines


def link_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """What each multi-GPU engine's log said about its inter-GPU path (one line per engine and link)."""
    seen: dict[tuple[str, str], str] = {}
    for link, test, _ in _collect(results):
        engine = test.get("engine") or {}
        if engine.get("backend") == "cpu":
            continue  # ranks share host memory: no inter-GPU path to prove
        backends, transports = engine.get("allreduce_backends"), engine.get("nccl_transports")
        if not backends and not transports and "allreduce_fusion_reason" not in engine:
            continue
        groups = ", ".join(f"{g} {names}" for g, names in (backends or {}).items()) or "none logged"
        fusion = engine.get("allreduce_fusion_reason") if engine.get("allreduce_fusion_off") else None
        seen.setdefault((_plain_label(engine), link),
                        f"link, {_plain_label(engine)} on {link}: all-reduce backends {groups}; NCCL transport "
                        f"{', '.join(transports) if transports else 'not logged'}" + (f"; {fusion}" if fusion else ""))
    return [seen[k] for k in sorted(seen)]


def study_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every study sentence the results support (empty when they hold no TP/PP pair and no GPU run)."""
    return crossover_lines(results) + roofline_lines(results) + link_lines(results)
