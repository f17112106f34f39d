#!/usr/bin/env bash
# The GPU study (single vs TP=2 vs PP=2 over NVLink and emulated PCIe), one phase per call so each fits a
# 10-minute slot. Run from the repository root on a machine where vLLM imports (e.g. the lent 2 x H200 with
# PYTHONPATH=/root/site, see ../shared/gpu/README.md). Results, reports, engine logs and the new baselines are
# packed into OUTDIR/<phase>.tgz.
#
#   bash scripts/gpu-evidence.sh single OUTDIR   # telemetry self-check + the single-GPU sweep
#   bash scripts/gpu-evidence.sh pcie   OUTDIR   # TP=2 and PP=2 with PCIe emulation (every peer path off, proven
#                                                #   from the engine log) + client agreement on the TP=2 engine
#   bash scripts/gpu-evidence.sh nvlink OUTDIR   # TP=2 and PP=2 over NVLink
#   bash scripts/gpu-evidence.sh dp     OUTDIR   # DP=2 (two replicas) on both links (add to the study's tables)
#   bash scripts/gpu-evidence.sh moe    OUTDIR   # the MoE preset: single, TP=2 and EP=2 on both links
#   bash scripts/gpu-evidence.sh rerun  OUTDIR   # gate proof: an unchanged rerun against the committed baselines
#   bash scripts/gpu-evidence.sh regress OUTDIR  # gate proof: TP=2 on NVLink without vLLM's custom all-reduce
#
# LLMPERF_MODES narrows a phase (e.g. LLMPERF_MODES=tp2); LLMPERF_STUDY_ARGS adds pytest arguments;
# LLMPERF_REGRESS_ARGS replaces the regress phase's change (default --disable-custom-all-reduce);
# LLMPERF_LINKS=pcie or nvlink runs one link of the dp and moe phases (each fits a 10-minute call);
# LLMPERF_TAG names a repeat of a phase on the same machine (results in .llmperf/gpu-PHASE-TAG, OUTDIR/PHASE-TAG.tgz);
# LLMPERF_ENGINE_ARGS replaces the engines' extra vLLM arguments (default --max-num-seqs 32: keep it, add the change
# under test); LLMPERF_RECORD=0 gates a study phase without recording it (a deliberately changed engine).
# The workload is the issue's: 512-token prompts -> 128 tokens, concurrency 1, 8, 32, K=5 runs per point, each
# run at least 3 waves of the concurrency (96 requests at 32), CUDA graphs on (never eager).
set -uo pipefail
PHASE="$1"; OUT="${2:-.llmperf/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
NAME="$PHASE${LLMPERF_TAG:+-$LLMPERF_TAG}"
RES=".llmperf/gpu-$NAME"
# the model is set here, once: a second --llmperf-model later on the line would silently win (argparse keeps the
# last), which is how a first MoE run measured the 14B dense model
MODEL=deepseek-r1-distill-qwen-14b; [ "$PHASE" = moe ] && MODEL=qwen3-30b-a3b
SWEEP=(-p pytest_llmperf.plugin -p no:cacheprovider -rs --llmperf-backend gpu
       --llmperf-model "$MODEL" --llmperf-concurrency "${LLMPERF_CONCURRENCY:-1,8,32}"
       --llmperf-input-lens 512 --llmperf-output-len 128 --llmperf-num-requests 6 --llmperf-min-waves 3
       --llmperf-repeats 5 --llmperf-max-model-len 4096 --llmperf-engine-args "${LLMPERF_ENGINE_ARGS:---max-num-seqs 32}"
       --llmperf-startup-timeout 420
       --llmperf-results "$RES/results.json" --llmperf-report-dir "$RES/report" ${LLMPERF_STUDY_ARGS:-})
# every runtime dependency in pyproject.toml must import here before an engine start is spent (a GPU image
# staged by hand lacks what the payload does not carry: ruptures cost one 5-minute session to find out)
"$PY" - <<'PY' || exit 3
import importlib, re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
names = {"nvidia-ml-py": "pynvml", "prometheus-client": "prometheus_client"}
missing = []
for dep in deps:
    if ";" in dep and "python_version < '3.11'" in dep:
        continue
    dist = re.match(r"[A-Za-z0-9_.-]+", dep).group(0)
    try:
        importlib.import_module(names.get(dist, dist.replace("-", "_")))
    except ImportError as exc:
        missing.append(f"{dist} ({exc})")
