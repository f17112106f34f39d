"""Security properties of the GitHub Actions workflows, kept by a structural check (issue 14).

Only trusted code reaches the self-hosted GPU runners; every token is least-privilege; no cache is shared
between jobs that run pull-request code and jobs that hold a write token; every action is pinned by commit;
checkouts keep no credentials. :func:`workflow_problems` lists the violations of one parsed workflow; it is
run on every workflow in the repository (must find none) and on the insecure perf-gpu.yml this repository
had before (must find each of the issue's findings), so the check itself can fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
SAME_REPO = "github.event.pull_request.head.repo.full_name == github.repository"
_SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
_UNTRUSTED_TRIGGERS = ("pull_request", "pull_request_target", "issue_comment", "workflow_run")

#: perf-gpu.yml as it was when issue 14 was filed (abridged to what the check reads)
INSECURE_PERF_GPU = """
on:
  pull_request:
    types: [labeled, synchronize, opened, reopened]
  push:
    branches: [main]
permissions:
  contents: read
jobs:
  perf:
    if: github.event_name != 'pull_request' || contains(github.event.pull_request.labels.*.name, 'perf')
    runs-on: [self-hosted, linux, gpu, pcie]
    env:
      PIP_CACHE_DIR: /opt/llmperf-cache/pip
    steps:
      - uses: actions/checkout@v4
      - run: python -m pip install -e '.[gpu,dev]'
"""
INSECURE_BASELINE_UPDATE = """
on:
  workflow_dispatch:
permissions:
  contents: write
  pull-requests: write
jobs:
  update:
    runs-on: [self-hosted, linux, gpu, pcie]
    env:
      PIP_CACHE_DIR: /opt/llmperf-cache/pip
    steps:
      - uses: actions/checkout@v4
      - run: python -m pip install -e '.[gpu,dev]'
      - uses: peter-evans/create-pull-request@v7
