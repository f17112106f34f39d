"""The analytical communication and pipeline model of the capacity planner: pure arithmetic, no I/O.

- All-reduce of ``size_bytes`` over ``n`` GPUs. Ring (NCCL; nccl-tests doc/PERFORMANCE.md): ``2(n-1)`` steps of
  ``latency_us`` plus ``2(n-1)/n x size / bandwidth``. One-shot (vLLM's custom all-reduce): one latency plus
  ``(n-1) x size / bandwidth`` (each GPU reads every peer's whole buffer).
- Tensor parallelism (Megatron-LM, Shoeybi et al. 2019, section 3): 2 all-reduces per transformer layer per
  forward pass (after attention, after the MLP), each of ``hidden x tokens x dtype bytes``. The weights are split
  ``n`` ways, so the per-GPU step is ``(single - overhead)/n + overhead``: ``overhead_ms`` is the part of a step
  that does not shrink with ``n`` (launches, sampling, scheduling), calibrated from a TP run.
- Pipeline parallelism: each stage boundary sends the activations (vLLM sends ``hidden_states`` and ``residual``:
  2 x hidden x tokens x dtype bytes) once per step. Decode keeps ``m = min(concurrency, pp)`` micro-batches in
  flight (vLLM's batch queue has ``pp`` slots); a token passes every stage in turn, so the TPOT is the single-GPU
  step at micro-batch size ``ceil(concurrency/m)`` plus ``pp-1`` transfers; the stages are idle
  ``1 - m/pp`` of the time. Prefill of a wave follows GPipe (Huang et al. 2019): ``(m + pp - 1)/(m x pp)`` of the
  single-GPU time, a bubble of ``(pp-1)/(m+pp-1)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_llmperf.models.arch import ArchFacts
    from pytest_llmperf.plan.links import Link

__all__ = ["allreduce_us", "p2p_us", "tp_comm_ms", "pp_comm_ms", "tp_step_ms", "microbatches",
           "decode_bubble_fraction", "decode_microbatch_size", "prefill_bubble_fraction", "pp_prefill_ms",
           "throughput_tok_s",
           "calibrate_overhead_ms", "mode_label", "ALLREDUCES_PER_LAYER", "PP_TENSORS"]

#: Megatron-LM: one all-reduce after the attention block and one after the MLP of every layer
ALLREDUCES_PER_LAYER = 2
#: tensors a pipeline stage hands to the next (vLLM Llama/Qwen2: hidden_states and residual)
PP_TENSORS = 2


def allreduce_us(size_bytes: float, n: int, link: Link) -> float:
    """Time of one all-reduce of ``size_bytes`` over ``n`` GPUs on ``link``, in microseconds (0 for n=1)."""
    if n < 1 or size_bytes < 0:
        raise ValueError(f"need n >= 1 and size >= 0 (got n={n}, size={size_bytes})")
    if n == 1:
        return 0.0
    per_byte_us = 1e6 / (link.bandwidth_gbs * 1e9)
    if link.algorithm == "oneshot":
        return link.latency_us + (n - 1) * size_bytes * per_byte_us
    return 2 * (n - 1) * link.latency_us + 2 * (n - 1) / n * size_bytes * per_byte_us


def p2p_us(size_bytes: float, link: Link) -> float:
    """One send of ``size_bytes`` from a GPU to the next: one latency plus size / bandwidth, in microseconds."""
    if size_bytes < 0:
        raise ValueError(f"size must be >= 0, got {size_bytes}")
    return link.latency_us + size_bytes * 1e6 / (link.bandwidth_gbs * 1e9)


def tp_comm_ms(arch: ArchFacts, n: int, tokens: int, link: Link, dtype_bytes: int = 2) -> float:
    """All-reduce time of one forward pass over ``tokens`` tokens with TP=n: 2 per layer, in milliseconds."""
    size = arch.hidden * tokens * dtype_bytes
    return ALLREDUCES_PER_LAYER * arch.layers * allreduce_us(size, n, link) / 1000.0


def pp_comm_ms(arch: ArchFacts, pp: int, tokens: int, link: Link, dtype_bytes: int = 2) -> float:
    """Activation transfers of one forward pass over ``tokens`` tokens through ``pp`` stages, in milliseconds."""
    if pp <= 1:
        return 0.0
    return (pp - 1) * p2p_us(PP_TENSORS * arch.hidden * tokens * dtype_bytes, link) / 1000.0


def tp_step_ms(single_ms: float, n: int, overhead_ms: float, comm_ms: float) -> float:
    """A TP=n step from the single-GPU step: the part above ``overhead_ms`` split n ways, plus communication."""
    return (single_ms - overhead_ms) / n + overhead_ms + comm_ms


def calibrate_overhead_ms(single_ms: float, tp_ms: float, n: int, comm_ms: float) -> float:
    """The ``overhead_ms`` that makes :func:`tp_step_ms` reproduce a measured TP=n step ``tp_ms`` (n >= 2)."""
    if n < 2:
        raise ValueError("calibration needs a TP run with n >= 2")
    return (tp_ms - comm_ms - single_ms / n) * n / (n - 1)


def microbatches(concurrency: int, pp: int) -> int:
    """Micro-batches a pipeline of ``pp`` stages keeps in flight at ``concurrency`` requests."""
    return max(1, min(concurrency, pp))


def decode_bubble_fraction(concurrency: int, pp: int) -> float:
    """Share of time a stage idles during decode: ``1 - m/pp``."""
    return 1.0 - microbatches(concurrency, pp) / pp


def prefill_bubble_fraction(concurrency: int, pp: int) -> float:
    """GPipe's bubble for one prefill wave: ``(pp-1)/(m+pp-1)``."""
    m = microbatches(concurrency, pp)
    return (pp - 1) / (m + pp - 1)


def pp_prefill_ms(single_ms: float, concurrency: int, pp: int) -> float:
    """A prefill wave through ``pp`` stages: ``single x (m + pp - 1)/(m x pp)`` (GPipe), without transfers."""
    m = microbatches(concurrency, pp)
    return single_ms * (m + pp - 1) / (m * pp)


def decode_microbatch_size(concurrency: int, pp: int) -> int:
    """Requests per micro-batch: ``ceil(concurrency / m)``."""
    return math.ceil(concurrency / microbatches(concurrency, pp))


def mode_label(tp: int, pp: int) -> str:
    """``single``, ``tp2``, ``pp2`` or ``tp2pp2``."""
    if tp * pp == 1:
        return "single"
    return (f"tp{tp}" if tp > 1 else "") + (f"pp{pp}" if pp > 1 else "")


def throughput_tok_s(concurrency: int, output_len: int, ttft_ms: float, tpot_ms: float) -> float:
    """Closed-loop output throughput: ``concurrency`` slots, each finishing ``output_len`` tokens per
    ``ttft + (output_len - 1) x tpot`` (Little's law)."""
    e2e_ms = ttft_ms + (output_len - 1) * tpot_ms
    return concurrency * output_len / (e2e_ms / 1000.0)

