"""Engine guard: a tiny process between pytest and the engine that takes the engine's whole tree down when
pytest goes away, however it goes (SIGKILL included) and in every phase (startup included).

Why: ``PR_SET_PDEATHSIG`` on vLLM's API server is not enough. The signal is swallowed during vLLM's
initialisation, and EngineCore and the workers do not notice the API server's death; after a SIGKILL of pytest
during startup a working engine stayed behind (issue 14, 2 of 2 tries) holding the GPUs for the next job.

How: pytest starts ``python guard.py --grace-s S -- ENGINE ARGV...`` as the leader of a new process group with
a pipe on its stdin whose write end only pytest holds. The guard makes itself a child subreaper (orphaned
descendants are re-parented to it, so none escapes by double-forking or ``setsid``), starts the engine in its
process group, and then waits. When the pipe reports EOF (pytest's end closed: pytest exited or was killed), its
parent changes, or it gets SIGTERM/SIGHUP, it SIGTERMs every process of its group and every descendant,
waits ``--grace-s``, SIGKILLs what is left, reaps, and exits. When the engine exits on its own, the guard kills
what the engine left (workers), then exits with the engine's status (re-raising the engine's fatal signal on
itself, so the caller's ``Popen.returncode`` is the engine's, e.g. ``-9``). The engine also gets
``PR_SET_PDEATHSIG`` = SIGTERM, in case the guard itself is SIGKILLed.

Stdlib only: it is run by path, so it works whatever the engine's Python is.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main", "family"]

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_STOP: list[str] = []


def _prctl(option: int, arg: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, pgid, state) of ``pid`` from /proc, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[2]), fields[0]
    except (OSError, IndexError, ValueError):
        return None


def family(root: int) -> list[int]:
    """Live (non-zombie) descendants of ``root`` and members of ``root``'s process group, except ``root``."""
    own_group = os.getpgid(root) if _stat(root) else None
    children: dict[int, list[int]] = {}
    out: set[int] = set()
    for entry in Path("/proc").glob("[0-9]*"):
        st = _stat(int(entry.name))
        if st is None or st[2] == "Z":
            continue
        children.setdefault(st[0], []).append(int(entry.name))
        if own_group is not None and st[1] == own_group:
            out.add(int(entry.name))
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    out.discard(root)
    return sorted(out)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _kill_tree(grace_s: float) -> None:
    me = os.getpid()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in family(me):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap()
            if not family(me):
                return
            time.sleep(0.05)
    _reap()


def _log(msg: str) -> None:
    sys.stdout.write(f"[llmperf-guard {os.getpid()}] {msg}\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if "--" not in argv:
        sys.stderr.write("usage: guard.py [--grace-s S] -- ENGINE ARGV...\n")
        return 2
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1:]
    grace_s = float(opts[opts.index("--grace-s") + 1]) if "--grace-s" in opts else 5.0
    parent = os.getppid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # pytest decides on Ctrl-C; it closes the pipe or SIGTERMs
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: _STOP.append(signal.Signals(s).name))

    def _engine_setup() -> None:  # pragma: no cover - between fork and exec
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    engine = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_engine_setup)
    reason = None
    while reason is None:
        code = engine.poll()
        if code is not None:
            break
        if _STOP:
            reason = f"got {_STOP[0]}"
            break
        ready, _, _ = select.select([0], [], [], 0.2)
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                reason = "pytest went away (its pipe closed)"
        if reason is None and os.getppid() != parent:
            reason = f"pytest (pid {parent}) died"
    if reason is not None:
        _log(f"{reason}: stopping engine {engine.pid} and its process tree")
        _kill_tree(grace_s)
        code = engine.wait()
    else:
        left = family(os.getpid())
        if left:
            _log(f"engine {engine.pid} exited with {code}; killing {len(left)} process(es) it left: {left}")
        _kill_tree(min(grace_s, 2.0))
    code = engine.returncode
    if code is not None and code < 0:  # die of the engine's signal, so the caller sees the same status
        with contextlib.suppress(OSError, ValueError):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return 0 if code is None else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
