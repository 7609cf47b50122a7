#!/usr/bin/env bash
# The main job: installs torch 2.13.0 (the CPU build where pip's settings give it, as on the
# project's CI; README, Set-up) and fastpid with the demo extra, then runs `fastpid demo`
# (canonical gates + two clustered views of scikit-learn's digits).
# Extra arguments go to `fastpid demo` (e.g. --json, --no-data); stdout carries the demo's
# output alone (pip's log goes to stderr), so `demo.sh --json` is valid JSON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"

"$PYTHON" -m pip install torch==2.13.0 >&2
"$PYTHON" -m pip install ".[demo]" >&2

# The interpreter that was just installed into (a `fastpid` on the PATH may be another
# environment's); `python -m fastpid` is the console script's entry point.
"$PYTHON" -m fastpid demo "$@"
