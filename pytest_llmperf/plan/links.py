"""Named links between GPUs for the capacity planner, each with its numbers and where they come from.

A link is a bandwidth (GB/s, one direction, per GPU), a latency (µs, per communication step) and the all-reduce
algorithm the engine uses on it: ``"ring"`` (NCCL's ring: ``2(n-1)`` steps) or ``"oneshot"`` (vLLM's custom
all-reduce: every GPU reads every peer's buffer at once, one step). Bandwidths are the specifications' peaks;
latencies are public measurements of small all-reduces, and the least certain numbers of the planner: docs/planner.md
says how to measure your own (a TP run on the link, ``llmperf plan --calibrate``) and how much they matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_llmperf.errors import UsageError

__all__ = ["Link", "LINKS", "ALGORITHMS", "resolve_link", "custom_link"]

ALGORITHMS = ("ring", "oneshot")


@dataclass(frozen=True)
class Link:
    """One link: ``bandwidth_gbs`` per direction, ``latency_us`` per step, the all-reduce ``algorithm``."""

    name: str
    label: str
    bandwidth_gbs: float
    latency_us: float
    algorithm: str
    source: str

    def __post_init__(self) -> None:
        if not self.bandwidth_gbs > 0:
            raise UsageError(f"link {self.name}: bandwidth must be > 0 GB/s, got {self.bandwidth_gbs}")
        if not self.latency_us >= 0:
            raise UsageError(f"link {self.name}: latency must be >= 0 us, got {self.latency_us}")
        if self.algorithm not in ALGORITHMS:
            raise UsageError(f"link {self.name}: all-reduce algorithm must be one of {', '.join(ALGORITHMS)}, "
                             f"got {self.algorithm!r}")


#: PCIe x16 payload bandwidth per direction: lanes x transfer rate x 128b/130b encoding / 8 bits
_PCIE4_GBS = 16 * 16.0 * 128 / 130 / 8  # 31.5 GB/s (PCI-SIG, PCIe 4.0: 16 GT/s per lane)
_PCIE5_GBS = 16 * 32.0 * 128 / 130 / 8  # 63.0 GB/s (PCI-SIG, PCIe 5.0: 32 GT/s per lane)
_NO_P2P_SOURCE = ("bandwidth: PCI-SIG x16 rate with 128b/130b encoding; NCCL without P2P stages data through host "
                  "memory (SHM transport), ring all-reduce; latency: 8 us per ring step (an all-reduce of 2 GPUs = "
                  "2 steps = 16 us), the order of nccl-tests small-message all-reduce times on 2 GPUs without P2P; "
                  "NCCL's own tuner (src/graph/tuning.cc) assumes less (about 3.6 + 1.0 us per step)")

LINKS: dict[str, Link] = {
    link.name: link
    for link in (
        Link("pcie4-nop2p", "PCIe 4.0 x16, no P2P", round(_PCIE4_GBS, 1), 8.0, "ring", _NO_P2P_SOURCE),
        Link("pcie5-nop2p", "PCIe 5.0 x16, no P2P", round(_PCIE5_GBS, 1), 8.0, "ring", _NO_P2P_SOURCE),
        Link("pcie4-p2p", "PCIe 4.0 x16, P2P", round(_PCIE4_GBS, 1), 8.7, "oneshot",
             "bandwidth: PCI-SIG PCIe 4.0 x16; with P2P vLLM's custom all-reduce runs on 2 PCIe GPUs (one-shot); "
             "latency: taken equal to the NVLink one-shot figure (8.7 us), a lower bound: PCIe peer reads are slower"),
        Link("nvlink4", "NVLink 4 (H100/H200, NV18)", 450.0, 8.7, "oneshot",
             "bandwidth: NVIDIA H100/H200 SXM data sheets, 900 GB/s bidirectional over 18 NVLink 4 links = 450 GB/s "
             "per direction; latency: vLLM custom all-reduce, TP=2 on H100, 4-32 KB messages, 8.7-8.8 us "
             "(sgl-project/sglang pull request 2904, measured without CUDA graphs)"),
    )
}


def resolve_link(name: str) -> Link:
    """The preset called ``name``; a :class:`UsageError` listing the presets otherwise."""
    if name not in LINKS:
        raise UsageError(f"unknown link {name!r}; presets: {', '.join(LINKS)} (or give --bandwidth-gbs and "
                         f"--latency-us)")
    return LINKS[name]


def custom_link(bandwidth_gbs: float, latency_us: float, algorithm: str = "ring") -> Link:
    """A link from numbers: ``bandwidth_gbs`` per direction, ``latency_us`` per step."""
    return Link("custom", f"custom ({bandwidth_gbs:g} GB/s, {latency_us:g} us)", float(bandwidth_gbs),
                float(latency_us), algorithm, "given on the command line")
