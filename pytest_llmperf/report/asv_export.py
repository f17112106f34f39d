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

The machine is the fingerprint's ``id`` when it has one, else its hardware class (``cpu-<model>-<N>c`` or
``gpu-<N>x<model>-<interconnect>``), so two kinds of CPU runner never share (and overwrite) one machine.
Every name that becomes a path is reduced to ``[a-z0-9._-]`` and may not be ``.``/``..``; the result path is
checked to lie inside ``results/``. The branch asv plots is the one given, else the branch checked out in
``repo``, else the repository's default branch (``origin/HEAD``), else ``main``; given project and branches
are written into an existing ``asv.conf.json`` too.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import BaselineError, UsageError
from pytest_llmperf.report.json_io import write_results
from pytest_llmperf.report.terminal import group_name, mode_label

__all__ = [
    "BENCHMARK_VERSION",
    "DEFAULT_PROJECT",
    "PARAM_NAMES",
    "export_asv",
    "git_branch",
    "machine_name",
    "metric_unit",
    "safe_name",
]

DEFAULT_PROJECT = "pytest-llmperf"

#: asv drops a result whose benchmark version differs from benchmarks.json; bump when meaning changes.
BENCHMARK_VERSION = "llmperf-summary-1"
PARAM_NAMES = ["mode", "concurrency", "input_len"]
_RESULT_COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
                   "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]
_UNITS = (("_ms", "ms"), ("_tok_s", "tokens/s"), ("_req_s", "requests/s"), ("_w", "W"), ("_j", "J"))
_SAFE = re.compile(r"[^a-z0-9_.-]+")
_HEX = re.compile(r"^[0-9a-fA-F]{7,40}$")


def metric_unit(metric: str) -> str:
    """asv unit label from the metric's unit suffix (``unit`` for dimensionless: CV, shares, counts)."""
    for suffix, unit in _UNITS:
        if metric.endswith(suffix):
            return unit
    return "unit"


def safe_name(raw: Any, what: str = "name") -> str:
    """``raw`` as one path component of ``[a-z0-9._-]``; never empty, ``.`` or ``..`` (UsageError then)."""
    name = _SAFE.sub("-", str(raw).lower()).strip("-.")
    if not name.strip("."):
        raise UsageError(f"asv {what} {raw!r} is not usable as a folder name (need letters or digits)")
    return name


def machine_name(results: dict[str, Any]) -> str:
    """The asv machine for these results: the fingerprint's ``id`` if present, else its hardware class
    (``cpu-amd-epyc-7r13-2c``, ``gpu-2xh200-nvlink``; engine, driver and CUDA versions are not part of it, so
    an upgrade stays on the same graph). Always one safe path component."""
    fp, header = results.get("fingerprint") or {}, results.get("header") or {}
    if fp.get("id"):
        return safe_name(fp["id"], "machine")
    from pytest_llmperf.storage.fingerprint import slug

    gpus = int(fp.get("gpu_count") or 0)
    if gpus > 0 or fp.get("backend") == "gpu":
        model = slug(str(fp.get("gpu_model") or "unknown"), hardware=True)
        raw = f"gpu-{gpus}x{model}-{fp.get('interconnect') or 'unknown'}"
    elif fp.get("cpu_model") or fp.get("cpu_cores"):
        raw = f"cpu-{slug(str(fp.get('cpu_model') or 'unknown'), hardware=True)}-{fp.get('cpu_cores') or 0}c"
    else:
        raw = header.get("topology") or "unknown"
    return safe_name(raw, "machine")


