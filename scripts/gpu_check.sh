#!/usr/bin/env bash
# GPU validation, for a machine with a CUDA device and fastpid installed with its CUDA kernels
# (`python3 -m pip install -e ".[test,bench]"` where nvcc is on the PATH; with no package index,
# `python3 -m pip install --no-build-isolation --no-deps -e .` over an environment that has torch,
# scikit-build-core, pybind11, pytest and pytest-benchmark; CUDAARCHS=90 builds for sm_90 only,
# half the compile time of the default "80 90"): the Triton tests (on the GPU), the gpu-marked
# tests, the GPU benchmark, and compute-sanitizer (synccheck, memcheck, racecheck) over the
# CUDA kernels (scripts/cuda_smoke.py). Stops at once (exit 2) where fastpid's CUDA kernels
# are not available, rather than letting every CUDA test skip.
#
# Time: the whole run ends within GPU_CHECK_DEADLINE seconds (default 540, inside a lent
# machine's 10 minutes a command); each step stops after GPU_CHECK_STEP_LIMIT seconds (default
# 150, recorded as exit 124) or at the deadline, and a step with under 20 s left is skipped and
# recorded as such. GPU_CHECK_STEPS picks steps, separated by spaces or commas (default "triton
# gpu bench synccheck memcheck racecheck"; on an H100 they took 130, 83, 70, 10, 123 and 60 s;
# an unknown name stops the run, exit 2), so that a second call can run
# what the first did not reach. Arguments go to the benchmark after its defaults here
# (--gpu-problems 10000; --bench-threads: the cores this process may use, so that its C++ peer
# row uses every one).
#
# Output: this run's record (GPU, commands, exit status, time and last line of each step) in
# bench/results/gpu_check_<UTC time>.md (fold it into bench/results/gpu_validation.md, the
# curated record), and every step's whole output, as it comes, in gpu_check_<UTC time>.log.
# Where $OUT names a folder (a lent machine returns the files written there) the log is
# written there, and the record and the files the benchmark wrote in this run are copied there
# after every step and when the run ends.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
# The checkout's fastpid for every step: scripts/cuda_smoke.py heads sys.path with scripts/,
# not the root, so a fastpid importable only from the root failed there alone.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# An inherited TRITON_INTERPRET=1 (scripts/test.sh sets it) would test and time Triton's CPU
# interpreter instead of the GPU.
unset TRITON_INTERPRET
KNOWN="triton gpu bench synccheck memcheck racecheck"
STEPS=" $(echo "${GPU_CHECK_STEPS:-$KNOWN}" | tr ',\t' '  ') "
DEADLINE=$((SECONDS + ${GPU_CHECK_DEADLINE:-540}))
STAMP=$(date -u '+%Y%m%dT%H%M%S')
RECORD=bench/results/gpu_check_$STAMP.md
DEST=bench/results
[ -n "${OUT:-}" ] && [ -d "$OUT" ] && DEST=$OUT
LOG=$DEST/gpu_check_$STAMP.log
STARTED=$(mktemp)  # files under bench/results newer than this were written by this run
log() { echo "$*" | tee -a "$RECORD"; }
keep() {  # the record and this run's benchmark reports, into $OUT where it is a folder
  [ "$DEST" = bench/results ] && return 0
  find bench/results -maxdepth 1 -type f -newer "$STARTED" -exec cp {} "$DEST"/ \; 2>/dev/null
  return 0
}
# Whatever ends the run (the last step, a skip, an unknown step, exit 2): the record goes back.
trap 'keep; rm -f "$STARTED"' EXIT

log "# GPU validation run"
log ""
log "- GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1)"
log "- fastpid: $("$PYTHON" -c 'import fastpid._C as c; i = c.build_info(); print(i["version"], "CUDA", i["cuda_compiler_version"], "compiled:", i["cuda_compiled"])' 2>&1 | tail -n 1)"
log "- date: $(date -u '+%Y-%m-%d %H:%M') UTC; steps:${STEPS% }; deadline ${GPU_CHECK_DEADLINE:-540} s; log: $LOG"
log ""
for step in $STEPS; do
  if [[ " $KNOWN " != *" $step "* ]]; then
    log "- stopped: GPU_CHECK_STEPS names an unknown step '$step' (known: $KNOWN)"
    exit 2
  fi
done
[ -n "${OUT:-}" ] && [ ! -d "$OUT" ] && log "- note: OUT=$OUT is not a folder: nothing is copied there"
cuda=$("$PYTHON" -c 'from fastpid import cuda; ok, why = cuda.available(); print("yes" if ok else why)' 2>&1 | tail -n 1)
if [ "$cuda" != yes ]; then
  log "- stopped: fastpid's CUDA kernels are not available here: $cuda"
  exit 2
fi
status=0
run() {  # run step "what" command...: logs the command, its status, time and last line
  local step=$1 what=$2; shift 2
  [[ "$STEPS" == *" $step "* ]] || return 0
  local left=$((DEADLINE - SECONDS)) limit=${GPU_CHECK_STEP_LIMIT:-150} t0=$SECONDS rc
  if [ "$left" -lt 20 ]; then
    log "- $what: skipped, $left s left before the deadline (rerun with GPU_CHECK_STEPS=$step)"
    status=1
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "=== $what: $*" >>"$LOG"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG" >&2
  rc=${PIPESTATUS[0]}
  log "- $what: \`$*\` -> exit $rc in $((SECONDS - t0)) s (limit $limit s): $(tail -n 1 "$LOG")"
  [ "$rc" -eq 0 ] || status=1
  keep
}
# Test by test (-v): a step stopped at its time limit still names the tests that failed.
# The Triton tests first: they run their kernels on the GPU wherever one is present (not only
# the gpu-marked), and a GPU has shown faults there that the interpreter cannot.
run triton "Triton tests on the GPU" "$PYTHON" -m pytest -v --tb=short -p no:cacheprovider tests/test_triton.py
run gpu "GPU tests" "$PYTHON" -m pytest -v --tb=short -m gpu -p no:cacheprovider tests
# The cores this process may use (GNU nproc honours OMP_NUM_THREADS, and read 1 where it was set).
cores=$("$PYTHON" -c 'import os; print(len(os.sched_getaffinity(0)))')
run bench "GPU benchmark" "$PYTHON" -m pytest -q -p no:cacheprovider bench/test_bench_gpu.py \
  --gpu-problems 10000 --bench-threads "$cores" "$@"
# Quickest first. Without PyTorch's caching allocator every tensor is an allocation of its
# own, so a write past one is seen, not taken by its neighbour.
for tool in synccheck memcheck racecheck; do
  run "$tool" "compute-sanitizer $tool" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" \
    --error-exitcode 3 "$PYTHON" scripts/cuda_smoke.py
done
exit $status
