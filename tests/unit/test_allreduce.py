"""The inter-GPU path: which all-reduce settings an engine gets, and the proof read back from its log.

The log lines are vLLM 0.26's and NCCL's own formats (vllm/distributed/device_communicators/
cuda_communicator.py; NCCL's transport setup with NCCL_DEBUG=INFO), so this keeps the emulation honest without
a GPU: an emulated engine whose log still shows a peer path is refused before any test measures it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_llmperf.engine.allreduce import (FUSION_OFF_CONFIG, PCIE_EMULATION_ENV, capture_failure_hint,
                                             decide_fusion, emulation_violations, multicast_disabled_by_env,
                                             parse_link_evidence)
from pytest_llmperf.engine.backends import plan_launch
from pytest_llmperf.engine.server import VLLMServer
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import EngineStartError, UsageError

W = "(Worker_TP0 pid=4242) INFO 11-23 04:10:11 [cuda_communicator.py:264] "
NVLINK_LOG = textwrap.dedent(f"""\
    {W}Using ['CUSTOM', 'SYMM_MEM', 'PYNCCL'] all-reduce backends (in dispatch order) for group 'tp:0' out of potential backends: ['NCCL_SYMM_MEM', 'QUICK_REDUCE', 'FLASHINFER', 'CUSTOM', 'SYMM_MEM', 'PYNCCL'].
    gpu-host:4242:4242 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read
    gpu-host:4242:4242 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/CUMEM/read
    """)
EMULATED_TP_LOG = textwrap.dedent(f"""\
    {W}Using ['PYNCCL'] all-reduce backends (in dispatch order) for group 'tp:0' out of potential backends: ['NCCL_SYMM_MEM', 'QUICK_REDUCE', 'FLASHINFER', 'CUSTOM', 'SYMM_MEM', 'PYNCCL'].
    gpu-host:4242:4242 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via SHM/direct/direct
    gpu-host:4243:4243 [1] NCCL INFO Channel 00/0 : 1[1] -> 0[0] via SHM/direct/direct
    """)
EMULATED_PP_LOG = ("gpu-host:77:90 [0] NCCL INFO Channel 00/1 : 0[0] -> 1[1] [send] via SHM/direct/direct\n"
                   "gpu-host:78:91 [1] NCCL INFO Channel 00/1 : 0[0] -> 1[1] [receive] via SHM/direct/direct\n")
FUSION_LOG = ("(EngineCore pid=1) INFO 11-23 04:12:00 [collective_fusion.py:101] Auto-selected flashinfer allreduce "
              "backend: mnnvl\n")


def test_the_backend_line_and_nccl_transports_are_read():
    ev = parse_link_evidence(NVLINK_LOG)
    assert ev.allreduce_backends == {"tp:0": ["CUSTOM", "SYMM_MEM", "PYNCCL"]}
    assert ev.nccl_transports == ["P2P"]
    assert not ev.fusion_on
    assert any("all-reduce backends" in line for line in ev.lines)


def test_an_nvlink_log_does_not_prove_emulation_and_says_why():
    problems = emulation_violations(parse_link_evidence(NVLINK_LOG), tp=2)
    assert any("['CUSTOM', 'SYMM_MEM']" in p for p in problems)
    assert any("P2P" in p for p in problems)


def test_host_memory_paths_prove_emulation_for_tp_and_pp():
    assert emulation_violations(parse_link_evidence(EMULATED_TP_LOG), tp=2) == []
    ev = parse_link_evidence(EMULATED_PP_LOG)
    assert ev.nccl_transports == ["SHM"]
    assert emulation_violations(ev, tp=1, pp=2) == []


def test_silence_proves_nothing():
    assert "unproven" in emulation_violations(parse_link_evidence("INFO nothing here\n"), tp=2)[0]
    assert "unproven" in emulation_violations(parse_link_evidence(""), tp=1, pp=2)[0]


def test_the_fusion_counts_as_a_peer_path_and_explains_a_capture_crash():
    ev = parse_link_evidence(EMULATED_TP_LOG + FUSION_LOG)
    assert ev.fusion_on
    assert any("fusion" in p for p in emulation_violations(ev, tp=2))
    crash = FUSION_LOG + "(Worker_TP1) ERROR CUBLAS_STATUS_EXECUTION_FAILED when calling cublasLtMatmul\n"
    assert "--llmperf-allreduce-fusion off" in capture_failure_hint(crash)
    assert capture_failure_hint("CUBLAS_STATUS_EXECUTION_FAILED\n") is None  # no fusion: no such hint


@pytest.mark.parametrize(("kwargs", "env", "off"), [
    ({"backend": "gpu", "tp": 2, "emulate_pcie": True, "choice": "auto"}, {}, True),
    ({"backend": "gpu", "tp": 2, "emulate_pcie": False, "choice": "auto"}, {"NCCL_NVLS_ENABLE": "0"}, True),
    ({"backend": "gpu", "tp": 2, "emulate_pcie": False, "choice": "auto"}, {"TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"},
     True),
    ({"backend": "gpu", "tp": 2, "emulate_pcie": False, "choice": "auto"}, {}, False),
    ({"backend": "gpu", "tp": 2, "emulate_pcie": False, "choice": "auto"}, {"NCCL_NVLS_ENABLE": "1"}, False),
    ({"backend": "gpu", "tp": 2, "emulate_pcie": True, "choice": "on"}, {}, False),
    ({"backend": "gpu", "tp": 2, "emulate_pcie": False, "choice": "off"}, {}, True),
    ({"backend": "gpu", "tp": 1, "emulate_pcie": True, "choice": "off"}, {}, False),   # PP/single: no TP group
    ({"backend": "cpu", "tp": 2, "emulate_pcie": False, "choice": "off"}, {}, False),
])
def test_fusion_decision(kwargs, env, off):
    decision = decide_fusion(extra_args=(), env=env, **kwargs)
    assert decision.off is off, decision.reason


def test_the_users_own_compilation_config_wins():
    d = decide_fusion(backend="gpu", tp=2, emulate_pcie=True, choice="off",
                      extra_args=("--compilation-config", '{"level":3}'), env={})
    assert not d.off and "their own" in d.reason
    assert multicast_disabled_by_env({"NVSHMEM_DISABLE_NVLS": "1"}) == "NVSHMEM_DISABLE_NVLS=1"


def test_emulated_tp_launch_switches_off_every_peer_path(monkeypatch):
    monkeypatch.delenv("NCCL_DEBUG", raising=False)
    plan = plan_launch(EngineSpec(model="tiny-llama", backend="gpu", tp=2, emulate_pcie=True), port=8000)
    assert all(plan.env[k] == v for k, v in PCIE_EMULATION_ENV.items())
    assert plan.env["VLLM_ALLREDUCE_USE_SYMM_MEM"] == "0" and plan.env["NCCL_DEBUG"] == "INFO"
    argv = list(plan.argv)
    assert "--disable-custom-all-reduce" in argv
    assert argv[argv.index("--compilation-config") + 1] == FUSION_OFF_CONFIG
    assert "--enforce-eager" not in argv  # graphs stay on: eager is never comparable


def test_nvlink_tp_launch_keeps_peer_paths_and_single_gets_no_nccl_logging(monkeypatch):
    for key in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS", "NCCL_DEBUG"):
        monkeypatch.delenv(key, raising=False)
    plan = plan_launch(EngineSpec(model="tiny-llama", backend="gpu", tp=2), port=8000)
    assert "NCCL_P2P_DISABLE" not in plan.env and "--disable-custom-all-reduce" not in plan.argv
    assert "--compilation-config" not in plan.argv
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "0")  # a host without multicast: fusion off, said why
    plan = plan_launch(EngineSpec(model="tiny-llama", backend="gpu", tp=2), port=8000)
    assert "--compilation-config" in plan.argv and "NCCL_NVLS_ENABLE=0" in plan.fusion.reason
    assert "NCCL_DEBUG" not in plan_launch(EngineSpec(model="tiny-llama", backend="gpu"), port=8000).env


def test_a_bad_fusion_setting_is_a_usage_error():
    with pytest.raises(UsageError, match="allreduce_fusion 'maybe'"):
        EngineSpec(allreduce_fusion="maybe")


class _LoggingServer(VLLMServer):
    """A stand-in process that writes ``LOG`` and stays up; /health answers at once."""

    LOG = ""

    def _spawn(self) -> subprocess.Popen[bytes]:
        logf = open(self.log_path, "ab")  # noqa: SIM115
        try:
            code = f"import sys, time; sys.stdout.write({self.LOG!r}); sys.stdout.flush(); time.sleep(600)"
            return subprocess.Popen([sys.executable, "-c", code], stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            logf.close()

    def _probe(self) -> bool:
        return "all-reduce" in self.log_path.read_text() or "NCCL" in self.log_path.read_text()


def _server(tmp_path: Path, log: str, **spec: object) -> VLLMServer:
    cls = type("S", (_LoggingServer,), {"LOG": log})
    return cls(EngineSpec(model="tiny-llama", backend="gpu", startup_timeout_s=30, **spec), log_dir=tmp_path)


def test_an_emulated_engine_whose_log_shows_nvlink_is_refused_and_stopped(tmp_path):
    server = _server(tmp_path, NVLINK_LOG, tp=2, emulate_pcie=True)
    with pytest.raises(EngineStartError) as excinfo:
        server.start()
    text = str(excinfo.value)
    assert "PCIe emulation of tp2 is not proven" in text and "CUSTOM" in text and str(server.log_path) in text
    assert server.proc is None


def test_a_proven_emulated_engine_records_its_paths(tmp_path):
    server = _server(tmp_path, EMULATED_TP_LOG, tp=2, emulate_pcie=True)
    try:
        server.start()
        facts = server.engine_facts()
    finally:
        server.stop()
    assert facts["allreduce_backends"] == {"tp:0": ["PYNCCL"]}
    assert facts["nccl_transports"] == ["SHM"]
    assert facts["allreduce_fusion_off"] is True
    assert "emulation" in str(facts["allreduce_fusion_reason"])


def test_an_nvlink_engine_records_its_peer_paths_without_failing(tmp_path):
    server = _server(tmp_path, NVLINK_LOG, tp=2)
    try:
        server.start()
        assert server.engine_facts()["nccl_transports"] == ["P2P"]
    finally:
        server.stop()
