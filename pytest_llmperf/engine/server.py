"""VLLMServer: vLLM's OpenAI-compatible server as a subprocess on 127.0.0.1, started and stopped cleanly.

It runs under a guard (:mod:`pytest_llmperf.engine.guard`): the guard leads a new process group, holds the
read end of a pipe whose write end only this process holds, and kills the engine's whole tree when the pipe
closes (pytest exited or was SIGKILLed, in any phase, startup included). ``start()`` polls ``/health`` until
the startup timeout, notices an early exit, and raises :class:`EngineStartError` with the log tail and the
server's own error line. Once healthy it notes the engine's processes (the API server and every process vLLM
names ``VLLM::*``: EngineCore, workers); ``check_alive()``/``alive()`` then check all of them and ``/health``,
so a dead worker behind a live API server is found, named, and its last log lines shown. ``stop()`` sends
SIGTERM to the whole group (and to any descendant that left it), waits, then SIGKILLs, so no worker survives.
``_spawn`` and ``_probe`` are the seams tests replace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pytest_llmperf.engine import guard
from pytest_llmperf.engine.allreduce import (LinkEvidence, capture_failure_hint, emulation_violations,
                                             parse_link_evidence)
from pytest_llmperf.engine.backends import LaunchPlan, plan_launch
from pytest_llmperf.errors import EngineDiedError, EngineStartError, UsageError
from pytest_llmperf.progress import detect_engine_phase, engine_phase_line
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_llmperf.engine.spec import EngineSpec

__all__ = ["VLLMServer", "free_port", "port_in_use", "descendants", "log_tail", "error_summary", "fatal_line",
           "FATAL_STARTUP_MARKERS"]

log = logging.getLogger(__name__)
ProgressFn = Callable[[str], None]
#: log lines after which a starting engine never becomes healthy, though its API process may linger for minutes
#: (seen on 2 x H200, vLLM 0.26.0: a TP worker died of "illegal memory access" during CUDA-graph capture and the
#: server hung until the startup timeout)
FATAL_STARTUP_MARKERS = ("CUDA error:", "Engine core initialization failed", "CUDA out of memory",
                         "torch.OutOfMemoryError", "EngineDeadError", "NCCL error")
#: error lines vLLM logs on every healthy start (the synthetic tokenizer folder has no config.json by design)
_HARMLESS = ("Error parsing config for",)
_ERROR_MARKERS = ("Error", "error:", "Exception", "Traceback", "RuntimeError", "AssertionError", "CUDA out of memory")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (from /proc), children first; empty where /proc is missing."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def log_tail(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def fatal_line(text: str) -> str | None:
    """The first line of ``text`` carrying a fatal startup marker, or None."""
    for line in text.splitlines():
        if any(m in line for m in FATAL_STARTUP_MARKERS):
            return line.strip()
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the engine when the process that started it dies, however it dies (even SIGKILL),
    so an interrupted or killed pytest never leaves an engine holding GPUs."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def error_summary(tail: str) -> str | None:
    """The server's own last error line (e.g. ``ValueError: ...``), the cause a user needs first."""
    candidates = [ln.strip() for ln in tail.splitlines()
                  if any(m in ln for m in _ERROR_MARKERS) and not any(h in ln for h in _HARMLESS)]
    finals = [c for c in candidates if not c.startswith("Traceback") and not c.startswith("File ")]
    found = finals or candidates
    return found[-1] if found else None


