"""Typed per-test settings: marker -> CLI -> pyproject -> backend default, resolved in :func:`resolve` only.

:class:`LLMPerfConfig` already holds CLI over pyproject over the backend's defaults; :func:`resolve` puts a
test's ``@pytest.mark.llmperf(...)`` on top and validates every marker argument (SLO keys, metric names,
warmup...) with a message naming the test, so a bad marker is a collection error before any engine starts.
:class:`GateSettings` is the part the regression gate uses; it is recorded with each test's results, so
``llmperf baseline update`` judges exactly what the test gated, and ``llmperf compare`` builds the same from
pyproject and the backend's defaults (:meth:`GateSettings.from_config`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pytest_llmperf.errors import UsageError
from pytest_llmperf.stats.slo import SLO

if TYPE_CHECKING:
    import pytest

    from pytest_llmperf.config import LLMPerfConfig

#: what a saturation search (``Bench.saturation``) yields; gated by default where present
SATURATION_KEYS = ("max_rate_at_slo_req_s", "max_concurrency_at_slo")

__all__ = ["SATURATION_KEYS", "GateSettings", "TestSettings", "resolve", "gated_metrics", "config_for_backend"]


@dataclass(frozen=True)
class GateSettings:
    """What the regression gate compares and how. ``metrics`` None = ``default_metrics`` plus power where measured."""

    metrics: tuple[str, ...] | None
    default_metrics: tuple[str, ...]
    tolerance: float
    family_alpha: float
    session_cv: float
    sessions_kept: int = 20
    fail_inconclusive: bool = False
    #: a missing baseline fails the test (``--llmperf-require-baseline``; not while recording baselines)
    require_baseline: bool = False
    #: per-metric priors of the session model, over ``session_cv`` (``--llmperf-session-cv 0.05,tpot_p50_ms=0.01``)
    session_cv_metrics: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_config(cls, cfg: LLMPerfConfig, metrics: Sequence[str] | None = None) -> GateSettings:
        return cls(metrics=tuple(metrics) if metrics else None, default_metrics=tuple(cfg.gate_metrics),
                   tolerance=cfg.tolerance, family_alpha=cfg.far, session_cv=cfg.session_cv,
                   sessions_kept=cfg.sessions_kept, fail_inconclusive=cfg.fail_inconclusive,
                   require_baseline=cfg.require_baseline and not cfg.update_baselines,
                   session_cv_metrics=tuple(cfg.session_cv_metrics))

    def session_cvs(self) -> dict[str, float]:
        """``{metric: prior}`` where a metric has its own; the others use ``session_cv``."""
        return dict(self.session_cv_metrics)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["session_cv_metrics"] = self.session_cvs()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "gate settings") -> GateSettings:
        try:
            return cls(metrics=tuple(d["metrics"]) if d.get("metrics") else None,
                       default_metrics=tuple(d["default_metrics"]), tolerance=float(d["tolerance"]),
                       family_alpha=float(d["family_alpha"]), session_cv=float(d["session_cv"]),
                       sessions_kept=int(d.get("sessions_kept", 20)),
                       fail_inconclusive=bool(d.get("fail_inconclusive", False)),
                       require_baseline=bool(d.get("require_baseline", False)),
                       session_cv_metrics=tuple(sorted((str(k), float(v))
                                                       for k, v in (d.get("session_cv_metrics") or {}).items())))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{source}: not a valid gate settings object ({exc!r})") from None

    def metrics_for(self, summary: Mapping[str, float]) -> list[str]:
        """The metrics this test gates, given one run's summary (power metrics are added where measured)."""
        return gated_metrics(summary, self.metrics, self.default_metrics)


def gated_metrics(summary: Mapping[str, float], requested: Sequence[str] | None,
                  defaults: Sequence[str]) -> list[str]:
    """``requested`` if given, else ``defaults`` present in ``summary`` plus per-GPU power CV and J/token, and a
    saturation search's answer (``max_rate_at_slo_req_s`` / ``max_concurrency_at_slo``) where there is one."""
    if requested:
        return list(requested)
    power = sorted(k for k in summary if k.endswith("_power_cv")) + (
        ["energy_per_output_token_j"] if "energy_per_output_token_j" in summary else [])
    return [m for m in defaults if m in summary] + power + [k for k in SATURATION_KEYS if k in summary]


@dataclass(frozen=True)
class TestSettings:
    """Everything one test's bench needs, resolved once. ``num_requests``/``warmup`` None = per concurrency."""

    __test__ = False  # not a pytest test class

    repeats: int
    num_requests: int | None
    output_len: int
    warmup: int | None
    slo: SLO
    gate: GateSettings

    @classmethod
    def from_item(cls, item: pytest.Item, cfg: LLMPerfConfig) -> TestSettings:
        marker = item.get_closest_marker("llmperf")
        if marker is not None and marker.args:
            raise UsageError(f"{item.nodeid}: @pytest.mark.llmperf accepts only keyword arguments, got {marker.args!r}")
        return resolve(dict(marker.kwargs) if marker is not None else {}, cfg, where=item.nodeid)


def resolve(marker: Mapping[str, Any], cfg: LLMPerfConfig, *, where: str) -> TestSettings:
    """The one precedence function: a marker value, else the config's (CLI, else pyproject, else backend default)."""
    from pytest_llmperf.markers import validate_llmperf_kwargs

    m = validate_llmperf_kwargs((), dict(marker), where)
    slo = SLO.from_mapping(cfg.slo, source="[tool.llmperf.slo] in pyproject.toml")
    if m.get("slo"):
        slo = slo.merged(SLO.from_mapping(m["slo"], source=f"{where}: @pytest.mark.llmperf(slo=...)"))
    gate = GateSettings.from_config(cfg, m.get("metrics"))
    if "tolerance" in m:
        gate = GateSettings(**{**gate.__dict__, "tolerance": float(m["tolerance"])})
    return TestSettings(repeats=int(m.get("repeats", cfg.repeats)), num_requests=m.get("num_requests"),
                        output_len=int(m.get("output_len", cfg.output_len)),
                        warmup=m.get("warmup", cfg.warmup), slo=slo, gate=gate)


def config_for_backend(backend: str, rootdir: Any = ".", cli: Mapping[str, Any] | None = None) -> LLMPerfConfig:
    """The config a pytest session on ``backend`` would resolve from ``rootdir``'s pyproject (for the CLI)."""
    from pathlib import Path

    from pytest_llmperf.config import LLMPerfConfig, read_pyproject

    if backend not in ("cpu", "gpu"):
        raise UsageError(f"backend must be 'cpu' or 'gpu', got {backend!r}")
    return LLMPerfConfig.from_sources({**(cli or {}), "backend": backend}, read_pyproject(Path(rootdir)),
                                      gpus_available=1 if backend == "gpu" else 0)
