"""Startup failures found in the log end the wait at once, and a killed parent takes its engine with it.

Both come from the GPU run (2 x H200, vLLM 0.26.0): a TP worker died of an illegal memory access during
CUDA-graph capture while the API server lingered until the startup timeout (420 s); and an engine outlived a
pytest killed by ``timeout``. The child here is a stand-in process, not an engine: it only writes a log line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_llmperf.engine.server import VLLMServer, descendants, fatal_line
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import EngineStartError


class _LingeringCrash(VLLMServer):
    """Writes what vLLM wrote when its worker died, then hangs like the API server did."""

    def _spawn(self) -> subprocess.Popen[bytes]:
        code = ("import sys, time; print('(Worker_TP0) ERROR torch.AcceleratorError: CUDA error: an illegal "
                "memory access was encountered', flush=True); time.sleep(600)")
        logf = open(self.log_path, "ab")  # noqa: SIM115
        try:
            return subprocess.Popen([sys.executable, "-c", code], stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            logf.close()

    def _probe(self) -> bool:
        return False


def test_fatal_line_finds_markers_and_ignores_healthy_logs():
    assert fatal_line("INFO starting\nINFO ready\n") is None
    assert fatal_line("x\nRuntimeError: Engine core initialization failed. See root cause above.\n").startswith(
        "RuntimeError: Engine core initialization failed")


def test_a_worker_crash_in_the_log_fails_the_start_long_before_the_timeout(tmp_path: Path):
    server = _LingeringCrash(EngineSpec(model="tiny-llama", backend="cpu", startup_timeout_s=300), log_dir=tmp_path)
    t0 = time.monotonic()
    with pytest.raises(EngineStartError) as excinfo:
        server.start()
    assert time.monotonic() - t0 < 60  # the startup timeout is 300 s: the log, not the clock, ended the wait
    assert "illegal memory access" in str(excinfo.value)
    assert "failed during startup" in str(excinfo.value)
    assert server.proc is None  # stopped: no process left


def test_engine_dies_with_the_process_that_started_it(tmp_path: Path):
    """A parent killed with SIGKILL (no cleanup at all) still takes its engine down (PR_SET_PDEATHSIG)."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys, time
        from pytest_llmperf.engine import server as srv
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True, preexec_fn=srv._die_with_parent)
        print(child.pid, flush=True)
        time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert child_pid in descendants(parent.pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child_pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the child outlived its SIGKILLed parent")
