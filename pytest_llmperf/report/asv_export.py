"""Export session results as an asv results tree, so the real ``asv publish`` draws each metric across commits.

Layout written under ``out_dir`` (the formats of asv 0.6: ``asv/results.py`` api_version 2,
``asv/benchmarks.py`` api_version 2, ``asv/machine.py`` api_version 1)::

    asv.conf.json                          project, repo, branches, results_dir, html_dir
    results/benchmarks.json                one "track" benchmark per (test group, metric)
    results/<machine>/machine.json         the hardware fingerprint as asv machine info
    results/<machine>/<commit[:8]>-<env>.json   one file per exported session (commit)

A benchmark is ``<test function>.<summary metric>`` (e.g. ``test_pcie_sweep.ttft_p95_ms``) with parameters
``mode``, ``concurrency`` and ``input_len``; its value is the median across the session's runs and the runs
themselves are kept as asv ``samples``. Exports merge: each call adds one commit and widens the parameter
lists in ``benchmarks.json``; asv maps older result files onto the wider lists itself. Then run
``asv publish --no-pull`` in ``out_dir`` (asv needs the git repository the commits belong to: ``repo``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import BaselineError, UsageError
from pytest_llmperf.report.json_io import write_results
from pytest_llmperf.report.terminal import group_name, mode_label

__all__ = ["export_asv", "machine_name", "metric_unit", "BENCHMARK_VERSION", "PARAM_NAMES"]

#: asv drops a result whose benchmark version differs from benchmarks.json; bump when meaning changes.
BENCHMARK_VERSION = "llmperf-summary-1"
PARAM_NAMES = ["mode", "concurrency", "input_len"]
_RESULT_COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
                   "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]
_UNITS = (("_ms", "ms"), ("_tok_s", "tokens/s"), ("_req_s", "requests/s"), ("_w", "W"), ("_j", "J"))
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_HEX = re.compile(r"^[0-9a-fA-F]{7,40}$")


def metric_unit(metric: str) -> str:
    """asv unit label from the metric's unit suffix (``unit`` for dimensionless: CV, shares, counts)."""
    for suffix, unit in _UNITS:
        if metric.endswith(suffix):
            return unit
    return "unit"


def machine_name(results: dict[str, Any]) -> str:
    """A filesystem-safe machine name from the fingerprint (its ``id`` if present)."""
    fp, header = results.get("fingerprint") or {}, results.get("header") or {}
    raw = fp.get("id") or "-".join(str(x) for x in (fp.get("gpu_count"), fp.get("gpu_model"),
                                                    fp.get("interconnect")) if x) or header.get("topology") or "unknown"
    return _SAFE.sub("-", str(raw)).strip("-").lower() or "unknown"


def _param(value: Any) -> str:
    return repr(value)  # asv stores parameter values as their repr strings ("'single'", "8")


def _collect(results: dict[str, Any]) -> dict[str, dict[tuple[str, str, str], list[float]]]:
    """benchmark name -> {(mode, concurrency, input_len) repr tuple: per-run values}."""
    out: dict[str, dict[tuple[str, str, str], list[float]]] = {}
    for test in results.get("tests", []):
        wl = test.get("workload", {})
        point = (_param(mode_label(test["engine"])), _param(wl.get("concurrency")), _param(wl.get("input_len")))
        for run in test.get("runs", []):
            for metric, value in (run.get("summary") or {}).items():
                if value is None:
                    continue
                name = f"{group_name(test['test_id'])}.{metric}"
                out.setdefault(name, {}).setdefault(point, []).append(float(value))
    return out


def _sort_params(values: set[str]) -> list[str]:
    def key(v: str) -> tuple[int, float, str]:
        try:
            return (0, float(v), v)
        except ValueError:
            order = {"'single'": 0}.get(v, 1 if v.startswith("'tp") else 2)
            return (order, 0.0, v)

    return sorted(values, key=key)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BaselineError(f"cannot read asv file {path}: {exc}") from exc


