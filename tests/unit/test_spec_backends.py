"""EngineSpec, parse_mode and the backend launch plans (argv/env per backend). No engine is started."""

from __future__ import annotations

import sys

import pytest

from pytest_llmperf.engine import backends
from pytest_llmperf.engine.backends import SERVER_MODULE, cpu_thread_binding, plan_launch
from pytest_llmperf.engine.spec import EngineSpec, parse_mode
from pytest_llmperf.errors import UsageError


@pytest.mark.parametrize(("mode", "expected"), [
    ("single", (1, 1)), ("tp2", (2, 1)), ("pp2", (1, 2)), ("tp2pp2", (2, 2)), ("TP4", (4, 1)), (" pp3 ", (1, 3)),
])
def test_parse_mode_good(mode: str, expected: tuple[int, int]) -> None:
    assert parse_mode(mode) == expected


@pytest.mark.parametrize("mode", ["", "tp", "pp", "tp2x", "double", "pp2tp2", "tp-1", "tp0", "singletp2"])
def test_parse_mode_bad_names_the_mode(mode: str) -> None:
    with pytest.raises(UsageError, match="mode") as exc:
        parse_mode(mode)
    assert repr(mode) in str(exc.value)


@pytest.mark.parametrize(("mode", "label", "kind", "world"), [
    ("single", "single", "single", 1), ("tp2", "tp2", "tp", 2), ("pp2", "pp2", "pp", 2),
    ("tp2pp2", "tp2pp2", "tp+pp", 4),
])
def test_spec_label_mode_world_size(mode: str, label: str, kind: str, world: int) -> None:
    spec = EngineSpec.from_mode(mode)
    assert (spec.label, spec.parallelism, spec.world_size) == (label, kind, world)
    assert spec.to_dict()["label"] == label


def test_spec_is_hashable_and_equal_by_value() -> None:
    a, b = EngineSpec.from_mode("tp2"), EngineSpec(tp=2)
    assert a == b and hash(a) == hash(b)
    assert len({a, b, EngineSpec(pp=2)}) == 2
    assert a.with_(tp=1) == EngineSpec()


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"backend": "tpu"}, "backend 'tpu'"),
    ({"tp": 0}, "tp=0"),
    ({"pp": -1}, "pp=-1"),
    ({"max_model_len": 8}, "max_model_len 8"),
    ({"tp": 2, "devices": (0,)}, "tp2 needs 2 devices"),
])
def test_spec_rejects_bad_values(kwargs: dict, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        EngineSpec(**kwargs)


@pytest.mark.parametrize(("world", "cores", "binding"), [
    (1, [0, 1], "0-1"), (2, [0, 1], "0|1"), (2, [0, 1, 2, 3], "0-1|2-3"), (2, [4, 5, 6, 7, 8], "4-5|6-7"),
])
def test_cpu_thread_binding(world: int, cores: list[int], binding: str) -> None:
    assert cpu_thread_binding(world, cores) == binding


def test_cpu_thread_binding_too_few_cores_names_them() -> None:
    with pytest.raises(UsageError, match=r"4 ranks but only 2 usable cores \(\[0, 1\]\)"):
        cpu_thread_binding(4, [0, 1])


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_usable_cores", lambda: [0, 1])


def _opt(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_cpu_single_plan(two_cores: None) -> None:
    plan = plan_launch(EngineSpec(), 8123)
    assert plan.argv[:3] == (sys.executable, "-m", SERVER_MODULE)
    assert _opt(plan.argv, "--port") == "8123" and _opt(plan.argv, "--host") == "127.0.0.1"
    assert _opt(plan.argv, "--tensor-parallel-size") == "1" and _opt(plan.argv, "--pipeline-parallel-size") == "1"
    assert _opt(plan.argv, "--load-format") == "dummy" and "--tokenizer" in plan.argv
    assert "--enforce-eager" in plan.argv and plan.enforce_eager
    assert plan.served_model_name == "tiny-llama" and plan.model_paths.vocab_size == 32000
    assert plan.env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert "VLLM_CPU_KVCACHE_SPACE" in plan.env and "VLLM_CPU_OMP_THREADS_BIND" not in plan.env
    assert "CUDA_VISIBLE_DEVICES" not in plan.env


def test_cpu_tp2_binds_one_core_per_rank(two_cores: None) -> None:
    plan = plan_launch(EngineSpec(tp=2), 8000)
    assert plan.env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert _opt(plan.argv, "--tensor-parallel-size") == "2"
    assert plan.enforce_eager


def test_cpu_pp_is_compiled_not_eager(two_cores: None) -> None:
    plan = plan_launch(EngineSpec(pp=2), 8000)
    assert "--enforce-eager" not in plan.argv and not plan.enforce_eager
    assert _opt(plan.argv, "--pipeline-parallel-size") == "2"
    assert plan.env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"


def test_cpu_eager_pp_is_a_usage_error_naming_the_cause(two_cores: None) -> None:
    with pytest.raises(UsageError, match="pipeline parallelism.*enforce_eager.*intermediate tensors"):
        plan_launch(EngineSpec(pp=2, enforce_eager=True), 8000)


def test_cpu_tp_beyond_cores_names_the_cores(two_cores: None) -> None:
    with pytest.raises(UsageError, match="4 ranks but only 2 usable cores"):
        plan_launch(EngineSpec(tp=4), 8000)


def test_gpu_emulate_pcie(two_cores: None) -> None:
    plan = plan_launch(EngineSpec(backend="gpu", tp=2, devices=(2, 3), emulate_pcie=True), 8000)
    assert plan.env["NCCL_P2P_DISABLE"] == "1"
    assert "--disable-custom-all-reduce" in plan.argv
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in plan.env and "VLLM_CPU_KVCACHE_SPACE" not in plan.env
    assert "--enforce-eager" not in plan.argv


def test_gpu_without_emulation_keeps_p2p(two_cores: None) -> None:
    plan = plan_launch(EngineSpec(backend="gpu", pp=2, devices=(0, 1)), 8000)
    assert "NCCL_P2P_DISABLE" not in plan.env and "--disable-custom-all-reduce" not in plan.argv
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_gpu_without_devices_leaves_cuda_visible_devices(two_cores: None) -> None:
    assert "CUDA_VISIBLE_DEVICES" not in plan_launch(EngineSpec(backend="gpu"), 8000).env


def test_spec_env_extra_args_and_python_win(two_cores: None) -> None:
    spec = EngineSpec(extra_args=("--max-num-seqs", "8"), env=(("VLLM_CPU_KVCACHE_SPACE", "2"), ("X", "y")),
                      python="/opt/py/bin/python", dtype="float32", max_model_len=512)
    plan = plan_launch(spec, 8000)
    assert plan.argv[0] == "/opt/py/bin/python"
    assert plan.argv[-2:] == ("--max-num-seqs", "8")
    assert plan.env["VLLM_CPU_KVCACHE_SPACE"] == "2" and plan.env["X"] == "y"
    assert _opt(plan.argv, "--dtype") == "float32" and _opt(plan.argv, "--max-model-len") == "512"


def test_unknown_model_path_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="does not exist"):
        plan_launch(EngineSpec(model="/no/such/model"), 8000)
