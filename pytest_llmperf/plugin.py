"""pytest entry point (``pytest11: llmperf``). Thin: options, markers, hookspecs, fixtures and the default
implementations of the plugin's own hooks; the session's hooks live on :class:`LLMPerfSession`, registered
in ``pytest_configure``.

Nothing heavy is imported at module level (no vllm, torch, pynvml, aiohttp, scipy, matplotlib): the session
object imports what it needs when it needs it. Check with ``python -X importtime -c "import pytest_llmperf.plugin"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_llmperf import hookspecs
from pytest_llmperf.fixtures import (  # noqa: F401  (fixtures are registered by being module attributes)
    llmperf_bench,
    llmperf_concurrency,
    llmperf_engine,
    llmperf_input_len,
    llmperf_mode,
    llmperf_request_rate,
    llmperf_session,
)
from pytest_llmperf.markers import MARKERS
from pytest_llmperf.options import add_options
from pytest_llmperf.session import SESSION_KEY

if TYPE_CHECKING:
    from pytest_llmperf.engine.topology import Topology
    from pytest_llmperf.stats.verdict import Verdict

__all__ = ["pytest_addoption", "pytest_addhooks", "pytest_configure"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmperf", "LLM inference performance (pytest-llmperf)")
    add_options(group.addoption)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    for name, help_ in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_}")
    from pytest_llmperf.session import LLMPerfSession

    session = LLMPerfSession(config)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "llmperf-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()


@pytest.hookimpl(trylast=True)
def pytest_llmperf_detect_topology(config: pytest.Config) -> Topology:
    """Default topology detection: env override, then NVML, then nvidia-smi (first non-None wins)."""
    from pytest_llmperf.engine.topology import detect_topology

    return detect_topology()


@pytest.hookimpl(trylast=True)
def pytest_llmperf_decide(test_id: str, metric: str, baseline: list[float], candidate: list[float], direction: str,
                          tolerance: float, alpha: float, baseline_sessions: list[str] | None,
                          session_cv: float, kind: str, label: str, pass_alpha: float | None) -> Verdict:
    """Default decision: the session model's minimum-effect / equivalence test on logs (stats/decision.py).

    No argument has a default: pluggy may pass a hook implementation only its arguments *without* defaults, so
    a default here would silently replace what the gate hands in (the sessions, the prior, the anchor kind)."""
    from pytest_llmperf.stats.decision import decide

    return decide(metric, baseline, candidate, direction=direction, tolerance=tolerance, alpha=alpha,
                  test_id=test_id, baseline_sessions=baseline_sessions, session_cv=session_cv, kind=kind, label=label,
                  pass_alpha=pass_alpha)
