"""Read and write the session results JSON (the stable schema ``llmperf report`` consumes).

The file is written once per session by the session layer and read back by ``llmperf report``. Writes are
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
    "write_results",
    "read_results",
    "validate_results",
    "REQUIRED_TOP_KEYS",
    "REQUIRED_TEST_KEYS",
    "REQUIRED_RUN_KEYS",
    "REQUIRED_VERDICT_KEYS",
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
    """Load and validate a session results file.

    Raises :class:`UsageError` when the file does not exist (a wrong argument) and :class:`BaselineError`
    when it is unreadable, not JSON, of another schema version or lacks a required key.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"results file {p} does not exist (write one with pytest --llmperf-results {p})")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"cannot read results file {p}: {exc}") from exc
    return validate_results(data, p)