def _write_conf(out: Path, project: str, repo: str, branches: list[str], project_url: str | None) -> None:
    conf_path = out / "asv.conf.json"
    if conf_path.exists():
        return
    conf = {"version": 1, "project": project, "project_url": project_url or "", "repo": repo, "dvcs": "git",
            "branches": branches, "environment_type": "existing", "results_dir": "results", "html_dir": "html",
            "benchmark_dir": "benchmarks", "show_commit_url": (project_url.rstrip("/") + "/commit/")
            if project_url else ""}
    write_results(conf_path, conf)


def export_asv(out_dir: str | os.PathLike[str], results: dict[str, Any], commit_hash: str,
               date_unix_s: float | None = None, *, repo: str = "..", branches: list[str] | None = None,
               project: str = "pytest-llmperf", project_url: str | None = None,
               machine: str | None = None) -> Path:
    """Add one session's results (run at ``commit_hash``, committed at ``date_unix_s``) to the asv tree.

    ``date_unix_s`` defaults to the results' ``created_unix_s``. ``repo`` (relative to ``out_dir`` or
    absolute) and ``branches`` go into ``asv.conf.json`` the first time only. Returns the result file written.
    """
    if not _HEX.match(commit_hash or ""):
        raise UsageError(f"--commit must be a git commit hash (7-40 hex digits), got {commit_hash!r}")
    out = Path(out_dir)
    results_dir = out / "results"
    name = machine or machine_name(results)
    header, fp = results.get("header") or {}, results.get("fingerprint") or {}
    date_ms = int(round(1000 * float(date_unix_s if date_unix_s is not None else results["created_unix_s"])))
    _write_conf(out, project, repo, branches or ["main"], project_url)

    collected = _collect(results)
    bench_path = results_dir / "benchmarks.json"
    benchmarks = _load_json(bench_path) if bench_path.exists() else {"version": 2}
    result_rows: dict[str, list[Any]] = {}
    for bench, points in sorted(collected.items()):
        old = benchmarks.get(bench, {}).get("params") or [[], [], []]
        params = [_sort_params(set(old[i]) | {p[i] for p in points}) for i in range(3)]
        benchmarks[bench] = {
            "name": bench, "type": "track", "unit": metric_unit(bench.rsplit(".", 1)[1]),
            "params": params, "param_names": PARAM_NAMES, "version": BENCHMARK_VERSION,
            "pretty_name": bench.replace(".", ": ", 1), "timeout": 0, "code": f"pytest-llmperf summary {bench}",
        }
        own = [_sort_params({p[i] for p in points}) for i in range(3)]
        values, samples = [], []
        for combo in itertools.product(*own):
            runs = points.get(combo)
            values.append(statistics.median(runs) if runs else None)
            samples.append(runs if runs else None)
        row = [values, own, BENCHMARK_VERSION, date_ms, None, None, None, None, None, None, None, samples]
        result_rows[bench] = row
    write_results(bench_path, benchmarks)

    write_results(results_dir / name / "machine.json", {
        "machine": name, "os": fp.get("os", ""), "arch": fp.get("arch", ""),
        "cpu": fp.get("cpu_model", fp.get("gpu_model", "")), "num_cpu": str(fp.get("cpu_cores", "")),
        "ram": str(fp.get("ram", "")), "gpu": f"{fp.get('gpu_count', '')}x {fp.get('gpu_model', '')}".strip(),
        "interconnect": fp.get("interconnect", ""), "version": 1,
    })
    backend = header.get("backend") or "unknown"
    env_name = _SAFE.sub("-", f"llmperf-{backend}-{header.get('emulation') or 'native'}")
    data = {
        "commit_hash": commit_hash, "env_name": env_name, "date": date_ms,
        "params": {"machine": name, "backend": backend, "emulation": header.get("emulation") or "none",
                   "model": fp.get("model", "")},
        "python": "", "requirements": {"engine": header.get("engine_version") or ""}, "env_vars": {},
        "result_columns": _RESULT_COLUMNS, "results": result_rows, "durations": {}, "version": 2,
    }
    path = results_dir / name / f"{commit_hash[:8]}-{env_name}.json"
    write_results(path, data)
    return path
