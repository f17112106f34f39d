"""Live progress: engine starts (with the phase vLLM is in), each run and each wave of requests.

Engine starts take a minute on the CPU backend and minutes on GPUs; without a line on the terminal a user
thinks the session hangs. :class:`Progress` writes those lines

- under pytest, through the terminal reporter with pytest's output capture suspended for the write (the
  way pytest's own live logging does it), so a line written from inside a fixture reaches the terminal at
  once instead of the test's captured output; nothing is written under ``-q``;
- outside pytest (the ``llmperf`` CLI), to a stream (stderr).

:func:`detect_engine_phase` is a pure function over the lines of a vLLM server log that names the startup
phase reached (loading weights, torch.compile, capturing CUDA graphs, ...); the engine layer calls it while
it waits for ``/health`` and hands :func:`engine_phase_line` to its ``progress`` callable. This module
imports nothing from the package, so every layer may use it.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

__all__ = ["ENGINE_PHASES", "PREFIX", "Progress", "detect_engine_phase", "engine_phase_line"]

PREFIX = "[llmperf]"

#: (phase shown to the user, substrings of vLLM log lines that start it), in startup order. Taken from the
#: log calls of vLLM 0.1x-0.3x (``vllm/v1/worker/*_model_runner.py``, ``model_loader/``,
#: ``compilation/backends.py``, ``v1/engine/core.py``, ``entrypoints/openai/api_server.py``).
ENGINE_PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("starting the engine process", ("vLLM server version", "vLLM API server version",
                                     "Initializing a V1 LLM engine", "Initializing an LLM engine")),
    ("loading weights", ("Starting to load model", "Loading safetensors checkpoint", "Loading pt checkpoint")),
    ("weights loaded", ("Model loading took", "Loading weights took")),
    ("compiling (torch.compile)", ("Warming up model for the compilation", "Dynamo bytecode transform",
                                   "Compiling a graph", "torch.compile takes", "Compiling model")),
    ("profiling memory and sizing the KV cache", ("Available KV cache memory", "KV cache size",
                                                  "# GPU blocks", "# CPU blocks", "Maximum concurrency for")),
    ("capturing CUDA graphs", ("Capturing CUDA graph", "Capturing cudagraph", "CUDA graph capturing")),
    ("warming up", ("Graph capturing finished", "Warming up done")),
    ("starting the API server", ("init engine (profile, create kv cache", "Starting vLLM server on",
                                 "Starting vLLM API server", "Available routes are",
                                 "Application startup complete")),
)
_PERCENT = re.compile(r"(\d{1,3})%\|")


def detect_engine_phase(lines: Iterable[str]) -> str | None:
    """The startup phase a vLLM log has reached: the phase of the last line that names one, or None.

    A CUDA-graph capture line with a tqdm bar adds its percentage (``capturing CUDA graphs 45%``).
    """
    phase: str | None = None
    for line in lines:
        name = next((name for name, markers in ENGINE_PHASES if any(m in line for m in markers)), None)
        if name is None:
            continue  # the first phase a line names wins: the config dump of the first line names many
        phase = name
        if name == "capturing CUDA graphs":
            pct = _PERCENT.findall(line)
            if pct:
                phase = f"{name} {pct[-1]}%"
    return phase


def engine_phase_line(label: str, phase: str, elapsed_s: float) -> str:
    """``engine tp2: loading weights (12 s)``: the line shown when an engine's startup phase changes."""
    return f"engine {label}: {phase} ({elapsed_s:.0f} s)"


class Progress:
    """Writes progress lines to the terminal (see the module docstring). ``write`` takes one line.

    ``verbosity``: below 0 nothing is written (``-q``); 0 writes a wave line at most every
    ``min_interval_s`` (and always the last); 1 or more writes every wave.
    """

    def __init__(self, write: Callable[[str], None], *, verbosity: int = 0, min_interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write, self.verbosity, self.min_interval_s, self._clock = write, verbosity, min_interval_s, clock
        self._notes_once: set[str] = set()

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def for_pytest(cls, config: Any) -> Progress:
        """Lines through pytest's terminal reporter, capture suspended while writing; silent under ``-q``."""

        def write(text: str) -> None:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is None:
                return
            capman = config.pluginmanager.get_plugin("capturemanager")
            if capman is None:
                reporter.write_line(text)
                return
            with capman.global_and_fixture_disabled():
                reporter.write_line(text)
                reporter.flush()

        return cls(write, verbosity=config.get_verbosity())

    @classmethod
    def for_stream(cls, stream: IO[str] | None = None, verbosity: int = 0) -> Progress:
        """Lines on ``stream`` (default: stderr at the time of writing), for the CLI."""

        def write(text: str) -> None:
            out = stream or sys.stderr
            out.write(text + "\n")
            out.flush()

        return cls(write, verbosity=verbosity)

    # -- lines ------------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        """One ``[llmperf] text`` line (also the ``progress=`` callable of the engine server and pool)."""
        if self.verbosity >= 0:
            self._write(f"{PREFIX} {text}")

    __call__ = message

    def once(self, key: str, text: str) -> None:
        """``text`` the first time ``key`` is seen this session, never again (e.g. "no baseline here")."""
        if key not in self._notes_once:
            self._notes_once.add(key)
            self.message(text)

    def engine_phase(self, label: str, phase: str, elapsed_s: float) -> None:
        self.message(engine_phase_line(label, phase, elapsed_s))

    def run_started(self, test_id: str, run_index: int, repeats: int, num_requests: int, concurrency: int,
                    request_rate: float | None = None) -> None:
        """``run_index`` counts from 0; shown as ``run 1/K``."""
        load = f"{request_rate:g} req/s open loop" if request_rate else "closed loop"
        self.message(f"{test_id}: run {run_index + 1}/{repeats}: {num_requests} requests, concurrency "
                     f"{concurrency}, {load}")

    def run_done(self, test_id: str, run_index: int, repeats: int, duration_s: float, completed: int,
                 failed: int, output_tok_s: float | None = None) -> None:
        tput = f", {output_tok_s:.1f} output tok/s" if output_tok_s is not None else ""
        self.message(f"{test_id}: run {run_index + 1}/{repeats} done in {duration_s:.1f} s: {completed} "
                     f"completed, {failed} failed{tput}")

    def waves(self, concurrency: int, label: str = "") -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callable for the load runner that writes a line per completed wave
        (``concurrency`` requests), throttled at verbosity 0; the last wave is always written."""
        size = max(1, int(concurrency))
        state = {"last_s": self._clock()}
        head = f"{label}: " if label else ""

        def on_request(done: int, total: int) -> None:
            if done % size and done < total:
                return  # not at a wave boundary
            waves_total = -(-total // size)
            wave = done // size if done % size == 0 else waves_total
            now = self._clock()
            if done < total and self.verbosity < 1 and now - state["last_s"] < self.min_interval_s:
                return
            state["last_s"] = now
            self.wave_done(head, wave, waves_total, done, total)

        return on_request

    def wave_done(self, head: str, wave: int, waves_total: int, done: int, total: int) -> None:
        self.message(f"{head}wave {wave}/{waves_total} done ({done}/{total} requests)")
