#!/usr/bin/env bash
# Prove the install, not the checkout:
#  (a) build shim's wheel and sdist, check they hold every module, install the wheel (no test extras) into a new
#      venv, and from a directory outside the checkout get a chat answer from `shim serve` through both protocols;
#  (b) on a clean clone, the README's serve command answers both protocols.
# Uses pip's cache: llama-cpp-python, once built by `sh scripts/dev.sh test`, is not built again.
set -euo pipefail
cd "$(dirname "$0")/.."
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
PY="${PYTHON:-python3}"
CHECK="$PWD/scripts/check_install.py"
PIP="-m pip --disable-pip-version-check -q"
started=$(date +%s)
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
stop() { kill -TERM "$server"; wait "$server" || true; server=""; }

echo "== (a) the wheel, installed into a new venv"
git clone -q . "$work/src"  # built from a copy, so no build/ is left in the checkout
"$PY" -m venv "$work/tools"  # for setuptools, which a venv starts with
(cd "$work/src" && "$work/tools/bin/python" $PIP wheel --no-deps -w "$work/dist" . &&
  "$work/tools/bin/python" -c 'import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])' \
    "$work/dist" >/dev/null)
"$PY" "$CHECK" contents "$work"/dist/shim-*.whl "$work"/dist/shim-*.tar.gz
"$PY" -m venv "$work/venv"
"$work/venv/bin/python" $PIP install "$work"/dist/shim-*.whl
"$work/venv/bin/python" "$CHECK" runtime-only
mkdir "$work/elsewhere" && cd "$work/elsewhere"
"$work/venv/bin/shim" --version
port=$(free_port)
"$work/venv/bin/shim" serve --port "$port" >"$work/installed.log" 2>&1 &
server=$!
"$work/venv/bin/python" "$CHECK" ask "http://127.0.0.1:$port" || { cat "$work/installed.log"; exit 1; }
stop
cd - >/dev/null

echo "== (b) the README's serve command on a clean clone"
grep -q '^sh scripts/dev.sh serve ' README.md || { echo "README no longer says: sh scripts/dev.sh serve" >&2; exit 1; }
git clone -q . "$work/clone"
port=$(free_port)
(cd "$work/clone" && exec sh scripts/dev.sh serve --port "$port") >"$work/clone.log" 2>&1 &
server=$!
"$PY" "$CHECK" ask "http://127.0.0.1:$port" || { cat "$work/clone.log"; exit 1; }
stop
echo "check-install: passed in $(( $(date +%s) - started )) s"
