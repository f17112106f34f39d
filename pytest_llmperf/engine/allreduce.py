"""How a multi-GPU engine talks between its GPUs: the decision (which all-reduce paths to switch off) and the
proof (what the engine says it chose), both pure functions over settings and log text.

vLLM 0.26 has four all-reduce paths for a TP group (``vllm/distributed/device_communicators/
cuda_communicator.py``): its custom all-reduce (CUDA IPC peer memory; off with ``--disable-custom-all-reduce``),
torch symmetric memory (``VLLM_ALLREDUCE_USE_SYMM_MEM``, on by default and *not* switched off by
``--disable-custom-all-reduce``), the FlashInfer all-reduce + RMSNorm fusion of the compiler
(``pass_config.fuse_allreduce_rms``; its ``mnnvl`` backend needs NVLink multicast) and NCCL (``PYNCCL``). NCCL
itself picks a transport per peer: ``P2P`` (NVLink or PCIe peer access), ``NVLS`` (NVLink multicast), ``SHM``
(through host memory) or ``NET``. Consumer cards without P2P get ``PYNCCL`` over ``SHM``; that is what PCIe
emulation must leave, and what :func:`emulation_violations` proves from the engine's own log:

- ``Using ['PYNCCL'] all-reduce backends (in dispatch order) for group 'tp:0' ...`` (vLLM, INFO, every TP worker)
- ``NCCL INFO Channel 00/0 : 0[0] -> 1[1] via SHM/direct/direct`` (NCCL with ``NCCL_DEBUG=INFO``)
- ``Enabled custom fusions: allreduce_rms`` / ``... Allreduce norm fusion workspace with backend=mnnvl`` (the
  fusion is on).

Seen on 2 x H200 (NVLink, multicast off): with the fusion on, TP=2 workers die in CUDA-graph capture
(``CUBLAS_STATUS_EXECUTION_FAILED``, "illegal memory access"); with it off TP=2 is healthy in ~105 s.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["FUSION_OFF_CONFIG", "PCIE_EMULATION_ENV", "FusionDecision", "LinkEvidence", "decide_fusion",
           "parse_link_evidence", "emulation_violations", "multicast_disabled_by_env", "FUSION_CHOICES",
           "capture_failure_hint"]

#: The compiler setting that turns the FlashInfer all-reduce + RMSNorm fusion off (one argv element, no spaces).
FUSION_OFF_CONFIG = json.dumps({"pass_config": {"fuse_allreduce_rms": False}}, separators=(",", ":"))
#: Environment that removes every peer path vLLM and NCCL would otherwise take (besides the argv flags).
PCIE_EMULATION_ENV = {"NCCL_P2P_DISABLE": "1", "NCCL_NVLS_ENABLE": "0", "VLLM_ALLREDUCE_USE_SYMM_MEM": "0"}
#: Settings that mean "this host has no NVLink multicast" (the H200 test hosts export them).
_MULTICAST_OFF_ENV = (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
                      ("NVSHMEM_DISABLE_NVLS", "1"))
FUSION_CHOICES = ("auto", "on", "off")
#: all-reduce backends that reach the other GPU without going through host memory
_HOST_BACKENDS = frozenset({"PYNCCL"})
#: NCCL transports that use peer access (NVLink or PCIe P2P, NVLink multicast)
_PEER_TRANSPORTS = frozenset({"P2P", "NVLS", "COLLNET"})

_BACKENDS_RE = re.compile(r"Using (\[[^\]]*\]) all-reduce backends \(in dispatch order\) for group '([^']+)'")
_TRANSPORT_RE = re.compile(r"NCCL INFO Channel \d+(?:/\d+)? : \d+\[\d+\] -> \d+\[\d+\](?: \[\w+\])? via (\S+)")
_FUSION_ON_RE = re.compile(r"Enabled custom fusions:.*allreduce_rms|Allreduce norm fusion workspace"
                           r"|Auto-selected flashinfer allreduce backend")
_CAPTURE_RE = re.compile(r"CUBLAS_STATUS_EXECUTION_FAILED|illegal memory access")


@dataclass(frozen=True)
class FusionDecision:
    """Whether the engine gets ``--compilation-config`` with the all-reduce fusion off, and why (for the log)."""

    off: bool
    reason: str


def multicast_disabled_by_env(env: Mapping[str, str]) -> str | None:
    """The variable that says multicast is off on this host (``NCCL_NVLS_ENABLE=0`` ...), or None."""
    for key, off_value in _MULTICAST_OFF_ENV:
        if env.get(key, "").strip() == off_value:
            return f"{key}={off_value}"
    return None


def decide_fusion(*, backend: str, tp: int, emulate_pcie: bool, choice: str, extra_args: tuple[str, ...],
                  env: Mapping[str, str] | None = None) -> FusionDecision:
    """Decide whether to switch the all-reduce + RMSNorm fusion off for one engine.

    ``choice`` is the user's ``auto``/``on``/``off``. A ``--compilation-config`` of the user's own in
    ``extra_args`` always wins (nothing is added). On ``auto`` the fusion is switched off for GPU TP engines
    under PCIe emulation (it is a peer path) or where the host has NVLink multicast off (its backend then
    kills the workers in graph capture). Never eager mode: eager decode is CPU-bound and not comparable.
    """
    if choice not in FUSION_CHOICES:
        raise ValueError(f"all-reduce fusion setting {choice!r}: use one of {', '.join(FUSION_CHOICES)}")
    if any(a == "--compilation-config" or a.startswith(("--compilation-config=", "-O")) for a in extra_args):
        return FusionDecision(False, "the engine arguments carry their own --compilation-config")
    if backend != "gpu" or tp < 2:
        return FusionDecision(False, "no TP group on a GPU")
    if choice == "off":
        return FusionDecision(True, "all-reduce fusion off (--llmperf-allreduce-fusion off)")
    if choice == "on":
        return FusionDecision(False, "all-reduce fusion left to vLLM (--llmperf-allreduce-fusion on)")
    if emulate_pcie:
        return FusionDecision(True, "all-reduce fusion off: PCIe emulation removes every peer path")
    why = multicast_disabled_by_env(os.environ if env is None else env)
    if why:
        return FusionDecision(True, f"all-reduce fusion off: NVLink multicast is disabled on this host ({why}); "
                                    f"its FlashInfer backend needs it (--llmperf-allreduce-fusion on to override)")
    return FusionDecision(False, "all-reduce fusion left to vLLM (multicast not reported off)")


@dataclass(frozen=True)
class LinkEvidence:
    """What the engine's log says about its inter-GPU paths. Empty fields mean the log did not say."""

    allreduce_backends: dict[str, list[str]] = field(default_factory=dict)  # group -> backends in dispatch order
    nccl_transports: list[str] = field(default_factory=list)                # e.g. ["SHM"], ["P2P"]
    fusion_on: bool = False
    lines: list[str] = field(default_factory=list)                          # the lines that said so (deduped)

    def to_dict(self) -> dict[str, object]:
        return {"allreduce_backends": self.allreduce_backends, "nccl_transports": self.nccl_transports,
                "allreduce_fusion_seen": self.fusion_on, "evidence_lines": self.lines}


