"""Read and write the session results JSON (the stable schema ``llmperf report`` consumes).

The file is written once per session by the session layer (and by ``llmperf run --json``) and read back by
``llmperf report``, ``compare`` and ``baseline update``, all through :func:`results_from_document`, which also
converts the older ``llmperf run --json`` documents (``endpoint``/``metrics``/``requests`` without
``schema_version``) and names a baseline file given in place of results. Writes are
atomic (a temporary file in the same folder, fsync, ``os.replace``), so a killed job never leaves half a
file. Reads check ``schema_version`` and every required key and raise errors that name the file and key.
The schema is documented in ``docs/reports.md``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import BaselineError, UsageError
from pytest_llmperf.records import SCHEMA_VERSION

__all__ = [
    "REQUIRED_RUN_KEYS",
    "REQUIRED_TEST_KEYS",
    "REQUIRED_TOP_KEYS",
    "REQUIRED_VERDICT_KEYS",
    "is_baseline_document",
    "load_results_any",
    "merge_results",
    "read_json",
    "read_results",
    "read_text",
    "results_from_document",
    "results_from_run_report",
    "validate_results",
    "write_results",
]

REQUIRED_TOP_KEYS = ("schema_version", "created_unix_s", "header", "fingerprint", "tests", "verdicts")
REQUIRED_HEADER_KEYS = ("topology", "engine_version", "emulation", "backend")
REQUIRED_TEST_KEYS = ("test_id", "engine", "workload", "runs")
REQUIRED_ENGINE_KEYS = ("mode", "tp", "pp", "backend")
REQUIRED_WORKLOAD_KEYS = ("concurrency", "input_len", "output_len")
REQUIRED_RUN_KEYS = ("run_index", "window", "summary")
REQUIRED_VERDICT_KEYS = ("test_id", "metric", "kind", "verdict", "message")
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "NO_BASELINE", "MISMATCH", "SKIPPED")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    try:  # numpy scalars and arrays, without importing numpy here
        return obj.tolist()
    except AttributeError:
        pass
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _finite(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_results(path: str | os.PathLike[str], results: dict[str, Any]) -> Path:
    """Write ``results`` to ``path`` atomically (parents created). Returns the path written.

    Raises :class:`BaselineError` naming the file when it cannot be written.
    """
    target = Path(path)
    try:
        text = json.dumps(_finite(json.loads(json.dumps(results, default=_json_default))), indent=1)
    except (TypeError, ValueError) as exc:
        raise BaselineError(f"cannot serialise results for {target}: {exc}") from exc
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise BaselineError(f"cannot write results file {target}: {exc}") from exc
    return target


def _require_numbers(obj: Any, where: str, path: Path) -> None:
    """A run's summary: metric -> number, or null where the metric had no value (NaN is written as null)."""
    if not isinstance(obj, dict):
        raise BaselineError(f"{path}: {where} must be an object, found {type(obj).__name__}")
    for key, value in obj.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise BaselineError(f"{path}: {where}.{key} must be a number or null, found {value!r}")


def _require(obj: Any, keys: tuple[str, ...], where: str, path: Path) -> None:
    if not isinstance(obj, dict):
        raise BaselineError(f"{path}: {where} must be an object, found {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise BaselineError(f"{path}: missing required key {where}.{key}" if where else
                                f"{path}: missing required key {key!r}")


