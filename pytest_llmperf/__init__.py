"""pytest-llmperf: performance gates for LLM serving as a pytest plugin.

Importing the package is cheap: heavy dependencies (vllm, torch, pynvml, aiohttp, scipy) load only where used.
Public API: :class:`Bench` (what the ``llmperf_bench`` fixture returns), :class:`Verdict` and
:class:`VerdictState` (one check's outcome), loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["__version__", "Bench", "Verdict", "VerdictState"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from pytest_llmperf.bench import Bench
    from pytest_llmperf.stats.verdict import Verdict, VerdictState


def __getattr__(name: str) -> Any:
    if name == "Bench":
        from pytest_llmperf.bench import Bench

        return Bench
    if name in ("Verdict", "VerdictState"):
        from pytest_llmperf.stats import verdict

        return getattr(verdict, name)
    raise AttributeError(f"module 'pytest_llmperf' has no attribute {name!r}")
