"""The gate's data types: the verdict states, one regression :class:`Check` and one :class:`Verdict`.

Pure data, no statistics: :mod:`pytest_llmperf.stats.decision` makes verdicts, :mod:`pytest_llmperf.stats.slo`
makes SLO verdicts, and the session, ``llmperf compare`` and ``llmperf baseline update`` only pass them on.
The verdict dict (:meth:`Verdict.to_dict`) is the one of docs/CONTRIBUTING-LAYERS.md.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pytest_llmperf.errors import UsageError

__all__ = ["VerdictState", "Verdict", "Check", "format_verdict"]


class VerdictState(str, enum.Enum):
    """What one check concluded. A ``str`` enum: ``VerdictState.FAIL == "FAIL"`` and it serialises as text."""

    PASS = "PASS"  #: the upper confidence bound of the worsening lies inside the tolerance (equivalence side)
    FAIL = "FAIL"  #: the lower confidence bound of the worsening lies beyond the tolerance (minimum-effect test)
    INCONCLUSIVE = "INCONCLUSIVE"  #: the confidence interval straddles the tolerance: more runs/sessions needed
    NO_BASELINE = "NO_BASELINE"  #: nothing stored to compare with
    MISMATCH = "MISMATCH"  #: the baseline was recorded on a different fingerprint
    SKIPPED = "SKIPPED"  #: the check could not be made (the message says why)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Check:
    """One regression check: baseline runs (each with its session) against one candidate session's runs.

    ``baseline_sessions`` names the session of each baseline run (same length as ``baseline``); ``None``
    means every baseline run comes from one session. ``tolerance`` is the relative worsening tolerated.
    """

    test_id: str
    metric: str
    baseline: tuple[float, ...]
    candidate: tuple[float, ...]
    direction: str
    tolerance: float
    baseline_sessions: tuple[str, ...] | None = None
    session_cv: float = 0.0  #: prior session-to-session std of logs (see stats/decision.py)
    kind: str = "regression"  #: "regression" (rolling window) or "anchor" (the pinned release baseline)
    label: str = ""  #: shown in the message, e.g. the anchor's name


@dataclass(frozen=True)
class Verdict:
    """One decision; the fields are exactly the verdict dict of CONTRIBUTING-LAYERS.md plus power figures.

    For ``kind="regression"`` / ``"anchor"``: values are medians per side, ``ratio`` the ratio of geometric
    means (candidate/baseline), ``ci_low..ci_high`` its (1-2*alpha) interval, ``p_value`` the one-sided p of
    "worse by more than the tolerance", ``min_detectable`` the smallest worsening this check FAILs with 80%
    power, as a relative change of the metric (positive for lower-is-better, negative for higher-is-better), ``baseline_sessions`` the sessions behind the baseline. For ``kind="slo"``:
    ``baseline_value`` is the limit and ``candidate_value`` the median over runs.
    """

    test_id: str
    metric: str
    kind: str
    verdict: str
    baseline_value: float | None = None
    candidate_value: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    alpha: float | None = None
    baseline_k: int | None = None
    candidate_k: int | None = None
    runs_needed: int | None = None
    message: str = ""
    tolerance: float | None = None
    min_detectable: float | None = None
    baseline_sessions: int | None = None
    underpowered: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> VerdictState:
        return VerdictState(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UsageError(f"verdict dict has unknown field(s) {sorted(unknown)}")
        for required in ("test_id", "metric", "kind", "verdict"):
            if not isinstance(d.get(required), str):
                raise UsageError(f"verdict dict field {required!r} must be a string, got {d.get(required)!r}")
        states = tuple(s.value for s in VerdictState)
        if d["verdict"] not in states:
            raise UsageError(f"verdict dict field 'verdict' must be one of {states}, got {d['verdict']!r}")
        return cls(**dict(d))


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def _num(x: float) -> str:
    return f"{x:.2g}" if x < 0.01 else f"{x:.3g}"


def format_verdict(v: Verdict) -> str:
    """The verdict's one readable line: its ``message`` when set, else one built from its fields."""
    if v.message:
        return v.message
    head = f"{v.verdict} {v.test_id} {v.metric}".replace("  ", " ")
    if v.kind == "slo":
        return f"{head} {v.candidate_value} vs limit {v.baseline_value}"
    k = f"K={v.baseline_k} vs {v.candidate_k}"
    if v.baseline_sessions is not None:
        k += f", {v.baseline_sessions} baseline session{'s' if v.baseline_sessions != 1 else ''}"
    tol = f"; tolerance {v.tolerance * 100:g}%" if v.tolerance is not None else ""
    need = f"; need K={v.runs_needed} per side" if v.runs_needed else ""
    mdc = ""
    if v.min_detectable is not None:
        mdc = f"; detects {'>=' if v.min_detectable >= 0 else '<='} {v.min_detectable * 100:+.0f}%"
    if v.verdict == VerdictState.NO_BASELINE:
        return f"{head} no baseline runs ({k})"
    if v.ratio is None:
        return f"{head} ({k}{tol}{need})"
    if v.p_value is None or v.alpha is None or v.ci_low is None or v.ci_high is None:
        return f"{head} {_pct(v.ratio)} ({k}{tol}{need})"
    level = f"{(1 - 2 * v.alpha) * 100:.4g}%"
    cmp = "<" if v.p_value < v.alpha else ">="
    against = f" vs anchor {v.extra.get('label')}" if v.kind == "anchor" and v.extra.get("label") else ""
    return (
        f"{head}{against} {_pct(v.ratio)} ({level} CI {_pct(v.ci_low)}..{_pct(v.ci_high)}, "
        f"p={_num(v.p_value)} {cmp} α={_num(v.alpha)}{tol}{mdc}; {k}{need})"
    )
