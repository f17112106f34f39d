"""Predictions from a single-GPU run plus the model, on hand-computed cases; calibration; what-if."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmperf.errors import UsageError
from pytest_llmperf.models.arch import ArchFacts
from pytest_llmperf.plan.data import Measured
from pytest_llmperf.plan.links import custom_link
from pytest_llmperf.plan.predict import Overhead, SingleCompute, calibrate, interpolate, predict, single_compute
from pytest_llmperf.plan.whatif import crossover_concurrency, crossover_sentence, grid, outlook

LINK = custom_link(10.0, 5.0, "ring")
ARCH = ArchFacts(layers=4, hidden=1024, intermediate=4096, heads=8, kv_heads=8, head_dim=128, vocab=1000, params=1)
COMPUTE = SingleCompute(100, 11, ((1, 10.0), (9, 12.0)), ((1, 50.0), (9, 90.0)))
FLAT = Overhead(((1, 0.1),), ((1, 0.5),), "test")


def test_interpolate_inside_and_beyond() -> None:
    pts = ((1, 10.0), (9, 12.0))
    assert interpolate(pts, 1) == (10.0, False)
    assert interpolate(pts, 5) == (11.0, False)
    assert interpolate(pts, 17) == (14.0, True)  # the last segment extended
    assert interpolate(((4, 3.0),), 8) == (3.0, True)


def test_tp_prediction_by_hand() -> None:
    p = predict(ARCH, COMPUTE, tp=2, pp=1, link=LINK, concurrency=1, overhead=FLAT)
    # decode: 1 token x 1024 x 2 B = 2048 B; ring n=2: 2 x 5 us + 2048 B / 10 GB/s; 2 per layer x 4 layers
    comm_ms = 8 * (10 + 2048 / 10e9 * 1e6) / 1000
    assert p.tpot_ms == pytest.approx((10.0 - 1.0) / 2 + 1.0 + comm_ms)
    # prefill: 100 tokens -> 204800 B per all-reduce
    prefill_comm_ms = 8 * (10 + 204800 / 10e9 * 1e6) / 1000
    assert p.ttft_ms == pytest.approx((50.0 - 25.0) / 2 + 25.0 + prefill_comm_ms)
    assert p.throughput_tok_s == pytest.approx(11 / ((p.ttft_ms + 10 * p.tpot_ms) / 1000))
    assert (p.mode, p.decode_bubble, p.notes) == ("tp2", 0.0, ())


def test_pp_prediction_by_hand() -> None:
    p = predict(ARCH, COMPUTE, tp=1, pp=2, link=LINK, concurrency=5, overhead=FLAT)
    # 2 micro-batches of ceil(5/2)=3: single step at 3 = 10.5 ms; one boundary sends 2 x 1024 x 3 x 2 B
    assert p.tpot_ms == pytest.approx(10.5 + (5 + 12288 / 10e9 * 1e6) / 1000)
    # prefill wave of 5: single TTFT at 5 = 70 ms x (2+1)/(2x2), plus one send of 2 x 1024 x 500 x 2 B
    assert p.ttft_ms == pytest.approx(70.0 * 0.75 + (5 + 2048000 / 10e9 * 1e6) / 1000)
    assert p.decode_bubble == 0.0
    assert predict(ARCH, COMPUTE, tp=1, pp=2, link=LINK, concurrency=1, overhead=FLAT).decode_bubble == 0.5


def test_prediction_flags_extrapolation_and_rejects_bad_sizes() -> None:
    assert predict(ARCH, COMPUTE, tp=2, pp=1, link=LINK, concurrency=32, overhead=FLAT).notes
    with pytest.raises(UsageError, match="exceeds the model's 4 layers"):
        predict(ARCH, COMPUTE, tp=1, pp=8, link=LINK, concurrency=1)
    with pytest.raises(UsageError, match="must be >= 1"):
        predict(ARCH, COMPUTE, tp=0, pp=1, link=LINK, concurrency=1)


@given(st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.sampled_from((1, 5, 9)))
def test_calibration_reproduces_the_run_it_came_from(tpot_share: float, ttft_share: float, c: int) -> None:
    truth = Overhead(((1, tpot_share),), ((1, ttft_share),), "truth")
    run = predict(ARCH, COMPUTE, tp=2, pp=1, link=LINK, concurrency=c, overhead=truth)
    fitted = calibrate(ARCH, COMPUTE, {c: (run.tpot_ms, run.ttft_ms)}, n=2, link=LINK)
    again = predict(ARCH, COMPUTE, tp=2, pp=1, link=LINK, concurrency=c, overhead=fitted)
    assert (again.tpot_ms, again.ttft_ms) == pytest.approx((run.tpot_ms, run.ttft_ms))


def _measured(mode: str, tp: int, pp: int, c: int, tpot: float, ttft: float, link: str = "one GPU") -> Measured:
    return Measured(link, mode, tp, pp, c, 100, 11, tpot, ttft, 1.0, 3, "tiny-llama", "bfloat16", "GPU")


def test_single_compute_takes_the_single_runs_sorted() -> None:
    pts = [_measured("single", 1, 1, 8, 12.0, 90.0), _measured("tp2", 2, 1, 1, 6.0, 40.0, "NVLink"),
           _measured("single", 1, 1, 1, 10.0, 50.0)]
    sc = single_compute(pts)
    assert sc.tpot_ms == ((1, 10.0), (8, 12.0))
    assert sc.concurrencies == (1, 8)
    assert sc.model == "tiny-llama"
    with pytest.raises(UsageError, match="no single-GPU run"):
        single_compute(pts[1:2])


def test_what_if_crossover_and_sentence() -> None:
    cs = grid((1, 9))
    assert cs == (1, 2, 4, 8, 9)
    slow = custom_link(0.01, 0.0, "ring")  # TP's all-reduce grows with the batch faster than PP's one send
    (o,) = outlook(ARCH, COMPUTE, [slow], gpus=2, concurrencies=(1, 9), overhead=FLAT)
    tp = [p for p in o.predictions if p.mode == "tp2"]
    pp = [p for p in o.predictions if p.mode == "pp2"]
    assert o.throughput_crossover == crossover_concurrency(tp, pp, "throughput_tok_s")
    at = o.tpot_crossover
    assert at is not None
    assert 1 < at < 9
    tpot = {(p.mode, p.concurrency): p.tpot_ms for p in o.predictions}
    assert all(tpot[("pp2", c)] < tpot[("tp2", c)] for c in cs if c >= at)  # PP ahead from the crossover on
    before = max(c for c in cs if c < at)
    assert tpot[("pp2", before)] >= tpot[("tp2", before)]  # and not just before it
    assert "pp2 overtakes tp2" in crossover_sentence(o, 2, "tpot_ms")
    fast = dataclasses.replace(slow, bandwidth_gbs=1e4, latency_us=0.0)
    (o2,) = outlook(ARCH, COMPUTE, [fast], gpus=2, concurrencies=(1, 9), overhead=FLAT)
    assert o2.tpot_crossover is None
    assert "pp2 does not overtake tp2 in range 1-9" in crossover_sentence(o2, 2, "tpot_ms")


def test_what_if_best_respects_the_slo() -> None:
    (o,) = outlook(ARCH, COMPUTE, [LINK], gpus=2, concurrencies=(1, 9), overhead=FLAT, slo_tpot_ms=7.0)
    for c, mode in o.best:
        ok = [p for p in o.predictions if p.concurrency == c and p.tpot_ms <= 7.0]
        assert mode == (max(ok, key=lambda p: p.throughput_tok_s).mode if ok else None)
    (none,) = outlook(ARCH, COMPUTE, [LINK], gpus=2, concurrencies=(1,), overhead=FLAT, slo_tpot_ms=0.1)
    assert none.best == ((1, None),)
