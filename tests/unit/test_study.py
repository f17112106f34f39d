"""The study's sentences: the crossover (where PP overtakes TP) and the roofline, on hand-computed cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmperf.models.arch import arch_facts, preset_arch
from pytest_llmperf.report.study import crossover_lines, hbm_bandwidth_gbs, link_lines, link_of, roofline_lines
from pytest_llmperf.stats.crossover import find_crossover, ratio_ci


def test_ratio_ci_by_hand():
    # logs a: [0, ln 2] -> mean ln(sqrt 2); logs b: [ln 2, ln 4] -> mean ln(2 sqrt 2); ratio exactly 2
    ci = ratio_ci([1.0, 2.0], [2.0, 4.0], 0.95)
    assert ci.ratio == pytest.approx(2.0)
    # var of each log sample = ln(2)^2 / 2; se = sqrt(2 * var / 2) = ln 2 / sqrt 2; df = 2; t(0.975, 2) = 4.3027
    half = 4.302652729911275 * math.log(2) / math.sqrt(2)
    assert ci.low == pytest.approx(2.0 * math.exp(-half))
    assert ci.high == pytest.approx(2.0 * math.exp(half))


def test_identical_runs_give_a_degenerate_interval():
    ci = ratio_ci([5.0, 5.0, 5.0], [2.5, 2.5, 2.5])
    assert (ci.ratio, ci.low, ci.high) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))


def test_too_few_runs_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        ratio_ci([1.0], [1.0, 2.0])


TP = {1: [6.0, 6.1, 5.9], 8: [7.0, 7.1, 6.9], 32: [12.0, 12.2, 11.8]}   # TPOT ms: TP fast at low load
PP = {1: [9.0, 9.1, 8.9], 8: [9.5, 9.6, 9.4], 32: [10.0, 10.1, 9.9]}    # PP slower, but flatter


def test_pp_overtakes_tp_from_the_first_concurrency_where_it_stays_ahead():
    xo = find_crossover("tpot_p50_ms", "lower", TP, PP, mode_a="tp2", mode_b="pp2")
    assert xo is not None and xo.at == 32
    s = xo.sentence("TPOT p50", "PCIe")
    assert s.startswith("TPOT p50 on PCIe: pp2 overtakes tp2 from concurrency 32 (pp2/tp2 0.83")
    assert "at 8: 1.36" in s  # 9.5 / 7.0


def test_no_crossover_when_tp_leads_at_the_top_of_the_range():
    xo = find_crossover("tpot_p50_ms", "lower", TP, {c: [v * 0.5 + 10 for v in vs] for c, vs in TP.items()},
                        mode_a="tp2", mode_b="pp2")
    assert xo is not None and xo.at is None
    assert "pp2 does not overtake tp2 in range 1-32 (tp2 leads at 32" in xo.sentence()


def test_higher_is_better_metrics_flip_the_side():
    thr_tp = {c: [1000.0 / v[0], 1000.0 / v[1], 1000.0 / v[2]] for c, v in TP.items()}
    thr_pp = {c: [1000.0 / v[0], 1000.0 / v[1], 1000.0 / v[2]] for c, v in PP.items()}
    xo = find_crossover("output_throughput_tok_s", "higher", thr_tp, thr_pp, mode_a="tp2", mode_b="pp2")
    assert xo is not None and xo.at == 32


def test_a_lead_that_is_lost_again_is_no_crossover():
    pp = dict(PP)
    pp[1] = [3.0, 3.1, 2.9]  # PP ahead at 1, behind at 8, ahead at 32: crossover is 32, not 1
    assert find_crossover("tpot_p50_ms", "lower", TP, pp, mode_a="tp2", mode_b="pp2").at == 32


values = st.lists(st.floats(0.5, 50.0), min_size=2, max_size=6)


@given(values, values)
def test_swapping_sides_inverts_the_ratio_and_interval(a, b):
    ab, ba = ratio_ci(a, b), ratio_ci(b, a)
    assert ab.ratio * ba.ratio == pytest.approx(1.0)
    assert ab.low * ba.high == pytest.approx(1.0) and ab.high * ba.low == pytest.approx(1.0)
    assert ab.low <= ab.ratio <= ab.high


@given(values, values, st.floats(0.1, 10.0))
def test_the_ratio_does_not_depend_on_the_unit(a, b, scale):
    x, y = ratio_ci(a, b), ratio_ci([v * scale for v in a], [v * scale for v in b])
    assert x.ratio == pytest.approx(y.ratio) and x.low == pytest.approx(y.low) and x.high == pytest.approx(y.high)


def test_parameter_counts_match_the_published_sizes():
    assert preset_arch("llama-3.1-8b").params == 8_030_261_248          # Meta's model card: 8.03B
    assert preset_arch("deepseek-r1-distill-qwen-14b").params == 14_770_033_664  # Qwen2.5-14B: 14.77B
    with pytest.raises(ValueError, match="lacks 'hidden_size'"):
        arch_facts({"num_hidden_layers": 2})
    moe = preset_arch("qwen3-30b-a3b")  # Qwen's model card: 30.5B parameters, 3.3B activated
    assert moe.params == 30_532_110_336 and moe.active_params == 3_353_020_416 and moe.experts == 128
    dense = preset_arch("llama-3.1-8b")
    assert dense.active_params == dense.params and dense.active_weight_bytes() == dense.weight_bytes()


def test_a_moe_roofline_reads_the_routed_experts_only():
    """Qwen3-30B-A3B at concurrency 1 on one H200 (the study's run: TPOT p50 4.11 ms): 6.7 GB of active weights
    over 4.8 TB/s is a 1.40 ms floor, so decode ran at 34% of peak bandwidth; the 61 GB total would claim 300%."""
    test = _test("single", 1, 1, 1, [4.11, 4.11], [211.0, 212.0])
    test["engine"]["model"] = "qwen3-30b-a3b"
    line, = roofline_lines([{"fingerprint": {"gpu_model": "NVIDIA H200", "interconnect": "none"}, "tests": [test]}])
    assert "weight-read floor 1.40 ms (6.7 GB, 3.4B of 30.5B parameters active / 1 x 4.8 TB/s" in line
    assert line.endswith("decode at 34% of peak memory bandwidth")


def test_bandwidth_table_matches_names_as_nvml_writes_them():
    assert hbm_bandwidth_gbs("NVIDIA H200") == 4800.0
    assert hbm_bandwidth_gbs("NVIDIA H100 80GB HBM3") == 3350.0
    assert hbm_bandwidth_gbs("NVIDIA H100 PCIe") == 2000.0
    assert hbm_bandwidth_gbs("NVIDIA GeForce RTX 3090") == 936.0
    assert hbm_bandwidth_gbs(None) is None and hbm_bandwidth_gbs("Some NPU") is None


def _test(label, tp, pp, c, tpot, thr, emulation=None):
    return {"engine": {"label": label, "tp": tp, "pp": pp, "backend": "gpu", "emulation": emulation,
                       "model": "deepseek-r1-distill-qwen-14b", "dtype": "bfloat16"},
            "workload": {"concurrency": c, "input_len": 512, "output_len": 128},
            "runs": [{"summary": {"tpot_p50_ms": t, "ttft_p95_ms": 50.0 * c, "output_throughput_tok_s": h}}
                     for t, h in zip(tpot, thr)]}


def test_study_lines_from_results_files():
    fp = {"gpu_model": "NVIDIA H200", "interconnect": "pcie-emulated"}
    tests = [_test("tp2", 2, 1, c, TP[c], [1000 / v for v in TP[c]], "pcie") for c in TP]
    tests += [_test("pp2", 1, 2, c, PP[c], [1000 / v for v in PP[c]], "pcie") for c in PP]
    results = [{"fingerprint": fp, "tests": tests}]
    lines = crossover_lines(results)
    assert any(line.startswith("crossover, 512->128 tokens: TPOT p50 on emulated PCIe: pp2 overtakes tp2 from "
                               "concurrency 32") for line in lines)
    roof = roofline_lines(results)
    tp_line = next(line for line in roof if line.startswith("roofline, tp2"))
    # 29.54 GB over 2 x 4.8 TB/s = 3.08 ms; TPOT p50 6.0 ms -> 51% of peak bandwidth
    assert "weight-read floor 3.08 ms" in tp_line and "decode at 51% of peak" in tp_line


def test_link_lines_show_what_each_engine_logged():
    tp = _test("tp2", 2, 1, 1, [6.0, 6.1], [160.0, 161.0], "pcie")
    tp["engine"].update(allreduce_backends={"tp:0": ["PYNCCL"]}, nccl_transports=["SHM"], allreduce_fusion_off=True,
                        allreduce_fusion_reason="all-reduce fusion off: PCIe emulation removes every peer path")
    pp = _test("pp2", 1, 2, 1, [9.0, 9.1], [107.0, 108.0], "pcie")
    pp["engine"].update(allreduce_backends={"pp:0": ["PYNCCL"]}, nccl_transports=["SHM"], allreduce_fusion_off=False,
                        allreduce_fusion_reason="no TP group on a GPU")
    single = _test("single", 1, 1, 1, [9.2, 9.3], [105.0, 106.0])
    lines = link_lines([{"fingerprint": {"interconnect": "pcie-emulated"}, "tests": [tp, pp, single]}])
    assert lines == [
        "link, pp2 on emulated PCIe: all-reduce backends pp:0 ['PYNCCL']; NCCL transport SHM",
        "link, tp2 on emulated PCIe: all-reduce backends tp:0 ['PYNCCL']; NCCL transport SHM; "
        "all-reduce fusion off: PCIe emulation removes every peer path"]


def test_replicas_against_a_split_model_and_two_digit_gpu_counts():
    fp = {"gpu_model": "NVIDIA H200", "interconnect": "nvlink"}
    tests = [_test("tp16", 16, 1, c, TP[c], [1000 / v for v in TP[c]]) for c in TP]
    tests += [_test("dp16", 1, 1, c, PP[c], [1000 / v for v in PP[c]]) for c in PP]
    for t in tests[3:]:
        t["engine"]["dp"] = 16
    lines = crossover_lines([{"fingerprint": fp, "tests": tests}])
    assert len(lines) == 3, lines
    ttft, tpot, thr = lines  # TTFT p95 is the same on both sides in these fixtures
    assert "TTFT p95 on NVLink: dp16 does not overtake tp16 in range 1-32 (no significant difference at 32" in ttft
    assert "dp16 overtakes tp16 from concurrency 32" in tpot and "dp16 overtakes tp16 from concurrency 32" in thr


def test_merging_an_nvlink_and_an_emulated_session_keeps_both_links_apart():
    from pytest_llmperf.report.json_io import merge_results

    def part(interconnect, emulation):
        return {"created_unix_s": 1.0, "header": {}, "fingerprint": {"interconnect": interconnect},
                "tests": [_test("tp2", 2, 1, 1, [6.0, 6.1], [160.0, 161.0], emulation),
                          _test("single", 1, 1, 1, [9.2, 9.3], [105.0, 106.0], emulation)]}

    merged = merge_results([part("pcie-emulated", "pcie"), part("nvlink", None)])
    assert [t["engine"]["label"] for t in merged["tests"]] == ["tp2 (emulated PCIe)", "single", "tp2 (NVLink)",
                                                              "single"]
    # one link alone: labels stay as recorded
    assert [t["engine"]["label"] for t in merge_results([part("nvlink", None), part("nvlink", None)])["tests"]] == [
        "tp2", "single", "tp2", "single"]


def test_cpu_backend_engines_are_named_as_such_and_have_no_link_line():
    tp = _test("tp2", 2, 1, 1, [6.0, 6.1], [160.0, 161.0])
    tp["engine"].update(backend="cpu", allreduce_fusion_off=False, allreduce_fusion_reason="no TP group on a GPU")
    results = [{"fingerprint": {"interconnect": "none"}, "tests": [tp]}]
    assert link_of(tp, results[0]["fingerprint"]) == "the CPU backend"
    assert link_lines(results) == []
