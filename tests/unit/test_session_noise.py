"""The session-to-session noise estimate (stats/session_noise.py): properties (hypothesis) and, on simulated
histories of known noise, recovery and the coverage of its upper bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.stats.session_noise import between_session_variance, estimate_session_cv

run_value = st.floats(min_value=0.01, max_value=1e4, allow_nan=False, allow_infinity=False)
session = st.lists(run_value, min_size=1, max_size=6)
test_sessions = st.lists(session, min_size=2, max_size=6)


@given(st.lists(test_sessions, min_size=1, max_size=5), st.lists(st.floats(0.01, 100.0), min_size=5, max_size=5))
@settings(max_examples=200, deadline=None)
def test_scale_free_nonnegative_and_bounded_above(tests: list, scales: list[float]) -> None:
    """A test's unit (ms or s, one machine twice as fast) does not change how much its sessions differ."""
    noise = estimate_session_cv(tests)
    assert noise is not None and noise.estimate >= 0 and noise.upper >= noise.estimate
    assert noise.df == sum(len(t) - 1 for t in tests) and noise.tests == len(tests)
    rescaled = [[[x * scales[i % len(scales)] for x in runs] for runs in t] for i, t in enumerate(tests)]
    again = estimate_session_cv(rescaled)
    assert again is not None and again.estimate == pytest.approx(noise.estimate, rel=1e-6, abs=1e-9)


@given(st.lists(st.lists(run_value, min_size=2, max_size=5), min_size=2, max_size=5))
def test_sessions_that_repeat_each_other_show_no_session_noise(runs: list[list[float]]) -> None:
    """Every session the same runs (only run noise): nothing is left for the session effect."""
    sessions = [runs[0]] * len(runs)
    between, means_var, df = between_session_variance(sessions)  # type: ignore[misc]
    assert between == 0.0 and means_var == pytest.approx(0.0, abs=1e-12) and df == len(runs) - 1


def test_run_noise_hiding_the_session_effect_leaves_an_honest_upper_bound() -> None:
    """Session means 0.5% apart under 5% run noise: the estimate is 0, the upper bound is not (the means differ)."""
    sessions = [[100.0, 110.0, 91.0], [100.5, 110.5, 91.5], [101.0, 111.0, 92.0]]
    noise = estimate_session_cv([sessions])
    assert noise is not None and noise.estimate == 0.0
    assert 0.004 < noise.upper < 0.05


def test_one_session_says_nothing() -> None:
    assert estimate_session_cv([[[1.0, 2.0, 3.0]], [[4.0]]]) is None
    assert between_session_variance([[1.0], []]) is None
    with pytest.raises(ValueError, match="positive and finite"):
        estimate_session_cv([[[1.0], [-2.0]]])
    with pytest.raises(ValueError, match="confidence"):
        estimate_session_cv([[[1.0], [2.0]]], confidence=1.0)


def simulate(rng: np.random.Generator, sigma_s: float, sigma_r: float, tests: int, sessions: int,
             runs: int) -> list[list[list[float]]]:
    """The rule's model on the log scale: a test level, a session effect, run noise."""
    out = []
    for _ in range(tests):
        level = rng.normal(3.0, 1.0)
        out.append([list(np.exp(level + rng.normal(0, sigma_s) + rng.normal(0, sigma_r, runs)))
                    for _ in range(sessions)])
    return out


def test_recovers_a_known_session_noise_and_the_upper_bound_covers_it() -> None:
    """40 tests x 4 sessions x 5 runs at 3% session / 1% run noise: the estimate lands near 3%; over 400 small
    histories (3 tests x 3 sessions, as a team has after a week) the 90% upper bound covers the truth about 90% of
    the time (more: the truncation at 0 only raises it)."""
    rng = np.random.default_rng(7)
    big = estimate_session_cv(simulate(rng, 0.03, 0.01, 40, 4, 5))
    assert big is not None and big.df == 120
    assert big.estimate == pytest.approx(0.03, rel=0.15)
    covered = [estimate_session_cv(simulate(rng, 0.03, 0.01, 3, 3, 5)).upper >= 0.03  # type: ignore[union-attr]
               for _ in range(400)]
    assert 0.86 <= float(np.mean(covered)) <= 0.96, np.mean(covered)
    quiet = estimate_session_cv(simulate(rng, 0.0, 0.02, 6, 3, 5))
    assert quiet is not None and quiet.estimate < 0.01  # run noise alone is not taken for session noise


def test_matches_the_rule_on_one_test() -> None:
    """The estimate is the rule's own ``between`` (stats/decision.session_model with no prior)."""
    from pytest_llmperf.stats.decision import session_model

    sessions = [[10.0, 10.2, 9.9], [10.8, 10.9, 11.1], [9.5, 9.6, 9.4]]
    logs = [np.log(s) for s in sessions]
    within = sum(((x - x.mean()) ** 2).sum() for x in logs) / sum(len(x) - 1 for x in logs)
    means = np.array([x.mean() for x in logs])
    # with the candidate equal to the grand mean and no prior, se^2 = between (1 + 1/J) + within (1/K + 1/(J K))
    _, se, _ = session_model(means, means.mean(), within, 6.0, 3.0, 3, session_cv=0.0)
    between, _, _ = between_session_variance(sessions)  # type: ignore[misc]
    expected = between * (1 + 1 / 3) + within * (1 / 3 + 1 / 9)
    assert float(se) ** 2 == pytest.approx(expected, rel=1e-9)
    assert math.sqrt(between) == pytest.approx(estimate_session_cv([sessions]).estimate)  # type: ignore[union-attr]