def validate_results(results: Any, path: str | os.PathLike[str] = "<results>") -> dict[str, Any]:
    """Check the schema of a results dict; return it. Errors name ``path`` and the offending key."""
    p = Path(path)
    if not isinstance(results, dict):
        raise BaselineError(f"{p}: results must be a JSON object, found {type(results).__name__}")
    if "schema_version" not in results:
        raise BaselineError(f"{p}: missing required key 'schema_version' (not a pytest-llmperf results file?)")
    version = results["schema_version"]
    if version != SCHEMA_VERSION:
        raise BaselineError(f"{p}: schema_version {version!r} is not supported (this version reads "
                            f"{SCHEMA_VERSION}); regenerate it or use a matching pytest-llmperf")
    _require(results, REQUIRED_TOP_KEYS, "", p)
    _require(results["header"], REQUIRED_HEADER_KEYS, "header", p)
    if not isinstance(results["tests"], list):
        raise BaselineError(f"{p}: key 'tests' must be a list")
    for i, test in enumerate(results["tests"]):
        _require(test, REQUIRED_TEST_KEYS, f"tests[{i}]", p)
        _require(test["engine"], REQUIRED_ENGINE_KEYS, f"tests[{i}].engine", p)
        _require(test["workload"], REQUIRED_WORKLOAD_KEYS, f"tests[{i}].workload", p)
        for j, run in enumerate(test["runs"]):
            _require(run, REQUIRED_RUN_KEYS, f"tests[{i}].runs[{j}]", p)
            _require(run["window"], ("start_unix_s", "end_unix_s"), f"tests[{i}].runs[{j}].window", p)
            _require_numbers(run["summary"], f"tests[{i}].runs[{j}].summary", p)
    if not isinstance(results["verdicts"], list):
        raise BaselineError(f"{p}: key 'verdicts' must be a list")
    for i, verdict in enumerate(results["verdicts"]):
        _require(verdict, REQUIRED_VERDICT_KEYS, f"verdicts[{i}]", p)
        if verdict["verdict"] not in VERDICTS:
            raise BaselineError(f"{p}: verdicts[{i}].verdict is {verdict['verdict']!r}, expected one of "
                                f"{', '.join(VERDICTS)}")
    traces = results.get("telemetry_traces")
    if traces is not None and not isinstance(traces, dict):
        raise BaselineError(f"{p}: key 'telemetry_traces' must be an object")
    return results


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate a session results file (schema version 1 exactly; :func:`load_results_any` also takes
    the older ``llmperf run --json`` documents).

    Raises :class:`UsageError` when the file is missing, unreadable or not JSON, and :class:`BaselineError` when
    it is of another schema version or lacks a required key.
    """
    return validate_results(read_json(path), path)


def read_text(path: Path) -> str:
    """The file's text; gzip files (``*.gz``, or any name that holds gzip data) are gunzipped (the study's recorded
    sessions are kept compressed)."""
    data = path.read_bytes()
    if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        import gzip

        data = gzip.decompress(data)
    return data.decode("utf-8")


def merge_results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from several sessions (e.g. a study recorded in parts): the first file's header and
    fingerprint, every file's tests, verdicts, notes, study lines and traces, in order."""
    if len(parts) == 1:
        return parts[0]
    merged = dict(parts[0])
    merged["created_unix_s"] = min(float(p["created_unix_s"]) for p in parts)
    for key in ("verdicts", "notes", "study_lines"):
        merged[key] = [item for p in parts for item in p.get(key) or []]
    merged["tests"] = _tests_labelled(parts)
    merged["telemetry_traces"] = {k: v for p in parts for k, v in (p.get("telemetry_traces") or {}).items()}
    starts = [s for p in parts for s in (p.get("header") or {}).get("engine_starts") or []]
    merged["header"] = {**parts[0]["header"], "engine_starts": starts, "merged_sessions": len(parts)}
    if len({str((p.get("header") or {}).get("record_command")) for p in parts}) > 1:
        merged["header"].pop("record_command", None)  # each session had its own: none speaks for all the tests
    return merged


