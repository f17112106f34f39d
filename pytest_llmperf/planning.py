"""Collection planning, as plain functions of (config, topology, item markers): no session state, no I/O.

For each collected test: which engine it needs (:func:`spec_for`), whether this machine can run it
(:func:`skip_reason`), the sweep values of the parametrized fixtures (:func:`sweep_values`), and an order that
starts each engine once (:func:`order_key`). The session calls these from its collection hooks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_llmperf.engine.backends import unsupported_reason
from pytest_llmperf.engine.spec import EngineSpec, mode_label
from pytest_llmperf.markers import parallel_size_from_marker

if TYPE_CHECKING:
    from pytest_llmperf.config import LLMPerfConfig
    from pytest_llmperf.engine.topology import Topology

__all__ = ["SWEEP_FIXTURES", "mode_from_markers", "pcie_emulation_active", "emulation_note", "sweep_values",
           "spec_for", "skip_reason", "header_line", "markers_for", "order_key", "planned_metric_count"]

#: fixture name -> (config attribute, id prefix)
SWEEP_FIXTURES: dict[str, tuple[str, str]] = {
    "llmperf_mode": ("modes", ""),
    "llmperf_concurrency": ("concurrency", "c"),
    "llmperf_input_len": ("input_lens", "in"),
    "llmperf_request_rate": ("request_rates", "r"),
}


#: markers that pin a test to one engine mode instead of the --llmperf-modes sweep
MODE_MARKERS = ("tp", "pp", "dp", "ep", "single")


def mode_from_markers(item: Any) -> str:
    """``single``, ``tp2``, ``pp2``, ``dp2``, ``ep2``... from a test's ``tp``/``pp``/``dp``/``ep`` markers
    (UsageError when malformed)."""
    sizes = {"tp": 1, "pp": 1, "dp": 1}
    for name in sizes:
        marker = item.get_closest_marker(name)
        if marker is not None:
            sizes[name] = parallel_size_from_marker(name, marker.args, marker.kwargs, item.nodeid)
    ep = item.get_closest_marker("ep") is not None
    if ep and sizes["tp"] * sizes["dp"] < 2:
        from pytest_llmperf.errors import UsageError

        raise UsageError(f"{item.nodeid}: @pytest.mark.ep needs @pytest.mark.tp(n) or @pytest.mark.dp(n) with n >= 2")
    return mode_label(sizes["tp"], sizes["pp"], sizes["dp"], ep)


def pcie_emulation_active(cfg: LLMPerfConfig, topology: Topology) -> bool:
    """Whether pcie-marked tests run with PCIe emulated (every peer path off: engine/allreduce.py)."""
    if cfg.backend != "gpu" or cfg.emulate_pcie == "off" or cfg.endpoint:
        return False
    if cfg.emulate_pcie == "on":
        return True
    return topology.gpu_count > 1 and topology.interconnect(range(topology.gpu_count)) == "nvlink"


#: how the header and skip reasons name a link kind of ``Topology.interconnect``
LINK_NAMES = {"nvlink": "NVLink", "pcie": "PCIe"}


def emulation_note(cfg: LLMPerfConfig, topology: Topology) -> str | None:
    if cfg.endpoint:
        return None  # nothing is emulated on a server we do not start
    if cfg.backend == "cpu":
        return "CPU backend: no GPU interconnect (ranks share host memory)"
    if not pcie_emulation_active(cfg, topology):
        return None
    if topology.gpu_count < 2:  # forced on where there is no peer link: say so rather than claim NVLink
        return "PCIe emulation on, but this machine has one GPU: no peer link to emulate (single-GPU engines)"
    link = topology.interconnect(range(topology.gpu_count))
    what = f"PCIe emulated on {LINK_NAMES['nvlink']}" if link == "nvlink" else "PCIe without P2P emulated on PCIe"
    return (f"{what}: NCCL P2P/NVLS off, custom and symmetric-memory all-reduce off, all-reduce fusion off "
            "(proven from the engine log)")


def header_line(cfg: LLMPerfConfig, topology: Topology) -> str:
    emu = emulation_note(cfg, topology)
    where = f"endpoint {cfg.endpoint}" if cfg.endpoint else topology.describe()
    return (f"llmperf: backend {cfg.backend}, {where}, model {cfg.model}, "
            f"modes {','.join(cfg.modes)}, concurrency {','.join(map(str, cfg.concurrency))}, "
            f"input {','.join(map(str, cfg.input_lens))} -> output {cfg.output_len} tokens, K={cfg.repeats} runs, "
            + (f"request rates {','.join(f'{r:g}' for r in cfg.request_rates)} req/s, " if cfg.request_rates else "")
            + (f"dataset {cfg.dataset}, " if cfg.dataset else "")
            + f"FAR {cfg.far:g}, tolerance {cfg.tolerance:.0%}, session CV prior {cfg.session_cv:.0%}"
            + "".join(f", {m} {cv:.1%}" for m, cv in cfg.session_cv_metrics)
            + (f"; {emu}" if emu else ""))


def sweep_values(cfg: LLMPerfConfig, fixture: str, definition: Any) -> tuple[list[Any], list[str]]:
    """Values and ids to parametrize ``fixture`` with; a test with tp/pp/single markers gets its one mode; with
    ``--llmperf-dataset`` the input-length sweep is one item, ``dataset`` (its prompts are sent at every length)."""
    attr, prefix = SWEEP_FIXTURES[fixture]
    if fixture == "llmperf_mode" and any(definition.get_closest_marker(m) for m in MODE_MARKERS):
        mode = mode_from_markers(definition)
        return [mode], [mode]
    if fixture == "llmperf_request_rate" and cfg.request_rates is None:
        return [None], ["closed"]  # no --llmperf-request-rates: one closed-loop run set
    if fixture == "llmperf_input_len" and cfg.dataset:
        # the dataset's prompts replace the synthetic ones at every input length: one item, named for what it sends
        return [cfg.input_lens[0]], ["dataset"]
    values = list(getattr(cfg, attr))
    return values, [f"{prefix}{v:g}" if isinstance(v, float) else f"{prefix}{v}" for v in values]


def spec_for(item: Any, cfg: LLMPerfConfig, topology: Topology) -> EngineSpec | None:
    """The engine spec an item needs, or None when it uses no engine."""
    if "llmperf_engine" not in getattr(item, "fixturenames", ()):
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    mode = params.get("llmperf_mode") or mode_from_markers(item)
    emulate = pcie_emulation_active(cfg, topology) and item.get_closest_marker("pcie") is not None
    extra_args, extra_env = cfg.engine_extra()
    spec = EngineSpec.from_mode(mode, extra_args=extra_args, env=extra_env, model=cfg.model, backend=cfg.backend,
                                dtype=cfg.dtype, max_model_len=cfg.max_model_len, emulate_pcie=emulate,
                                allreduce_fusion=cfg.allreduce_fusion,
                                startup_timeout_s=cfg.startup_timeout, python=cfg.python)
    return spec.with_(devices=tuple(range(spec.world_size))) if cfg.backend == "gpu" and not cfg.endpoint else spec


def skip_reason(item: Any, spec: EngineSpec, cfg: LLMPerfConfig, topology: Topology) -> str | None:
    """Why this machine cannot run ``item`` (None: it can), then why the model cannot be split ``tp`` ways: a
    TP size that does not divide a preset's attention heads is named at collection, not after an engine start."""
    return _machine_reason(item, spec, cfg, topology) or _split_reason(spec, cfg)


