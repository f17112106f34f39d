"""Send offsets: ordered, seeded, at the requested mean rate; closed loop all at zero."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.errors import UsageError
from pytest_llmperf.load.arrivals import send_offsets_s

rates = st.floats(min_value=0.1, max_value=1000.0)
bursts = st.floats(min_value=0.1, max_value=10.0)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@given(n=st.integers(0, 500), rate=rates, burst=bursts, seed=seeds, normalize=st.booleans())
def test_offsets_non_decreasing_start_at_zero(n, rate, burst, seed, normalize):
    off = send_offsets_s(n, rate, np.random.default_rng(seed), burstiness=burst, normalize=normalize)
    assert off.shape == (n,)
    assert np.all(np.diff(off) >= 0)
    assert np.all(np.isfinite(off))
    if n:
        assert off[0] == 0.0


@given(n=st.integers(1, 200), rate=rates, burst=bursts, seed=seeds)
def test_same_seed_same_offsets(n, rate, burst, seed):
    a = send_offsets_s(n, rate, np.random.default_rng(seed), burstiness=burst)
    b = send_offsets_s(n, rate, np.random.default_rng(seed), burstiness=burst)
    assert np.array_equal(a, b)


@given(rate=rates, burst=bursts, seed=seeds)
def test_normalized_mean_rate_is_exact(rate, burst, seed):
    n = 100
    off = send_offsets_s(n, rate, np.random.default_rng(seed), burstiness=burst)
    assert (n - 1) / off[-1] == pytest.approx(rate, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(rate=rates, burst=st.floats(min_value=0.5, max_value=10.0), seed=seeds)
def test_raw_gamma_mean_rate_within_tolerance(rate, burst, seed):
    n = 20000
    off = send_offsets_s(n, rate, np.random.default_rng(seed), burstiness=burst, normalize=False)
    # mean gap 1/rate, gap CV 1/sqrt(burst): 20k gaps put the mean within ~2% at 5 sigma for burst >= 0.5
    assert (n - 1) / off[-1] == pytest.approx(rate, rel=0.05)


def test_burstiness_controls_gap_variability():
    cv = {}
    for burst in (0.25, 1.0, 4.0):
        gaps = np.diff(send_offsets_s(20000, 10.0, np.random.default_rng(0), burstiness=burst, normalize=False))
        cv[burst] = gaps.std() / gaps.mean()
    assert cv[1.0] == pytest.approx(1.0, rel=0.05)        # Poisson: exponential gaps
    assert cv[0.25] == pytest.approx(2.0, rel=0.1)        # gamma CV = 1/sqrt(shape)
    assert cv[4.0] == pytest.approx(0.5, rel=0.05)


def test_closed_loop_is_all_zero_and_draws_nothing():
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    assert np.array_equal(send_offsets_s(7, None, rng), np.zeros(7))
    assert rng.bit_generator.state == state


def test_never_touches_global_random_state():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    send_offsets_s(100, 5.0, np.random.default_rng(1))
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("kwargs", [dict(request_rate=0.0), dict(request_rate=-1.0), dict(burstiness=0.0)])
def test_invalid_inputs_raise_usage_error(kwargs):
    args = dict(n_requests=3, request_rate=1.0, burstiness=1.0) | kwargs
    with pytest.raises(UsageError):
        send_offsets_s(args["n_requests"], args["request_rate"], np.random.default_rng(0),
                       burstiness=args["burstiness"])
