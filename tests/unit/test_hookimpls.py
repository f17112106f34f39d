"""The plugin's hook implementations take every argument they declare from pluggy.

pluggy documents that a hook implementation's arguments with defaults are optional and not passed, and the GPU
image's pluggy behaved so: a defaulted argument kept its default whatever the caller passed. There the default
``pytest_llmperf_decide`` once judged every baseline as one session with no session prior, and labelled anchor
checks as regression checks, while pluggy 1.7 here passed everything. No default, no version dependence.
"""

from __future__ import annotations

import inspect

import pytest_llmperf.plugin as plugin


def _hookimpls() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(plugin).items()
            if name.startswith("pytest_") and inspect.isfunction(fn) and fn.__module__ == plugin.__name__}


def test_no_hook_implementation_argument_has_a_default() -> None:
    hooks = _hookimpls()
    assert "pytest_llmperf_decide" in hooks and "pytest_addoption" in hooks
    defaulted = {name: [p.name for p in sig.parameters.values() if p.default is not inspect.Parameter.empty]
                 for name, sig in hooks.items()}
    assert {name: args for name, args in defaulted.items() if args} == {}


def test_decide_hook_receives_the_sessions_through_old_pluggy_calling() -> None:
    """Call the default decide hook the way such a pluggy does (declared argnames only, via pluggy's own
    ``varnames``): three baseline sessions must reach the decision as three."""
    from pluggy._hooks import varnames

    argnames, _ = varnames(plugin.pytest_llmperf_decide)
    offered = dict(test_id="t", metric="tpot_p50_ms", baseline=[10.0, 10.1, 10.4, 10.5, 9.9, 10.0],
                   candidate=[10.2, 10.3, 10.1], direction="lower", tolerance=0.1, alpha=0.05,
                   baseline_sessions=["a", "a", "b", "b", "c", "c"], session_cv=0.05, kind="anchor", label="v1",
                   pass_alpha=0.05)
    v = plugin.pytest_llmperf_decide(**{k: offered[k] for k in argnames})
    assert (v.baseline_sessions, v.kind) == (3, "anchor")
