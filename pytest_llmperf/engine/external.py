"""ExternalEngine: an OpenAI-compatible server that is already running (vLLM, SGLang, ...), used in place
of a started engine when ``--llmperf-endpoint URL`` is given. Same interface as VLLMServer for the fixtures.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import EndpointUnreachable, EngineDiedError, UsageError

__all__ = ["ExternalEngine"]


@dataclass(frozen=True)
class _ExternalPlan:
    served_model_name: str
    enforce_eager: bool | None
    model_paths: object


@dataclass(frozen=True)
class _Paths:
    vocab_size: int | None


class ExternalEngine:
    """A running server at ``endpoint`` (``http://HOST:PORT/v1``); never started or stopped by us."""

    def __init__(self, spec: EngineSpec, endpoint: str, model: str | None = None, vocab_size: int | None = None,
                 timeout_s: float = 5.0) -> None:
        self.spec = spec
        self.endpoint = endpoint.rstrip("/")
        if not self.endpoint.endswith("/v1"):
            raise UsageError(f"--llmperf-endpoint must be an OpenAI base URL ending in /v1, got {endpoint!r}")
        self.url = self.endpoint[: -len("/v1")]
        self.startup_s: float | None = None
        served = self._models(timeout_s)
        if model is None:
            if not served:
                raise UsageError(f"{self.endpoint}/models lists no model; pass --llmperf-model NAME")
            model = served[0]
        elif served and model not in served:
            raise UsageError(f"model {model!r} is not served at {self.endpoint}; it serves: {', '.join(served)}")
        self.plan = _ExternalPlan(model, None, _Paths(vocab_size))

    @property
    def served_model_name(self) -> str:
        return self.plan.served_model_name

    def _models(self, timeout_s: float) -> list[str]:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/models", timeout=timeout_s) as resp:
                data = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EndpointUnreachable(f"nothing answers at {self.endpoint}/models: {exc}") from None
        return [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]

    def alive(self) -> bool:
        try:
            self._models(2.0)
        except EndpointUnreachable:
            return False
        return True

    def check_alive(self) -> None:
        if not self.alive():
            raise EngineDiedError(f"the external engine at {self.endpoint} stopped answering")

    def stop(self) -> None:
        """Not ours to stop."""
