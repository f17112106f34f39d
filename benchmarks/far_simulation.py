"""Monte-Carlo check of the regression gate's rule: build-wide false-alarm rate (FAR), power, creep detection.

The world simulated is the one issue 12 describes: the log of run k of session s is ``mu + s_s + e_sk`` with
session noise ``s ~ N(0, session_cv^2)`` (the machine, clocks and load of the day) and run noise
``e ~ N(0, run_cv^2)``. Every check compares one candidate session of K runs with a rolling window of the
``window`` newest sessions and with an anchor of ``anchor`` older sessions, through the gate's own vectorised
cores (:func:`~pytest_llmperf.stats.decision.session_model`, :func:`~pytest_llmperf.stats.decision.holm_alphas`):

- ``far``: builds of ``checks`` unchanged checks (x2 comparisons), judged by Holm at ``family_alpha``; the FAR is
  the share of builds with any FAIL;
- ``power``: one check made worse by ``change``; the share of builds where it FAILs (at the test-time
  Bonferroni level over all comparisons);
- ``creep``: sessions that get ``rate`` worse each time, judged against the window (which absorbs every session
  that did not FAIL) and the fixed anchor; the share caught (any FAIL) within ``sessions`` sessions.

Run: ``.venv/bin/python benchmarks/far_simulation.py`` (about a minute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pytest_llmperf.stats.decision import PRIOR_SESSION_DF, SESSIONS_KEPT, holm_alphas, session_model

__all__ = ["World", "far", "power", "creep", "fail_p", "main"]


@dataclass(frozen=True)
class World:
    run_cv: float = 0.02
    session_cv: float = 0.04
    k: int = 5  #: runs per session, baseline and candidate
    window: int = SESSIONS_KEPT  #: sessions in the rolling window
    anchor: int = SESSIONS_KEPT  #: sessions in the anchor
    tolerance: float = 0.10
    family_alpha: float = 0.05
    prior_cv: float = 0.05  #: the gate's session-noise prior (the GPU default)
    prior_df: float = PRIOR_SESSION_DF


def _sessions(rng: np.random.Generator, w: World, shape: tuple[int, ...], j: int) -> np.ndarray:
    """Logs of ``j`` sessions of ``k`` runs: shape ``(*shape, j, k)``."""
    return rng.normal(0, w.session_cv, (*shape, j, 1)) + rng.normal(0, w.run_cv, (*shape, j, w.k))


def fail_p(base: np.ndarray, cand: np.ndarray, w: World) -> np.ndarray:
    """One-sided p of "worse by more than the tolerance" (lower is better), as :func:`decide` computes it."""
    j, k = base.shape[-2], base.shape[-1]
    kc = cand.shape[-1]
    within_df = j * (k - 1) + kc - 1
    within = (base.var(axis=-1, ddof=1).sum(axis=-1) * (k - 1) + cand.var(axis=-1, ddof=1) * (kc - 1)) / within_df
    d, se, df = session_model(base.mean(axis=-1), cand.mean(axis=-1), within, within_df, k, kc,
                              w.prior_cv, w.prior_df)
    return stats.t.sf((d - math.log1p(w.tolerance)) / se, df)


def far(w: World, *, builds: int = 4000, checks: int = 20, seed: int = 0) -> float:
    """Share of unchanged builds (``checks`` checks, each against window and anchor) with any Holm FAIL."""
    rng = np.random.default_rng(seed)
    cand = _sessions(rng, w, (builds, checks), 1)[..., 0, :]
    p = np.concatenate([fail_p(_sessions(rng, w, (builds, checks), w.window), cand, w),
                        fail_p(_sessions(rng, w, (builds, checks), w.anchor), cand, w)], axis=-1)
    return float((p < holm_alphas(p, w.family_alpha)).any(axis=-1).mean())


def power(w: World, change: float, *, builds: int = 4000, checks: int = 20, seed: int = 1) -> float:
    """Share of builds where one check made ``change`` worse FAILs at the test-time level family/(2 checks)."""
    rng = np.random.default_rng(seed)
    cand = _sessions(rng, w, (builds,), 1)[..., 0, :] + math.log1p(change)
    p = fail_p(_sessions(rng, w, (builds,), w.window), cand, w)
    return float((p < w.family_alpha / (2 * checks)).mean())


def creep(w: World, rate: float = 0.03, *, sessions: int = 10, builds: int = 2000, checks: int = 20,
          seed: int = 2, use_anchor: bool = True) -> float:
    """Share of histories where a creep of ``rate`` per session is FAILed within ``sessions`` sessions."""
    rng = np.random.default_rng(seed)
    history = _sessions(rng, w, (builds,), max(w.window, w.anchor))
    anchor = history[:, -w.anchor:]
    window = history[:, -w.window:]
    alpha = w.family_alpha / (2 * checks)
    caught = np.zeros(builds, dtype=bool)
    for i in range(1, sessions + 1):
        cand = _sessions(rng, w, (builds,), 1)[:, 0, :] + i * math.log1p(rate)
        failed = fail_p(window, cand, w) < alpha
        if use_anchor:
            failed |= fail_p(anchor, cand, w) < alpha
        caught |= failed
        # a session that did not FAIL joins the window (its oldest session drops out)
        joined = np.concatenate([window[:, 1:], cand[:, None, :]], axis=1)
        window = np.where(failed[:, None, None], window, joined)
    return float(caught.mean())


def main() -> None:
    w = World()
    print(f"run noise {w.run_cv:.0%}, session noise {w.session_cv:.0%}, K={w.k}, window {w.window} sessions, "
          f"anchor {w.anchor}, tolerance {w.tolerance:.0%}, family alpha {w.family_alpha}, prior {w.prior_cv:.0%}")
    for prior in (0.05, 0.02, 0.0):
        for window in (1, 3, 10):
            x = World(prior_cv=prior, window=window, anchor=window)
            print(f"FAR over 20 checks (x2 comparisons), prior {prior:.0%}, {window} sessions: {far(x):.4f}")
    for prior in (0.05, 0.0):
        x = World(tolerance=0.0, prior_cv=prior)
        print(f"tolerance 0 (significance alone), prior {prior:.0%}, 20 sessions: FAR {far(x):.4f}")
    for tol in (0.05, 0.10):
        x = World(tolerance=tol)
        print(f"tolerance {tol:.0%}: power " + ", ".join(f"+{c:.0%}: {power(x, c):.3f}" for c in (0.1, 0.2, 0.3, 0.5)))
        print(f"tolerance {tol:.0%}: creep +3%/session caught within 10 sessions: {creep(x):.3f} "
              f"(window only: {creep(x, use_anchor=False):.3f})")
    for n in (5, 10, 20):
        x = World(window=n, anchor=n)
        print(f"{n} sessions kept: creep caught {creep(x):.3f}, power +30% {power(x, 0.3):.3f}, FAR {far(x):.4f}")


if __name__ == "__main__":
    main()
