"""The plugin's CLI surface, markers, option/pyproject validation, sweep ids and spec ordering (pytester, no
engine started: inner tests either use no engine or are only collected)."""

from __future__ import annotations

from glob import escape
from textwrap import dedent

import pytest

from pytest_llmperf.markers import MARKERS
from pytest_llmperf.options import FLAGS, OPTIONS
from tests.conftest import run_llmperf


def test_help_lists_every_llmperf_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*LLM inference performance (pytest-llmperf)*"])
    for name in [*OPTIONS, *FLAGS]:
        result.stdout.fnmatch_lines([f"*--llmperf-{name}*"])
    result.stdout.fnmatch_lines(["*--llmperf-modes=M,M*engine modes of the sweep*",
                                 "*--llmperf-update-baselines*"])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    for name in MARKERS:
        result.stdout.fnmatch_lines([f"@pytest.mark.{name}*"])


def test_markers_pass_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(dedent("""
        import pytest

        @pytest.mark.tp(2)
        @pytest.mark.pp(n=2)
        @pytest.mark.nvlink
        @pytest.mark.pcie
        @pytest.mark.single
        @pytest.mark.gpu
        @pytest.mark.cpu
        @pytest.mark.engine
        @pytest.mark.llmperf(slo={"ttft_p95_ms": 100}, tolerance=0.2, repeats=2, num_requests=4,
                             output_len=8, warmup=0, metrics=["ttft_p95_ms"])
        def test_marked():
            pass
    """))
    result = run_llmperf(pytester, "--strict-markers")
    result.assert_outcomes(passed=1)


ENGINE_TEST = """
import pytest

{marker}
def test_bad(llmperf_engine):
    pass
"""


@pytest.mark.parametrize(("marker", "words"), [
    ('@pytest.mark.tp("x")', "@pytest.mark.tp takes one positive integer, e.g. @pytest.mark.tp(2); got args=('x',)"),
    ("@pytest.mark.tp(0)", "@pytest.mark.tp takes one positive integer, e.g. @pytest.mark.tp(2); got args=(0,)"),
    ("@pytest.mark.pp(2, 3)", "@pytest.mark.pp takes one positive integer"),
    ("@pytest.mark.pp(size=2)", "@pytest.mark.pp takes one positive integer, e.g. @pytest.mark.pp(2); "
                                "got args=() kwargs={'size': 2}"),
    ("@pytest.mark.llmperf(foo=1)", "unknown @pytest.mark.llmperf argument(s) ['foo']; known: ['metrics',"),
    ("@pytest.mark.llmperf({'slo': {}})", "@pytest.mark.llmperf accepts only keyword arguments, got ({'slo': {}},)"),
    ("@pytest.mark.llmperf(repeats=0)", "@pytest.mark.llmperf(repeats=0) must be >= 1"),
    ("@pytest.mark.llmperf(tolerance=5)", "@pytest.mark.llmperf(tolerance=5) must be a fraction in (0, 1)"),
    ("@pytest.mark.llmperf(slo=[1])", "@pytest.mark.llmperf(slo=...) must be dict, got [1]"),
])
def test_bad_marker_args_name_the_test_and_marker(pytester: pytest.Pytester, marker: str, words: str) -> None:
    pytester.makepyfile(test_markers=ENGINE_TEST.format(marker=marker))
    result = run_llmperf(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: test_markers.py::test_bad: {escape(words)}*"])
    result.stdout.no_fnmatch_line("*starting vLLM engine*")


def test_bad_tp_marker_on_a_sweep_test_names_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sweep=dedent("""
        import pytest

        @pytest.mark.tp("two")
        def test_bad(llmperf_mode, llmperf_engine):
            pass
    """))
    result = run_llmperf(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_sweep.py::test_bad: @pytest.mark.tp takes one positive integer, e.g. "
                                 "@pytest.mark.tp(2); got args=('two',) kwargs={}"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*starting vLLM engine*")


@pytest.mark.parametrize(("args", "words"), [
    (("--llmperf-concurrency", "0"), "*--llmperf-concurrency: expected positive integers, got '0'*"),
    (("--llmperf-concurrency", "a,b"), "*--llmperf-concurrency: expected comma-separated integers*"),
    (("--llmperf-modes", "tp2x"), "*--llmperf-modes: unknown engine mode 'tp2x'*"),
    (("--llmperf-tolerance", "2"), "*--llmperf-tolerance: expected a fraction in (0, 1), got '2'*"),
    (("--llmperf-backend", "tpu"), "*--llmperf-backend: expected one of auto, cpu, gpu, got 'tpu'*"),
    (("--llmperf-repeats", "-1"), "*--llmperf-repeats: expected a positive integer, got '-1'*"),
])
def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, args: tuple[str, str], words: str) -> None:
    result = run_llmperf(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([words])


def test_accept_regression_needs_update_and_reason(pytester: pytest.Pytester) -> None:
    result = run_llmperf(pytester, "--llmperf-accept-regression")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-accept-regression only makes sense with --llmperf-update-baselines*"])
    result = run_llmperf(pytester, "--llmperf-accept-regression", "--llmperf-update-baselines")
    result.stderr.fnmatch_lines(["*--llmperf-accept-regression needs --llmperf-update-reason TEXT*"])


def test_gpu_backend_without_gpus_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_llmperf(pytester, "--llmperf-backend", "gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-backend gpu, but no GPU is visible*"])


