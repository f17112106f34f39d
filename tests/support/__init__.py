"""Test support code: the scripted OpenAI-compatible SSE server used to test and calibrate the client."""

from __future__ import annotations

__all__: list[str] = []