"""


def _parse(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    if isinstance(data["on"], (str, list)):
        data["on"] = {t: None for t in ([data["on"]] if isinstance(data["on"], str) else data["on"])}
    return data


def _self_hosted(job: dict[str, Any], wf: dict[str, Any]) -> bool:
    runs_on = job.get("runs-on")
    if isinstance(runs_on, str) and "matrix." in runs_on:
        include = job.get("strategy", {}).get("matrix", {}).get("include", [])
        runs_on = [label for entry in include for label in (entry.get("runner") or [])]
    labels = runs_on if isinstance(runs_on, list) else [runs_on]
    return "self-hosted" in labels


def _writes(perms: Any) -> bool:
    if perms in ("write-all",):
        return True
    return isinstance(perms, dict) and any(v == "write" for v in perms.values())


def _cache_dirs(job: dict[str, Any], wf: dict[str, Any]) -> set[str]:
    """Persistent cache locations a job uses (job-private ``runner.temp`` dirs do not count)."""
    env = {**(wf.get("env") or {}), **(job.get("env") or {})}
    dirs = set()
    for key in ("PIP_CACHE_DIR", "HF_HOME", "XDG_CACHE_HOME", "UV_CACHE_DIR"):
        value = str(env.get(key, ""))
        if value and "runner.temp" not in value:
            dirs.add(value)
    no_cache = str(env.get("PIP_NO_CACHE_DIR", "")) in ("1", "true", "True")
    installs = any("pip install" in s.get("run", "") for s in job.get("steps", []))
    if _self_hosted(job, wf) and installs and not no_cache and "PIP_CACHE_DIR" not in env:
        dirs.add("~/.cache/pip (default, persistent on a self-hosted runner)")
    for step in job.get("steps", []):
        uses = step.get("uses", "")
        if uses.startswith("actions/cache@") or (step.get("with") or {}).get("cache"):
            dirs.add(f"actions cache via {uses.split('@')[0]}")
    return dirs


def workflow_problems(wf: dict[str, Any], name: str) -> list[str]:
    """Every violation of the trust rules in one parsed workflow, one readable line each."""
    problems: list[str] = []
    triggers = set(wf["on"] or {})
    untrusted = triggers & set(_UNTRUSTED_TRIGGERS)
    if "pull_request_target" in triggers:
        problems.append(f"{name}: pull_request_target runs with the base repository's token; not allowed")
    if wf.get("permissions") not in ({}, "read-all", None) and _writes(wf.get("permissions")):
        problems.append(f"{name}: top-level permissions grant write; use `permissions: {{}}` and per-job grants")
    if wf.get("permissions") is None:
        problems.append(f"{name}: no top-level permissions (the default token may be read-write)")
    jobs = wf.get("jobs", {})
    writers = {j for j, job in jobs.items() if _writes(job.get("permissions", wf.get("permissions")))}
    for jname, job in jobs.items():
        where = f"{name}:{jname}"
        if "permissions" not in job:
            problems.append(f"{where}: no job-level permissions (least privilege per job)")
        hosted_self = _self_hosted(job, wf)
        if hosted_self and untrusted:
            cond = str(job.get("if", ""))
            if SAME_REPO not in cond:
                problems.append(f"{where}: runs pull-request code on a self-hosted runner without limiting it to "
                                f"same-repository branches ({SAME_REPO})")
        if jname in writers:
            if hosted_self:
                problems.append(f"{where}: holds a write token on a self-hosted runner (shared with PR code)")
            if untrusted:
                problems.append(f"{where}: holds a write token in a workflow that pull requests trigger")
            if any("run" in s for s in job.get("steps", [])):
                problems.append(f"{where}: holds a write token and runs shell steps (keep writers code-free)")
            if _cache_dirs(job, wf):
                problems.append(f"{where}: holds a write token and uses a cache: {sorted(_cache_dirs(job, wf))}")
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses and not uses.startswith("./") and not _SHA_PIN.match(uses):
                problems.append(f"{where}: {uses} is not pinned by a full commit SHA")
            if uses and uses.startswith("actions/checkout@"):
                if (step.get("with") or {}).get("persist-credentials") is not False:
                    problems.append(f"{where}: checkout without persist-credentials: false")
    return problems


def _all() -> dict[str, dict[str, Any]]:
    return {f.name: _parse(f.read_text()) for f in FILES}


def test_every_workflow_follows_the_trust_rules() -> None:
    assert FILES
    problems = [p for name, wf in _all().items() for p in workflow_problems(wf, name)]
    assert problems == [], "\n".join(problems)


def test_the_check_finds_the_findings_of_issue_14() -> None:
    found = "\n".join(workflow_problems(_parse(INSECURE_PERF_GPU), "perf-gpu.yml")
                      + workflow_problems(_parse(INSECURE_BASELINE_UPDATE), "baseline-update.yml"))
    for expected in ("without limiting it to same-repository branches", "actions/checkout@v4 is not pinned",
                     "checkout without persist-credentials: false", "no job-level permissions",
                     "top-level permissions grant write", "holds a write token on a self-hosted runner",
                     "holds a write token and runs shell steps", "holds a write token and uses a cache"):
        assert expected in found, f"the check missed: {expected}\n{found}"


def test_no_persistent_cache_shared_between_pr_code_and_write_tokens() -> None:
    """A cache location used by any job that can run pull-request code is used by no job with a write token,
    across all workflows (the runner host is shared)."""
    wfs = _all()
    pr_dirs: set[str] = set()
    writer_dirs: set[str] = set()
    for wf in wfs.values():
        for job in wf["jobs"].values():
            dirs = _cache_dirs(job, wf)
            if _writes(job.get("permissions", wf.get("permissions"))):
                writer_dirs |= dirs
            if set(wf["on"] or {}) & set(_UNTRUSTED_TRIGGERS) or _self_hosted(job, wf):
                pr_dirs |= dirs
    assert not pr_dirs & writer_dirs
    assert not writer_dirs


def test_uses_pins_carry_the_version_as_a_comment() -> None:
    for f in FILES:
        for line in f.read_text().splitlines():
            if re.match(r"\s*(- )?uses: ", line):
                assert re.search(r"@[0-9a-f]{40}\s+# v\d+(\.\d+)*$", line), f"{f.name}: {line.strip()}"


def test_fork_pull_requests_have_a_maintainer_path_pinned_to_the_reviewed_commit() -> None:
    wf = _all()["perf-gpu.yml"]
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert {"pr", "sha"} <= set(inputs)
    steps = wf["jobs"]["perf"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert "refs/pull/{0}/head" in checkout["with"]["ref"]
    verify = [s for s in steps if "git rev-parse HEAD" in s.get("run", "")]
    assert verify and "$SHA" in verify[0]["run"] and "exit 1" in verify[0]["run"]
    assert steps.index(verify[0]) < next(i for i, s in enumerate(steps) if "pip install" in s.get("run", ""))
    # a labelled fork PR is not re-run on push: the pull_request condition requires the same repository
    assert SAME_REPO in wf["jobs"]["perf"]["if"]


def test_runner_doc_says_how_to_run_ephemeral_runners() -> None:
    doc = (ROOT / "docs" / "self-hosted-runner.md").read_text()
    for needle in ("--ephemeral", "one job", "fresh", "Selected workflows", "approval"):
        assert needle in doc, needle
