"""Baselines on disk: ``<root>/<hardware_id>/<safe test id>--<model>-<hash>.json``, one JSON document per test and
model (a runner that gates two models keeps a baseline of each; files written before the model was in the name are
read for the model in their fingerprint and renamed on their next write).

A baseline keeps the raw per-run summaries (so later statistics stay possible), the session each run
came from (``run_sessions``, with ``sessions[id]`` = date, commit, machine), the full fingerprint,
provenance (commit, date, engine, command, who and why), each metric's run-to-run noise (informational),
and an ``anchor``: the runs of a pinned reference (a release, or the first sessions ever recorded) that
creep is measured against. Files written before sessions were stored have no ``run_sessions``: all their
runs count as one session named ``legacy`` (they carry no per-run date to group by).
Reads validate every field and raise :class:`~pytest_llmperf.errors.BaselineError` naming the file and
the field; writes are atomic (temporary file in the same folder, then ``os.replace``). A read-merge-write
runs inside :meth:`BaselineStore.transaction`: one ``flock`` on ``<hardware_id>/.lock`` held from the read
to the last write, so parallel updaters (pytest sessions, ``llmperf baseline update``) lose nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_llmperf.errors import BaselineError

__all__ = ["Baseline", "Provenance", "BaselineStore", "BASELINE_SCHEMA_VERSION", "LEGACY_SESSION", "safe_file_name"]

BASELINE_SCHEMA_VERSION = 1
LEGACY_SESSION = "legacy"  #: session id of runs recorded before sessions were stored (the same as stats/decision.py's)
_LOCK_NAME = ".lock"
_GITIGNORE = "# written by pytest-llmperf: each machine folder's lock file (held while baselines are written)\n.lock\n"


def safe_file_name(test_id: str, model: str | None = None) -> str:
    """A portable file name for ``test_id`` (and its model): readable ``[A-Za-z0-9._-]`` slugs plus 8 hex of a SHA-1.

    ``perf_tests/test_pcie.py::test_serving[pp2-c8-in256]``, ``tiny-llama`` ->
    ``perf_tests-test_pcie.py--test_serving-pp2-c8-in256--tiny-llama-<hash>.json``. Not reversible: the id and the
    model are stored inside the file, and the hash keeps ids that slug alike apart. Without a model: the name
    baselines had before the model was part of it.
    """
    readable = _file_slug(test_id, 120) or "test"
    if model is None:
        return f"{readable}-{hashlib.sha1(test_id.encode('utf-8')).hexdigest()[:8]}.json"
    digest = hashlib.sha1(f"{test_id}\n{model}".encode()).hexdigest()[:8]
    return f"{readable}--{_file_slug(model, 60) or 'model'}-{digest}.json"


def _file_slug(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text).strip("-.")[:limit]


def _of_model(baseline: Baseline, model: str | None) -> bool:
    """Whether ``baseline`` counts as ``model``'s: its fingerprint names that model, or none (any model given None)."""
    return model is None or baseline.fingerprint.get("model") in (None, model)


@dataclass(frozen=True)
class Provenance:
    """Who recorded a baseline, from what, when and why."""

    commit: str | None = None
    date_utc: str | None = None
    engine: str | None = None
    engine_version: str | None = None
    command: str | None = None
    user: str | None = None
    reason: str | None = None
    accepted_regression: bool = False


