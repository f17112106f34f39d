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


def test_real_engine_dies_with_a_sigkilled_pytest_during_startup(tmp_path: Path) -> None:
    """Issue 14 on real vLLM: SIGKILL the process that started a CPU engine while the engine initialises
    (its log exists, /health not yet 200); the guard must take the API server, EngineCore and every worker
    down. (tests/unit/test_faults_engine.py proves the same with a fake tree in seconds; this is the one real run.)"""
    import sys
    import textwrap

    wait_for_no_vllm()
    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(root)!r})
        from pytest_llmperf.engine.server import VLLMServer
        from pytest_llmperf.engine.spec import EngineSpec
        srv = VLLMServer(EngineSpec(), log_dir={str(tmp_path)!r}, progress=lambda m: None)
        print(srv.port, flush=True)
        srv.start()
        print("HEALTHY", flush=True)
        time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    port = int(parent.stdout.readline())
    deadline = time.monotonic() + 300

    def engine_core_up() -> bool:  # the hard case of issue 14: EngineCore exists, /health not yet 200
        for pid in descendants(parent.pid):
            try:
                if b"VLLM::EngineCore" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:
                pass
        return False

    while not engine_core_up() and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.5)
    assert engine_core_up(), "vLLM's EngineCore never started"
    time.sleep(2.0)  # inside EngineCore's initialisation (model load, KV cache, warmup take far longer)
    tree = descendants(parent.pid)  # guard, API server, EngineCore (and workers)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    t0 = time.monotonic()

    def left() -> list[int]:
        out = []
        for pid in tree:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(pid)
            except OSError:
                pass
        return out

    while left() and time.monotonic() - t0 < 60:
        time.sleep(0.5)
    assert left() == [] and servers_on_port(port) == [], f"vLLM outlived a SIGKILLed pytest: {left()}"
    print(f"real engine ({len(tree)} processes) gone {time.monotonic() - t0:.1f} s after SIGKILL during startup")