def _split_reason(spec: EngineSpec, cfg: LLMPerfConfig) -> str | None:
    from pytest_llmperf.models.arch import preset_arch
    from pytest_llmperf.models.presets import PRESETS

    if cfg.endpoint or spec.tp <= 1 or cfg.model not in PRESETS:  # a model path: vLLM judges it
        return None
    problem = preset_arch(cfg.model).tp_problem(spec.tp)
    return f"{spec.label}: model {cfg.model}: {problem}" if problem else None


def _machine_reason(item: Any, spec: EngineSpec, cfg: LLMPerfConfig, topology: Topology) -> str | None:
    if cfg.endpoint:
        if spec.world_size > 1:  # every item would hit the same server, whatever its mode
            return (f"{spec.label}: endpoint mode measures the server as it is configured; run tp/pp/dp tests "
                    f"against an endpoint per mode (one --llmperf-endpoint each)")
        return None  # the hardware is the server's, not this machine's
    unsupported = unsupported_reason(spec)
    if unsupported:
        return f"{spec.label}: {unsupported}"
    if cfg.backend == "gpu":
        if spec.world_size > topology.gpu_count:
            return (f"{spec.label} needs {spec.world_size} GPUs; this machine has {topology.gpu_count} "
                    f"({topology.describe()})")
        link = topology.interconnect(range(spec.world_size)) if spec.world_size > 1 else "none"
        if item.get_closest_marker("nvlink") and spec.world_size > 1 and link != "nvlink":
            return (f"needs NVLink between GPUs 0..{spec.world_size - 1}; they are joined by "
                    f"{LINK_NAMES.get(link, link)}")
        if item.get_closest_marker("pcie") and spec.world_size > 1 and link == "nvlink" and not spec.emulate_pcie:
            return "pcie test on NVLink GPUs with --llmperf-emulate-pcie off"
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if spec.world_size > cores:
        return f"{spec.label} needs {spec.world_size} cores on the CPU backend; {cores} usable"
    if item.get_closest_marker("gpu") or item.get_closest_marker("nvlink"):
        return "needs GPUs; running on vLLM's CPU backend"
    return None


def markers_for(spec: EngineSpec) -> list[str]:
    """Markers added to a planned item, so ``-m single`` / ``-m cpu`` select by engine."""
    names = [n for n, on in (("single", spec.world_size == 1), ("tp", spec.tp > 1), ("pp", spec.pp > 1),
                                ("dp", spec.dp > 1), ("ep", spec.expert_parallel)) if on]
    return [*names, spec.backend]


def order_key(specs: Sequence[EngineSpec | None]) -> list[int]:
    """Sort keys: items without an engine first, then by order of each spec's first appearance (stable)."""
    first: dict[EngineSpec, int] = {}
    for spec in specs:
        if spec is not None:
            first.setdefault(spec, len(first))
    return [-1 if s is None else first[s] for s in specs]


def planned_metric_count(metrics: Sequence[str] | None, defaults: Sequence[str], spec: EngineSpec) -> int:
    """Metrics one test will gate: its own list, else the defaults plus (GPU) one power CV per GPU and J/token."""
    if metrics:
        return len(metrics)
    return len(defaults) + (spec.world_size + 1 if spec.backend == "gpu" else 0)
