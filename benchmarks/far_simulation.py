"""Monte-Carlo check of the regression gate: build-level false-alarm rate (FAR) and detection power.

Each simulated build has ``m`` checks; each check compares K baseline runs with K candidate runs whose
per-run values are lognormal with run-to-run CV ``cv``. Under "no change" every check is null and the
FAR is the share of builds with at least one FAIL. For power, check 0 of each build is made worse by
``change`` (the other m-1 stay null) and power is the share of builds where check 0 FAILs. The
decision runs through the gate's own vectorised cores (``log_welch``, ``holm_alphas``), seeded numpy.

Run: ``.venv/bin/python benchmarks/far_simulation.py``
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pytest_llmperf.stats.regression import _p_and_quantile, holm_alphas, log_welch

__all__ = ["SimResult", "simulate", "main"]


@dataclass(frozen=True)
class SimResult:
    builds: int
    checks: int
    k: int
    cv: float
    change: float
    far: float  # share of builds with a FAIL on a null check
    far_significance_only: float  # same, ignoring the tolerance (Holm-rejected null checks)
    power: float  # share of builds where the changed check 0 FAILs (nan when change == 0)


def simulate(
    *, builds: int = 10_000, checks: int = 20, k: int = 3, cv: float = 0.02, change: float = 0.0,
    tolerance: float = 0.05, family_alpha: float = 0.05, seed: int = 0,
) -> SimResult:  # fmt: skip
    """Simulate ``builds`` builds of ``checks`` lower-is-better checks; returns FAR and power."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, cv, size=(builds, checks, k))
    cand = rng.normal(0.0, cv, size=(builds, checks, k))
    if change:
        cand[:, 0, :] += math.log1p(change)
    w, se, df = log_welch(base, cand, sign=1.0)
    p, _ = _p_and_quantile(w, se, df, family_alpha)
    alpha = holm_alphas(p, family_alpha)
    significant = p < alpha
    fail = significant & (w > math.log1p(tolerance))
    null = slice(1, None) if change else slice(None)
    return SimResult(
        builds=builds, checks=checks, k=k, cv=cv, change=change,
        far=float(fail[:, null].any(axis=1).mean()),
        far_significance_only=float(significant[:, null].any(axis=1).mean()),
        power=float(fail[:, 0].mean()) if change else float("nan"),
    )  # fmt: skip


def main() -> None:
    print("builds=10000, 20 checks per build, family alpha 0.05, tolerance 5%, lognormal run noise")
    for k in (3, 5):
        r = simulate(k=k)
        print(f"K={k} CV=2% no change: FAR={r.far:.4f} (significance only {r.far_significance_only:.4f})")
        for change in (0.10, 0.05):
            r = simulate(k=k, change=change, seed=1)
            print(f"K={k} CV=2% change +{change:.0%}: power={r.power:.3f} (FAR on the 19 null checks {r.far:.4f})")


if __name__ == "__main__":
    main()
