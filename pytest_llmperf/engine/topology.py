"""GPU topology: which GPUs exist and how each pair is linked (NVLink or PCIe, with or without P2P).

:func:`detect_topology` tries plain provider functions in order and takes the first non-None answer:
``LLMPERF_TOPOLOGY`` (JSON of :meth:`Topology.to_dict`, or a short form ``none``, ``1xA6000``,
``2xRTX3090:pcie``, ``2xRTX3090:pcie-nop2p``, ``2xH200:nvlink``), then NVML (names, memory, NVLink state per
link, P2P status), then ``nvidia-smi topo -m``, else a "none" topology (CPU backend). The plugin exposes
the chain through the ``pytest_llmperf_detect_topology`` hook; :func:`hardware_facts` feeds the baseline
fingerprint. ``pynvml`` is imported lazily (through :mod:`pytest_llmperf.telemetry.nvml`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pytest_llmperf.errors import UsageError

__all__ = [
    "GpuInfo", "Link", "Topology", "TOPOLOGY_ENV", "detect_topology", "topology_from_env",
    "topology_from_nvml", "topology_from_nvidia_smi", "parse_topology_short_form", "parse_topo_matrix",
    "parse_query_gpu", "hardware_facts", "DEFAULT_PROVIDERS",
]

log = logging.getLogger(__name__)

TOPOLOGY_ENV = "LLMPERF_TOPOLOGY"
_PCIE_LEVELS = {"PIX", "PXB", "PHB", "NODE", "SYS", "SOC"}
_ANCESTOR_NAMES = {0: "X", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_mib: int = 0
    uuid: str = ""


@dataclass(frozen=True)
class Link:
    """How two GPUs talk. ``p2p`` is None when unknown; ``detail`` is e.g. ``NV18``, ``PIX``, ``SYS``."""

    kind: str  # "nvlink" | "pcie"
    p2p: bool | None = None
    detail: str = ""


@dataclass(frozen=True)
class Topology:
    gpus: tuple[GpuInfo, ...] = ()
    links: Mapping[tuple[int, int], Link] = field(default_factory=dict)  # keys (i, j) with i < j
    driver_version: str | None = None
    cuda_version: str | None = None
    source: str = "none"  # "nvml" | "nvidia-smi" | "env" | "none"

    @classmethod
    def none(cls) -> Topology:
        return cls()

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def link(self, a: int, b: int) -> Link | None:
        return self.links.get((min(a, b), max(a, b)))

    def interconnect(self, indices: Iterable[int] | None = None) -> str:
        """"nvlink" when every pair of ``indices`` (default: all GPUs) has NVLink, "pcie" if any pair
        lacks it (or is unknown), "none" for fewer than two GPUs."""
        idx = sorted({g.index for g in self.gpus} if indices is None else set(indices))
        if len(idx) < 2:
            return "none"
        for i, a in enumerate(idx):
            for b in idx[i + 1:]:
                link = self.link(a, b)
                if link is None or link.kind != "nvlink":
                    return "pcie"
        return "nvlink"

    def machine_identity(self, hostname: str) -> str:
        """The session record's ``machine``: the host name plus each GPU's UUID prefix, so two leases of one
        machine kind (cloud hosts often share a host name such as ``vm``) are told apart. Without GPUs: the
        host name."""
        uuids = [g.uuid[:12] for g in self.gpus if g.uuid]
        return f"{hostname} [{', '.join(uuids)}]" if uuids else hostname

    def describe(self) -> str:
        """One line for the pytest header, e.g. ``2 x NVIDIA H200, NVLink (NV18), driver 570.124``."""
        if not self.gpus:
            return "no GPU (CPU backend)" + (" [from LLMPERF_TOPOLOGY]" if self.source == "env" else "")
        names = Counter(g.name for g in self.gpus)
        parts = [", ".join(f"{n} x {name}" for name, n in names.items())]
        kind = self.interconnect()
        if kind != "none":
            details = sorted({lk.detail for lk in self.links.values() if lk.kind == kind and lk.detail})
            p2p = {lk.p2p for lk in self.links.values()}
            text = "NVLink" if kind == "nvlink" else "PCIe"
            extra = list(details) + (["no P2P"] if kind == "pcie" and p2p == {False} else [])
            parts.append(f"{text} ({', '.join(extra)})" if extra else text)
        if self.driver_version:
            parts.append(f"driver {self.driver_version}")
        if self.cuda_version:
            parts.append(f"CUDA {self.cuda_version}")
        if self.source == "env":
            parts.append("[from LLMPERF_TOPOLOGY]")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": [{"index": g.index, "name": g.name, "memory_mib": g.memory_mib, "uuid": g.uuid} for g in self.gpus],
            "links": [{"a": a, "b": b, "kind": lk.kind, "p2p": lk.p2p, "detail": lk.detail}
                      for (a, b), lk in sorted(self.links.items())],
            "driver_version": self.driver_version, "cuda_version": self.cuda_version, "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        try:
            gpus = tuple(GpuInfo(int(g["index"]), str(g["name"]), int(g.get("memory_mib", 0)), str(g.get("uuid", "")))
                         for g in data.get("gpus", ()))
            links = {}
            for lk in data.get("links", ()):
                a, b = int(lk["a"]), int(lk["b"])
                if lk["kind"] not in ("nvlink", "pcie"):
                    raise ValueError(f"link kind {lk['kind']!r} is not 'nvlink' or 'pcie'")
                links[(min(a, b), max(a, b))] = Link(lk["kind"], lk.get("p2p"), str(lk.get("detail", "")))
            return cls(gpus, links, data.get("driver_version"), data.get("cuda_version"), str(data.get("source", "env")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"invalid topology description: {type(exc).__name__}: {exc}") from exc


def _all_pairs(n: int, link: Link) -> dict[tuple[int, int], Link]:
    return {(a, b): link for a in range(n) for b in range(a + 1, n)}


_SHORT = re.compile(r"^(\d+)\s*x\s*([^:]+?)(?::(nvlink|pcie|pcie-p2p|pcie-nop2p))?$", re.IGNORECASE)


def parse_topology_short_form(text: str) -> Topology:
    """``none`` | ``<N>x<model>[:nvlink|:pcie|:pcie-p2p|:pcie-nop2p]``; JSON is handled by the caller."""
    value = text.strip()
    if value.lower() in ("none", "cpu", "0"):
        return Topology(source="env")
    m = _SHORT.match(value)
    if not m:
        raise UsageError(f"{TOPOLOGY_ENV}={text!r} is not understood: use JSON, 'none', '1xA6000', "
                         "'2xRTX3090:pcie', '2xRTX3090:pcie-nop2p' or '2xH200:nvlink'")
    count, model, kind = int(m.group(1)), m.group(2).strip(), (m.group(3) or "").lower()
    if count < 1:
        raise UsageError(f"{TOPOLOGY_ENV}={text!r}: GPU count must be at least 1 (or say 'none')")
    gpus = tuple(GpuInfo(i, model) for i in range(count))
    if count > 1 and not kind:
        raise UsageError(f"{TOPOLOGY_ENV}={text!r}: with {count} GPUs say ':nvlink' or ':pcie'")
    link = {"nvlink": Link("nvlink", True, "NVLink"), "pcie": Link("pcie", None, ""),
            "pcie-p2p": Link("pcie", True, ""), "pcie-nop2p": Link("pcie", False, "")}.get(kind)
    return Topology(gpus, _all_pairs(count, link) if link else {}, source="env")


def topology_from_env(environ: Mapping[str, str] | None = None) -> Topology | None:
    """``LLMPERF_TOPOLOGY`` (JSON or short form); None when unset. A malformed value raises UsageError."""
    value = (os.environ if environ is None else environ).get(TOPOLOGY_ENV, "").strip()
    if not value:
        return None
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{TOPOLOGY_ENV} is not valid JSON: {exc}") from exc
        return Topology.from_dict({"source": "env", **data} if isinstance(data, dict) else {"gpus": data})
    return parse_topology_short_form(value)


def _safe(fn: Callable[[], Any], default: Any = None) -> Any:
    try:
        return fn()
    except Exception:
        return default


def _nvml_links(nvml: ModuleType, handles: Sequence[Any]) -> dict[tuple[int, int], Link]:
    from pytest_llmperf.telemetry.nvml import decode  # noqa: PLC0415

    n = len(handles)
    bus = [_safe(lambda: decode(nvml.nvmlDeviceGetPciInfo(h).busId).lower(), "") for h in handles]
    direct: Counter[tuple[int, int]] = Counter()
    switch_links = [0] * n
    max_links = int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))
    for i, h in enumerate(handles):
        for link in range(max_links):
            if _safe(lambda: nvml.nvmlDeviceGetNvLinkState(h, link), 0) != 1:
                continue
            remote = _safe(lambda: decode(nvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId).lower(), "")
            if remote and remote in bus and bus.index(remote) != i:
                j = bus.index(remote)
                direct[(min(i, j), max(i, j))] += 1
            else:  # NVSwitch (HGX boards) or unknown remote end
                switch_links[i] += 1
    read_idx = getattr(nvml, "NVML_P2P_CAPS_INDEX_READ", 0)
    read_idx = read_idx[0] if isinstance(read_idx, tuple) else read_idx
    nvlink_idx = getattr(nvml, "NVML_P2P_CAPS_INDEX_NVLINK", 2)
    links = {}
    for a in range(n):
        for b in range(a + 1, n):
            p2p_status = _safe(lambda: nvml.nvmlDeviceGetP2PStatus(handles[a], handles[b], read_idx))
            p2p = None if p2p_status is None else p2p_status == 0
            n_direct = (direct[(a, b)] + 1) // 2  # each link is seen from both ends
            n_switch = min(switch_links[a], switch_links[b])
            nvlink_p2p = _safe(lambda: nvml.nvmlDeviceGetP2PStatus(handles[a], handles[b], nvlink_idx)) == 0
            if n_direct or n_switch or nvlink_p2p:
                detail = f"NV{n_direct or n_switch}" if (n_direct or n_switch) else "NVLink"
                links[(a, b)] = Link("nvlink", p2p, detail)
            else:
                level = _safe(lambda: nvml.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b]))
                links[(a, b)] = Link("pcie", p2p, _ANCESTOR_NAMES.get(level, "") if level is not None else "")
    return links


def topology_from_nvml(nvml: ModuleType | None = None) -> Topology | None:
    """Ask NVML; None when NVML is unavailable or fails (logged)."""
    from pytest_llmperf.telemetry import nvml as _nvml  # noqa: PLC0415

    try:
        module = nvml if nvml is not None else _nvml.nvml_init()
    except _nvml.NvmlUnavailable as exc:
        log.debug("topology: NVML unavailable: %s", exc)
        return None
    try:
        count = int(module.nvmlDeviceGetCount())
        handles = [module.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        gpus = tuple(
            GpuInfo(i, _nvml.decode(module.nvmlDeviceGetName(h)),
                    int(_safe(lambda: module.nvmlDeviceGetMemoryInfo(h).total, 0)) // (1024 * 1024),
                    _safe(lambda: _nvml.decode(module.nvmlDeviceGetUUID(h)), ""))
            for i, h in enumerate(handles))
        links = _nvml_links(module, handles)
        driver = _safe(lambda: _nvml.decode(module.nvmlSystemGetDriverVersion()))
        cuda_int = _safe(lambda: int(module.nvmlSystemGetCudaDriverVersion()))
        cuda = f"{cuda_int // 1000}.{cuda_int % 1000 // 10}" if cuda_int else None
        return Topology(gpus, links, driver, cuda, "nvml")
    except Exception as exc:
        log.warning("topology: NVML query failed (%s: %s); trying nvidia-smi", type(exc).__name__, exc)
        return None
    finally:
        if nvml is None:
            _nvml.nvml_shutdown()


def parse_topo_matrix(text: str) -> dict[tuple[int, int], Link]:
    """Links from ``nvidia-smi topo -m`` output (GPU x GPU cells: NV#, PIX, PXB, PHB, NODE, SYS)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    columns: list[int | None] | None = None
    links: dict[tuple[int, int], Link] = {}
    for line in text.splitlines():
        cells = line.split()
        if not cells:
            continue
        if columns is None:
            if cells[0].startswith("GPU") and cells[0][3:].isdigit():
                columns = [int(c[3:]) if c.startswith("GPU") and c[3:].isdigit() else None for c in cells]
            continue
        if not (cells[0].startswith("GPU") and cells[0][3:].isdigit()):
            if cells[0].startswith("Legend"):
                break
            continue
        row = int(cells[0][3:])
        for col, cell in zip(columns, cells[1:]):
            if col is None or col == row or cell == "X":
                continue
            key = (min(row, col), max(row, col))
            if re.fullmatch(r"NV\d+", cell):
                links[key] = Link("nvlink", None, cell)
            elif cell in _PCIE_LEVELS:
                links[key] = Link("pcie", None, cell)
    return links


def parse_query_gpu(text: str) -> tuple[tuple[GpuInfo, ...], str | None]:
    """``nvidia-smi --query-gpu=index,name,memory.total,uuid,driver_version --format=csv,noheader,nounits``."""
    gpus, driver = [], None
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        memory = int(float(parts[2])) if parts[2].replace(".", "", 1).isdigit() else 0
        gpus.append(GpuInfo(int(parts[0]), parts[1], memory, parts[3]))
        driver = parts[4] or driver
    return tuple(gpus), driver


def _run_smi(args: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("topology: nvidia-smi %s failed: %s", " ".join(args), exc)
        return None
    return done.stdout if done.returncode == 0 else None


def topology_from_nvidia_smi(run: Callable[[Sequence[str]], str | None] = _run_smi) -> Topology | None:
    """Parse ``nvidia-smi`` (GPU list and ``topo -m``); None when it is missing or fails."""
    query = run(["--query-gpu=index,name,memory.total,uuid,driver_version", "--format=csv,noheader,nounits"])
    if query is None:
        return None
    gpus, driver = parse_query_gpu(query)
    if not gpus:
        return None
    matrix = run(["topo", "-m"]) if len(gpus) > 1 else ""
    return Topology(gpus, parse_topo_matrix(matrix or ""), driver, None, "nvidia-smi")


DEFAULT_PROVIDERS: tuple[Callable[[], Topology | None], ...] = (
    topology_from_env, topology_from_nvml, topology_from_nvidia_smi)


def detect_topology(providers: Sequence[Callable[[], Topology | None]] = DEFAULT_PROVIDERS) -> Topology:
    """The first provider's non-None answer, else a "none" topology."""
    for provider in providers:
        found = provider()
        if found is not None:
            return found
    return Topology.none()


def hardware_facts(topology: Topology) -> dict[str, Any]:
    """gpu_model, gpu_count, interconnect, driver, cuda: the hardware part of the baseline fingerprint."""
    names = sorted({g.name for g in topology.gpus})
    return {"gpu_model": "+".join(names) if names else None, "gpu_count": topology.gpu_count,
            "interconnect": topology.interconnect(), "driver": topology.driver_version,
            "cuda": topology.cuda_version}
