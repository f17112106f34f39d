"""VLLMServer helpers and the engine pool, without vLLM: log parsing, process trees, ports, and the pool's
start-once / stop-at-zero / cache-a-failed-start logic with a fake server factory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmperf.engine.pool import EnginePool
from pytest_llmperf.engine.server import VLLMServer, descendants, error_summary, free_port, log_tail, port_in_use
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import EngineDiedError, EngineStartError, UsageError

VLLM_TAIL = """\
INFO 01-01 00:00:00 api_server.py:100] vLLM API server version 0.32.0
Traceback (most recent call last):
  File "/x/vllm/engine/arg_utils.py", line 10, in create_engine_config
    raise ValueError(msg)
ValueError: max_model_len 99999 is larger than the model's max_position_embeddings 2048
"""


def test_error_summary_prefers_the_final_error_line() -> None:
    assert error_summary(VLLM_TAIL) == (
        "ValueError: max_model_len 99999 is larger than the model's max_position_embeddings 2048")


def test_error_summary_argparse_error_and_none() -> None:
    tail = "usage: api_server.py [-h]\napi_server.py: error: argument --dtype: invalid choice: 'nosuch'\n"
    assert error_summary(tail) == "api_server.py: error: argument --dtype: invalid choice: 'nosuch'"
    assert error_summary("INFO all good\nINFO still good\n") is None
    assert error_summary("Traceback (most recent call last):\n") == "Traceback (most recent call last):"


def test_log_tail_last_lines_and_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, lines=3) == "line 97\nline 98\nline 99"
    assert log_tail(tmp_path / "missing.log") == "(no log)"


def test_log_tail_of_a_huge_log_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"x" * 1_000_000 + b"\nlast line\n")
    assert log_tail(log, lines=1) == "last line"


def test_descendants_finds_children_and_grandchildren() -> None:
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        family: list[int] = []
        for _ in range(100):
            family = descendants(os.getpid())
            if proc.pid in family and len(descendants(proc.pid)) == 1:
                break
            import time
            time.sleep(0.05)
        assert proc.pid in family
        grandchildren = descendants(proc.pid)
        assert len(grandchildren) == 1 and grandchildren[0] in family
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert descendants(proc.pid) == []


def test_free_port_and_port_in_use() -> None:
    port = free_port()
    assert not port_in_use(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert port_in_use(port)


def test_user_port_in_use_is_a_usage_error_naming_the_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} on 127.0.0.1 is already in use"):
            VLLMServer(EngineSpec(), port=port)


def test_free_user_port_is_used(tmp_path: Path) -> None:
    port = free_port()
    server = VLLMServer(EngineSpec(), port=port, log_dir=tmp_path)
    assert server.port == port and server.endpoint == f"http://127.0.0.1:{port}/v1"
    assert server.log_path.parent == tmp_path and str(port) in server.log_path.name
    server.stop()  # never started: a no-op


class _FakeProcServer(VLLMServer):
    """The real start/stop/check_alive logic around a stand-in process (the ``_spawn``/``_probe`` seams)."""

    def __init__(self, *args: object, script: str, healthy: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._script, self._healthy = script, healthy

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen([sys.executable, "-c", self._script], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _probe(self) -> bool:
        return self._healthy


def test_early_exit_raises_start_error_with_the_servers_error(tmp_path: Path) -> None:
    script = "import sys; print('ValueError: bad --max-model-len abc', flush=True); sys.exit(3)"
    server = _FakeProcServer(EngineSpec(), log_dir=tmp_path, script=script, healthy=False)
    with pytest.raises(EngineStartError) as exc:
        server.start()
    msg = str(exc.value)
    assert "exited with code 3 during startup" in msg
    assert "server error: ValueError: bad --max-model-len abc" in msg
    assert str(server.log_path) in msg
    assert server.proc is None


def test_start_timeout_kills_the_process_group(tmp_path: Path) -> None:
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)")
    spawned: list[int] = []

    class Recording(_FakeProcServer):
        def _spawn(self) -> subprocess.Popen[bytes]:
            proc = super()._spawn()
            spawned.append(proc.pid)
            return proc

    server = Recording(EngineSpec(startup_timeout_s=1.0), log_dir=tmp_path, script=script, healthy=False)
    with pytest.raises(EngineStartError, match=r"not healthy after 1 s \(startup timeout\)"):
        server.start()
    assert spawned and spawned[0] not in descendants(os.getpid())
    assert not any(p for p in descendants(os.getpid()) if _cmdline(p).endswith("time.sleep(120)"))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_check_alive_after_the_process_died(tmp_path: Path) -> None:
    server = _FakeProcServer(EngineSpec(), log_dir=tmp_path, script="import time; time.sleep(60)", healthy=True)
    server.start()
    try:
        assert server.alive() and server.startup_s is not None
        server.check_alive()
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        with pytest.raises(EngineDiedError, match=r"exited with code -9 while in use"):
            server.check_alive()
        assert not server.alive()
    finally:
        server.stop()
    server.stop()  # idempotent


# -- pool -------------------------------------------------------------------------------------------------
class FakeServer:
    def __init__(self, spec: EngineSpec, log: list[tuple[str, str]], fail: bool = False) -> None:
        self.spec, self._log, self._fail = spec, log, fail
        self.running = False
        self.startup_s: float | None = None

    def start(self) -> FakeServer:
        self._log.append(("start", self.spec.label))
        if self._fail:
            raise EngineStartError(f"vLLM engine {self.spec.label} exited with code 1 during startup")
        self.running, self.startup_s = True, 1.5
        return self

    def stop(self) -> None:
        self._log.append(("stop", self.spec.label))
        self.running = False

    def alive(self) -> bool:
        return self.running


def make_pool(failing: set[str] = frozenset()) -> tuple[EnginePool, list[tuple[str, str]]]:
    events: list[tuple[str, str]] = []

    def factory(spec: EngineSpec, **_: object) -> FakeServer:
        return FakeServer(spec, events, fail=spec.label in failing)

    pool = EnginePool(server_factory=factory)  # type: ignore[arg-type]
    return pool, events


def test_pool_starts_each_spec_once_and_stops_at_zero() -> None:
    pool, events = make_pool()
    single, tp2 = EngineSpec(), EngineSpec(tp=2)
    pool.expect(single, 2)
    pool.expect(tp2, 1)
    a = pool.get(single)
    pool.release(single)
    assert pool.get(single) is a and events == [("start", "single")]
    pool.release(single)
    assert events[-1] == ("stop", "single") and pool.running() == []
    pool.get(tp2)
    pool.release(tp2)
    assert events == [("start", "single"), ("stop", "single"), ("start", "tp2"), ("stop", "tp2")]
    assert [(s.label, s.ok, s.startup_s) for s in pool.starts] == [("single", True, 1.5), ("tp2", True, 1.5)]
    pool.close()
    assert len(events) == 4


def test_pool_stops_an_idle_engine_before_starting_another() -> None:
    pool, events = make_pool()
    single, pp2 = EngineSpec(), EngineSpec(pp=2)
    pool.expect(single, 1)
    pool.get(single)
    pool._remaining[single] = 0  # its count reached zero without a release (e.g. interrupted test)
    pool.expect(pp2, 1)
    pool.get(pp2)
    assert events == [("start", "single"), ("stop", "single"), ("start", "pp2")]
    pool.close()
    assert events[-1] == ("stop", "pp2")


def test_pool_caches_a_failed_start_and_reraises_it() -> None:
    pool, events = make_pool(failing={"tp2"})
    tp2 = EngineSpec(tp=2)
    pool.expect(tp2, 3)
    with pytest.raises(EngineStartError) as first:
        pool.get(tp2)
    with pytest.raises(EngineStartError) as second:
        pool.get(tp2)
    assert second.value is first.value
    assert events == [("start", "tp2")]
    assert [(s.label, s.ok) for s in pool.starts] == [("tp2", False)]


def test_pool_restarts_an_engine_that_died() -> None:
    pool, events = make_pool()
    spec = EngineSpec()
    pool.expect(spec, 2)
    first = pool.get(spec)
    first.running = False  # type: ignore[attr-defined]
    second = pool.get(spec)
    assert second is not first
    assert events == [("start", "single"), ("stop", "single"), ("start", "single")]
    pool.close()
