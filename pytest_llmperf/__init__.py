"""pytest-llmperf: performance gates for LLM serving as a pytest plugin.

Importing the package is cheap: heavy dependencies (vllm, torch, pynvml, aiohttp) load only where used.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
