"""EnginePool: one running engine per distinct EngineSpec per session, stopped when no test needs it.

Engine startup takes minutes (45-140 s on the CPU backend, 65-300+ s on H200), so it must never be paid
per test. The plugin orders tests by spec, tells the pool how many tests need each spec (``expect``), and
``release``-s a spec after each test; the engine stops when its count reaches zero, before the next spec's
engine starts, so two engines never compete for the same GPUs or cores. ``close`` stops everything
(session end, Ctrl-C, atexit).

Before handing an engine to the next test, ``get`` checks it whole (``VLLMServer.health_problem``: the guard
and API server, every engine process noted at startup, and ``/health``). An engine that lost a worker, or
stopped answering, is never handed out again: it is stopped and started afresh, and the restart is reported
with the cause and the old engine's log path (``restarts``).
"""

from __future__ import annotations

import atexit
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_llmperf.engine.server import VLLMServer
from pytest_llmperf.errors import EngineStartError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_llmperf.engine.spec import EngineSpec

__all__ = ["EnginePool", "EngineStart"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStart:
    """A record of one engine start: for the report's time split (startup vs load)."""

    label: str
    spec: EngineSpec
    startup_s: float
    ok: bool


class EnginePool:
    def __init__(self, *, log_dir: Path | None = None, progress: Callable[[str], None] | None = None,
                 server_factory: Callable[..., VLLMServer] = VLLMServer) -> None:
        self._servers: dict[EngineSpec, VLLMServer] = {}
        self._failed: dict[EngineSpec, EngineStartError] = {}
        self._remaining: Counter[EngineSpec] = Counter()
        self._log_dir, self._progress, self._factory = log_dir, progress, server_factory
        self.starts: list[EngineStart] = []
        #: one line per engine restarted because it was found dead between tests (cause and log path)
        self.restarts: list[str] = []
        atexit.register(self.close)

    def expect(self, spec: EngineSpec, count: int = 1) -> None:
        """Declare that ``count`` more tests will use ``spec``."""
        self._remaining[spec] += count

    def get(self, spec: EngineSpec) -> VLLMServer:
        """The running engine for ``spec``, started on first use. A spec that failed to start fails fast
        for every later test with the same error, rather than paying the startup timeout again."""
        if spec in self._failed:
            raise self._failed[spec]
        server = self._servers.get(spec)
        problem = _health_problem(server) if server is not None else None
        if server is not None and problem is None:
            return server
        if server is not None:  # died since the last test: report it, stop what is left, start afresh
            old_log = getattr(server, "log_path", "?")
            note = f"engine {spec.label} {problem}; restarting it (log of the dead engine: {old_log})"
            self.restarts.append(note)
            log.warning("%s", note)
            if self._progress:
                self._progress(note)
            self._servers.pop(spec)
            server.stop()
        for other in [s for s in self._servers if self._remaining[s] <= 0]:
            self._stop(other)
        t0 = time.monotonic()
        server = self._factory(spec, log_dir=self._log_dir, progress=self._progress)
        try:
            server.start()
        except EngineStartError as exc:
            self._failed[spec] = exc
            self.starts.append(EngineStart(spec.label, spec, time.monotonic() - t0, False))
            raise
        self.starts.append(EngineStart(spec.label, spec, server.startup_s or 0.0, True))
        self._servers[spec] = server
        return server

    def release(self, spec: EngineSpec) -> None:
        """One test using ``spec`` is done; stop the engine when no remaining test needs it."""
        self._remaining[spec] -= 1
        if self._remaining[spec] <= 0 and spec in self._servers:
            self._stop(spec)

    def running(self) -> list[EngineSpec]:
        return [s for s, srv in self._servers.items() if srv.alive()]

    def _stop(self, spec: EngineSpec) -> None:
        server = self._servers.pop(spec, None)
        if server is not None:
            if self._progress:
                self._progress(f"stopping engine {spec.label}")
            server.stop()

    def close(self) -> None:
        for spec in list(self._servers):
            self._stop(spec)


def _health_problem(server: VLLMServer) -> str | None:
    """The server's own one-line health problem (whole process tree and /health), or None if it can serve."""
    check = getattr(server, "health_problem", None)
    if check is not None:
        return check()  # type: ignore[no-any-return]
    return None if server.alive() else "is no longer alive"
