#!/bin/sh
# Set up a virtual environment in .venv with shim installed, then serve or test.
#   sh scripts/dev.sh serve [shim serve flags]   install shim and serve the embedded SmolLM2 model on :8000
#   sh scripts/dev.sh test [pytest flags]        install shim with its test tools and run the whole suite
set -eu
cd "$(dirname "$0")/.."
# llama-cpp-python is built from source; native CPU flags can crash inside VMs that advertise AMX, so build portable.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
what="${1:-}"; [ $# -gt 0 ] && shift
case "$what" in
  serve)
    .venv/bin/python -m pip install -q --disable-pip-version-check -e .
    exec .venv/bin/shim serve "$@" ;;
  test)
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    # The deployment tests run real nginx in front of shim; Debian's package, installed when missing.
    if ! command -v nginx >/dev/null 2>&1 && ! [ -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || \
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx) >/dev/null
    fi
    # The response-store tests run a real redis-server (Debian's package), installed when missing; its system
    # service is not needed (the tests start their own).
    if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
    fi
    exec .venv/bin/python -m pytest "$@" ;;
  *)
    echo "usage: sh scripts/dev.sh serve|test [args]" >&2; exit 2 ;;
esac
