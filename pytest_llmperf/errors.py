"""Exceptions with messages that name their cause. Every user-facing failure of the tool is one of these."""

from __future__ import annotations

__all__ = [
    "LLMPerfError",
    "UsageError",
    "EngineError",
    "EngineStartError",
    "EngineDiedError",
    "EndpointUnreachable",
    "LoadAborted",
    "RunStalled",
    "RunDeadlineExceeded",
    "BaselineError",
    "PerformanceRegression",
]


class LLMPerfError(Exception):
    """Base class of every error raised by pytest-llmperf."""


class UsageError(LLMPerfError, ValueError):
    """Bad input from the user: an option, marker argument or config value that cannot work."""


class EngineError(LLMPerfError):
    """An engine could not be started or stopped, or failed while serving."""


class EngineStartError(EngineError):
    """The engine exited, or did not become healthy, during startup. The message holds the log tail."""


class EngineDiedError(EngineError):
    """The engine process exited while a test was using it."""


class EndpointUnreachable(LLMPerfError):
    """Nothing answers at the endpoint URL."""


class LoadAborted(LLMPerfError):
    """A load run was stopped before it finished; requests in flight were cancelled.

    ``records`` holds the requests that had finished (with their errors, if any) when the run stopped.
    """

    def __init__(self, message: str, records: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.records = records


class RunStalled(LoadAborted):
    """No token arrived for the stall timeout while requests were in flight. Names the engine/endpoint."""


class RunDeadlineExceeded(LoadAborted):
    """The run did not finish within its deadline. Names the engine/endpoint."""


class BaselineError(LLMPerfError):
    """A baseline file is corrupt, of an unknown schema, or cannot be written. Names the file."""


class PerformanceRegression(LLMPerfError):
    """Raised at session end when a gated metric regressed."""
