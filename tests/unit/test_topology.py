"""Topology detection with a mocked pynvml, parsed nvidia-smi output and the env short forms."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pytest_llmperf.engine.topology import (
    GpuInfo,
    Link,
    Topology,
    detect_topology,
    hardware_facts,
    parse_query_gpu,
    parse_topo_matrix,
    topology_from_env,
    topology_from_nvidia_smi,
    topology_from_nvml,
)
from pytest_llmperf.errors import UsageError
from pytest_llmperf.telemetry import nvml as nvml_mod


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class FakeNvml:
    """n GPUs; ``nvlinks`` = links per pair (direct), ``switch_links`` = links to an NVSwitch per GPU."""

    NVML_NVLINK_MAX_LINKS = 18
    NVML_P2P_CAPS_INDEX_READ = (0,)  # as pynvml really spells it
    NVML_P2P_CAPS_INDEX_NVLINK = 2

    def __init__(self, n: int, name: str = "NVIDIA H200", *, nvlinks: int = 0, switch_links: int = 0,
                 p2p: bool = True, level: int = 30, fail: str | None = None) -> None:
        self.n, self.name, self.nvlinks, self.switch_links, self.p2p, self.level, self.fail = (
            n, name, nvlinks, switch_links, p2p, level, fail)

    def _maybe_fail(self, fn: str) -> None:
        if self.fail == fn:
            raise NVMLError(999)

    def nvmlInit(self) -> None: self._maybe_fail("nvmlInit")  # noqa: E704
    def nvmlShutdown(self) -> None: pass  # noqa: E704

    def nvmlDeviceGetCount(self) -> int:
        self._maybe_fail("nvmlDeviceGetCount")
        return self.n

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int: return i  # noqa: E704
    def nvmlDeviceGetName(self, h: int) -> bytes: return self.name.encode()  # noqa: E704
    def nvmlDeviceGetUUID(self, h: int) -> str: return f"GPU-{h:08x}"  # noqa: E704
    def nvmlDeviceGetMemoryInfo(self, h: int): return SimpleNamespace(total=143771 * 1024 * 1024)  # noqa: E704
    def nvmlSystemGetDriverVersion(self) -> str: return "570.124.06"  # noqa: E704
    def nvmlSystemGetCudaDriverVersion(self) -> int: return 12080  # noqa: E704
    def nvmlDeviceGetPciInfo(self, h: int): return SimpleNamespace(busId=f"00000000:{h + 0x18:02X}:00.0".encode())  # noqa: E704

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        if self.nvlinks == 0 and self.switch_links == 0:
            raise NVMLError(3)  # not supported on PCIe cards
        return 1 if link < max(self.nvlinks, self.switch_links) else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: int, link: int):
        if self.switch_links:
            return SimpleNamespace(busId=b"00000000:A0:00.0")  # an NVSwitch
        return self.nvmlDeviceGetPciInfo(1 - h)

    def nvmlDeviceGetP2PStatus(self, a: int, b: int, index: int) -> int:
        if index == 2:
            return 0 if (self.nvlinks or self.switch_links) else 5
        return 0 if self.p2p else 1

    def nvmlDeviceGetTopologyCommonAncestor(self, a: int, b: int) -> int:
        return self.level


def test_nvml_two_gpus_direct_nvlink() -> None:
    topo = topology_from_nvml(FakeNvml(2, nvlinks=18))
    assert topo is not None and topo.source == "nvml" and topo.gpu_count == 2
    assert topo.link(1, 0) == Link("nvlink", True, "NV18")
    assert topo.interconnect() == "nvlink"
    assert topo.gpus[0] == GpuInfo(0, "NVIDIA H200", 143771, "GPU-00000000")
    assert topo.describe() == "2 x NVIDIA H200, NVLink (NV18), driver 570.124.06, CUDA 12.8"


def test_nvml_nvswitch_board_counts_as_nvlink() -> None:
    topo = topology_from_nvml(FakeNvml(4, switch_links=18))
    assert topo is not None and topo.interconnect() == "nvlink" and topo.interconnect([1, 3]) == "nvlink"
    assert all(lk.detail == "NV18" for lk in topo.links.values()) and len(topo.links) == 6


def test_nvml_two_gpus_pcie_without_p2p() -> None:
    topo = topology_from_nvml(FakeNvml(2, "NVIDIA GeForce RTX 3090", p2p=False, level=50))
    assert topo is not None and topo.interconnect() == "pcie"
    assert topo.link(0, 1) == Link("pcie", False, "SYS")
    assert topo.describe().startswith("2 x NVIDIA GeForce RTX 3090, PCIe (SYS, no P2P), driver")
    assert hardware_facts(topo) == {"gpu_model": "NVIDIA GeForce RTX 3090", "gpu_count": 2,
                                    "interconnect": "pcie", "driver": "570.124.06", "cuda": "12.8"}


def test_nvml_one_gpu_and_none() -> None:
    one = topology_from_nvml(FakeNvml(1, "NVIDIA RTX A6000"))
    assert one is not None and one.gpu_count == 1 and one.links == {} and one.interconnect() == "none"
    assert one.describe() == "1 x NVIDIA RTX A6000, driver 570.124.06, CUDA 12.8"
    zero = topology_from_nvml(FakeNvml(0))
    assert zero is not None and zero.gpu_count == 0 and zero.describe() == "no GPU (CPU backend)"
    assert hardware_facts(Topology.none()) == {"gpu_model": None, "gpu_count": 0, "interconnect": "none",
                                               "driver": None, "cuda": None}


def test_nvml_error_falls_through_to_next_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    assert topology_from_nvml(FakeNvml(2, fail="nvmlDeviceGetCount")) is None
    monkeypatch.setattr(nvml_mod, "_override", FakeNvml(2, fail="nvmlInit"))
    assert topology_from_nvml() is None  # init failure: no GPU through NVML
    smi = Topology((GpuInfo(0, "X"),), source="nvidia-smi")
    assert detect_topology([lambda: None, topology_from_nvml, lambda: smi]) is smi
    assert detect_topology([lambda: None]) == Topology.none()


def test_nvml_through_the_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_mod, "_override", FakeNvml(2, nvlinks=4))
    monkeypatch.delenv("LLMPERF_TOPOLOGY", raising=False)
    topo = detect_topology([topology_from_env, topology_from_nvml])
    assert topo.source == "nvml" and topo.link(0, 1) == Link("nvlink", True, "NV4")
    assert nvml_mod._refcount == 0  # shut down again


TOPO_H200 = """\
\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m
GPU0\t X \tNV18\t0-55,112-167\t0\t\tN/A
GPU1\tNV18\t X \t0-55,112-167\t0\t\tN/A

Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NV#  = Connection traversing a bonded set of # NVLinks
"""

TOPO_PCIE_NIC = """\
        GPU0    GPU1    GPU2    NIC0    CPU Affinity    NUMA Affinity
