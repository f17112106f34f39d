"""LLMPerfConfig: every setting of a session, resolved once: CLI, then pyproject ``[tool.llmperf]``, then
the backend's defaults. Frozen; a test's marker goes on top in :func:`pytest_llmperf.gate.settings.resolve`
(the one function for marker -> CLI -> pyproject -> backend default).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.options import FLAGS, OPTIONS, SessionCV

__all__ = ["LLMPerfConfig", "read_pyproject", "DEFAULTS"]

#: backend -> defaults for settings whose sensible value depends on the hardware.
DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"model": "tiny-llama", "concurrency": (1, 4, 16), "input_lens": (64, 256), "output_len": 32,
            "num_requests": 16, "max_model_len": 2048,
            # TTFT/TPOT on the CPU backend are bimodal: some streams arrive in one burst (docs/load.md); the
            # gate uses what bursts cannot move, and reports the rest.
            "gate_metrics": ("e2el_p50_ms", "output_throughput_tok_s"),
            # A/A between two sessions on a shared 2-core machine moved e2el p50 by up to +38%: changes smaller
            # than 50% are noise there, whatever K says (docs/regression.md, "CPU backend").
            "tolerance": 0.5,
            # between-session spread there: the worst 3 of 36 unchanged checks moved +13% to +38% on e2el p50,
            # about 2 standard deviations of 0.1 (docs/regression.md)
            "session_cv": 0.10},
    "gpu": {"model": "deepseek-r1-distill-qwen-14b", "concurrency": (1, 2, 4, 8, 16, 32),
            "input_lens": (256, 2048), "output_len": 128, "num_requests": 64, "max_model_len": 8192,
            "gate_metrics": ("ttft_p95_ms", "tpot_p50_ms", "output_throughput_tok_s"), "tolerance": 0.10,
            "session_cv": 0.05},
}
COMMON: dict[str, Any] = {
    "modes": ("single", "tp2", "pp2"), "warmup": None, "repeats": 3, "dtype": "bfloat16",
    "startup_timeout": 600.0, "python": None, "emulate_pcie": "auto", "allreduce_fusion": "auto",
    "min_waves": 2, "request_timeout": 300.0, "stall_timeout": 60.0, "run_deadline": 1800.0, "power_rate_hz": 100.0,
    "baseline_dir": "baselines", "far": 0.05, "results": ".llmperf/results.json",
    "report_dir": ".llmperf/report", "update_reason": None, "endpoint": None, "vocab_size": None,
    "engine_args": None, "engine_env": None, "sessions_kept": 20, "endpoint_hardware": None, "api": "completions",
    "dataset": None, "server_metrics": "on", "request_rates": None, "burstiness": 1.0,
}
#: settings that name a path: relative ones are taken from pytest's rootdir, not the working directory
PATH_SETTINGS = ("baseline_dir", "results", "report_dir")


def read_pyproject(rootdir: Path) -> dict[str, Any]:
    """``[tool.llmperf]`` of ``rootdir/pyproject.toml`` ({} when absent). A broken file is a UsageError."""
    path = rootdir / "pyproject.toml"
    if not path.exists():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    section = data.get("tool", {}).get("llmperf", {})
    return dict(section) if isinstance(section, dict) else {}


@dataclass(frozen=True)
class LLMPerfConfig:
    backend: str
    model: str
    modes: tuple[str, ...]
    concurrency: tuple[int, ...]
    input_lens: tuple[int, ...]
    output_len: int
    num_requests: int
    warmup: int | None
    repeats: int
    dtype: str
    max_model_len: int
    startup_timeout: float
    python: str | None
    emulate_pcie: str
    allreduce_fusion: str
    min_waves: int
    request_timeout: float
    stall_timeout: float
    run_deadline: float
    power_rate_hz: float
    baseline_dir: str
    gate_metrics: tuple[str, ...]
    far: float
    tolerance: float
    session_cv: float
    results: str
    report_dir: str
    update_reason: str | None
    endpoint: str | None = None
    engine_args: str | None = None
    engine_env: str | None = None
    vocab_size: int | None = None
    update_baselines: bool = False
    accept_regression: bool = False
    no_gate: bool = False
    fail_inconclusive: bool = False
    no_plots: bool = False
    sessions_kept: int = 20
    endpoint_hardware: str | None = None
    api: str = "completions"
    dataset: str | None = None
    server_metrics: str = "on"
    require_baseline: bool = False
    request_rates: tuple[float, ...] | None = None
    burstiness: float = 1.0
    slo: dict[str, Any] = field(default_factory=dict)
    #: per-metric priors of the session model (``--llmperf-session-cv 0.05,tpot_p50_ms=0.01``), over ``session_cv``
    session_cv_metrics: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_sources(cls, cli: dict[str, Any], pyproject: dict[str, Any], *, gpus_available: int) -> LLMPerfConfig:
        """Resolve each setting: CLI value if given, else pyproject, else default. Validates pyproject values
        with the same parsers as the CLI, naming the key on error."""
        values: dict[str, Any] = {}
        pyproject = dict(pyproject)
        slo = pyproject.pop("slo", {})
        known = {n.replace("-", "_") for n in OPTIONS} | {n.replace("-", "_") for n in FLAGS}
        unknown = set(pyproject) - known
        if unknown:
            raise UsageError(f"[tool.llmperf] in pyproject.toml: unknown key(s) {sorted(unknown)}; "
                             f"known: {sorted(known | {'slo'})}")
        for name, (parse, _, _) in OPTIONS.items():
            key = name.replace("-", "_")
            if cli.get(key) is not None:
                values[key] = cli[key]
            elif key in pyproject:
                raw = pyproject[key]
                if isinstance(raw, dict):  # a table: session_cv = {default = 0.05, tpot_p50_ms = 0.01}
                    text = ",".join(str(v) if k == "default" else f"{k}={v}" for k, v in raw.items())
                else:
                    text = ",".join(str(v) for v in raw) if isinstance(raw, list) else str(raw)
                try:
                    values[key] = parse(text)
                except argparse.ArgumentTypeError as exc:
                    raise UsageError(f"[tool.llmperf] {key} = {raw!r} in pyproject.toml: {exc}") from None
        for name in FLAGS:
            key = name.replace("-", "_")
            values[key] = bool(cli.get(key)) or bool(pyproject.get(key, False))
        backend = values.get("backend", "auto")
        if values.get("endpoint"):
            # what is measured runs elsewhere: the hardware label (not this machine's GPUs) picks the defaults
            from pytest_llmperf.engine.external import HARDWARE_ENV, backend_from_label

            label = values.get("endpoint_hardware") or os.environ.get(HARDWARE_ENV)
            if backend == "auto":
                backend = backend_from_label(label) or ("gpu" if gpus_available > 0 else "cpu")
        elif values.get("endpoint_hardware"):
            raise UsageError("--llmperf-endpoint-hardware only applies with --llmperf-endpoint URL")
        if backend == "auto":
            backend = "gpu" if gpus_available > 0 else "cpu"
        if backend == "gpu" and gpus_available == 0 and not values.get("endpoint"):
            raise UsageError("--llmperf-backend gpu, but no GPU is visible (NVML found none); "
                             "use --llmperf-backend cpu or auto")
        values["backend"] = backend
        if not isinstance(slo, dict):
            raise UsageError("[tool.llmperf.slo] in pyproject.toml must be a table of limits")
        given = values.pop("session_cv", None)  # the parsed option: a default and/or per-metric priors
        if given is not None and not isinstance(given, SessionCV):  # a plain number from a caller's dict
            given = SessionCV(float(given), ())
        merged = {**COMMON, **DEFAULTS[backend], **values, "slo": slo, **(given.settings() if given else {})}
        if merged["accept_regression"] and not merged["update_baselines"]:
            raise UsageError("--llmperf-accept-regression only makes sense with --llmperf-update-baselines")
        if merged["accept_regression"] and not merged["update_reason"]:
            raise UsageError("--llmperf-accept-regression needs --llmperf-update-reason TEXT (it is recorded)")
        fields = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in merged.items() if k in fields})
        cfg.engine_extra()  # an unbalanced quote or a bad KEY=VALUE is a usage error now, before any engine starts
        from pytest_llmperf.stats.slo import SLO

        SLO.from_mapping(slo, source="[tool.llmperf.slo] in pyproject.toml")
        return cfg

    def under_root(self, rootdir: Path | str) -> LLMPerfConfig:
        """A copy whose relative paths (baselines, results, report) are taken from ``rootdir`` (pytest's
        rootdir), not the working directory; a path that already points to the same place is kept as given."""
        root = Path(rootdir)
        changes: dict[str, Any] = {}
        for name in PATH_SETTINGS:
            path = Path(getattr(self, name))
            if not path.is_absolute() and (root / path).resolve() != path.resolve():
                changes[name] = str(root / path)
        return dataclasses.replace(self, **changes) if changes else self

    def engine_extra(self) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """``--llmperf-engine-args`` split like a shell would, ``--llmperf-engine-env`` as (key, value) pairs."""
        import shlex

        try:
            args = tuple(shlex.split(self.engine_args or ""))
        except ValueError as exc:
            raise UsageError(f"--llmperf-engine-args {self.engine_args!r}: {exc} (quote it like a shell would)") from None
        env = []
        for pair in (self.engine_env or "").split(","):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--llmperf-engine-env: expected KEY=VALUE pairs separated by commas, got {pair!r}")
            env.append((key.strip(), value))
        return args, tuple(env)

    def warmup_for(self, concurrency: int) -> int:
        return concurrency if self.warmup is None else self.warmup

    def requests_for(self, concurrency: int) -> int:
        """Measured requests per run: at least ``min_waves`` full waves of the concurrency."""
        return max(self.num_requests, self.min_waves * concurrency)
