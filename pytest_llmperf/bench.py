"""Bench: what ``llmperf_bench`` returns. ``run()`` measures K runs; ``gate()`` applies SLOs and the regression
check against the stored baseline, failing the test with one readable line per failed metric;
``measure_and_gate()`` does both (the body most performance tests need).

A run is one sample: it is reduced to one value per metric (:func:`~pytest_llmperf.stats.metrics.run_summary`
plus power), and the gate compares this session's K runs with the baseline's sessions
(:mod:`pytest_llmperf.stats.decision`). At test time each check is judged at the Bonferroni level
``far / m`` (m = the checks the session plans); at session end Holm re-judges every check at the same
build-wide rate (:mod:`pytest_llmperf.finish`). Everything the bench needs comes in explicitly: the test's
:class:`~pytest_llmperf.gate.settings.TestSettings` and a :class:`BenchContext` of the session's services.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmperf.errors import BaselineError
from pytest_llmperf.records import RunResult, TestResult

if TYPE_CHECKING:
    from pytest_llmperf.config import LLMPerfConfig
    from pytest_llmperf.engine.server import VLLMServer
    from pytest_llmperf.gate.settings import TestSettings
    from pytest_llmperf.load.datasets import Dataset
    from pytest_llmperf.load.prompts import PromptLike
    from pytest_llmperf.load.saturation import SaturationResult
    from pytest_llmperf.load.workload import Workload
    from pytest_llmperf.stats.verdict import Check, Verdict
    from pytest_llmperf.storage.fingerprint import Fingerprint

__all__ = ["Bench", "BenchContext"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchContext:
    """The session services a bench uses, passed explicitly (no reaching back into the session).

    ``fingerprint()`` is this test's fingerprint; ``alpha()`` the test-time per-check alpha; ``record`` takes
    the result, the telemetry traces and the regression checks made (for the end-of-session Holm decision).
    """

    cfg: LLMPerfConfig
    fingerprint: Callable[[], Fingerprint]
    alpha: Callable[[], float]
    engine_version: Callable[[], str]
    idle_threshold_w: Callable[[Any], float | None]
    decide_fn: Callable[..., Verdict | None] | None
    progress: Callable[[str], None]
    record: Callable[[TestResult, dict[str, Any], list[Check]], None]
    note: Callable[[str], None]
    gate_failed: Callable[[str], None] = lambda test_id: None  #: told before the gate fails a test
    record_command: str = "pytest ... --llmperf-update-baselines"  #: how to record baselines, for messages
    dataset: Dataset | None = None  #: ``--llmperf-dataset``, loaded once by the session (None: synthetic prompts)


class Bench:
    """Measure one test's engine with its workload and gate it. Returned by the ``llmperf_bench`` fixture."""

    def __init__(self, test_id: str, server: VLLMServer, params: Mapping[str, Any], settings: TestSettings,
                 context: BenchContext) -> None:
        self.test_id, self.server, self.params = test_id, server, dict(params)
        self.settings, self.context = settings, context
        self.result: TestResult | None = None

    def workload(self, **overrides: Any) -> Workload:
        """The test's workload: sweep parameters, marker settings, config; ``overrides`` replace fields."""
        from pytest_llmperf.load.workload import Workload

        c, s = self.context.cfg, self.settings
        concurrency = int(overrides.pop("concurrency", self.params.get("llmperf_concurrency", 1)))
        values: dict[str, Any] = {
            "num_requests": s.num_requests if s.num_requests is not None else c.requests_for(concurrency),
            "input_len": self.params.get("llmperf_input_len", c.input_lens[0]),
            "output_len": s.output_len,
            "concurrency": concurrency,
            "warmup_requests": s.warmup if s.warmup is not None else concurrency,
            "seed": 0,
            "timeout_s": c.request_timeout,
            "stall_timeout_s": c.stall_timeout,
            "deadline_s": c.run_deadline,
            "request_rate": self.params.get("llmperf_request_rate"),
            "burstiness": c.burstiness,
        }
        values.update(overrides)
        return Workload(**values)

    def run(self, *, prompts: Sequence[PromptLike] | None = None, **overrides: Any) -> TestResult:
        """Measure K runs (``repeats``) of the test's workload on its engine, with power where NVML works and the
        server's own metrics (vLLM's ``/metrics``) unless ``--llmperf-server-metrics off``.

        The warmup requests run before the first run only; each run uses its own seed so prompts differ
        between runs but not between sessions. Every successful request must stream exactly the workload's
        output length (and prompt length, where the server reports it): anything else fails the test.
        ``prompts`` (strings, or :class:`~pytest_llmperf.load.prompts.DatasetPrompt` items with their own output
        lengths) replace the synthetic ones, as ``--llmperf-dataset`` does for every test; their token counts are
        the server's ``usage``, so only the output length is checked (and not for dataset prompts).
        """
        from pytest_llmperf.errors import LoadAborted
        from pytest_llmperf.load.runner import run_load
        from pytest_llmperf.stats.metrics import compute_run_metrics, run_summary
        from pytest_llmperf.telemetry.meter import make_meter
        from pytest_llmperf.telemetry.power import power_summary
        from pytest_llmperf.telemetry.server_metrics import measure_server

        c, ctx = self.context.cfg, self.context
        repeats = self.settings.repeats
        base = self.workload(**overrides)
        goodput = self.settings.slo.goodput()
        spec = self.server.spec
        prompts, from_dataset = self._prompts(prompts, base)
        # an endpoint's GPUs are not this machine's: no power is measured for it
        meter = make_meter(list(spec.devices) if spec.devices else None, "endpoint" if c.endpoint else spec.backend,
                           rate_hz=c.power_rate_hz)
        monitor = self._server_monitor()
        runs: list[RunResult] = []
        traces: dict[str, Any] = {}
        vocab = self.server.plan.model_paths.vocab_size or 32000
        idle_threshold_w = ctx.idle_threshold_w(meter)
        facts = getattr(self.server, "engine_facts", None)
        engine = {**spec.to_dict(), "engine_version": ctx.engine_version(),
                  **(facts() if callable(facts) else {"enforce_eager": self.server.plan.enforce_eager})}
        workload_dict = {**base.to_dict(), "api": c.api}
        if from_dataset and ctx.dataset is not None:
            workload_dict.update(ctx.dataset.to_dict())
        elif prompts is not None:
            workload_dict["dataset"] = f"prompts=({len(prompts)} given)"
        self.result = TestResult(self.test_id, engine, workload_dict, runs, self.server.startup_s,
                                 gate=self.settings.gate.to_dict())
        ctx.record(self.result, traces, [])  # recorded before measuring: results.json lists failed tests too
        for k in range(repeats):
            workload = replace(base, seed=base.seed + k, warmup_requests=base.warmup_requests if k == 0 else 0)
            live: Any = ctx.progress if hasattr(ctx.progress, "run_started") else None
            if live is not None:
                live.run_started(self.test_id, k, repeats, workload.num_requests, workload.concurrency,
                                 workload.request_rate)
            else:
                ctx.progress(f"{self.test_id}: run {k + 1}/{repeats} ({workload.num_requests} requests, "
                             f"concurrency {workload.concurrency})")
            waves = live.waves(workload.concurrency, f"{self.test_id} run {k + 1}/{repeats}") if live else None
            try:
                with meter.measure() as measurement, measure_server(monitor) as server_box:
                    load = run_load(self.server.endpoint, self.server.served_model_name, workload, vocab_size=vocab,
                                    progress=waves, engine_label=spec.label, prompts=prompts, chat=c.api == "chat",
                                    on_measure_start=server_box.mark_start if server_box is not None else None)
            except LoadAborted as exc:
                self.server.check_alive()  # a dead engine's log beats the stall message
                pytest.fail(f"{self.test_id}: {exc}", pytrace=False)
            self.server.check_alive()
            metrics = compute_run_metrics(load.records, load.duration_s, goodput)
            if live is not None and hasattr(live, "run_done"):
                live.run_done(self.test_id, k, repeats, load.duration_s, metrics.completed, metrics.failed,
                              metrics.output_throughput_tok_s)
            summary = run_summary(metrics)
            report = measurement.report(load.window, metrics.total_output_tokens, idle_threshold_w=idle_threshold_w)
            summary.update(power_summary(report))
            server_dict, server_summary = server_box.run_record(workload.warmup_requests, repeats) \
                if server_box is not None else (None, {})
            summary.update(server_summary)
            server = server_box.result if server_box is not None else None
            if server is not None and not server.available and k == 0:
                ctx.note(f"{self.test_id}: server metrics unavailable: {server.reason}")
            trace = measurement.trace
            if trace is not None:
                traces[str(k)] = {**trace.to_dict(), "window": [load.window.start_unix_s, load.window.end_unix_s]}
            runs.append(RunResult(k, load.window, summary, asdict(metrics), asdict(report), list(load.records),
                                  server=server_dict))
            if metrics.completed == 0:
                first_error = next((r.error for r in load.records if r.error), "no request completed")
                pytest.fail(f"{self.test_id}: every request failed; first error: {first_error}", pytrace=False)
            self._check_lengths(runs[-1], workload, given_prompts=prompts is not None, from_dataset=from_dataset)
        return self.result

    def _prompts(self, prompts: Sequence[PromptLike] | None,
                 base: Workload) -> tuple[Sequence[PromptLike] | None, bool]:
        """The prompts to send (given ones, else the session's dataset, else None = synthetic) and whether they
        are the dataset's; a dataset prompt that cannot fit the server's ``max_model_len`` fails the test."""
        from pytest_llmperf.errors import UsageError
        from pytest_llmperf.load.datasets import check_fits

        dataset = self.context.dataset
        if prompts is not None or dataset is None:
            return prompts, False
        if self.context.cfg.endpoint:
            max_len = getattr(self.server, "max_model_len", None)  # None (not reported): nothing to check
        else:
            max_len = self.server.spec.max_model_len
        try:
            check_fits(dataset, max_len, base.output_spec.high_tokens)
        except UsageError as exc:
            pytest.fail(f"{self.test_id}: {exc}", pytrace=False)
        return dataset.prompts, True

    def _server_monitor(self) -> Any:
        """A :class:`~pytest_llmperf.telemetry.server_metrics.ServerMetricsMonitor` on the engine's ``/metrics``
        (None with ``--llmperf-server-metrics off``)."""
        if self.context.cfg.server_metrics == "off":
            return None
        from pytest_llmperf.telemetry.server_metrics import ServerMetricsMonitor, metrics_url_for

        url = getattr(self.server, "metrics_url", None) or metrics_url_for(self.server.endpoint)
        headers = getattr(self.server, "headers", None)
        return ServerMetricsMonitor(url, headers=headers, interval_s=0.5)

    def _check_lengths(self, run: RunResult, workload: Workload, *, given_prompts: bool = False,
                       from_dataset: bool = False) -> None:
        """Every successful request streamed the workload's output length and sent its prompt length (fixed or
        a ``low:high`` range); a wrong length means the engine ignored ``ignore_eos`` or another tokenizer.
        Given prompts: their counts are the server's, so only the output is checked; dataset prompts carry their
        own output lengths (the client already fails a stream shorter than its ``max_tokens``)."""
        if from_dataset:
            return
        ok = [r for r in run.requests if r.error is None]
        out_spec, in_spec = workload.output_spec, workload.input_spec
        wrong_out = sorted({r.output_tokens for r in ok
                            if not out_spec.low_tokens <= r.output_tokens <= out_spec.high_tokens})
        if wrong_out:
            want = f"exactly {workload.output_len}" if out_spec.is_fixed else f"within {workload.output_len}"
            pytest.fail(f"{self.test_id}: run {run.run_index + 1}: requests streamed {wrong_out} tokens instead of "
                        f"{want} (ignore_eos/min_tokens not honoured?)", pytrace=False)
        if given_prompts:
            return
        wrong_in = sorted({r.prompt_tokens for r in ok if not in_spec.low_tokens <= r.prompt_tokens <= in_spec.high_tokens})
        if wrong_in:
            want = f"{workload.input_len}" if in_spec.is_fixed else f"within {workload.input_len}"
            pytest.fail(f"{self.test_id}: run {run.run_index + 1}: prompts were {wrong_in} tokens instead of "
                        f"{want} (tokenizer mismatch?)", pytrace=False)

    def saturation(self, *, variable: str = "request_rate", start: float = 1.0, limit: float = 64.0,
                   target: float = 0.9, rel_tol: float = 0.1, max_steps: int = 10, retries: int = 1,
                   repeats: int | None = None, prompts: Sequence[PromptLike] | None = None,
                   **overrides: Any) -> SaturationResult:
        """Search the highest request rate (or ``variable="concurrency"``) at which at least ``target`` of the
        requests meet the test's per-request SLO limits (``ttft_ms``/``tpot_ms``/``e2el_ms``), from ``start`` up to
        ``limit`` (:func:`~pytest_llmperf.load.saturation.find_max_load`; each point is one run of the test's
        workload). The search runs ``repeats`` times (default: the test's K); each search is one run whose summary is
        ``max_rate_at_slo_req_s`` (or ``max_concurrency_at_slo``) and ``slo_attainment_at_max``, so ``gate()``
        compares them with the baseline's ("must not drop more than the tolerance") and the SLO
        ``min_max_rate_at_slo_req_s`` can floor them. Returns the search with the median answer. Fails the test
        when no load met the target in a search (the reason names the lowest load tried)."""
        import time

        from pytest_llmperf.errors import LoadAborted, UsageError
        from pytest_llmperf.load.saturation import endpoint_measure, find_max_load, point_text, search_text
        from pytest_llmperf.records import LoadWindow

        ctx, goodput = self.context, self.settings.slo.goodput()
        if goodput.ttft_ms is None and goodput.tpot_ms is None and goodput.e2el_ms is None:
            pytest.fail(f"{self.test_id}: saturation() needs a per-request SLO limit to attain: "
                        f"@pytest.mark.llmperf(slo={{'ttft_ms': ...}}) or ttft_ms/tpot_ms/e2el_ms in "
                        f"[tool.llmperf.slo]", pytrace=False)
        base = self.workload(**overrides)
        prompts, from_dataset = self._prompts(prompts, base)
        spec = self.server.spec
        facts = getattr(self.server, "engine_facts", None)
        engine = {**spec.to_dict(), "engine_version": ctx.engine_version(),
                  **(facts() if callable(facts) else {"enforce_eager": self.server.plan.enforce_eager})}
        workload_dict = {**base.to_dict(), "api": ctx.cfg.api, "saturation": {"variable": variable, "start": start, "limit": limit,
                                                           "target": target, "rel_tol": rel_tol}}
        if from_dataset and ctx.dataset is not None:
            workload_dict.update(ctx.dataset.to_dict())
        self.result = TestResult(self.test_id, engine, workload_dict, [], self.server.startup_s,
                                 gate=self.settings.gate.to_dict())
        ctx.record(self.result, {}, [])
        ctx.progress(f"{self.test_id}: saturation search over {variable} from {start:g} to {limit:g} "
                     f"(target {target:.0%} of requests within the SLO)")
        def on_point(point: Any, _run: Any) -> None:  # live (a low rate takes minutes); k: the search below
            ctx.progress(f"{self.test_id}: search {k + 1}: {point_text(point.to_dict(), variable)}")

        measure = endpoint_measure(self.server.endpoint, self.server.served_model_name, base, goodput,
                                   variable=variable, prompts=prompts, chat=ctx.cfg.api == "chat",
                                   vocab_size=self.server.plan.model_paths.vocab_size or 32000, on_point=on_point)
        found: list[SaturationResult] = []
        for k in range(repeats if repeats is not None else self.settings.repeats):
            t0 = time.time()
            try:
                result = find_max_load(measure, start=start, limit=limit, target=target, rel_tol=rel_tol,
                                       max_steps=max_steps, retries=retries, integer=variable == "concurrency",
                                       variable=variable)
            except (LoadAborted, UsageError) as exc:
                self.server.check_alive()
                pytest.fail(f"{self.test_id}: saturation search: {exc}", pytrace=False)
            self.result.runs.append(RunResult(k, LoadWindow(t0, time.time()), result.summary(), result.to_dict()))
            ctx.note(f"{self.test_id}: saturation search {k + 1}: {search_text(result.to_dict())}")
            if result.max_load is None:
                pytest.fail(f"{self.test_id}: saturation search: {result.reason}", pytrace=False)
            found.append(result)
        return sorted(found, key=lambda r: r.max_load or 0.0)[len(found) // 2]

    # -- the gate ---------------------------------------------------------------------------------
    def gate(self) -> list[dict[str, Any]]:
        """SLO checks and the regression check; fails the test on an SLO breach or a regression (and on an
        INCONCLUSIVE check with ``--llmperf-fail-inconclusive``), unless ``--llmperf-no-gate``."""
        from pytest_llmperf.gate.compare import gate_failures
        from pytest_llmperf.stats.slo import check_slo
        from pytest_llmperf.stats.verdict import VerdictState, format_verdict

        if self.result is None or not self.result.runs:
            self.run()
        assert self.result is not None
        runs = [r.summary for r in self.result.runs]
        verdicts: list[Verdict] = list(check_slo(self.settings.slo, self.test_id, runs))
        verdicts += self._regression_verdicts(runs)
        self.result.verdicts = [v.to_dict() for v in verdicts]
        for v in verdicts:
            if v.verdict == VerdictState.NO_BASELINE and v.metric == "*" and hasattr(self.context.progress, "once"):
                self.context.progress.once(  # type: ignore[attr-defined]
                    "no-baseline", f"no baseline for this machine ({self.context.fingerprint().hardware_id()}) in "
                    f"{self.context.cfg.baseline_dir}/: every such test reports NO_BASELINE; record them with: "
                    f"{self.context.record_command}")
                continue
            if v.verdict in (VerdictState.NO_BASELINE, VerdictState.MISMATCH, VerdictState.INCONCLUSIVE,
                             VerdictState.SKIPPED):
                self.context.progress(format_verdict(v))
        failed = gate_failures(verdicts, fail_inconclusive=self.settings.gate.fail_inconclusive,
                               require_baseline=self.settings.gate.require_baseline)
        if failed and not self.context.cfg.no_gate:
            self.context.gate_failed(self.test_id)
            lines = [format_verdict(v) for v in failed]
            if any(v.verdict == VerdictState.NO_BASELINE for v in failed):
                lines.append("--llmperf-require-baseline: a missing baseline fails; record one with: "
                             f"{self.context.record_command}")
            pytest.fail("\n".join(lines), pytrace=False)
        return self.result.verdicts

    def measure_and_gate(self, **overrides: Any) -> TestResult:
        """``run()`` (K runs, exact lengths checked) then ``gate()``; returns the result."""
        self.run(**overrides)
        self.gate()
        assert self.result is not None
        return self.result

    def _regression_verdicts(self, runs: list[dict[str, float]]) -> list[Verdict]:
        from pytest_llmperf.gate.compare import checks_for_test, history_notes, judge
        from pytest_llmperf.storage.baselines import BaselineStore

        ctx = self.context
        fp = ctx.fingerprint()
        store = BaselineStore(ctx.cfg.baseline_dir)
        path = store.path(fp.hardware_id(), self.test_id, fp.model)
        try:
            baseline = store.load(fp.hardware_id(), self.test_id, fp.model)
            checks, settled = checks_for_test(self.test_id, runs, baseline, fp, self.settings.gate, source=str(path),
                                              where=f"{fp.hardware_id()} in {ctx.cfg.baseline_dir}/")
        except BaselineError as exc:
            pytest.fail(f"{self.test_id}: {exc}", pytrace=False)
        decided = judge(checks, ctx.alpha(), ctx.decide_fn, self.settings.gate.family_alpha)
        assert self.result is not None
        ctx.record(self.result, {}, checks)
        for line in history_notes(self.test_id, baseline, checks):
            ctx.note(line)
        return [*settled, *decided]
