"""Replay the GPU gate proof with session-noise priors measured on another machine's recorded sessions.

The gate proof (docs/regression.md, "On GPUs") recorded four unchanged sessions of TP=2 over NVLink on 2 x H200
(14B dense model) and two changed ones. Each unchanged session is judged here against the sessions before it, and
each changed one against all four, exactly as the gate judged them (``llmperf compare``'s code: every check of the
session, Holm over them), under three settings:

* the default prior, 5% for every metric, tolerance 10% (what the proof used);
* per-metric priors measured by ``llmperf baseline noise`` on a *different* folder (the MoE model's three sessions
  on 1 x H200, three leases), tolerance 10%: measured elsewhere, so the proof's own sessions are not used twice;
* the same priors at tolerance 5%.

    python benchmarks/session_prior_replay.py [--baseline-dir baselines] [--data docs/gpu-results/data/gate-proof]

Reads only committed files; prints one table. No GPU needed.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pytest_llmperf.commands.baseline import MIN_NOISE_DF, MIN_SUGGESTED_CV, session_noise_rows
from pytest_llmperf.commands.compare import compare_runs
from pytest_llmperf.gate.settings import GateSettings, config_for_backend
from pytest_llmperf.report.json_io import load_results_any
from pytest_llmperf.storage.baselines import Baseline, BaselineStore

PROOF = "gpu-2xh200-nvlink-drv580.159.04-cuda13.0_vllm-0.26.0"
PRIORS_FROM = "gpu-1xh200-pcie-emulated-drv580.159.04-cuda13.0_vllm-0.26.0"
#: candidate file -> how many of the recorded sessions (in recording order) it is judged against
CANDIDATES = {"results-nvlink-s2.json.gz": 1, "results-nvlink-s3.json.gz": 2, "results-nvlink-s4.json.gz": 3,
              "results-regress-ar.json.gz": 4, "results-regress-mnbt.json.gz": 4}


def first_sessions(b: Baseline, n: int) -> Baseline:
    """``b`` as it was after its first ``n`` sessions (no anchor: the window is what is judged)."""
    order = list(dict.fromkeys(b.session_ids()))
    keep = set(order[:n])
    pairs = [(r, s) for r, s in zip(b.runs, b.session_ids()) if s in keep]
    return dataclasses.replace(b, runs=[r for r, _ in pairs], run_sessions=[s for _, s in pairs], anchor=None)


def measured_priors(store: BaselineStore, hardware_id: str, settings: GateSettings) -> dict[str, float]:
    """What ``llmperf baseline noise`` suggests for ``hardware_id``: each gated metric's upper bound, floored."""
    baselines = store.baselines(hardware_id)
    metrics = sorted({m for b in baselines if b.runs for m in settings.metrics_for(b.runs[0])})
    return {m: max(n.upper, MIN_SUGGESTED_CV) for m, n in session_noise_rows(baselines, metrics, 0.9)
            if n is not None and n.df >= MIN_NOISE_DF}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-dir", default="baselines")
    p.add_argument("--data", default="docs/gpu-results/data/gate-proof")
    args = p.parse_args()
    store = BaselineStore(args.baseline_dir)
    proof = [b for b in store.baselines(PROOF) if "tp2" in b.test_id]
    base = GateSettings.from_config(config_for_backend("gpu", "."))
    priors = measured_priors(store, PRIORS_FROM, base)
    print(f"priors measured on {PRIORS_FROM} (90% upper bounds): "
          + ", ".join(f"{m} {cv:.1%}" for m, cv in sorted(priors.items())))
    variants = {
        "prior 5%, tolerance 10%": base,
        "measured priors, tolerance 10%": dataclasses.replace(base, session_cv_metrics=tuple(sorted(priors.items()))),
        "measured priors, tolerance 5%": dataclasses.replace(base, tolerance=0.05,
                                                             session_cv_metrics=tuple(sorted(priors.items()))),
    }
    print(f"\n{'candidate':<30} {'against':>8}  " + "  ".join(f"{v:>32}" for v in variants))
    for name, n in CANDIDATES.items():
        results = load_results_any(Path(args.data) / name)
        candidate = {t["test_id"]: [r["summary"] for r in t["runs"]] for t in results["tests"]}
        window = {b.test_id: first_sessions(b, n) for b in proof if b.test_id in candidate}
        cells, fails = [], []
        for label, settings in variants.items():
            verdicts = [v for v in compare_runs(window, candidate, settings) if v.kind == "regression"]
            count = {s: sum(v.verdict == s for v in verdicts) for s in ("PASS", "INCONCLUSIVE", "FAIL")}
            cells.append(f"{count['PASS']:>2} PASS {count['INCONCLUSIVE']:>2} INC {count['FAIL']:>2} FAIL")
            fails += [f"  {label}: {v.message}" for v in verdicts if v.verdict == "FAIL"]
        print(f"{name:<30} {n:>6} s  " + "  ".join(f"{c:>32}" for c in cells))
        for line in fails:
            print(line)


if __name__ == "__main__":
    main()