class VLLMServer:
    """One vLLM server process for one :class:`EngineSpec`. Use as a context manager or start()/stop()."""

    #: seconds the guard gives the engine between SIGTERM and SIGKILL once pytest is gone
    guard_grace_s = 10.0

    def __init__(self, spec: EngineSpec, *, port: int | None = None, host: str = "127.0.0.1",
                 log_dir: Path | None = None, progress: ProgressFn | None = None) -> None:
        if port is not None and port_in_use(port, host):
            raise UsageError(f"port {port} on {host} is already in use by another process; "
                             f"leave the port unset to pick a free one")
        self.spec, self.host = spec, host
        self.port = port or free_port(host)
        self.plan: LaunchPlan = plan_launch(spec, self.port, host)
        self._log_dir = Path(log_dir or tempfile.mkdtemp(prefix="llmperf-engine-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._log_dir / f"vllm-{spec.label}-{self.port}.log"
        self._progress = progress or (lambda msg: log.info("%s", msg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._watched: dict[int, str] = {}
        #: what the engine's log says about its inter-GPU paths (all-reduce backends, NCCL transports)
        self.link_evidence = LinkEvidence()

    # -- seams -----------------------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.plan.env}
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child, closed below
        try:
            logf.write(f"$ {' '.join(self.plan.argv)}\n".encode())
            logf.flush()
            # stdin=PIPE: the guard's lifeline; its write end stays with this process until stop()
            return subprocess.Popen(self.guarded_argv(), stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.PIPE, env=env, start_new_session=True)
        finally:
            logf.close()

    def _probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def guarded_argv(self) -> list[str]:
        """The engine's argv behind the guard (run by path with this interpreter: stdlib only)."""
        return [sys.executable, guard.__file__, "--grace-s", f"{self.guard_grace_s:g}", "--", *self.plan.argv]

    def _engine_processes(self) -> dict[int, str]:
        """pid -> title of the engine's long-lived processes: the API server (the guard's child) and every
        process vLLM titles ``<VLLM_PROCESS_NAME_PREFIX>::<name>`` (EngineCore, Worker_TP0, ...)."""
        if self.proc is None:
            return {}
        prefix = self.plan.env.get("VLLM_PROCESS_NAME_PREFIX", os.environ.get("VLLM_PROCESS_NAME_PREFIX", "VLLM"))
        out: dict[int, str] = {}
        for pid in guard.family(self.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if cmd.startswith(f"{prefix}::"):
                out[pid] = cmd.split()[0]
            elif ppid == self.proc.pid:
                out[pid] = "API server"
        return out

    def dead_processes(self) -> dict[int, str]:
        """The engine processes noted at startup that are gone (or zombies) now."""
        return {pid: title for pid, title in self._watched.items() if not _alive(pid)}

    # -- public ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def served_model_name(self) -> str:
        return self.plan.served_model_name

    def start(self) -> VLLMServer:
        timeout_s = self.spec.startup_timeout_s
        self._progress(f"starting vLLM engine {self.spec.label} ({self.spec.backend}, model {self.spec.model}) "
                       f"on port {self.port}; log: {self.log_path}")
        t0 = time.monotonic()
        self.proc = self._spawn()
        next_note = t0 + 15.0
        next_scan = t0 + 2.0
        phase: str | None = None
        try:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise self._start_error(f"exited with code {code} during startup")
                if self._probe():
                    break
                now = time.monotonic()
                if now >= next_scan:
                    tail = log_tail(self.log_path, lines=400)
                    fatal = fatal_line(tail)
                    if fatal:
                        raise self._start_error(f"failed during startup ({fatal[:200]})")
                    seen = detect_engine_phase(tail.splitlines())
                    if seen and seen != phase:  # loading weights, compiling, capturing CUDA graphs ...
                        phase = seen
                        self._progress(engine_phase_line(self.spec.label, phase, now - t0))
                    next_scan = now + 2.0
                if now - t0 > timeout_s:
                    raise self._start_error(f"was not healthy after {timeout_s:.0f} s (startup timeout)")
                if now >= next_note:
                    self._progress(f"  engine {self.spec.label}: {phase or 'starting'}, waiting for /health "
                                   f"({now - t0:.0f} s)")
                    next_note = now + 15.0
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        self._watched = self._engine_processes()
        self._check_links()
        self._progress(f"engine {self.spec.label} healthy after {self.startup_s:.1f} s")
        return self

    def _check_links(self) -> None:
        """Record the engine's inter-GPU paths from its log; under PCIe emulation, refuse an engine whose log
        does not prove that every peer path is off (the study would compare NVLink with NVLink)."""
        if self.spec.world_size < 2:
            return
        self.link_evidence = parse_link_evidence(log_tail(self.log_path, lines=20000, max_bytes=8 << 20))
        if self.plan.fusion is not None and self.plan.fusion.off:
            self._progress(f"  engine {self.spec.label}: {self.plan.fusion.reason}")
        if self.link_evidence.allreduce_backends or self.link_evidence.nccl_transports:
            self._progress(f"  engine {self.spec.label}: all-reduce {self.link_evidence.allreduce_backends or '-'}, "
                           f"NCCL transport {self.link_evidence.nccl_transports or '-'}")
        if not self.spec.emulate_pcie:
            return
        problems = emulation_violations(self.link_evidence, tp=self.spec.tp, pp=self.spec.pp)
        if problems:
            self.stop()
            shown = "\n".join(self.link_evidence.lines) or "(no such line in the log)"
            raise EngineStartError(
                f"PCIe emulation of {self.spec.label} is not proven: {'; '.join(problems)}\n"
                f"log lines: {shown}\nlog: {self.log_path}")

    def engine_facts(self) -> dict[str, object]:
        """What this engine ran with, beyond its spec: for the results file and the report."""
        facts: dict[str, object] = {"enforce_eager": self.plan.enforce_eager}
        if self.plan.fusion is not None and self.spec.world_size > 1:
            facts["allreduce_fusion_off"] = self.plan.fusion.off
            facts["allreduce_fusion_reason"] = self.plan.fusion.reason
        if self.spec.world_size > 1:
            facts.update(self.link_evidence.to_dict())
        return facts

    def _start_error(self, what: str) -> EngineStartError:
        tail = log_tail(self.log_path)
        cause = error_summary(tail)
        hint = capture_failure_hint(log_tail(self.log_path, lines=20000, max_bytes=8 << 20))
        return EngineStartError(
            f"vLLM engine {self.spec.label} (model {self.spec.model}, backend {self.spec.backend}) {what}"
            + (f"\nserver error: {cause}" if cause else "") + (f"\nhint: {hint}" if hint else "")
            + f"\ncommand: {' '.join(self.plan.argv)}\nlog: {self.log_path}\n--- log tail ---\n{tail}")

    def alive(self) -> bool:
        """Whether the engine can serve: its guard and API server run, no engine process noted at startup
        died, and ``/health`` answers 200."""
        return self.health_problem() is None

    def health_problem(self) -> str | None:
        """Why the engine cannot serve (one line), or None."""
        if self.proc is None:
            return "not started"
        if self.proc.poll() is not None:
            return f"exited with code {self.proc.returncode}"
        dead = self.dead_processes()
        if dead:
            return "engine process " + ", ".join(f"{t} (pid {p})" for p, t in sorted(dead.items())) + " died"
        if not self._probe():
            return f"{self.url}/health does not answer 200"
        return None

    def check_alive(self) -> None:
        """Raise :class:`EngineDiedError` naming the cause, with the log path and the last lines of the dead
        process (or of the log), if the engine exited, lost a process, or stopped answering ``/health``."""
        problem = self.health_problem()
        if problem is None or self.proc is None:
            return
        tail = log_tail(self.log_path)
        cause = error_summary(tail)
        lines = ""
        for pid, title in sorted(self.dead_processes().items()):
            own = [ln for ln in log_tail(self.log_path, lines=5000, max_bytes=1 << 20).splitlines()
                   if f"pid={pid}" in ln][-15:]
            if own:
                lines += f"\n--- last lines of {title} (pid {pid}) ---\n" + "\n".join(own)
        what = (f"exited with code {self.proc.returncode} while in use" if self.proc.poll() is not None
                else f"cannot serve: {problem}")
        raise EngineDiedError(
            f"vLLM engine {self.spec.label} {what}" + (f"\nserver error: {cause}" if cause else "")
            + f"\nlog: {self.log_path}{lines}\n--- log tail ---\n{tail}")

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the whole process group; idempotent. SIGTERM, wait ``grace_s``, then SIGKILL stragglers."""
        proc, self.proc = self.proc, None
        self._watched = {}
        if proc is None:
            return
        family = descendants(proc.pid)
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("engine %s did not stop in %.0f s; killing it", self.spec.label, grace_s)
        deadline = time.monotonic() + 5.0
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            for pid in family + descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            while time.monotonic() < deadline and any(_alive(p) for p in family):
                time.sleep(0.1)
            deadline = time.monotonic() + 5.0
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
