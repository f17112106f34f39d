"""Engine modes beyond TP and PP: data parallel (replicas) and expert parallel (MoE), as specs and as argv."""

from __future__ import annotations

import pytest

from pytest_llmperf.engine.backends import plan_launch
from pytest_llmperf.engine.spec import EngineSpec, mode_label, parse_mode, parse_mode_shape
from pytest_llmperf.errors import UsageError


@pytest.mark.parametrize(("mode", "tp", "pp", "dp", "ep", "world"), [
    ("single", 1, 1, 1, False, 1), ("tp2", 2, 1, 1, False, 2), ("pp2", 1, 2, 1, False, 2),
    ("tp2pp2", 2, 2, 1, False, 4), ("dp2", 1, 1, 2, False, 2), ("ep2", 2, 1, 1, True, 2),
    ("dp2ep", 1, 1, 2, True, 2), ("DP4", 1, 1, 4, False, 4),
])
def test_mode_shapes_and_labels_round_trip(mode, tp, pp, dp, ep, world):
    shape = parse_mode_shape(mode)
    assert (shape.tp, shape.pp, shape.dp, shape.ep, shape.world_size) == (tp, pp, dp, ep, world)
    assert parse_mode_shape(shape.label) == shape
    spec = EngineSpec.from_mode(mode)
    assert (spec.label, spec.world_size) == (shape.label, world)


@pytest.mark.parametrize(("mode", "message"), [
    ("ep1", "expert parallel needs at least 2 GPUs"), ("tp2ep2", "write epN alone"), ("dp", "unknown engine mode"),
    ("tp0", "parallel sizes must be >= 1"), ("single2", "unknown engine mode"),
])
def test_bad_modes_name_the_problem(mode, message):
    with pytest.raises(UsageError, match=message):
        parse_mode_shape(mode)


def test_tp_pp_callers_refuse_replica_modes_instead_of_running_them_as_single():
    assert parse_mode("tp2pp2") == (2, 2)
    with pytest.raises(UsageError, match="data/expert parallel"):
        parse_mode("dp2")
    assert mode_label(1, 1, 2) == "dp2" and mode_label(2, 1, 1, True) == "ep2"


def test_dp_and_ep_reach_vllms_argv():
    dp = plan_launch(EngineSpec.from_mode("dp2", model="tiny-llama", backend="gpu"), port=8000).argv
    assert dp[dp.index("--data-parallel-size") + 1] == "2" and "--enable-expert-parallel" not in dp
    ep = plan_launch(EngineSpec.from_mode("ep2", model="tiny-qwen3-moe", backend="gpu"), port=8000).argv
    assert ep[ep.index("--tensor-parallel-size") + 1] == "2" and "--enable-expert-parallel" in ep
    assert "--data-parallel-size" not in ep
    d = EngineSpec.from_mode("dp2ep", backend="gpu").to_dict()
    assert (d["mode"], d["parallelism"], d["dp"], d["expert_parallel"]) == ("dp2ep", "ep", 2, True)
