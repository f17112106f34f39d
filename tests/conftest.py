"""Shared test helpers: pytester, a fast-settings runner for inner sessions, and one real tiny vLLM engine.

- ``run_llmperf(pytester, *args, subprocess=False, env=None)`` runs an inner pytest session with the plugin
  and fast ``--llmperf-*`` settings (a tiny workload, results and baselines under the pytester folder,
  ``LLMPERF_TOPOLOGY=none`` unless the caller sets a topology). Explicit ``args`` win over the defaults.
- ``tiny_engine``: one real vLLM CPU engine (tiny-llama, dummy weights), module-scoped so it never overlaps
  with the engines that ``tests/engine`` starts (pytest runs modules one after another). Tests that use it
  are marked ``engine``.
- ``wait_for_no_vllm()``: waits (bounded) until no foreign vLLM server runs on this shared 2-core machine,
  so our engines do not compete with another engineer's for the cores.
"""

from __future__ import annotations

import os
import subprocess as _subprocess
import time
from collections.abc import Iterator
from unittest import mock

import pytest

pytest_plugins = ["pytester"]

#: fast inner-session settings; a caller's own ``--llmperf-X`` replaces the default for X
FAST_ARGS: dict[str, str] = {
    "--llmperf-modes": "single",
    "--llmperf-concurrency": "2",
    "--llmperf-input-lens": "32",
    "--llmperf-output-len": "8",
    "--llmperf-num-requests": "4",
    "--llmperf-repeats": "3",
    "--llmperf-warmup": "1",
    "--llmperf-results": "results.json",
    "--llmperf-baseline-dir": "baselines",
    "--llmperf-report-dir": "report",
}
SERVER_PATTERN = "vllm.entrypoints"


def fast_args(args: tuple[str, ...]) -> list[str]:
    given = {a.split("=", 1)[0] for a in args if a.startswith("--llmperf-")}
    out: list[str] = []
    for opt, value in FAST_ARGS.items():
        if opt not in given:
            out += [opt, value]
    return out + ["-p", "no:cacheprovider", *args]


def _preload_heavy_modules() -> None:
    """Import what inner sessions import lazily, once, in this process.

    In-process ``pytester.runpytest`` restores ``sys.modules`` after each inner run, so a package first
    imported inside one (numpy's C-extension submodules under scipy.stats, matplotlib) would be imported a
    second time by the next run, giving two copies of numpy's enums ("_CopyMode.IF_NEEDED is neither True
    nor False"). Imported here first, they are part of the snapshot and survive.
    """
    import aiohttp  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import scipy.stats  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def _heavy_modules_before_pytester() -> None:
    """Session-scoped, so it runs before any (function-scoped) ``pytester`` takes its sys.modules snapshot."""
    _preload_heavy_modules()


def run_llmperf(pytester: pytest.Pytester, *args: str, subprocess: bool = False,
                env: dict[str, str] | None = None, timeout: float | None = None) -> pytest.RunResult:
    """Run the plugin on the pytester folder with fast settings (see FAST_ARGS)."""
    environ = {"LLMPERF_TOPOLOGY": os.environ.get("LLMPERF_TOPOLOGY", "none"), **(env or {})}
    with mock.patch.dict(os.environ, environ):
        if subprocess:
            return pytester.runpytest_subprocess(*fast_args(args), timeout=timeout)
        return pytester.runpytest(*fast_args(args))


def vllm_servers() -> list[str]:
    """Command lines of every running vLLM OpenAI server on this machine (ours or not)."""
    out = _subprocess.run(["pgrep", "-af", SERVER_PATTERN], capture_output=True, text=True, check=False)
    return [ln for ln in out.stdout.splitlines() if "pgrep" not in ln and "-m " + SERVER_PATTERN in ln]


def servers_on_port(port: int) -> list[str]:
    return [ln for ln in vllm_servers() if f"--port {port} " in ln + " "]


def foreign_vllm_servers() -> list[str]:
    """vLLM servers that this test process did not start (another engineer's, on this shared machine)."""
    from pytest_llmperf.engine.server import descendants

    ours = set(descendants(os.getpid()))
    return [ln for ln in vllm_servers() if int(ln.split()[0]) not in ours]


def wait_for_no_vllm(limit_s: float = 300.0) -> None:
    """Wait (bounded) until no foreign vLLM server runs, so our engines do not compete with it for the
    two cores. Our own running servers (descendants of this process) do not count."""
    deadline = time.monotonic() + limit_s
    while foreign_vllm_servers() and time.monotonic() < deadline:
        time.sleep(2.0)


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real vLLM CPU engine (tiny-llama) for the tests of one module; stopped at module end."""
    from pytest_llmperf.engine.server import VLLMServer
    from pytest_llmperf.engine.spec import EngineSpec

    wait_for_no_vllm()
    server = VLLMServer(EngineSpec(model="tiny-llama", backend="cpu"),
                        log_dir=tmp_path_factory.mktemp("tiny-engine"),
                        progress=lambda msg: print(f"[tiny_engine] {msg}"))
    with server:
        print(f"[tiny_engine] startup {server.startup_s:.1f} s on port {server.port}")
        yield server
    assert not servers_on_port(server.port), "tiny_engine left a vLLM process behind"

