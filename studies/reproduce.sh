#!/usr/bin/env bash
# The runs whose results are committed under studies/ (2 CPU cores). Each result folder's run.json names the
# command and commit that made each file, and `scaler report` turns the files into report.md. Every command trains
# on seeds of its own (--seed), so no two commands share a run: compare-scaling's base on seeds 0-2 would repeat
# scale's ReLU phi = 0 run for run.
set -euo pipefail
cd "$(dirname "$0")/.."
# the four Fashion-MNIST searches below were made before the fidelity ladder, at the fixed 2 epochs (--epochs 2)
scaler search --base mobilenet --phi 1 --epochs 2 --no-progress --study mobilenet-w0.25-fashion-mnist
scaler search --base mobilenet --phi 1 --epochs 2 --budget 5m --study mobilenet-w0.25-fashion-mnist-5m
scaler search --base mobilenet --phi 1 --epochs 2 --budget 45m --study mobilenet-w0.25-fashion-mnist-45m --no-progress
scaler search --base mobilenet --phi 1 --epochs 2 --disambiguate-phi 2 --study mobilenet-w0.25-fashion-mnist-phi2 --no-progress
# the default as it is now (fidelity planned by the ladder), on Fashion-MNIST and on two small real folders that
# benchmarks/make_folders.py writes (scikit-learn's digits; 4,000 + 1,000 Fashion-MNIST PNGs); 15 min each
scaler search --base mobilenet --phi 1 --no-progress --study mobilenet-w0.25-fashion-mnist-planned
python benchmarks/make_folders.py data
scaler search --base mobilenet --phi 1 --dataset data/digits --no-progress
scaler search --base mobilenet --phi 1 --dataset data/fashion-mnist-4k --no-progress
python benchmarks/proxy_rank.py --study mobilenet-w0.25-fashion-mnist
S=mobilenet-w0.25-fashion-mnist
# the variants at the search's proxy budget (all 45,000 training images x 2 epochs at batch 256); phi = 3 (8x the
# base's MACs) trained on every seed and held out from the fit; about 27 min per variant; resumes from runs.db
scaler scale --study $S --phi 0 1 2 3 --variant relu fused --train-max-phi 3 --subset 0 --epochs 2 --batch-size 256 --seed 40 --no-progress
scaler ladder --study $S --subset 6000 --epochs 6 --seed 10 --no-progress   # about 15 min
scaler frelu --study $S --seed 20 --no-progress   # about 35 min; resumes from the engine's runs.db
scaler compare-scaling --study $S --subset 6000 --epochs 3 --seed 30 --no-progress   # about 20 min
scaler report --study $S --readme README.md
# the variants across phi at the cheapest setting of benchmarks/scaling_shows.py (#44): the search's pick on the base at
# width x0.125, the same images at every phi (45,000 x 2 epochs at batch 256), phi = 0-4 trained on 5 seeds of their
# own; the fit on phi <= 2 judged at phi = 3 and at the step beyond it; relu and fused (38 min wall), then frelu:5, the
# FReLU placement's recommendation, added by the same command (24 min more); 55 min of training in all; resumes from runs.db
scaler scale --alpha 1.0 --beta 1.4 --gamma 1.0 --width 0.125 --out mobilenet-w0.125-fashion-mnist-scale --phi 0 1 2 3 4 --variant relu fused frelu:5 --train-max-phi 4 --hold-out 3 --subset 0 --epochs 2 --batch-size 256 --seed 70 --seeds 5 --no-progress
scaler report --study mobilenet-w0.125-fashion-mnist-scale --readme README.md
scaler flgc --width 0.25 --spatial --assignment-lr-scale 10 --subset 0 --epochs 2 --batch-size 64 --val-size 5000 --seeds 3 --out flgc-resnet50-fashion-mnist-w0.25 --no-progress   # 51 runs, about 6.5 h; resumes from runs.db
scaler report --study flgc-resnet50-fashion-mnist-w0.25 --readme README.md
python benchmarks/flgc_assignment.py > benchmarks/results/flgc_assignment.txt   # about 40 min
python benchmarks/flgc_deploy.py > benchmarks/results/flgc_deploy.txt   # about 1 min each
python benchmarks/flgc_deploy.py --keep-memory > benchmarks/results/flgc_deploy_keep_memory.txt
python benchmarks/flgc_deploy.py --free > benchmarks/results/flgc_deploy_free.txt
python benchmarks/interval_coverage.py > benchmarks/results/interval_coverage.txt   # about 35 min; resumes