def _tests_labelled(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every part's tests; where the parts differ in what a row's mode alone does not say, each display label
    names it, so tables and plots keep every row instead of one hiding another: the link of a multi-GPU engine
    (an NVLink and an emulated-PCIe session: ``tp2 (emulated PCIe)``), the model (a dense and a MoE session:
    ``tp2 (qwen3-30b-a3b)``) and the machine (the same suite on two runners: ``single (1 x NVIDIA H200)``)."""
    from pytest_llmperf.report.study import link_of

    rows = [(test, link_of(test, p.get("fingerprint") or {}),
             str((test.get("engine") or {}).get("model") or (p.get("header") or {}).get("model") or ""),
             _machine_of(p)) for p in parts for test in p.get("tests") or []]
    mixed_links = len({link for _, link, _, _ in rows if link != "one GPU"}) > 1
    mixed_models = len({model for _, _, model, _ in rows}) > 1
    mixed_machines = len({machine for _, _, _, machine in rows}) > 1
    if not (mixed_links or mixed_models or mixed_machines):
        return [test for test, _, _, _ in rows]
    from pytest_llmperf.report.terminal import mode_label

    out = []
    for test, link, model, machine in rows:
        engine = dict(test.get("engine") or {})
        said = [link if mixed_links and link != "one GPU" else "", model if mixed_models else "",
                machine if mixed_machines else ""]
        engine["label"] = f"{mode_label(engine)} ({', '.join(x for x in said if x)})" if any(said) else mode_label(engine)
        out.append({**test, "engine": engine})
    return out


def _machine_of(part: dict[str, Any]) -> str:
    """``2 x NVIDIA H200`` or the CPU model and cores, from a session's fingerprint (its header's topology else)."""
    fp = part.get("fingerprint") or {}
    if fp.get("gpu_count"):
        return f"{fp['gpu_count']} x {fp.get('gpu_model') or 'GPU'}"
    if fp.get("cpu_model"):
        return f"{fp['cpu_model']}, {fp.get('cpu_cores') or '?'} cores"
    return str((part.get("header") or {}).get("topology") or "")


#: summary key -> (metric of an old ``llmperf run --json`` document, distribution field)
_RUN_SUMMARY_KEYS = {
    **{f"ttft_p{q}_ms": ("ttft_ms", f"p{q}") for q in (50, 90, 95, 99)},
    "tpot_p50_ms": ("tpot_ms", "p50"), "tpot_p95_ms": ("tpot_ms", "p95"),
    "itl_p50_ms": ("itl_ms", "p50"), "itl_p99_ms": ("itl_ms", "p99"),
    "e2el_p50_ms": ("e2el_ms", "p50"), "e2el_p95_ms": ("e2el_ms", "p95"),
}


def results_from_run_report(doc: dict[str, Any], path: str | os.PathLike[str] = "<run>") -> dict[str, Any]:
    """A results dict (one test, one run) from an ``llmperf run --json`` document of the older format."""
    p = Path(path)
    try:
        metrics, workload, model = doc["metrics"], doc["workload"], str(doc["model"])
        summary: dict[str, float | None] = {}
        for key, (metric, field) in _RUN_SUMMARY_KEYS.items():
            dist = metrics.get(metric)
            summary[key] = None if not dist else dist.get(field)
        for key in ("output_throughput_tok_s", "request_throughput_req_s"):
            summary[key] = metrics.get(key)
        summary["failed"] = float(metrics.get("failed") or 0)
        window = doc.get("window") or {"start_unix_s": 0.0, "end_unix_s": float(metrics.get("duration_s") or 0)}
        rate = f"-r{workload['request_rate']:g}" if workload.get("request_rate") else ""
        test_id = (f"llmperf-run::run[{model}-c{workload['concurrency']}-in{workload['input_len']}"
                   f"-out{workload['output_len']}{rate}]")
    except (KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{p}: not an llmperf run --json document (missing or malformed {exc})") from None
    return {
        "schema_version": SCHEMA_VERSION, "created_unix_s": float(window["start_unix_s"]),
        "header": {"topology": f"external endpoint {doc.get('endpoint')}", "engine_version": "unknown",
                   "emulation": None, "backend": "external", "endpoint": doc.get("endpoint"), "model": model},
        "fingerprint": {"backend": "cpu", "engine": "endpoint", "engine_version": "unknown", "model": model},
        "tests": [{"test_id": test_id, "engine": {"mode": "single", "tp": 1, "pp": 1, "backend": "external",
                                                  "model": model},
                   "workload": {k: v for k, v in workload.items() if k != "timeout_s"},
                   "runs": [{"run_index": 0, "window": window, "summary": {k: v for k, v in summary.items()
                                                                          if v is not None},
                             "requests": doc.get("requests") or []}],
                   "engine_startup_s": None, "verdicts": []}],
        "verdicts": [],
    }


def read_json(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON of ``path`` (.json or .json.gz); :class:`UsageError` naming the file when it is missing,
    unreadable or not JSON."""
    p = Path(path)
    try:
        return json.loads(read_text(p))
    except FileNotFoundError:
        raise UsageError(f"{p} does not exist") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise UsageError(f"{p}: cannot read: {exc}") from None


def is_baseline_document(data: Any) -> bool:
    """A baseline file's content (one test's ``test_id`` and ``runs``), not a session's results (``tests``)."""
    return isinstance(data, dict) and "runs" in data and "test_id" in data and "tests" not in data


def results_from_document(data: Any, path: str | os.PathLike[str] = "<results>") -> dict[str, Any]:
    """A validated results dict from a parsed session results file or any ``llmperf run --json`` document.

    Raises :class:`UsageError` naming ``path`` for another kind of document (a baseline file is named as one:
    :mod:`pytest_llmperf.commands.compare` reads those itself) or a schema error.
    """
    p = Path(path)
    if is_baseline_document(data):
        raise UsageError(f"{p} is a baseline file, not a results file: give the results a session wrote "
                         f"(pytest --llmperf-results, llmperf run --json)")
    try:
        if isinstance(data, dict) and "schema_version" in data:
            return validate_results(data, p)
        if isinstance(data, dict) and {"metrics", "workload", "model"} <= set(data):
            return validate_results(results_from_run_report(data, p), p)
    except BaselineError as exc:
        raise UsageError(str(exc)) from None
    raise UsageError(f"{p}: not a results file: expected the one pytest --llmperf-results or llmperf run --json "
                     f"writes (key 'schema_version'), or an older llmperf run --json document (keys 'metrics', "
                     f"'workload', 'model')")


def load_results_any(path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`results_from_document` of the file at ``path``."""
    return results_from_document(read_json(path), path)
