"""Engines die with pytest in every phase, and a dead worker is never handed to the next test (issue 14).

The engine here is :mod:`tests.support.fake_engine`: a process tree as hostile to cleanup as vLLM's (the API
server and both workers ignore SIGTERM and the parent-death signal, one worker leaves the process group),
started through the real ``VLLMServer._spawn`` and its guard. A "pytest" parent process starts it and is
SIGKILLed at several moments; afterwards no process of the tree may remain. Every process of one test carries
a unique tag in its command line, which is how leftovers are found.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_llmperf.engine.pool import EnginePool
from pytest_llmperf.engine.server import VLLMServer, _die_with_parent
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import EngineDiedError

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "support" / "fake_engine.py"
GRACE_S = 1.0
#: generous bound for "no process left": guard grace + SIGKILL wait + process start-up on a loaded 2-core box
CLEAN_WITHIN_S = 30.0

_PARENT = """
import dataclasses, sys, time
sys.path.insert(0, {root!r})
from pytest_llmperf.engine.server import VLLMServer
from pytest_llmperf.engine.spec import EngineSpec

class FakeEngine(VLLMServer):
    guard_grace_s = {grace}

    def _spawn(self):
        proc = super()._spawn()
        print("SPAWNED", flush=True)  # the guard process exists; the engine may not yet
        return proc

srv = FakeEngine(EngineSpec(startup_timeout_s=300), log_dir={log_dir!r}, progress=lambda m: None)
srv.plan = dataclasses.replace(srv.plan, argv=(sys.executable, {fake!r}, "--port", str(srv.port), *{fake_args!r}))
srv.start()
print("HEALTHY", flush=True)
time.sleep(600)
"""


def tagged(tag: str) -> list[int]:
    """Live (non-zombie) processes whose command line carries ``tag``."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if tag.encode() not in (entry / "cmdline").read_bytes():
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        out.append(int(entry.name))
    return out


def wait_until_gone(tag: str, limit_s: float = CLEAN_WITHIN_S) -> tuple[float, list[int]]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        left = tagged(tag)
        if not left:
            return time.monotonic() - t0, []
        time.sleep(0.1)
    return time.monotonic() - t0, tagged(tag)


def kill_all(tag: str) -> None:
    for pid in tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def tag() -> Iterator[str]:
    value = f"llmperf-fault-{uuid.uuid4().hex[:12]}"
    yield value
    kill_all(value)  # never leave anything behind, whatever the test did


def fake_args(tag: str, pids: Path, startup_s: float, worker_dies_after_s: float | None = None) -> list[str]:
    args = ["--startup-s", str(startup_s), "--pids", str(pids), "--tag", tag]
    if worker_dies_after_s is not None:
        args += ["--worker-dies-after-s", str(worker_dies_after_s)]
    return args


