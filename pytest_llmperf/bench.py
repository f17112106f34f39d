"""Bench: what ``llmperf_bench`` returns. ``run()`` measures K runs; ``gate()`` applies SLOs and the
regression check against the stored baseline, failing the test with one readable line per failed metric.

A run is one sample: it is reduced to one value per metric (:func:`~pytest_llmperf.stats.metrics.run_summary`
plus power), and the gate compares K baseline runs with K candidate runs. At test time each check is judged
at the Bonferroni level ``far / m`` (m = all gated checks of the session); at session end the Holm procedure
re-judges every check at the same build-wide rate (see :mod:`pytest_llmperf.finish`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmperf.errors import BaselineError
from pytest_llmperf.records import RunResult, TestResult

if TYPE_CHECKING:
    from pytest_llmperf.engine.server import VLLMServer
    from pytest_llmperf.load.workload import Workload
    from pytest_llmperf.session import LLMPerfSession

__all__ = ["Bench", "GATED_METRICS", "gated_metrics_of"]

log = logging.getLogger(__name__)
#: metrics the regression gate compares when the config names none (power metrics are added where NVML measured)
GATED_METRICS = ("ttft_p95_ms", "tpot_p50_ms", "output_throughput_tok_s")


def gated_metrics_of(summary: dict[str, float], requested: list[str] | tuple[str, ...] | None,
                     defaults: tuple[str, ...] = GATED_METRICS) -> list[str]:
    """The marker's ``metrics`` if given, else ``defaults`` plus per-GPU power CV and J/token where measured."""
    if requested:
        return list(requested)
    power = sorted(k for k in summary if k.endswith("_power_cv")) + (
        ["energy_per_output_token_j"] if "energy_per_output_token_j" in summary else [])
    return [m for m in defaults if m in summary] + power


