"""The planner's communication and pipeline arithmetic on hand-computed cases, plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmperf.errors import UsageError
from pytest_llmperf.models.arch import ArchFacts
from pytest_llmperf.plan import model as m
from pytest_llmperf.plan.links import LINKS, Link, custom_link, resolve_link

RING = custom_link(10.0, 5.0, "ring")  # 10 GB/s: 1 KiB = 0.1024 us
ONESHOT = custom_link(10.0, 5.0, "oneshot")
ARCH = ArchFacts(layers=4, hidden=1024, intermediate=4096, heads=8, kv_heads=8, head_dim=128, vocab=1000, params=1)


def test_ring_allreduce_by_hand() -> None:
    # n=2: 2 steps of 5 us + 2(1)/2 x 10240 B / 10 GB/s = 10 + 1.024 us
    assert m.allreduce_us(10240, 2, RING) == pytest.approx(11.024)
    # n=4: 6 steps of 5 us + 2(3)/4 x 1.024 us
    assert m.allreduce_us(10240, 4, RING) == pytest.approx(30 + 1.5 * 1.024)


def test_oneshot_allreduce_by_hand() -> None:
    assert m.allreduce_us(10240, 4, ONESHOT) == pytest.approx(5 + 3 * 1.024)
    assert m.allreduce_us(10240, 1, ONESHOT) == 0.0


def test_p2p_by_hand() -> None:
    assert m.p2p_us(10240, RING) == pytest.approx(6.024)


def test_tp_comm_is_two_allreduces_per_layer() -> None:
    # 5 tokens x 1024 hidden x 2 bytes = 10240 B; 2 x 4 layers x 11.024 us
    assert m.tp_comm_ms(ARCH, 2, 5, RING) == pytest.approx(8 * 11.024 / 1000)
    assert m.tp_comm_ms(ARCH, 1, 5, RING) == 0.0


def test_pp_comm_sends_hidden_and_residual_per_boundary() -> None:
    # 2 tensors x 1024 x 5 tokens x 2 B = 20480 B -> 5 + 2.048 us, over 2 boundaries for pp=3
    assert m.pp_comm_ms(ARCH, 3, 5, RING) == pytest.approx(2 * 7.048 / 1000)
    assert m.pp_comm_ms(ARCH, 1, 5, RING) == 0.0


def test_tp_step_and_its_calibration() -> None:
    assert m.tp_step_ms(10.0, 2, 1.0, 0.5) == pytest.approx(6.0)
    assert m.calibrate_overhead_ms(10.0, 6.0, 2, 0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n >= 2"):
        m.calibrate_overhead_ms(10.0, 6.0, 1, 0.5)


def test_pipeline_microbatches_and_bubbles() -> None:
    assert (m.microbatches(1, 2), m.microbatches(8, 2), m.microbatches(3, 4)) == (1, 2, 3)
    assert m.decode_bubble_fraction(1, 2) == pytest.approx(0.5)
    assert m.decode_bubble_fraction(8, 2) == 0.0
    assert m.prefill_bubble_fraction(8, 2) == pytest.approx(1 / 3)  # GPipe (p-1)/(m+p-1)
    assert m.pp_prefill_ms(90.0, 8, 2) == pytest.approx(67.5)  # 90 x (2+1)/(2x2)
    assert m.pp_prefill_ms(90.0, 1, 2) == pytest.approx(90.0)
    assert m.decode_microbatch_size(8, 2) == 4
    assert m.decode_microbatch_size(5, 2) == 3


def test_throughput_is_littles_law() -> None:
    # 2 slots, 11 tokens per 100 + 10 x 10 = 200 ms
    assert m.throughput_tok_s(2, 11, 100.0, 10.0) == pytest.approx(110.0)


def test_mode_labels() -> None:
    assert [m.mode_label(*x) for x in ((1, 1), (2, 1), (1, 2), (2, 2))] == ["single", "tp2", "pp2", "tp2pp2"]


def test_links_reject_bad_numbers_with_a_clear_message() -> None:
    with pytest.raises(UsageError, match="bandwidth must be > 0"):
        custom_link(0.0, 5.0)
    with pytest.raises(UsageError, match="latency must be >= 0"):
        custom_link(1.0, -1.0)
    with pytest.raises(UsageError, match="algorithm must be one of"):
        custom_link(1.0, 1.0, "tree")
    with pytest.raises(UsageError, match="unknown link 'nvlink9'; presets: pcie4-nop2p"):
        resolve_link("nvlink9")


def test_presets_carry_a_source_and_pcie_rates_follow_the_spec() -> None:
    assert all(link.source for link in LINKS.values())
    assert LINKS["pcie4-nop2p"].bandwidth_gbs == pytest.approx(31.5, abs=0.05)
    assert LINKS["pcie5-nop2p"].bandwidth_gbs == pytest.approx(2 * LINKS["pcie4-nop2p"].bandwidth_gbs, abs=0.1)


sizes = st.floats(min_value=0, max_value=1e9, allow_nan=False)
ranks = st.integers(min_value=2, max_value=64)
links = st.builds(Link, st.just("h"), st.just("h"), st.floats(0.1, 1e4), st.floats(0, 100),
                  st.sampled_from(("ring", "oneshot")), st.just("hypothesis"))


@given(sizes, sizes, ranks, links)
def test_allreduce_grows_with_size(a: float, b: float, n: int, link: Link) -> None:
    lo, hi = sorted((a, b))
    assert m.allreduce_us(lo, n, link) <= m.allreduce_us(hi, n, link)


@given(sizes, links)
def test_two_gpu_ring_pays_one_more_latency_than_oneshot(size: float, link: Link) -> None:
    ring = Link("r", "r", link.bandwidth_gbs, link.latency_us, "ring", "-")
    one = Link("o", "o", link.bandwidth_gbs, link.latency_us, "oneshot", "-")
    assert m.allreduce_us(size, 2, ring) - m.allreduce_us(size, 2, one) == pytest.approx(link.latency_us, abs=1e-6)


@given(st.floats(0.1, 1e3), st.integers(2, 16), st.floats(0, 0.99), st.floats(0, 50))
def test_calibration_inverts_the_step(single_ms: float, n: int, share: float, comm_ms: float) -> None:
    step = m.tp_step_ms(single_ms, n, share * single_ms, comm_ms)
    assert m.calibrate_overhead_ms(single_ms, step, n, comm_ms) == pytest.approx(share * single_ms, abs=1e-6)


@given(st.integers(1, 512), st.integers(1, 64))
def test_bubbles_are_fractions(c: int, pp: int) -> None:
    assert 0.0 <= m.decode_bubble_fraction(c, pp) < 1.0
    assert 0.0 <= m.prefill_bubble_fraction(c, pp) < 1.0
