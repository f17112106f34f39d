"""VLLMServer: vLLM's OpenAI-compatible server as a subprocess on 127.0.0.1, started and stopped cleanly.

It runs in its own process group (``start_new_session``) with its output in a log file; ``start()`` polls
``/health`` until the startup timeout, notices an early exit, and raises :class:`EngineStartError` with the
log tail and the server's own error line. ``stop()`` sends SIGTERM to the whole group (and to any
descendant that left it), waits, then SIGKILLs, so no worker survives. ``_spawn`` and ``_probe`` are the
seams tests replace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pytest_llmperf.engine.backends import LaunchPlan, plan_launch
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import EngineDiedError, EngineStartError, UsageError

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


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
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
    return (finals or candidates or [None])[-1]


class VLLMServer:
    """One vLLM server process for one :class:`EngineSpec`. Use as a context manager or start()/stop()."""

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

    # -- seams -----------------------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.plan.env}
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child, closed below
        try:
            logf.write(f"$ {' '.join(self.plan.argv)}\n".encode())
            logf.flush()
            return subprocess.Popen(list(self.plan.argv), stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        finally:
            logf.close()

    def _probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

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
        try:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise self._start_error(f"exited with code {code} during startup")
                if self._probe():
                    break
                now = time.monotonic()
                if now >= next_scan:
                    fatal = fatal_line(log_tail(self.log_path, lines=400))
                    if fatal:
                        raise self._start_error(f"failed during startup ({fatal[:200]})")
                    next_scan = now + 2.0
                if now - t0 > timeout_s:
                    raise self._start_error(f"was not healthy after {timeout_s:.0f} s (startup timeout)")
                if now >= next_note:
                    self._progress(f"  engine {self.spec.label}: waiting for /health ({now - t0:.0f} s)")
                    next_note = now + 15.0
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        self._progress(f"engine {self.spec.label} healthy after {self.startup_s:.1f} s")
        return self

    def _start_error(self, what: str) -> EngineStartError:
        tail = log_tail(self.log_path)
        cause = error_summary(tail)
        return EngineStartError(
            f"vLLM engine {self.spec.label} (model {self.spec.model}, backend {self.spec.backend}) {what}"
            + (f"\nserver error: {cause}" if cause else "")
            + f"\ncommand: {' '.join(self.plan.argv)}\nlog: {self.log_path}\n--- log tail ---\n{tail}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`EngineDiedError` with the log tail if the engine exited while in use."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = log_tail(self.log_path)
            cause = error_summary(tail)
            raise EngineDiedError(
                f"vLLM engine {self.spec.label} exited with code {self.proc.returncode} while in use"
                + (f"\nserver error: {cause}" if cause else "") + f"\nlog: {self.log_path}\n--- log tail ---\n{tail}")

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the whole process group; idempotent. SIGTERM, wait ``grace_s``, then SIGKILL stragglers."""
        proc, self.proc = self.proc, None
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
