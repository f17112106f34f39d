"""Seeded Monte-Carlo of the gate's rule (benchmarks/far_simulation.py): with run noise 2% and session noise 4%
the build-wide false-alarm rate over 20 checks stays within 5%, a +3%/session creep is caught within 10
sessions, power grows with the change -- and the vectorised simulation decides exactly as ``decide`` does."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_llmperf.stats.decision import decide

_SPEC = importlib.util.spec_from_file_location("far_simulation", Path(__file__).parents[2] / "benchmarks" / "far_simulation.py")
assert _SPEC is not None and _SPEC.loader is not None
sim = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("far_simulation", sim)
_SPEC.loader.exec_module(sim)

BUILDS, ALPHA = 4000, 0.05
MARGIN = 3 * math.sqrt(ALPHA * (1 - ALPHA) / BUILDS)  # 3 Monte-Carlo standard errors


@pytest.mark.parametrize("sessions", [1, 3, 20])
def test_far_within_family_alpha_with_run_and_session_noise(sessions: int) -> None:
    w = sim.World(run_cv=0.02, session_cv=0.04, k=5, window=sessions, anchor=sessions)
    assert sim.far(w, builds=BUILDS, checks=20, seed=sessions) <= ALPHA + MARGIN


def test_without_a_session_model_one_recorded_session_gives_false_alarms() -> None:
    """The same world, the prior switched off and one baseline session: the gate would see session noise as
    a regression. This is the failure the session model removes (and shows the simulation can fail)."""
    w = sim.World(run_cv=0.02, session_cv=0.04, k=5, window=1, anchor=1, prior_cv=0.0, tolerance=0.05)
    assert sim.far(w, builds=BUILDS, checks=20, seed=5) > 2 * ALPHA


def test_creep_of_3_percent_per_session_is_caught_within_10_sessions() -> None:
    w = sim.World(run_cv=0.02, session_cv=0.04, k=5, tolerance=0.10)
    assert sim.creep(w, rate=0.03, sessions=10, builds=2000, seed=3) >= 0.90
    assert sim.creep(w, rate=0.03, sessions=10, builds=2000, seed=3, use_anchor=False) < 0.5  # the window absorbs it


def test_power_grows_with_the_change_and_large_changes_fail() -> None:
    w = sim.World(run_cv=0.02, session_cv=0.04, k=5, tolerance=0.10)
    powers = [sim.power(w, c, builds=2000, seed=4) for c in (0.10, 0.30, 0.60)]
    assert powers == sorted(powers) and powers[-1] > 0.95 and powers[0] < ALPHA  # +10% at tolerance 10%: blind


def test_vectorised_simulation_decides_like_decide() -> None:
    rng = np.random.default_rng(11)
    w = sim.World(run_cv=0.02, session_cv=0.04, k=3, window=4, anchor=4, tolerance=0.05)
    base = rng.normal(0, 0.04, (6, 4, 1)) + rng.normal(0, 0.02, (6, 4, 3))
    cand = rng.normal(0, 0.04, (6, 1)) + rng.normal(0, 0.02, (6, 3)) + np.array([0.5, 0.2, 0.1, 0.0, 0.0, 0.0])[:, None]
    p = sim.fail_p(base, cand, w)
    for i in range(6):
        v = decide("m", list(np.exp(base[i]).ravel()), list(np.exp(cand[i])), direction="lower", tolerance=0.05,
                   alpha=0.01, baseline_sessions=[f"s{j}" for j in range(4) for _ in range(3)],
                   session_cv=w.prior_cv, prior_df=w.prior_df)
        assert v.p_value == pytest.approx(float(p[i]), rel=1e-9, abs=1e-15)
        assert (v.verdict == "FAIL") == (p[i] < 0.01)
