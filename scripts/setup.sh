#!/usr/bin/env bash
# Debian packages (Fashion-MNIST, PostgreSQL for the storage tests) and the Python package.
# Usage: bash scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
if [ "${1:-}" = "--dev" ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
python3 -m pip install -q -e ".${extra}"
