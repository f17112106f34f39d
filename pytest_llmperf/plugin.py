"""pytest entry point (``pytest11: llmperf``). Thin: options, markers, hooks and fixture wiring.

Nothing heavy is imported at module level (no vllm, torch, pynvml, aiohttp, scipy, matplotlib): the session
object is built in ``pytest_configure`` and imports what it needs when it needs it. Check with
``python -X importtime -c "import pytest_llmperf.plugin"``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from pytest_llmperf import hookspecs
from pytest_llmperf.fixtures import (  # noqa: F401  (fixtures are registered by being module attributes)
    llmperf_bench,
    llmperf_concurrency,
    llmperf_engine,
    llmperf_input_len,
    llmperf_mode,
    llmperf_session,
)
from pytest_llmperf.markers import MARKERS
from pytest_llmperf.options import add_options
from pytest_llmperf.session import SESSION_KEY, SWEEP_FIXTURES, get_session

if TYPE_CHECKING:
    from pytest_llmperf.engine.topology import Topology

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the sweep fixtures a test uses (mode, concurrency, input length) from the config."""
    used = [name for name in SWEEP_FIXTURES if name in metafunc.fixturenames]
    if not used:
        return
    from pytest_llmperf.errors import UsageError

    session = get_session(metafunc.config)
    for name in used:
        error = None
        try:
            values, ids = session.sweep_values(name, metafunc.definition)
        except UsageError as exc:  # a bad tp/pp marker: one readable collection error, no traceback
            error = str(exc)
        if error is not None:
            pytest.fail(error, pytrace=False)
        metafunc.parametrize(name, values, ids=ids, indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    get_session(config).plan_items(items)


def pytest_report_header(config: pytest.Config) -> str:
    return get_session(config).header_line()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    get_session(item.config).after_test(item)


@pytest.hookimpl(trylast=True)
def pytest_llmperf_decide(test_id: str, metric: str, baseline: list[float], candidate: list[float], direction: str,
                          tolerance: float, alpha: float) -> object:
    """Default decision: one-sided Welch t-test on log values with a tolerance (stats/regression.py)."""
    from pytest_llmperf.stats.regression import decide

    return decide(metric, baseline, candidate, direction=direction, tolerance=tolerance, alpha=alpha, test_id=test_id)