if missing:
    sys.exit("gpu-evidence: missing on this machine (pyproject dependencies): " + "; ".join(missing))
PY
on_link() { case ",${LLMPERF_LINKS:-pcie,nvlink}," in *,"$1",*) return 0 ;; esac; return 1; }
# the study phases record baselines; the gate-proof phases (rerun, regress) judge against them
case "$PHASE" in rerun|regress) ;; *)
  [ "${LLMPERF_RECORD:-1}" = 0 ] ||
    SWEEP+=(--llmperf-update-baselines --llmperf-update-reason "GPU study ($NAME), K=5, $(date -u +%F)") ;; esac
case "$PHASE" in
  single)
    mkdir -p "$RES"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv | tee "$RES/gpus.txt"
    nvidia-smi topo -m | tee -a "$RES/gpus.txt"
    "$PY" -m pytest_llmperf.telemetry.selfcheck --seconds 3 --rate-hz 100 --gpus 0,1 --json "$RES/selfcheck.json"
    "$PY" -m pytest perf_tests/test_pcie.py -m "pcie and single" --llmperf-modes single "${SWEEP[@]}" ;;
  pcie)
    MODES="${LLMPERF_MODES:-tp2,pp2}"
    AGREE=""; case ",$MODES," in *,tp2,*) AGREE=perf_tests/test_agreement.py ;; esac  # agreement on TP=2 only
    "$PY" -m pytest perf_tests/test_pcie.py $AGREE -m "pcie and not single" \
        --llmperf-modes "$MODES" --llmperf-emulate-pcie on "${SWEEP[@]}" ;;
  nvlink)
    "$PY" -m pytest perf_tests/test_nvlink.py -m nvlink --llmperf-modes "${LLMPERF_MODES:-tp2,pp2}" \
        --llmperf-emulate-pcie off "${SWEEP[@]}" ;;
  dp|moe)  # one pytest session per link; the phase fails if either does
    rc=0
    if [ "$PHASE" = dp ]; then PCIE_MODES=dp2; NVLINK_MODES=dp2; else PCIE_MODES=single,tp2,ep2; NVLINK_MODES=tp2,ep2; fi
    if on_link pcie; then "$PY" -m pytest perf_tests/test_pcie.py -m pcie --llmperf-modes "${LLMPERF_MODES:-$PCIE_MODES}" \
        --llmperf-emulate-pcie on "${SWEEP[@]}" || rc=$?; fi
    if on_link nvlink; then "$PY" -m pytest perf_tests/test_nvlink.py -m nvlink \
        --llmperf-modes "${LLMPERF_MODES:-$NVLINK_MODES}" --llmperf-emulate-pcie off "${SWEEP[@]}" || rc=$?; fi
    (exit $rc) ;;
  rerun|regress)
    EXTRA=(); [ "$PHASE" = regress ] && EXTRA=(--llmperf-engine-args "--max-num-seqs 32 ${LLMPERF_REGRESS_ARGS:---disable-custom-all-reduce}")
    "$PY" -m pytest perf_tests/test_nvlink.py -m nvlink --llmperf-modes "${LLMPERF_MODES:-tp2}" \
        --llmperf-emulate-pcie off "${SWEEP[@]}" "${EXTRA[@]}" ;;
  *) echo "unknown phase $PHASE (single | pcie | nvlink | dp | moe | rerun | regress)"; exit 2 ;;
esac
status=$?
pgrep -af "vllm.entrypoints|EngineCore|VllmWorker" && echo "WARNING: vLLM processes left behind" || echo "no vLLM process left"
tar czf "$OUT/$NAME.tgz" "$RES" $(ls -d baselines/gpu-* 2>/dev/null) 2>/dev/null
ls -la "$OUT"
exit $status
