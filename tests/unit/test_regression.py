"""The regression gate: decide against an independent scipy computation, Holm, and monotonicity properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_llmperf.errors import UsageError
from pytest_llmperf.stats.regression import Verdict, build_checks, decide, decide_all, format_verdict, holm_alphas

BASE = [100.0, 102.0, 98.0]
WORSE = [123.0, 125.0, 121.0]


def test_fail_matches_scipy_welch_and_exact_message() -> None:
    v = decide("ttft_p95_ms", BASE, WORSE, direction="lower", tolerance=0.05, alpha=0.0025, test_id="tests/x::t[pp2-c8]")
    lb, lc = np.log(BASE), np.log(WORSE)
    ref = stats.ttest_ind(lc, lb, equal_var=False, alternative="greater")
    assert v.verdict == "FAIL"
    assert v.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert v.ratio == pytest.approx(math.exp(lc.mean() - lb.mean()))
    assert (v.baseline_value, v.candidate_value, v.baseline_k, v.candidate_k) == (100.0, 123.0, 3, 3)
    assert v.ci_low is not None and v.ci_high is not None and v.ci_low < v.ratio < v.ci_high
    assert v.message == format_verdict(v) == (
        "FAIL tests/x::t[pp2-c8] ttft_p95_ms +23.0% (99.5% CI +12.8%..+34.1%, p=0.0001 < α=0.0025; "
        "tolerance 5%; K=3 vs 3)"
    )


def test_ci_is_exp_of_one_sided_t_bounds() -> None:
    v = decide("m", BASE, WORSE, direction="lower", tolerance=0.05, alpha=0.05)
    lb, lc = np.log(BASE), np.log(WORSE)
    vb, vc = lb.var(ddof=1) / 3, lc.var(ddof=1) / 3
    df = (vb + vc) ** 2 / (vb**2 / 2 + vc**2 / 2)
    half = stats.t.ppf(0.95, df) * math.sqrt(vb + vc)
    d = lc.mean() - lb.mean()
    assert (v.ci_low, v.ci_high) == (pytest.approx(math.exp(d - half)), pytest.approx(math.exp(d + half)))


def test_pass_when_bound_within_tolerance() -> None:
    v = decide("tpot_p50_ms", [10.0, 10.1, 9.9, 10.0, 10.05], [10.0, 9.95, 10.05, 10.0, 10.1], direction="lower", tolerance=0.05, alpha=0.05)
    assert v.verdict == "PASS" and v.runs_needed is None


def test_significant_but_small_change_is_not_fail() -> None:
    # +2%, very precise: significant, but within the 5% tolerance -> PASS, never FAIL
    v = decide("m", [100.0, 100.1, 99.9, 100.0], [102.0, 102.1, 101.9, 102.0], direction="lower", tolerance=0.05, alpha=0.05)
    assert v.p_value is not None and v.p_value < 0.05 and v.verdict == "PASS"


def test_inconclusive_reports_runs_needed() -> None:
    v = decide("m", [100.0, 110.0, 92.0], [104.0, 99.0, 112.0], direction="lower", tolerance=0.05, alpha=0.0025)
    assert v.verdict == "INCONCLUSIVE" and v.runs_needed is not None and v.runs_needed >= 4
    assert f"need K={v.runs_needed} per side" in v.message


def test_single_candidate_run_uses_baseline_variance() -> None:
    v = decide("m", BASE, [115.0], direction="lower", tolerance=0.05, alpha=0.05)
    lb = np.log(BASE)
    t = (math.log(115.0) - lb.mean()) / (lb.std(ddof=1) * math.sqrt(1 / 3 + 1))
    assert v.p_value == pytest.approx(stats.t.sf(t, 2))
    assert v.verdict == "FAIL"


def test_single_baseline_run_needs_runs_or_external_noise() -> None:
    v = decide("m", [100.0], [120.0, 121.0], direction="lower", tolerance=0.05, alpha=0.05)
    assert v.verdict == "INCONCLUSIVE" and v.p_value is None and v.runs_needed is not None and v.runs_needed >= 3
    z = decide("m", [100.0], [120.0, 121.0], direction="lower", tolerance=0.05, alpha=0.05, noise_cv=0.02)
    w = math.log(math.sqrt(120 * 121) / 100)
    assert z.p_value == pytest.approx(stats.norm.sf(w / (0.02 * math.sqrt(1 + 1 / 2))))
    assert z.verdict == "FAIL"


def test_no_baseline() -> None:
    assert decide("m", [], [1.0], direction="lower").verdict == "NO_BASELINE"


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_values_raise_naming_metric(bad: float) -> None:
    with pytest.raises(UsageError, match="metric 'failed' of t1: candidate values must be positive"):
        decide("failed", [1.0, 2.0], [bad, 1.0], direction="lower", test_id="t1")


def test_bad_direction() -> None:
    with pytest.raises(UsageError, match="direction must be 'lower' or 'higher'"):
        decide("m", BASE, BASE, direction="up")


def test_higher_is_better_mirrors_lower() -> None:
    a = decide("tput", BASE, [80.0, 81.0, 79.0], direction="higher", tolerance=0.05, alpha=0.05)
    b = decide("lat", [1 / x for x in BASE], [1 / 80, 1 / 81, 1 / 79], direction="lower", tolerance=0.05, alpha=0.05)
    assert a.verdict == b.verdict == "FAIL" and a.p_value == pytest.approx(b.p_value)
    assert a.message.startswith("FAIL  tput -20.0%".replace("  ", " "))


def test_verdict_dict_round_trip_and_errors() -> None:
    v = decide("m", BASE, WORSE, direction="lower", test_id="t")
    assert Verdict.from_dict(v.to_dict()) == v
    assert list(v.to_dict()) == ["test_id", "metric", "kind", "verdict", "baseline_value", "candidate_value", "ratio",
                                 "ci_low", "ci_high", "p_value", "alpha", "baseline_k", "candidate_k", "runs_needed", "message"]  # fmt: skip
    with pytest.raises(UsageError, match="unknown field"):
        Verdict.from_dict({**v.to_dict(), "extra": 1})
    with pytest.raises(UsageError, match="'verdict'"):
        Verdict.from_dict({**v.to_dict(), "verdict": "MAYBE"})


def test_holm_alphas_by_hand() -> None:
    got = holm_alphas([0.03, 0.001, 0.031, float("nan")], 0.05)
    assert got[:3] == pytest.approx([0.025, 0.05 / 3, 0.025]) and math.isnan(got[3])
    assert holm_alphas([0.01, 0.02, 0.03], 0.05) == pytest.approx([0.05 / 3, 0.025, 0.05])


def test_decide_all_records_holm_alpha_and_uses_hook() -> None:
    checks = [("t1", "a", BASE, WORSE, "lower", 0.05), ("t2", "b", BASE, BASE, "lower", 0.05),
              ("t3", "c", [100.0], [200.0], "lower", 0.05)]  # fmt: skip
    out = decide_all(checks, 0.05)
    assert [v.test_id for v in out] == ["t1", "t2", "t3"]
    assert out[0].verdict == "FAIL" and out[0].alpha == pytest.approx(0.025)  # m=2 (t3 has no p)
    assert out[1].alpha == pytest.approx(0.05) and out[1].verdict != "FAIL"
    assert out[2].verdict == "INCONCLUSIVE"
    seen = []

    def hook(**kw):  # type: ignore[no-untyped-def]
        seen.append(kw["alpha"])
        return Verdict(test_id="", metric=kw["metric"], kind="regression", verdict="PASS", p_value=0.5)

    assert [v.test_id for v in decide_all(checks[:1], 0.05, decide_fn=hook)] == ["t1"] and seen == [0.05, 0.05]


def test_build_checks_skips_counts_and_non_positive() -> None:
    base = [{"failed": 0.0, "goodput_req_s": 0.0, "ttft_p95_ms": 1.0, "nope": 1.0}] * 2
    checks, skipped = build_checks("t", base, base)
    assert [c[1] for c in checks] == ["ttft_p95_ms"]
    assert {v.metric: v.verdict for v in skipped} == {"goodput_req_s": "SKIPPED", "nope": "SKIPPED"}
    assert "log-ratio test is undefined" in skipped[0].message


values_st = st.lists(st.floats(1.0, 1000.0), min_size=2, max_size=6)
RANK = {"PASS": 0, "INCONCLUSIVE": 1, "FAIL": 2}


@settings(max_examples=150)
@given(values_st, values_st, st.floats(1.0, 2.0), st.sampled_from(["lower", "higher"]), st.sampled_from([0.0025, 0.05]))
def test_worse_candidate_never_moves_toward_pass(base: list[float], cand: list[float], factor: float, direction: str, alpha: float) -> None:
    worse = [c * factor if direction == "lower" else c / factor for c in cand]
    before = decide("m", base, cand, direction=direction, tolerance=0.05, alpha=alpha)
    after = decide("m", base, worse, direction=direction, tolerance=0.05, alpha=alpha)
    assert not (before.verdict == "FAIL" and after.verdict == "PASS")
    assert not (after.verdict == "PASS" and before.verdict == "FAIL")
    if before.verdict == "FAIL":
        assert after.verdict == "FAIL"  # same spread, larger worsening
    if after.verdict == "PASS":
        assert before.verdict == "PASS"  # making it better keeps a PASS


@settings(max_examples=100)
@given(values_st, values_st, st.integers(0, 5), st.floats(1.0, 3.0))
def test_one_value_worse_never_turns_fail_into_pass(base: list[float], cand: list[float], i: int, factor: float) -> None:
    worse = list(cand)
    worse[i % len(cand)] *= factor
    before = decide("m", base, cand, direction="lower", tolerance=0.05, alpha=0.05)
    after = decide("m", base, worse, direction="lower", tolerance=0.05, alpha=0.05)
    assert RANK[before.verdict] < 2 or after.verdict != "PASS"
    assert after.verdict != "PASS" or before.verdict != "FAIL"


@settings(max_examples=100)
@given(values_st, values_st, st.floats(1e-3, 1e3), st.sampled_from(["lower", "higher"]))
def test_decision_invariant_to_unit(base: list[float], cand: list[float], scale: float, direction: str) -> None:
    a = decide("m", base, cand, direction=direction, tolerance=0.05, alpha=0.05)
    b = decide("m", [x * scale for x in base], [x * scale for x in cand], direction=direction, tolerance=0.05, alpha=0.05)
    assume(a.p_value is None or abs(a.p_value - 0.05) > 1e-6)
    assert a.verdict == b.verdict
    assert a.ratio == pytest.approx(b.ratio, rel=1e-9)


@given(values_st, st.sampled_from(["lower", "higher"]), st.sampled_from([0.0, 0.05]))
def test_identical_candidate_never_fails(base: list[float], direction: str, tolerance: float) -> None:
    v = decide("m", base, list(base), direction=direction, tolerance=tolerance, alpha=0.05)
    assert v.verdict != "FAIL" and v.ratio == pytest.approx(1.0)
