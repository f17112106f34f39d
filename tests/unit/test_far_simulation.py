"""Monte-Carlo: with no real change the build-level false-alarm rate stays within the family alpha."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from pytest_llmperf.stats.regression import decide_all

_SPEC = importlib.util.spec_from_file_location("far_simulation", Path(__file__).parents[2] / "benchmarks" / "far_simulation.py")
assert _SPEC is not None and _SPEC.loader is not None
sim = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("far_simulation", sim)
_SPEC.loader.exec_module(sim)

BUILDS, ALPHA = 10_000, 0.05
MARGIN = 3 * math.sqrt(ALPHA * (1 - ALPHA) / BUILDS)  # 3 Monte-Carlo standard errors


@pytest.mark.parametrize("k", [3, 5])
def test_far_within_family_alpha(k: int) -> None:
    r = sim.simulate(builds=BUILDS, checks=20, k=k, cv=0.02, family_alpha=ALPHA, seed=k)
    assert r.far <= ALPHA + MARGIN
    assert r.far_significance_only <= ALPHA + MARGIN  # Holm alone holds the rate, tolerance aside


def test_holm_is_needed_without_it_far_explodes() -> None:
    r = sim.simulate(builds=BUILDS, checks=20, k=5, cv=0.02, family_alpha=ALPHA * 20, tolerance=0.0, seed=7)
    assert r.far_significance_only > 0.3  # per-check 5% over 20 checks ~ 64% nominal


def test_detects_a_large_change() -> None:
    assert sim.simulate(builds=2_000, k=5, cv=0.02, change=0.10, seed=3).power > 0.9


def test_vectorised_path_agrees_with_decide_all() -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        base = np.exp(rng.normal(0, 0.02, (20, 3)))
        cand = np.exp(rng.normal(0, 0.02, (20, 3)))
        cand[0] *= 1.12
        checks = [("t", f"m{i}", list(base[i]), list(cand[i]), "lower", 0.05) for i in range(20)]
        verdicts = decide_all(checks, ALPHA)
        w, se, df = sim.log_welch(np.log(base), np.log(cand), 1.0)
        p, _ = sim._p_and_quantile(w, se, df, ALPHA)
        alphas = sim.holm_alphas(p, ALPHA)
        fails = (p < alphas) & (w > math.log1p(0.05))
        assert [v.verdict == "FAIL" for v in verdicts] == list(fails)
        assert [v.alpha for v in verdicts] == pytest.approx(list(alphas))
