"""Plugin tests: import once, before any in-process pytester run takes its ``sys.modules`` snapshot, what inner
sessions would otherwise import afresh each time (in-process ``runpytest`` restores ``sys.modules`` after each
run, so every inner session paid for hypothesis, ruptures, the gate and the load client again)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _gate_modules_before_pytester() -> None:
    import hypothesis  # noqa: F401  (its pytest plugin imports it in every inner session's terminal summary)
    import ruptures  # noqa: F401

    import pytest_llmperf.bench  # noqa: F401
    import pytest_llmperf.finish  # noqa: F401
    import pytest_llmperf.gate.update  # noqa: F401
    import pytest_llmperf.load.runner  # noqa: F401
    import pytest_llmperf.report.summary  # noqa: F401
    import pytest_llmperf.report.terminal  # noqa: F401
    import pytest_llmperf.stats.history  # noqa: F401
