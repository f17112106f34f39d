"""How real vLLM CPU engines fail: a broken server argument, a startup timeout, an engine killed while in
use, and a parallel size beyond the machine's cores. Each failure must name its cause and leave no process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pytest_llmperf.engine.server import VLLMServer, descendants
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import EngineDiedError, EngineStartError, UsageError
from tests.conftest import servers_on_port, wait_for_no_vllm

pytestmark = pytest.mark.engine


class RecordingServer(VLLMServer):
    """A real VLLMServer that remembers the pid it spawned (``stop`` clears ``proc``)."""

    spawned_pid: int | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = super()._spawn()
        self.spawned_pid = proc.pid
        return proc


def assert_nothing_left(server: RecordingServer) -> None:
    assert server.proc is None
    assert server.spawned_pid is not None
    assert server.spawned_pid not in descendants(os.getpid())
    assert not os.path.exists(f"/proc/{server.spawned_pid}/cmdline") or not Path(
        f"/proc/{server.spawned_pid}/cmdline").read_bytes()
    assert servers_on_port(server.port) == []


def test_broken_engine_argument_fails_fast_with_the_servers_error(tmp_path: Path) -> None:
    wait_for_no_vllm()
    server = RecordingServer(EngineSpec(extra_args=("--max-model-len", "abc")), log_dir=tmp_path)
    t0 = time.monotonic()
    with pytest.raises(EngineStartError) as exc:
        server.start()
    print(f"broken argument: EngineStartError after {time.monotonic() - t0:.1f} s")
    msg = str(exc.value)
    assert "exited with code" in msg and "during startup" in msg
    assert "startup timeout" not in msg  # it failed on its own exit, not by waiting out the 600 s timeout
    cause = next(line for line in msg.splitlines() if line.startswith("server error: "))
    assert "abc" in cause, cause
    assert str(server.log_path) in msg and "--max-model-len abc" in msg
    assert_nothing_left(server)


def test_startup_timeout_names_itself_and_leaves_no_process(tmp_path: Path) -> None:
    wait_for_no_vllm()
    server = RecordingServer(EngineSpec(startup_timeout_s=3.0), log_dir=tmp_path)
    with pytest.raises(EngineStartError, match=r"was not healthy after 3 s \(startup timeout\)"):
        server.start()
    assert_nothing_left(server)


def test_engine_killed_mid_use_raises_engine_died(tmp_path: Path) -> None:
    wait_for_no_vllm()
    server = RecordingServer(EngineSpec(), log_dir=tmp_path)
    with server:
        print(f"engine single startup {server.startup_s:.1f} s")
        server.check_alive()
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        with pytest.raises(EngineDiedError, match=r"vLLM engine single exited with code -9 while in use") as exc:
            server.check_alive()
        assert str(server.log_path) in str(exc.value)
        assert not server.alive()
    assert_nothing_left(server)


def test_tp_beyond_cores_on_cpu_is_a_usage_error_naming_the_cores(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    tp = cores * 2
    with pytest.raises(UsageError, match=rf"{tp} ranks but only {cores} usable cores"):
        VLLMServer(EngineSpec(tp=tp), log_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was started or logged
