#!/usr/bin/env bash
# The GPU evidence run (issue: the suite on real H200s, NVLink and emulated PCIe), one phase per call so each
# fits a 10-minute slot. Run from the repository root on a machine where vLLM imports (e.g. the lent 2 x H200
# with PYTHONPATH=/root/site, see ../shared/gpu/README.md). Results, reports and baselines go to OUTDIR.
#
#   bash scripts/gpu-evidence.sh single  OUTDIR   # telemetry self-check + single-GPU sweep + agreement with vllm bench
#   bash scripts/gpu-evidence.sh pcie    OUTDIR   # TP=2 and PP=2 with PCIe emulation (NCCL P2P off, custom AR off)
#   bash scripts/gpu-evidence.sh nvlink  OUTDIR   # TP=2 and PP=2 over NVLink
set -uo pipefail
PHASE="$1"; OUT="${2:-.llmperf/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
SWEEP=(-p pytest_llmperf.plugin -p no:cacheprovider -rs --llmperf-backend gpu
       --llmperf-model deepseek-r1-distill-qwen-14b --llmperf-concurrency "${LLMPERF_CONCURRENCY:-1,8,32}"
       --llmperf-input-lens 256 --llmperf-output-len 64 --llmperf-num-requests 16 --llmperf-repeats 2
       --llmperf-max-model-len 4096 --llmperf-engine-args "--max-num-seqs 32" --llmperf-startup-timeout 420
       --llmperf-update-baselines --llmperf-update-reason "GPU evidence run, 2 x H200, $(date -u +%F)"
       --llmperf-results "$OUT/results-$PHASE.json" --llmperf-report-dir "$OUT/report-$PHASE")
case "$PHASE" in
  single)
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv | tee "$OUT/gpus.txt"
    nvidia-smi topo -m | tee -a "$OUT/gpus.txt"
    "$PY" -m pytest_llmperf.telemetry.selfcheck --seconds 3 --rate-hz 100 --gpus 0,1 --json "$OUT/selfcheck.json"
    "$PY" -m pytest perf_tests -m "pcie and single" --llmperf-modes single "${SWEEP[@]}" ;;
  pcie)
    "$PY" -m pytest perf_tests -m "pcie and not single" --llmperf-modes "${LLMPERF_MODES:-tp2,pp2}" \
        --llmperf-emulate-pcie on "${SWEEP[@]}" ;;
  nvlink)
    "$PY" -m pytest perf_tests -m nvlink --llmperf-modes "${LLMPERF_MODES:-tp2,pp2}" --llmperf-emulate-pcie off \
        "${SWEEP[@]}" ;;
  *) echo "unknown phase $PHASE (single | pcie | nvlink)"; exit 2 ;;
esac
status=$?
pgrep -af vllm.entrypoints && echo "WARNING: vLLM processes left behind" || echo "no vLLM process left"
exit $status
