"""The plugin's fixtures, all prefixed ``llmperf_``. They only wire the session's objects to tests.

- ``llmperf_mode`` / ``llmperf_concurrency`` / ``llmperf_input_len`` / ``llmperf_request_rate``: sweep parameters;
  a test that asks for them (``llmperf_bench`` asks for the first three itself) is parametrized from the config (``--llmperf-modes``, ``--llmperf-concurrency``,
  ``--llmperf-input-lens``, ``--llmperf-request-rates`` or ``[tool.llmperf]``).
- ``llmperf_engine``: the running vLLM engine (a :class:`~pytest_llmperf.engine.server.VLLMServer`) for the
  test's spec, from the session-wide pool: each distinct spec starts once.
- ``llmperf_bench``: measure the engine with the test's workload; returns a :class:`~pytest_llmperf.bench.Bench`
  whose ``run()`` does K runs (exact lengths checked), ``gate()`` applies SLOs and the regression check, and
  ``measure_and_gate()`` does both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmperf.session import get_session

if TYPE_CHECKING:
    from pytest_llmperf.engine.server import VLLMServer
    from pytest_llmperf.bench import Bench
    from pytest_llmperf.session import LLMPerfSession

__all__ = ["llmperf_session", "llmperf_mode", "llmperf_concurrency", "llmperf_input_len", "llmperf_request_rate",
           "llmperf_engine", "llmperf_bench"]


@pytest.fixture(scope="session")
def llmperf_session(pytestconfig: pytest.Config) -> LLMPerfSession:
    """The session object: config, topology, engine pool, results."""
    return get_session(pytestconfig)


@pytest.fixture
def llmperf_mode(request: pytest.FixtureRequest) -> str:
    """Engine mode of this test (``single``, ``tp2``, ``pp2``...), parametrized from the config."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def llmperf_concurrency(request: pytest.FixtureRequest) -> int:
    """Concurrent requests of this test, parametrized from the config's concurrency sweep."""
    return int(getattr(request, "param", 1))


@pytest.fixture
def llmperf_input_len(request: pytest.FixtureRequest) -> int:
    """Prompt length in tokens of this test, parametrized from the config's input lengths."""
    return int(getattr(request, "param", 128))


@pytest.fixture
def llmperf_request_rate(request: pytest.FixtureRequest) -> float | None:
    """Open-loop request rate in req/s of this test (``--llmperf-request-rates``), or None for a closed loop;
    ``llmperf_bench`` uses it (Poisson arrivals, ``--llmperf-burstiness`` for gamma), capped by the concurrency."""
    return getattr(request, "param", None)


@pytest.fixture
def llmperf_engine(request: pytest.FixtureRequest, llmperf_session: LLMPerfSession) -> VLLMServer:
    """The running engine for this test's spec (started once per spec per session, stopped when unused)."""
    return llmperf_session.engine_for(request.node)


@pytest.fixture
def llmperf_bench(request: pytest.FixtureRequest, llmperf_session: LLMPerfSession, llmperf_engine: VLLMServer,
                  llmperf_mode: str, llmperf_concurrency: int, llmperf_input_len: int) -> Bench:
    """Measure ``llmperf_engine`` with this test's workload: ``llmperf_bench.run()`` then ``.gate()``.

    It depends on the mode, concurrency and input-length sweeps itself, so a test that only asks for
    ``llmperf_bench`` is parametrized over them (ids ``single-c4-in64`` as before) without naming fixtures it
    does not use. The request-rate sweep stays opt-in (naming ``llmperf_request_rate`` adds ``r<rate>`` ids)."""
    params: dict[str, Any] = {}
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:
        params = dict(callspec.params)
    return llmperf_session.bench_for(request.node, llmperf_engine, params)