@dataclass
class Baseline:
    """One test's baseline: raw per-run summaries plus where they came from."""

    test_id: str
    fingerprint: dict[str, Any]
    runs: list[dict[str, float]]
    provenance: Provenance = field(default_factory=Provenance)
    noise: dict[str, float] | None = None
    schema_version: int = BASELINE_SCHEMA_VERSION
    run_sessions: list[str] | None = None  #: session id of each run (None: a legacy file, one session)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)  #: id -> date_utc, commit, machine
    anchor: dict[str, Any] | None = None  #: {"label", "pinned_utc", "auto", "runs", "run_sessions"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def session_ids(self) -> list[str]:
        """The session of each run; a legacy file's runs all belong to session ``legacy``."""
        if self.run_sessions is None:
            return [LEGACY_SESSION] * len(self.runs)
        return list(self.run_sessions)

    def anchor_runs(self) -> tuple[list[dict[str, float]], list[str], str] | None:
        """``(runs, their session ids, label)`` of the pinned anchor, or None when there is none."""
        if not self.anchor or not self.anchor.get("runs"):
            return None
        runs = self.anchor["runs"]
        sessions = self.anchor.get("run_sessions") or [LEGACY_SESSION] * len(runs)
        return list(runs), list(sessions), str(self.anchor.get("label") or "first sessions")

    @classmethod
    def from_dict(cls, d: Any, source: str = "<baseline>") -> Baseline:
        """Validate and build; every problem raises BaselineError naming ``source`` and the field."""

        def bad(name: str, what: str, value: Any) -> BaselineError:
            return BaselineError(f"{source}: field {name!r} {what}, got {type(value).__name__} {value!r:.80}")

        if not isinstance(d, dict):
            raise BaselineError(f"{source}: top level must be a JSON object, got {type(d).__name__}")
        version = d.get("schema_version")
        if "schema_version" not in d:
            raise BaselineError(f"{source}: field 'schema_version' is missing (not a pytest-llmperf baseline file, "
                                f"or one cut short)")
        if isinstance(version, bool) or not isinstance(version, int):
            raise bad("schema_version", "must be an integer", version)
        if version > BASELINE_SCHEMA_VERSION:
            raise BaselineError(
                f"{source}: field 'schema_version' is {version}, written by a newer pytest-llmperf "
                f"(this one reads up to {BASELINE_SCHEMA_VERSION}); upgrade pytest-llmperf"
            )
        if version < 1:
            raise bad("schema_version", "must be >= 1", version)
        if not isinstance(d.get("test_id"), str) or not d["test_id"]:
            raise bad("test_id", "must be a non-empty string", d.get("test_id"))
        if not isinstance(d.get("fingerprint"), dict):
            raise bad("fingerprint", "must be an object", d.get("fingerprint"))
        runs = d.get("runs")
        if not isinstance(runs, list):
            raise bad("runs", "must be a list of per-run summary objects", runs)
        for i, run in enumerate(runs):
            if not isinstance(run, dict):
                raise bad(f"runs[{i}]", "must be an object of metric -> number", run)
            for key, value in run.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise bad(f"runs[{i}].{key}", "must be a finite number", value)
        prov = d.get("provenance", {})
        if not isinstance(prov, dict):
            raise bad("provenance", "must be an object", prov)
        known = set(Provenance.__dataclass_fields__)
        for key, value in prov.items():
            if key not in known:
                continue  # forward compatible within a schema version
            if key == "accepted_regression":
                if not isinstance(value, bool):
                    raise bad("provenance.accepted_regression", "must be true or false", value)
            elif value is not None and not isinstance(value, str):
                raise bad(f"provenance.{key}", "must be a string or null", value)
        noise = d.get("noise")
        if noise is not None:
            if not isinstance(noise, dict):
                raise bad("noise", "must be an object of metric -> CV or null", noise)
            for key, value in noise.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                    raise bad(f"noise.{key}", "must be a non-negative number", value)
        run_sessions = d.get("run_sessions")
        if run_sessions is not None and (not isinstance(run_sessions, list) or len(run_sessions) != len(runs)
                                         or not all(isinstance(x, str) and x for x in run_sessions)):
            raise bad("run_sessions", f"must be a list of {len(runs)} session id strings (one per run)", run_sessions)
        sessions = d.get("sessions", {})
        if not isinstance(sessions, dict) or not all(isinstance(v, dict) for v in sessions.values()):
            raise bad("sessions", "must be an object of session id -> {date_utc, commit, machine}", sessions)
        anchor = d.get("anchor")
        if anchor is not None:
            if not isinstance(anchor, dict) or not isinstance(anchor.get("runs"), list):
                raise bad("anchor", "must be an object with a list 'runs'", anchor)
            for i, run in enumerate(anchor["runs"]):
                if not isinstance(run, dict) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in run.values()):
                    raise bad(f"anchor.runs[{i}]", "must be an object of metric -> finite number", run)
            a_sessions = anchor.get("run_sessions")
            if a_sessions is not None and (not isinstance(a_sessions, list) or len(a_sessions) != len(anchor["runs"])):
                raise bad("anchor.run_sessions", "must be a list with one session id per anchor run", a_sessions)
        return cls(
            schema_version=version,
            test_id=d["test_id"],
            fingerprint=dict(d["fingerprint"]),
            runs=[{k: float(v) for k, v in run.items()} for run in runs],
            provenance=Provenance(**{k: v for k, v in prov.items() if k in known}),
            noise=None if noise is None else {k: float(v) for k, v in noise.items()},
            run_sessions=None if run_sessions is None else list(run_sessions),
            sessions={str(k): dict(v) for k, v in sessions.items()},
            anchor=None if anchor is None else dict(anchor),
        )


