#!/usr/bin/env bash
# The runs whose CSV/PNG results are committed under studies/ (2 CPU cores; about 4 h after the search).
# Each result folder's run.json names the command and commit that made it.
set -euo pipefail
cd "$(dirname "$0")/.."
scaler search --base mobilenet --phi 1 --no-progress   # studies/mobilenet-w0.25-fashion-mnist (about 40 min)
python benchmarks/proxy_rank.py --study mobilenet-w0.25-fashion-mnist
S=mobilenet-w0.25-fashion-mnist
scaler scale --study $S --phi 0 0.5 1 1.5 2 3 --variant relu frelu frelu-early fused --train-max-phi 2 --no-progress   # about 30 min
scaler ladder --study $S --subset 6000 --epochs 6 --no-progress   # about 8 min
scaler frelu --study $S --no-progress   # about 25 min; resumes from the engine's runs.db
scaler compare-scaling --study $S --subset 6000 --epochs 3 --no-progress   # about 12 min
scaler flgc --width 0.25 --epochs 2 --out flgc-resnet50-fashion-mnist-w0.25 --no-progress   # about 2.5 h; resumes from the engine's runs.db
python benchmarks/flgc_deploy.py --rounds 60 > benchmarks/results/flgc_deploy.txt
python benchmarks/flgc_deploy.py --rounds 60 --keep-memory > benchmarks/results/flgc_deploy_keep_memory.txt
