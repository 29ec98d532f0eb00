#!/bin/sh
# Build kdns's wheel from a source tree and install it, with its runtime dependencies only (no
# dev extra), into a fresh virtual environment; then run both entry points once.
#
#   install.sh SRC VENV        (PYTHON: the interpreter to use, default python3)
#
# The Dockerfile's build stage runs exactly this script, and tests/deploy/test_image.py runs it
# too (no Docker engine runs on our machines), so what the image installs is what the test proves.
# A C compiler in PATH builds the optional UDP accelerator (kdns/serve/_fastpath.c) into the
# wheel; without one the wheel is pure Python and kdns serves from the Python loop.
set -eu
src=$1
venv=$2
python=${PYTHON:-python3}
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

"$python" -m pip wheel --quiet --no-deps --no-cache-dir --wheel-dir "$wheels" "$src"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    "$wheels"/kdns-*.whl
"$venv/bin/kdns" --version
"$venv/bin/nodecache" --version
"$venv/bin/python" -I -c 'from kdns.serve import accel; print("kdns UDP accelerator:", accel.reason)'