def wait_for(pred, limit_s: float = 30.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("moment", ["spawned", "startup", "healthy"])
def test_engine_dies_with_a_sigkilled_pytest_in_every_phase(tmp_path: Path, tag: str, moment: str) -> None:
    pids = tmp_path / "pids.json"
    startup_s = 1.0 if moment == "healthy" else 60.0
    script = tmp_path / "parent.py"
    script.write_text(_PARENT.format(root=str(ROOT), grace=GRACE_S, log_dir=str(tmp_path), fake=str(FAKE),
                                     fake_args=fake_args(tag, pids, startup_s)))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "SPAWNED"
        if moment == "startup":
            assert wait_for(pids.exists), "the fake engine never started"
        elif moment == "healthy":
            assert parent.stdout.readline().strip() == "HEALTHY"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        gone_after_s, left = wait_until_gone(tag)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert left == [], f"processes left {gone_after_s:.1f} s after pytest was SIGKILLed ({moment}): {left}"
    print(f"SIGKILL of pytest while {moment}: engine tree gone after {gone_after_s:.2f} s")
    if moment != "spawned":  # the engine log is kept and says why the engine stopped
        log_text = next(tmp_path.glob("vllm-*.log")).read_text()
        assert "pytest went away (its pipe closed): stopping engine" in log_text


def test_without_the_guard_the_fake_engine_outlives_its_parent(tmp_path: Path, tag: str) -> None:
    """The control: started the old way (own session + PR_SET_PDEATHSIG only), the tree survives a SIGKILLed
    parent, as vLLM did (issue 14). Proves the fake is hostile enough for the test above to mean something."""
    pids = tmp_path / "pids.json"
    script = tmp_path / "old_parent.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pytest_llmperf.engine.server import _die_with_parent
        subprocess.Popen([sys.executable, {str(FAKE)!r}, *{fake_args(tag, pids, 60.0)!r}],
                         start_new_session=True, preexec_fn=_die_with_parent)
        print("SPAWNED", flush=True)
        time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "SPAWNED"
    assert wait_for(pids.exists)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    _, left = wait_until_gone(tag, limit_s=3.0)
    assert len(left) == 3  # API server and both workers survived
    assert _die_with_parent is not None


# -- a dead worker behind a live API server ---------------------------------------------------------------------

class FakeEngine(VLLMServer):
    guard_grace_s = GRACE_S
    extra: list[str] = []

    def __init__(self, spec: EngineSpec, **kwargs: object) -> None:
        super().__init__(spec, **kwargs)  # type: ignore[arg-type]
        self.plan = dataclasses.replace(self.plan, argv=(sys.executable, str(FAKE), "--port", str(self.port),
                                                         *self.extra))


def test_a_dead_worker_fails_check_alive_with_its_last_lines_and_the_log(tmp_path: Path, tag: str) -> None:
    class Dying(FakeEngine):
        extra = fake_args(tag, tmp_path / "pids.json", startup_s=0.2, worker_dies_after_s=1.0)

    server = Dying(EngineSpec(startup_timeout_s=60), log_dir=tmp_path, progress=lambda m: None)
    with server:
        server.check_alive()
        worker_pid = json.loads((tmp_path / "pids.json").read_text())["workers"][1]
        assert server._watched.get(worker_pid) == "VLLM::Worker_TP1"
        t0 = time.monotonic()
        assert wait_for(lambda: not server.alive(), limit_s=30)
        detected_s = time.monotonic() - t0
        assert server.proc is not None and server.proc.poll() is None and server._probe()  # the old check passed
        with pytest.raises(EngineDiedError) as exc:
            server.check_alive()
    msg = str(exc.value)
    assert f"engine process VLLM::Worker_TP1 (pid {worker_pid}) died" in msg
    assert f"log: {server.log_path}" in msg
    assert f"--- last lines of VLLM::Worker_TP1 (pid {worker_pid}) ---" in msg
    assert "illegal memory access" in msg
    _, left = wait_until_gone(tag)
    assert left == []
    print(f"dead worker found {detected_s:.2f} s after the check started waiting")


def test_the_pool_restarts_an_engine_whose_worker_died(tmp_path: Path, tag: str) -> None:
    class Dying(FakeEngine):
        extra = fake_args(tag, tmp_path / "pids.json", startup_s=0.2, worker_dies_after_s=0.5)

    notes: list[str] = []
    pool = EnginePool(log_dir=tmp_path, progress=notes.append, server_factory=Dying)
    spec = EngineSpec(startup_timeout_s=60)
    pool.expect(spec, 2)
    try:
        first = pool.get(spec)
        first_log = first.log_path
        assert wait_for(lambda: bool(first.dead_processes()), limit_s=30)
        pool.release(spec)
        second = pool.get(spec)
        assert second is not first and first.proc is None
        assert len(pool.restarts) == 1 and "VLLM::Worker_TP1" in pool.restarts[0]
        assert str(first_log) in pool.restarts[0] and pool.restarts[0] in notes
    finally:
        pool.close()
    _, left = wait_until_gone(tag)
    assert left == []
