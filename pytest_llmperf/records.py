"""Plain data that crosses layers: one request's timings, one measured run, one test's results.

This module is the bottom of the import graph: it imports nothing from the package. The load layer
produces :class:`RequestRecord` objects, the stats layer reduces them to metrics, telemetry adds power,
the session groups them into :class:`TestResult`, and storage/report serialise them. Every time and
size carries its unit in its name (``_ms``, ``_s``, ``_unix_s``, ``_w``, ``_j``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RequestRecord", "LoadWindow", "RunResult", "TestResult", "SCHEMA_VERSION"]

#: Version of the results JSON written by the session and read by ``llmperf report``.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RequestRecord:
    """What the client saw of one streamed request. A failed request has ``error`` set.

    ``start_s`` is the client's monotonic clock (``time.perf_counter``) at send time, relative to the
    run's first send. ``itl_ms`` is token-weighted: a chunk that carries ``n`` tokens after a gap ``g``
    contributes ``n`` entries of ``g / n``, so ``len(itl_ms) == output_tokens - 1`` for a complete stream.
    """

    request_id: str
    start_s: float
    prompt_tokens: int
    output_tokens: int
    ttft_ms: float | None
    e2el_ms: float | None
    itl_ms: tuple[float, ...] = ()
    error: str | None = None

    @property
    def success(self) -> bool:
        return self.error is None

    @property
    def tpot_ms(self) -> float | None:
        """(e2e - ttft) / (output_tokens - 1); None when undefined (failed, or a single token)."""
        if not self.success or self.ttft_ms is None or self.e2el_ms is None or self.output_tokens < 2:
            return None
        return (self.e2el_ms - self.ttft_ms) / (self.output_tokens - 1)


@dataclass(frozen=True)
class LoadWindow:
    """The measured load phase: first send to last finish, on both the wall clock and the run clock.

    Telemetry windows its statistics to ``[start_unix_s, end_unix_s]``.
    """

    start_unix_s: float
    end_unix_s: float

    @property
    def duration_s(self) -> float:
        return self.end_unix_s - self.start_unix_s


@dataclass
class RunResult:
    """One measured run (one sample for the regression gate).

    ``summary`` holds the per-run scalar of every gated metric (e.g. ``ttft_p95_ms``, ``tpot_p50_ms``,
    ``output_throughput_tok_s``, ``gpu0_power_cv``); ``metrics`` and ``power`` hold the full figures as
    plain dicts (``dataclasses.asdict`` of the stats/telemetry results) so the JSON stays stable.
    """

    run_index: int
    window: LoadWindow
    summary: dict[str, float]
    metrics: dict[str, Any]
    power: dict[str, Any] | None = None
    requests: list[RequestRecord] = field(default_factory=list)
    #: the server's side of the run (``ServerMetrics.to_dict()`` from vLLM's /metrics; None when not scraped)
    server: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TestResult:
    """Everything measured for one test item: its identity, engine, workload and runs."""

    __test__ = False  # not a pytest test class

    test_id: str
    engine: dict[str, Any]
    workload: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)
    engine_startup_s: float | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    #: the gate settings the test was judged with (``GateSettings.to_dict()``), so a later
    #: ``llmperf baseline update`` judges exactly what the test gated
    gate: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
