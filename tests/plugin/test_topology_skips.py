"""Topology-based skipping with faked topologies (``LLMPERF_TOPOLOGY`` and the
``pytest_llmperf_detect_topology`` hook). Nothing real starts: the inner conftest overrides
``llmperf_engine`` with a stand-in that returns the planned :class:`EngineSpec`, so the plugin's skip
decisions (made at collection) are exercised exactly, and tests that run only print their spec."""

from __future__ import annotations

from textwrap import dedent

import pytest

from tests.conftest import run_llmperf

INNER_CONFTEST = """
import pytest
from pytest_llmperf.session import SPEC_KEY

@pytest.fixture
def llmperf_engine(request):
    # stand-in for the plugin's fixture: the planned spec, never a started engine
    spec = request.node.stash[SPEC_KEY]
    print(f"SPEC {request.node.name} backend={spec.backend} label={spec.label} "
          f"emulate_pcie={spec.emulate_pcie} devices={spec.devices}")
    return spec
"""

INNER_TESTS = """
import pytest

def test_single(llmperf_engine):
    assert llmperf_engine.world_size == 1

@pytest.mark.tp(2)
def test_tp2(llmperf_engine):
    assert llmperf_engine.tp == 2

@pytest.mark.pp(2)
def test_pp2(llmperf_engine):
    assert llmperf_engine.pp == 2

@pytest.mark.nvlink
@pytest.mark.tp(2)
def test_nvlink_tp2(llmperf_engine):
    pass

@pytest.mark.pcie
@pytest.mark.pp(2)
def test_pcie_pp2(llmperf_engine):
    pass

@pytest.mark.gpu
def test_gpu_single(llmperf_engine):
    pass

def test_no_engine():
    pass
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_topo=INNER_TESTS)
    return pytester


def run(pytester: pytest.Pytester, topology: str, *args: str) -> pytest.RunResult:
    result = run_llmperf(pytester, "-rs", "-s", *args, env={"LLMPERF_TOPOLOGY": topology})
    result.stdout.no_fnmatch_line("*starting vLLM engine*")
    return result


def test_no_gpu_runs_cpu_backend_and_skips_gpu_and_nvlink_tests(inner: pytest.Pytester) -> None:
    result = run(inner, "none")
    result.assert_outcomes(passed=5, skipped=2)
    result.stdout.fnmatch_lines(["llmperf: backend cpu, no GPU (CPU backend)*"])
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]1[]] test_topo.py:*: needs GPUs; running on vLLM's CPU backend",
        "SKIPPED [[]1[]] test_topo.py:*: needs GPUs; running on vLLM's CPU backend",
        "*SPEC test_tp2 backend=cpu label=tp2 emulate_pcie=False devices=None",
        "*SPEC test_pcie_pp2 backend=cpu label=pp2 emulate_pcie=False devices=None",
    ])
    assert result.stdout.str().count("SKIPPED [1]") == 2


def test_tp_beyond_cores_on_cpu_is_skipped_naming_the_cores(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_big=dedent("""
        import pytest

        @pytest.mark.tp(64)
        def test_tp64(llmperf_engine):
            pass
    """))
    result = run(inner, "none", "test_big.py")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_big.py:*: tp64 needs 64 cores on the CPU backend; * usable"])


def test_a_tp_size_that_cannot_split_the_model_is_skipped_naming_the_sizes_that_can(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_split=dedent("""
        import pytest

        @pytest.mark.tp(3)
        def test_tp3(llmperf_engine):
            pass

        @pytest.mark.tp(4)
        def test_tp4(llmperf_engine):
            pass
    """))
    result = run(inner, "4xH200:nvlink", "test_split.py", "--llmperf-model", "deepseek-r1-distill-qwen-14b")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_split.py:*: tp3: model deepseek-r1-distill-qwen-14b: TP=3 does "
                                 "not split the model's 40 attention heads / 8 KV heads evenly (vLLM refuses it); "
                                 "TP sizes that do: 2, 4, 8"])


def test_one_gpu_skips_two_gpu_modes(inner: pytest.Pytester) -> None:
    result = run(inner, "1xA6000")
    result.assert_outcomes(passed=3, skipped=4)
    result.stdout.fnmatch_lines(["llmperf: backend gpu, 1 x A6000, [[]from LLMPERF_TOPOLOGY[]]*"])
    for label in ("tp2", "pp2", "tp2", "pp2"):
        result.stdout.fnmatch_lines([f"SKIPPED [[]1[]] test_topo.py:*: {label} needs 2 GPUs; this machine has 1 "
                                     "(1 x A6000, [[]from LLMPERF_TOPOLOGY[]])"])
    result.stdout.fnmatch_lines(["*SPEC test_single backend=gpu label=single emulate_pcie=False devices=(0,)"])


def test_forced_emulation_on_one_gpu_says_there_is_no_peer_link(inner: pytest.Pytester) -> None:
    """--llmperf-emulate-pcie on with one GPU: the header must not claim NVLink was emulated away."""
    result = run(inner, "1xH200", "--llmperf-emulate-pcie", "on")
    result.assert_outcomes(passed=3, skipped=4)
    result.stdout.fnmatch_lines(["llmperf: backend gpu, 1 x H200*; PCIe emulation on, but this machine has one GPU: "
                                 "no peer link to emulate (single-GPU engines)"])
    result.stdout.no_fnmatch_line("*PCIe emulated on NVLink*")


def test_two_gpus_over_pcie_skip_nvlink_tests(inner: pytest.Pytester) -> None:
    result = run(inner, "2xRTX3090:pcie")
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines([
        "SKIPPED [[]1[]] test_topo.py:*: needs NVLink between GPUs 0..1; they are joined by PCIe"])
    result.stdout.fnmatch_lines_random([
        "*SPEC test_tp2 backend=gpu label=tp2 emulate_pcie=False devices=(0, 1)",
        "*SPEC test_pcie_pp2 backend=gpu label=pp2 emulate_pcie=False devices=(0, 1)",
    ])
    result.stdout.no_fnmatch_line("*PCIe emulated*")
    forced = run(inner, "2xRTX3090:pcie", "--llmperf-emulate-pcie", "on")  # peer paths off on a real PCIe box
    forced.stdout.fnmatch_lines(["llmperf: backend gpu, 2 x RTX3090, PCIe*; PCIe without P2P emulated on PCIe: "
                                 "NCCL P2P/NVLS off*"])


def test_two_gpus_over_nvlink_emulate_pcie_for_the_pcie_suite(inner: pytest.Pytester) -> None:
    result = run(inner, "2xH200:nvlink")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["llmperf: backend gpu, 2 x H200, NVLink (NVLink)*; "
                                 "PCIe emulated on NVLink: NCCL P2P/NVLS off, custom and symmetric-memory all-reduce "
                                 "off, all-reduce fusion off (proven from the engine log)"])
    result.stdout.fnmatch_lines_random([
        "*SPEC test_pcie_pp2 backend=gpu label=pp2 emulate_pcie=True devices=(0, 1)",
        "*SPEC test_tp2 backend=gpu label=tp2 emulate_pcie=False devices=(0, 1)",
        "*SPEC test_nvlink_tp2 backend=gpu label=tp2 emulate_pcie=False devices=(0, 1)",
    ])


def test_nvlink_with_emulation_off_skips_the_pcie_suite(inner: pytest.Pytester) -> None:
    result = run(inner, "2xH200:nvlink", "--llmperf-emulate-pcie", "off")
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_topo.py:*: pcie test on NVLink GPUs with "
                                 "--llmperf-emulate-pcie off"])
    result.stdout.no_fnmatch_line("*PCIe emulated*")


def test_conftest_hook_overrides_detection(inner: pytest.Pytester) -> None:
    inner.makeconftest(INNER_CONFTEST + dedent("""
        from pytest_llmperf.engine.topology import parse_topology_short_form

        def pytest_llmperf_detect_topology(config):
            return parse_topology_short_form("2xRTX3090:pcie")
    """))
    result = run(inner, "none")  # the hook wins over the environment variable
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines(["llmperf: backend gpu, 2 x RTX3090, PCIe*",
                                 "*needs NVLink between GPUs 0..1; they are joined by PCIe"])


def test_skipped_gpu_tests_with_m_selection(inner: pytest.Pytester) -> None:
    result = run(inner, "1xA6000", "-m", "tp or pp")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*3 deselected*"])


def test_malformed_topology_env_is_an_error_naming_it(pytester: pytest.Pytester) -> None:
    result = run_llmperf(pytester, env={"LLMPERF_TOPOLOGY": "2xH200"})
    assert result.ret != pytest.ExitCode.OK
    assert "LLMPERF_TOPOLOGY='2xH200': with 2 GPUs say ':nvlink' or ':pcie'" in (
        result.stdout.str() + result.stderr.str())