class BaselineStore:
    """The baselines folder (usually ``baselines/`` at the repository root)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, hardware_id: str, test_id: str, model: str | None = None) -> Path:
        if not re.fullmatch(r"[a-z0-9._-]+", hardware_id) or hardware_id.startswith("."):
            raise BaselineError(f"hardware id {hardware_id!r} is not a safe folder name ([a-z0-9._-] only)")
        return self.root / hardware_id / safe_file_name(test_id, model)

    def _read(self, path: Path) -> Baseline:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BaselineError(f"{path}: cannot read baseline: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BaselineError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
        return Baseline.from_dict(data, source=str(path))

    def load(self, hardware_id: str, test_id: str, model: str | None = None) -> Baseline | None:
        """The stored baseline of ``test_id`` with ``model`` on this hardware, or None when there is none. A file
        named before the model was part of the name counts when its fingerprint holds this model (or none).
        Without ``model``: the test's one baseline, whatever its model (an error naming them when there are several)."""
        if model is None:
            found = [b for b in self.baselines(hardware_id) if b.test_id == test_id]
            if len(found) > 1:
                models = ", ".join(str(b.fingerprint.get("model")) for b in found)
                raise BaselineError(f"{self.root / hardware_id}: {test_id} has baselines of {len(found)} models "
                                    f"({models}); name the model")
            return found[0] if found else None
        for path in dict.fromkeys((self.path(hardware_id, test_id, model), self.path(hardware_id, test_id))):
            if not path.exists():
                continue
            baseline = self._read(path)
            if baseline.test_id != test_id:
                raise BaselineError(f"{path}: field 'test_id' is {baseline.test_id!r}, expected {test_id!r}")
            if _of_model(baseline, model):
                return baseline
        return None

    @contextlib.contextmanager
    def _locked(self, folder: Path) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: os.replace alone is still atomic
            self._open_lock(folder).close()
            yield
            return
        created = not folder.exists()
        while True:
            lock = self._open_lock(folder)
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:  # the holder before us may have removed the file (see below): then lock the new one
                if os.fstat(lock.fileno()).st_ino == os.stat(folder / _LOCK_NAME).st_ino:
                    break
            except FileNotFoundError:
                pass
            lock.close()
        with lock:
            try:
                yield
            finally:
                if created:  # a transaction that wrote nothing leaves no empty machine folder behind
                    with contextlib.suppress(OSError):
                        if [p.name for p in folder.iterdir()] == [_LOCK_NAME]:
                            (folder / _LOCK_NAME).unlink()
                            folder.rmdir()
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _open_lock(self, folder: Path) -> Any:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._ignore_lock_files()
            return open(folder / _LOCK_NAME, "a+b")  # the caller closes it
        except OSError as exc:
            raise BaselineError(f"baseline folder {folder} is not writable ({exc.strerror or exc}); "
                                f"check its permissions or choose another with --llmperf-baseline-dir") from exc

    def _ignore_lock_files(self) -> None:
        """The lock files are not baselines: a ``.gitignore`` in the root keeps them out of the team's commits
        (written once, as pytest does for its cache; a ``.gitignore`` already there is the team's and left alone)."""
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            with contextlib.suppress(OSError):
                ignore.write_text(_GITIGNORE, encoding="utf-8")

    @contextlib.contextmanager
    def transaction(self, hardware_id: str) -> Iterator[BaselineStore]:
        """Hold the folder's lock from the first read to the last write: ``with store.transaction(hw) as tx:``
        then ``tx.load`` / ``tx.save``. One process's read-merge-write never interleaves with another's."""
        self.path(hardware_id, "x")  # validates the folder name
        with self._locked(self.root / hardware_id):
            inner = BaselineStore(self.root)
            inner._held = True
            yield inner

    _held = False

    def save(self, baseline: Baseline, hardware_id: str | None = None) -> Path:
        """Write atomically; ``hardware_id`` defaults to the baseline fingerprint's. Returns the file path."""
        if hardware_id is None:
            from pytest_llmperf.errors import UsageError
            from pytest_llmperf.storage.fingerprint import Fingerprint

            try:
                hardware_id = Fingerprint.from_dict(baseline.fingerprint, "baseline fingerprint").hardware_id()
            except UsageError as exc:
                raise BaselineError(f"cannot save baseline of {baseline.test_id!r}: {exc}") from exc
        Baseline.from_dict(baseline.to_dict(), source=f"baseline of {baseline.test_id!r}")  # refuse to write junk
        model = baseline.fingerprint.get("model")
        path = self.path(hardware_id, baseline.test_id, model)
        legacy = self.path(hardware_id, baseline.test_id)
        payload = json.dumps(baseline.to_dict(), indent=2, sort_keys=True) + "\n"
        lock = contextlib.nullcontext() if self._held else self._locked(path.parent)
        with lock:
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
            except OSError as exc:
                raise BaselineError(f"{path.parent}: cannot write baselines there ({exc.strerror or exc})") from exc
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                if isinstance(exc, OSError):
                    raise BaselineError(f"{path}: cannot write baseline: {exc}") from exc
                raise
            if legacy != path and legacy.exists():  # this model's old-named file, which load read, is superseded
                with contextlib.suppress(BaselineError, OSError):
                    old = self._read(legacy)
                    if old.test_id == baseline.test_id and _of_model(old, model):
                        legacy.unlink()
        return path

    def hardware_ids(self) -> list[str]:
        """Folders under the root, one per machine/engine version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def baselines(self, hardware_id: str) -> list[Baseline]:
        """Every baseline on this hardware (each test and model), sorted by test id, then model."""
        folder = self.root / hardware_id
        if not folder.is_dir():
            return []
        found = [self._read(p) for p in folder.glob("*.json") if not p.name.startswith(".")]
        return sorted(found, key=lambda b: (b.test_id, str(b.fingerprint.get("model") or "")))

    def test_ids(self, hardware_id: str, model: str | None = None) -> list[str]:
        """Test ids with a baseline on this hardware (read from inside the files; of ``model`` only, if given)."""
        return sorted({b.test_id for b in self.baselines(hardware_id) if _of_model(b, model)})

    def stale(self, hardware_id: str, current_test_ids: Mapping[str, Any] | list[str] | set[str],
              model: str | None = None) -> list[str]:
        """Baselines (of ``model``, if given) of tests that no longer exist (not in ``current_test_ids``)."""
        current = set(current_test_ids)
        return [t for t in self.test_ids(hardware_id, model) if t not in current]