def git_branch(repo: str | os.PathLike[str]) -> str | None:
    """The branch checked out in ``repo``, else its default branch (``origin/HEAD``), else None."""
    def git(*argv: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *argv], capture_output=True, text=True, timeout=10,
                                 check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None

    head = git("symbolic-ref", "--quiet", "--short", "HEAD")
    if head:
        return head
    remote_head = git("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    return remote_head.split("/", 1)[1] if remote_head and "/" in remote_head else None


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


def _write_conf(out: Path, project: str | None, repo: str, branches: list[str] | None,
                project_url: str | None) -> None:
    """Write ``asv.conf.json``, or update the project and branches of an existing one when they are given."""
    conf_path = out / "asv.conf.json"
    if conf_path.exists():
        conf = _load_json(conf_path)
        changed = {k: v for k, v in (("project", project), ("branches", branches)) if v and conf.get(k) != v}
        if changed:
            write_results(conf_path, {**conf, **changed})
        return
    repo_path = Path(repo) if Path(repo).is_absolute() else out / repo
    conf = {"version": 1, "project": project or DEFAULT_PROJECT, "project_url": project_url or "", "repo": repo,
            "dvcs": "git", "branches": branches or [git_branch(repo_path) or "main"],
            "environment_type": "existing", "results_dir": "results", "html_dir": "html",
            "benchmark_dir": "benchmarks", "show_commit_url": (project_url.rstrip("/") + "/commit/")
            if project_url else ""}
    write_results(conf_path, conf)


def _inside(root: Path, path: Path) -> Path:
    if not path.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"asv export would write {path} outside {root}; refusing")
    return path


def export_asv(out_dir: str | os.PathLike[str], results: dict[str, Any], commit_hash: str,
               date_unix_s: float | None = None, *, repo: str = "..", branches: list[str] | None = None,
               project: str | None = None, project_url: str | None = None,
               machine: str | None = None) -> Path:
    """Add one session's results (run at ``commit_hash``, committed at ``date_unix_s``) to the asv tree.

    ``date_unix_s`` defaults to the results' ``created_unix_s``. ``repo`` (relative to ``out_dir`` or
    absolute) goes into ``asv.conf.json`` when it is first written; ``project`` and ``branches`` whenever
    given. ``machine`` overrides :func:`machine_name`. Returns the result file written.
    """
    if not _HEX.match(commit_hash or ""):
        raise UsageError(f"--commit must be a git commit hash (7-40 hex digits), got {commit_hash!r}")
    out = Path(out_dir)
    results_dir = out / "results"
    name = safe_name(machine, "machine") if machine else machine_name(results)
    header, fp = results.get("header") or {}, results.get("fingerprint") or {}
    date_ms = round(1000 * float(date_unix_s if date_unix_s is not None else results["created_unix_s"]))
    _write_conf(out, project, repo, branches, project_url)

    collected = _collect(results)
    bench_path = results_dir / "benchmarks.json"
    benchmarks: dict[str, Any] = _load_json(bench_path) if bench_path.exists() else {"version": 2}
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
            runs = points.get((combo[0], combo[1], combo[2]))
            values.append(statistics.median(runs) if runs else None)
            samples.append(runs if runs else None)
        row = [values, own, BENCHMARK_VERSION, date_ms, None, None, None, None, None, None, None, samples]
        result_rows[bench] = row
    write_results(bench_path, benchmarks)

    gpus = int(fp.get("gpu_count") or 0)
    write_results(_inside(results_dir, results_dir / name / "machine.json"), {
        "machine": name, "os": fp.get("os") or "", "arch": fp.get("arch") or "",
        "cpu": fp.get("cpu_model") or "", "num_cpu": str(fp.get("cpu_cores") or ""),
        "ram": str(fp.get("ram") or ""), "gpu": f"{gpus}x {fp.get('gpu_model')}" if gpus else "none",
        "interconnect": fp.get("interconnect") or "", "version": 1,
    })
    backend = header.get("backend") or "unknown"
    env_name = safe_name(f"llmperf-{backend}-{header.get('emulation') or 'native'}", "environment")
    data = {
        "commit_hash": commit_hash, "env_name": env_name, "date": date_ms,
        "params": {"machine": name, "backend": backend, "emulation": header.get("emulation") or "none",
                   "model": fp.get("model", "")},
        "python": "", "requirements": {"engine": header.get("engine_version") or ""}, "env_vars": {},
        "result_columns": _RESULT_COLUMNS, "results": result_rows, "durations": {}, "version": 2,
    }
    path = _inside(results_dir, results_dir / name / f"{commit_hash[:8]}-{env_name}.json")
    write_results(path, data)
    return path