class Bench:
    def __init__(self, session: LLMPerfSession, item: pytest.Item, server: VLLMServer,
                 params: dict[str, Any], settings: dict[str, Any]) -> None:
        self.session, self.item, self.server = session, item, server
        self.params, self.settings = params, settings
        self.result: TestResult | None = None
        self._slo: Any = None
        self.test_id = item.nodeid

    def workload(self, **overrides: Any) -> Workload:
        from pytest_llmperf.load.workload import Workload

        c = self.session.cfg
        concurrency = int(overrides.pop("concurrency", self.params.get("llmperf_concurrency", 1)))
        values: dict[str, Any] = {
            "num_requests": self.settings.get("num_requests", c.requests_for(concurrency)),
            "input_len": self.params.get("llmperf_input_len", c.input_lens[0]),
            "output_len": self.settings.get("output_len", c.output_len),
            "concurrency": concurrency,
            "warmup_requests": self.settings.get("warmup", c.warmup_for(concurrency)),
            "seed": 0,
        }
        values.update(overrides)
        return Workload(**values)

    def run(self, **overrides: Any) -> TestResult:
        """Measure K runs (``repeats``) of the test's workload on its engine, with power where NVML works.

        The warmup requests run before the first run only; each run uses its own seed so prompts differ
        between runs but not between sessions.
        """
        from pytest_llmperf.load.runner import run_load
        from pytest_llmperf.stats.metrics import compute_run_metrics, run_summary
        from pytest_llmperf.telemetry.meter import make_meter
        from pytest_llmperf.telemetry.power import power_summary

        c = self.session.cfg
        repeats = int(self.settings.get("repeats", c.repeats))
        base = self.workload(**overrides)
        slo = self.slo()
        spec = self.server.spec
        meter = make_meter(list(spec.devices) if spec.devices else None, spec.backend, rate_hz=c.power_rate_hz)
        runs: list[RunResult] = []
        traces: dict[str, Any] = {}
        vocab = self.server.plan.model_paths.vocab_size or 32000
        idle_threshold_w = self.session.idle_threshold_w(spec, meter)
        for k in range(repeats):
            workload = replace(base, seed=base.seed + k, warmup_requests=base.warmup_requests if k == 0 else 0)
            self.session._progress(f"{self.test_id}: run {k + 1}/{repeats} ({workload.num_requests} requests, "
                                   f"concurrency {workload.concurrency})")
            with meter.measure() as measurement:
                load = run_load(self.server.endpoint, self.server.served_model_name, workload, vocab_size=vocab)
            self.server.check_alive()
            metrics = compute_run_metrics(load.records, load.duration_s, slo)
            summary = run_summary(metrics)
            report = measurement.report(load.window, metrics.total_output_tokens, idle_threshold_w=idle_threshold_w)
            summary.update(power_summary(report))
            trace = measurement.trace
            if trace is not None:
                traces[str(k)] = {**trace.to_dict(), "window": [load.window.start_unix_s, load.window.end_unix_s]}
            runs.append(RunResult(k, load.window, summary, asdict(metrics), asdict(report), list(load.records)))
            if metrics.completed == 0:
                first_error = next((r.error for r in load.records if r.error), "no request completed")
                pytest.fail(f"{self.test_id}: every request failed; first error: {first_error}", pytrace=False)
        engine = {**spec.to_dict(), "engine_version": self.session.engine_version(),
                  "enforce_eager": self.server.plan.enforce_eager}
        self.result = TestResult(self.test_id, engine, base.to_dict(), runs, self.server.startup_s)
        self.session.record(self.result, traces)
        return self.result

    def slo(self) -> Any:
        """The test's SLO: ``[tool.llmperf.slo]`` merged with the marker's ``slo=`` (parsed once)."""
        if self._slo is not None:
            return self._slo
        from pytest_llmperf.errors import UsageError
        from pytest_llmperf.stats.slo import SLO

        try:
            slo = SLO.from_mapping(self.session.cfg.slo, source="[tool.llmperf.slo] in pyproject.toml")
            marker_slo = self.settings.get("slo")
            if marker_slo:
                slo = slo.merged(SLO.from_mapping(marker_slo, source=f"{self.test_id}: @pytest.mark.llmperf(slo=...)"))
        except UsageError as exc:
            pytest.fail(str(exc), pytrace=False)
        self._slo = slo
        return slo

    # -- the gate ---------------------------------------------------------------------------------
    def gate(self) -> list[dict[str, Any]]:
        """SLO checks and the regression check; fails the test on SLO breach or significant regression."""
        from pytest_llmperf.stats.regression import Verdict, format_verdict
        from pytest_llmperf.stats.slo import check_slo

        if self.result is None:
            self.run()
        assert self.result is not None
        runs = [r.summary for r in self.result.runs]
        verdicts: list[Verdict] = list(check_slo(self.slo(), self.test_id, runs))
        verdicts += self._regression_verdicts(runs)
        self.result.verdicts = [v.to_dict() for v in verdicts]
        failed = [v for v in verdicts if v.verdict == "FAIL"]
        for v in verdicts:
            if v.verdict in ("NO_BASELINE", "MISMATCH", "INCONCLUSIVE", "SKIPPED"):
                self.session._progress(format_verdict(v))
        if failed and not self.session.cfg.no_gate:
            pytest.fail("\n".join(format_verdict(v) for v in failed), pytrace=False)
        return self.result.verdicts

    def _regression_verdicts(self, runs: list[dict[str, float]]) -> list[Any]:
        from pytest_llmperf.stats.metrics import direction_of
        from pytest_llmperf.stats.regression import Verdict
        from pytest_llmperf.storage.baselines import BaselineStore
        from pytest_llmperf.storage.fingerprint import Fingerprint

        c = self.session.cfg
        fp = self.session.fingerprint_for(self.server.spec)
        store = BaselineStore(c.baseline_dir)
        blank = dict(baseline_value=None, candidate_value=None, ratio=None, ci_low=None, ci_high=None,
                     p_value=None, alpha=None, baseline_k=None, candidate_k=len(runs), runs_needed=None)
        try:
            baseline = store.load(fp.hardware_id(), self.test_id)
        except BaselineError as exc:
            pytest.fail(f"{self.test_id}: {exc}", pytrace=False)
        if baseline is None:
            return [Verdict(test_id=self.test_id, metric="*", kind="regression", verdict="NO_BASELINE",
                            message=f"NO_BASELINE {self.test_id}: no baseline for {fp.hardware_id()} in "
                                    f"{c.baseline_dir}/ (record one with --llmperf-update-baselines)", **blank)]
        diffs = Fingerprint.from_dict(baseline.fingerprint, source=str(store.path(fp.hardware_id(),
                                                                                    self.test_id))).differences(fp)
        if diffs:
            return [Verdict(test_id=self.test_id, metric="*", kind="regression", verdict="MISMATCH",
                            message=f"MISMATCH {self.test_id}: baseline recorded on different hardware/engine "
                                    f"({'; '.join(diffs)}); comparison skipped", **blank)]
        metrics = gated_metrics_of(runs[0], self.settings.get("metrics"), c.gate_metrics)
        tolerance = float(self.settings.get("tolerance", c.tolerance))
        m_total = max(1, self.session.n_gated_items * max(1, len(metrics)))
        alpha = c.far / m_total
        hook = self.item.config.hook.pytest_llmperf_decide
        out = []
        for metric in metrics:
            base = [r[metric] for r in baseline.runs if metric in r]
            cand = [r[metric] for r in runs if metric in r]
            if min(base + cand, default=1.0) <= 0:
                out.append(Verdict(test_id=self.test_id, metric=metric, kind="regression", verdict="SKIPPED",
                                   message=f"SKIPPED {self.test_id} {metric}: a run measured {min(base + cand)} "
                                           f"(a log-ratio test needs positive values; on the CPU backend a TPOT "
                                           f"of 0 means streams arrived in one burst)", **blank))
                continue
            if not base or not cand:
                out.append(Verdict(test_id=self.test_id, metric=metric, kind="regression", verdict="SKIPPED",
                                   message=f"SKIPPED {self.test_id} {metric}: not measured on "
                                           f"{'the baseline' if not base else 'this run'}", **blank))
                continue
            out.append(hook(test_id=self.test_id, metric=metric, baseline=base, candidate=cand,
                            direction=direction_of(metric), tolerance=tolerance, alpha=alpha))
            self.session.checks.append((self.test_id, metric, base, cand, direction_of(metric), tolerance))
        return out