def parse_link_evidence(log_text: str) -> LinkEvidence:
    """Read vLLM's and NCCL's lines about all-reduce backends, NCCL transports and the fusion."""
    backends: dict[str, list[str]] = {}
    transports: list[str] = []
    fusion, lines = False, list[str]()

    def keep(line: str) -> None:
        text = line.strip()
        text = text[text.find("INFO"):] if "INFO" in text else text
        if text not in lines and len(lines) < 12:
            lines.append(text[:300])

    for line in log_text.splitlines():
        m = _BACKENDS_RE.search(line)
        if m:
            try:
                names = [str(n) for n in ast.literal_eval(m.group(1))]
            except (ValueError, SyntaxError):
                names = [m.group(1)]
            backends.setdefault(m.group(2), names)
            keep(line)
            continue
        m = _TRANSPORT_RE.search(line)
        if m:
            kind = m.group(1).split("/")[0].upper()
            if kind not in transports:
                transports.append(kind)
                keep(line)
            continue
        if _FUSION_ON_RE.search(line):
            fusion = True
            keep(line)
    return LinkEvidence(backends, transports, fusion, lines)


def emulation_violations(evidence: LinkEvidence, *, tp: int, pp: int = 1) -> list[str]:
    """Why the log does not prove a PCIe-like link (empty = proven): a peer all-reduce backend in any group,
    a peer NCCL transport, the fusion on, for TP no backend line, or for PP no NCCL transport line."""
    problems = []
    for group, names in evidence.allreduce_backends.items():
        peer = [n for n in names if n not in _HOST_BACKENDS]
        if peer:
            problems.append(f"group {group!r} still dispatches to peer all-reduce backend(s) {peer}")
    peer_transports = [t for t in evidence.nccl_transports if t in _PEER_TRANSPORTS]
    if peer_transports:
        problems.append(f"NCCL connects the GPUs via {peer_transports}")
    if evidence.fusion_on:
        problems.append("the FlashInfer all-reduce fusion is enabled")
    if tp > 1 and not evidence.allreduce_backends:
        problems.append("the engine logged no \"Using [...] all-reduce backends\" line, so the TP path is unproven")
    if pp > 1 and not evidence.nccl_transports:
        problems.append("NCCL logged no transport line (NCCL_DEBUG=INFO), so the PP send/recv path is unproven")
    return problems


def capture_failure_hint(log_text: str) -> str | None:
    """A one-line hint when a TP engine died in CUDA-graph capture with the fusion's backend picked."""
    if _CAPTURE_RE.search(log_text) and _FUSION_ON_RE.search(log_text):
        return ("the FlashInfer all-reduce fusion was on and a worker died in CUDA-graph capture: on hosts without "
                "NVLink multicast use --llmperf-allreduce-fusion off (adds --compilation-config "
                f"'{FUSION_OFF_CONFIG}'); never eager mode")
    return None