@pytest.mark.parametrize(("toml", "words"), [
    ('foo = 1', "ERROR: [tool.llmperf] in pyproject.toml: unknown key(s) ['foo']; known: ["),
    ('concurrency = [1, 0]', "ERROR: [tool.llmperf] concurrency = [1, 0] in pyproject.toml: expected positive "
                             "integers, got '1,0'"),
    ('modes = ["single", "tp2x"]', "ERROR: [tool.llmperf] modes = ['single', 'tp2x'] in pyproject.toml: "
                                   "unknown engine mode 'tp2x'"),
    ('tolerance = "lots"', "ERROR: [tool.llmperf] tolerance = 'lots' in pyproject.toml: expected a fraction"),
    ('slo = 3', "ERROR: [tool.llmperf.slo] in pyproject.toml must be a table of limits"),
    ('modes = [', "pyproject.toml: Invalid value"),  # pytest itself reads the file first and names it
])
def test_bad_pyproject_names_the_key(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, toml: str,
                                    words: str) -> None:
    pytester.makepyprojecttoml(f"[tool.llmperf]\n{toml}\n")
    monkeypatch.setenv("LLMPERF_TOPOLOGY", "none")
    result = pytester.runpytest("-p", "no:cacheprovider")  # no CLI settings: they would win over pyproject
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{escape(words)}*"])


SWEEP = """
def test_x(llmperf_mode, llmperf_concurrency, llmperf_input_len):
    pass
"""


def test_sweep_ids_come_from_the_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sweep=SWEEP)
    result = run_llmperf(pytester, "--collect-only", "-q", "--llmperf-modes", "pp2,single",
                         "--llmperf-concurrency", "1,8", "--llmperf-input-lens", "256")
    result.stdout.fnmatch_lines([
        "test_sweep.py::test_x[pp2-c1-in256]", "test_sweep.py::test_x[pp2-c8-in256]",
        "test_sweep.py::test_x[single-c1-in256]", "test_sweep.py::test_x[single-c8-in256]",
        "4 tests collected*"])


def test_a_dataset_collapses_the_input_length_sweep(pytester: pytest.Pytester) -> None:
    # the dataset's prompts are sent at every input length: one item per mode and concurrency, named "dataset"
    pytester.makepyfile(test_sweep=SWEEP)
    result = run_llmperf(pytester, "--collect-only", "-q", "--llmperf-modes", "single", "--llmperf-concurrency",
                         "1,8", "--llmperf-input-lens", "256,2048", "--llmperf-dataset", "dist:fixed:8,fixed:4")
    result.stdout.fnmatch_lines(["test_sweep.py::test_x[single-c1-dataset]", "test_sweep.py::test_x[single-c8-dataset]",
                                 "2 tests collected*"])

def test_sweep_ids_come_from_pyproject_and_cli_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.llmperf]\nmodes = ["tp2"]\nconcurrency = [4]\ninput_lens = [64, 128]\n')
    pytester.makepyfile(test_sweep=SWEEP)
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["test_sweep.py::test_x[tp2-c4-in64]", "test_sweep.py::test_x[tp2-c4-in128]",
                                 "2 tests collected*"])
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", "--llmperf-concurrency", "2")
    result.stdout.fnmatch_lines(["test_sweep.py::test_x[tp2-c2-in64]", "test_sweep.py::test_x[tp2-c2-in128]"])


def test_mode_markers_fix_the_mode_of_a_sweep_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sweep=dedent("""
        import pytest

        @pytest.mark.pp(2)
        def test_pp(llmperf_mode, llmperf_concurrency):
            pass
    """))
    result = run_llmperf(pytester, "--collect-only", "-q", "--llmperf-modes", "single,tp2",
                         "--llmperf-concurrency", "1")
    result.stdout.fnmatch_lines(["test_sweep.py::test_pp[pp2-c1]", "1 test collected*"])


def test_tests_are_ordered_by_engine_spec(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order=dedent("""
        import pytest

        def test_a(llmperf_mode, llmperf_engine):
            pass

        def test_plain():
            pass

        def test_b(llmperf_mode, llmperf_engine):
            pass

        @pytest.mark.pp(2)
        def test_c(llmperf_engine):
            pass
    """))
    result = run_llmperf(pytester, "--collect-only", "-q", "--llmperf-modes", "tp2,single")
    result.stdout.fnmatch_lines([
        "test_order.py::test_plain",
        "test_order.py::test_a[[]tp2[]]", "test_order.py::test_b[[]tp2[]]",
        "test_order.py::test_a[[]single[]]", "test_order.py::test_b[[]single[]]",
        "test_order.py::test_c",
        "6 tests collected*"])
    result.stdout.no_fnmatch_line("*starting vLLM engine*")


def test_mode_and_backend_markers_are_added_for_selection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sel=dedent("""
        def test_a(llmperf_mode, llmperf_engine):
            pass
    """))
    result = run_llmperf(pytester, "--collect-only", "-q", "--llmperf-modes", "single,tp2,pp2", "-m", "pp and cpu")
    result.stdout.fnmatch_lines(["test_sel.py::test_a[[]pp2[]]", "1/3 tests collected (2 deselected)*"])


def test_report_header_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = run_llmperf(pytester, "--llmperf-modes", "single,pp2", "--llmperf-concurrency", "1,4")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "llmperf: backend cpu, no GPU (CPU backend) [[]from LLMPERF_TOPOLOGY[]], model tiny-llama, "
        "modes single,pp2, concurrency 1,4, input 32 -> output 8 tokens, K=3 runs, FAR 0.05, tolerance 50%, "
        "session CV prior 10%; "
        "CPU backend: no GPU interconnect*"])
    result = run_llmperf(pytester, "--llmperf-session-cv", "0.08,tpot_p50_ms=0.01,e2el_p50_ms=0.2")
    result.assert_outcomes(passed=1)  # per-metric priors, said where the gate's other settings are
    result.stdout.fnmatch_lines(["*tolerance 50%, session CV prior 8%, e2el_p50_ms 20.0%, tpot_p50_ms 1.0%; CPU*"])
