#!/usr/bin/env bash
# The main job: installs the CPU build of torch and fastpid with the demo extra, then runs
# `fastpid demo` (canonical gates + two clustered views of scikit-learn's digits).
# Extra arguments go to `fastpid demo` (e.g. --json, --no-data).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"

"$PYTHON" -m pip install torch==2.13.0
"$PYTHON" -m pip install ".[demo]"

# Run the installed console script. Look it up next to the interpreter, because a
# freshly installed script is not always on PATH yet (pyenv shims, for example).
bindir="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if [ -x "$bindir/fastpid" ]; then
  "$bindir/fastpid" demo "$@"
else
  fastpid demo "$@"
fi