GPU0     X      PIX     SYS     NODE    0-15            0
GPU1    PIX      X      SYS     NODE    0-15            0
GPU2    SYS     SYS      X      SYS     16-31           1
NIC0    NODE    NODE    SYS      X

Legend:
  X    = Self
  PIX  = Connection traversing at most a single PCIe bridge

NIC Legend:
  NIC0: mlx5_0
"""


def test_parse_topo_matrix() -> None:
    assert parse_topo_matrix(TOPO_H200) == {(0, 1): Link("nvlink", None, "NV18")}
    links = parse_topo_matrix(TOPO_PCIE_NIC)
    assert links == {(0, 1): Link("pcie", None, "PIX"), (0, 2): Link("pcie", None, "SYS"),
                     (1, 2): Link("pcie", None, "SYS")}
    assert parse_topo_matrix("") == {}


def test_nvidia_smi_provider() -> None:
    outputs = {
        "--query-gpu=index,name,memory.total,uuid,driver_version":
            "0, NVIDIA H200, 143771, GPU-aaaa, 570.124.06\n1, NVIDIA H200, 143771, GPU-bbbb, 570.124.06\n",
        "topo": TOPO_H200,
    }
    topo = topology_from_nvidia_smi(lambda args: outputs[args[0]])
    assert topo is not None and topo.source == "nvidia-smi"
    assert topo.describe() == "2 x NVIDIA H200, NVLink (NV18), driver 570.124.06"
    assert topology_from_nvidia_smi(lambda args: None) is None
    gpus, driver = parse_query_gpu("0, NVIDIA RTX A6000, [N/A], GPU-x, 550.54\n")
    assert gpus == (GpuInfo(0, "NVIDIA RTX A6000", 0, "GPU-x"),) and driver == "550.54"


@pytest.mark.parametrize(("value", "count", "kind", "p2p"), [
    ("none", 0, "none", None),
    ("1xA6000", 1, "none", None),
    ("2xRTX3090:pcie", 2, "pcie", None),
    ("2 x RTX3090:pcie-nop2p", 2, "pcie", False),
    ("2xH200:nvlink", 2, "nvlink", True),
    ("4xH100:NVLINK", 4, "nvlink", True),
])
def test_env_short_forms(value: str, count: int, kind: str, p2p: bool | None) -> None:
    topo = topology_from_env({"LLMPERF_TOPOLOGY": value})
    assert topo is not None and topo.source == "env"
    assert topo.gpu_count == count and topo.interconnect() == kind
    assert all(lk.p2p is p2p for lk in topo.links.values())
    assert "[from LLMPERF_TOPOLOGY]" in topo.describe()


def test_env_json_round_trip_and_errors() -> None:
    original = topology_from_nvml(FakeNvml(2, nvlinks=18))
    assert original is not None
    back = topology_from_env({"LLMPERF_TOPOLOGY": json.dumps(original.to_dict())})
    assert back == original  # source "nvml" kept from the JSON
    assert topology_from_env({}) is None
    for bad in ("2xH200", "threeGPUs", "0xH200:nvlink", "{not json", '{"gpus": [{"name": "x"}]}'):
        with pytest.raises(UsageError, match="LLMPERF_TOPOLOGY|topology"):
            topology_from_env({"LLMPERF_TOPOLOGY": bad})


def test_interconnect_of_a_subset_and_missing_pairs() -> None:
    topo = Topology(tuple(GpuInfo(i, "H200") for i in range(3)),
                    {(0, 1): Link("nvlink", True, "NV18"), (1, 2): Link("nvlink", True, "NV18")})
    assert topo.interconnect([0, 1]) == "nvlink"
    assert topo.interconnect() == "pcie"  # pair (0, 2) unknown: not NVLink
    assert topo.interconnect([2]) == "none"


def test_machine_identity_tells_two_hosts_of_one_name_apart() -> None:
    a = Topology((GpuInfo(0, "H200", 0, "GPU-31d15778-d8f7-3c02"), GpuInfo(1, "H200", 0, "GPU-7896c686-1c69")))
    b = Topology((GpuInfo(0, "H200", 0, "GPU-aa000001-0000"), GpuInfo(1, "H200", 0, "GPU-aa000002-0000")))
    assert a.machine_identity("vm") == "vm [GPU-31d15778, GPU-7896c686]"
    assert a.machine_identity("vm") != b.machine_identity("vm")
    assert Topology(()).machine_identity("ci-box") == "ci-box"
