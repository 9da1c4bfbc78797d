#!/usr/bin/env bash
# The runs whose CSV/PNG results are committed under studies/ (2 CPU cores; ~1 h after the search).
set -euo pipefail
cd "$(dirname "$0")/.."
S=mobilenet-fashion-mnist
python benchmarks/pruning.py                       # = scaler search --base mobilenet --phi 1, plus --pruner none
scaler scale --study $S --phi 0 1 2 3 --variant relu frelu frelu-early fused --train-max-phi 1 --no-progress
scaler frelu --study $S --no-progress
scaler ladder --study $S --subset 10000 --epochs 3 --frelu frelu-early --no-progress
scaler compare-scaling --study $S --no-progress
scaler flgc --groups 1 2 4 8 --dataset fashion-mnist --width 0.25 --no-progress
