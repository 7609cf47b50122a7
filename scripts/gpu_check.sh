#!/usr/bin/env bash
# GPU validation, for a machine with a CUDA device and fastpid installed with its CUDA kernels
# (`python -m pip install -e ".[test,bench]"` where nvcc is on the PATH; with no package index,
# `python -m pip install --no-build-isolation --no-deps -e .` over an environment that has torch,
# scikit-build-core, pybind11, pytest and pytest-benchmark): the Triton tests (on the GPU), the
# gpu-marked tests, the GPU benchmark, and compute-sanitizer (synccheck, memcheck, racecheck)
# over every CUDA kernel. Writes this run's record (GPU, commands, pass counts, times) to a new
# file, bench/results/gpu_check_<UTC time>.md (bench/results/gpu_validation.md, the curated
# record of every run, is not touched: fold the run into it).
# Arguments are passed to the benchmark after its defaults here (--gpu-problems 10000, about
# a minute of exact rows on an H200 where the module's 100,000 took four; --bench-threads
# $(nproc), so that its C++ peer row uses every core, as its notes say). Every step stops
# after GPU_CHECK_STEP_LIMIT seconds (default 150; recorded as exit 124), so that a lease of
# about 10 minutes a command reaches every step (the steps took 7-140 s and more on an H200).
# Where $OUT names a folder (a lent machine returns the files written there), the record and
# the GPU benchmark's report are copied into it after every step. Build the extension with
# its CUDA kernels first (nvcc on the PATH; CUDAARCHS=90 builds for sm_90 only, half the
# compile time of the default "80 90"): the script stops at once (exit 2) when fastpid's CUDA
# kernels are not available, rather than letting every CUDA test skip.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
RECORD=bench/results/gpu_check_$(date -u '+%Y%m%dT%H%M').md
log() { echo "$*" | tee -a "$RECORD"; }
keep() {  # the record and the benchmark's report, into $OUT where it is a folder
  [ -n "${OUT:-}" ] && [ -d "$OUT" ] && cp "$RECORD" bench/results/solver_gpu.* "$OUT"/ 2>/dev/null
  return 0
}

log "# GPU validation run"
log ""
log "- GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1)"
log "- fastpid: $("$PYTHON" -c 'import fastpid._C as c; i = c.build_info(); print(i["version"], "CUDA", i["cuda_compiler_version"], "compiled:", i["cuda_compiled"])' 2>&1 | tail -n 1)"
log "- date: $(date -u '+%Y-%m-%d %H:%M') UTC"
log ""
cuda=$("$PYTHON" -c 'from fastpid import cuda; ok, why = cuda.available(); print("yes" if ok else why)' 2>&1 | tail -n 1)
if [ "$cuda" != yes ]; then
  log "- stopped: fastpid's CUDA kernels are not available here: $cuda"
  keep
  exit 2
fi
status=0
LIMIT=(timeout "${GPU_CHECK_STEP_LIMIT:-150}")
run() {  # run "what" command...: logs the command, its last line, its status and its time
  local what=$1; shift
  local out rc t0
  out=$(mktemp)
  t0=$SECONDS
  "${LIMIT[@]}" "$@" >"$out" 2>&1
  rc=$?
  cat "$out" >&2
  log "- $what: \`$*\` -> exit $rc in $((SECONDS - t0)) s: $(tail -n 1 "$out")"
  rm -f "$out"
  [ "$rc" -eq 0 ] || status=1
  keep
}
# Test by test (-v): a step stopped at its time limit still names the tests that failed.
# The Triton tests first: they run their kernels on the GPU wherever one is present (not only
# the gpu-marked), and a GPU has shown faults there that the interpreter cannot.
run "Triton tests on the GPU" "$PYTHON" -m pytest -v --tb=short -p no:cacheprovider tests/test_triton.py
run "GPU tests" "$PYTHON" -m pytest -v --tb=short -m gpu -p no:cacheprovider tests
run "GPU benchmark" "$PYTHON" -m pytest -q -p no:cacheprovider bench/test_bench_gpu.py \
  --gpu-problems 10000 --bench-threads "$(nproc)" "$@"
# Quickest first: on an H200, synccheck took 7 s, racecheck 61 s, memcheck 138 s (most of it
# in three 20x20x10 exact solves; one now). Without PyTorch's caching allocator every tensor
# is an allocation of its own, so a write past one is seen, not taken by its neighbour.
for tool in synccheck memcheck racecheck; do
  run "compute-sanitizer $tool" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" \
    --error-exitcode 3 "$PYTHON" scripts/cuda_smoke.py
done
exit $status
