"""Why FLGC's assignments barely move, measured: the logits' learning rate and the masked weights' gradient.

Trains ResNet-50 (3x3 stem) with FLGC at one G (the bottleneck's 3x3 conv grouped too) on Fashion-MNIST through
scaler's one evaluate path, once per setting of `assignment_lr_scale` (the logits' multiple of the weights'
rate) x `masked_gradient` (masked weights trained straight-through as if connected, or not at all, as in the
reference implementation), all on one training seed and one split. Prints, per setting: the share of channels and
filters away from their starting group at the freeze (and halfway to it), how many maps the method's rule (the
mean assignment logit of a group's top 3 members) would duplicate there, validation accuracy with its binomial
floor, and the paired difference to the default setting on the same validation images, one family (simultaneous
intervals, Holm p; one seed, so seed noise is not in it: read it as the setting's effect on this seed). Last line:
moved_default=<share> moved_best=<share> best=<setting> duplicates_default=<n> duplicates_best=<n>

    python benchmarks/flgc_assignment.py [--groups 4] [--scales 1 10 100] [--subset 6000] [--epochs 2] [--seed 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from scaler.model.nn.flgc import flgc_layers
from scaler.model.variants import apply_variant, grouping_variant
from scaler.report.files import write
from scaler.study.run import RunConfig, evaluate_model, setup
from scaler.study.stats import crossed_mean, family_columns
from scaler.training.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier of ResNet-50")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--subset", type=int, default=6000, help="training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=500, help="one training seed, apart from the study's")
    parser.add_argument("--out", default=str(RESULTS / "flgc_assignment"))
    args = parser.parse_args()
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    config = RunConfig(
        command="benchmark flgc_assignment",
        base="resnet50",
        width=args.width,
        subset=args.subset,
        train=train,
        folder=Path(args.out),
        latency_runs=5,
        progress=False,
        argv=tuple(sys.argv),
    )
    run = setup(config)
    assert run.dataset is not None
    spec = apply_variant(run.spec, grouping_variant("flgc", args.groups, spatial=True))
    labels = run.dataset.val.labels.numpy()
    print(
        f"# ResNet-50 x{args.width:g} flgc:{args.groups}+spatial on {len(run.dataset.train)} training images x "
        f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}; assignments frozen at "
        f"{train.assignment_freeze:.0%} of training; {len(labels)} validation images",
        flush=True,
    )
    rows, correct = [], {}
    for masked_gradient in (True, False):
        for scale in args.scales:
            setting = f"lr x{scale:g}, masked gradient {'on' if masked_gradient else 'off'}"
            trained = replace(train, assignment_lr_scale=scale, masked_gradient=masked_gradient)
            started = time.perf_counter()
            evaluated = evaluate_model(spec, run, trained, test=False, description=setting)
            layers = flgc_layers(evaluated.model)
            channels = sum(layer.in_channels + layer.out_channels for layer in layers)
            halfway = len(layers[0].moved_history) // 2
            duplicates = sum(int(layer.duplicates(*layer.learned()).sum()) for layer in layers)
            correct[setting] = evaluated.outputs["val"].correct(labels).astype(float)
            accuracy = float(correct[setting].mean())
            rows.append(
                {
                    "setting": setting,
                    "assignment_lr_scale": scale,
                    "masked_gradient": masked_gradient,
                    "moved_halfway": sum(layer.moved_history[halfway][1] for layer in layers) / channels,
                    "moved": sum(layer.moved() for layer in layers) / channels,
                    "duplicates_by_rule": duplicates,
                    "val_acc": accuracy,
                    "floor": crossed_mean(correct[setting][None, :]).floor,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(
                f"{setting}: moved {rows[-1]['moved']:.4f} (halfway to the freeze {rows[-1]['moved_halfway']:.4f}), "
                f"{duplicates} maps the rule would duplicate, val_acc {accuracy:.4f} (floor {rows[-1]['floor']:.4f}), "
                f"{rows[-1]['seconds']:.0f} s",
                flush=True,
            )
    frame = pd.DataFrame(rows)
    default = frame.setting.iloc[0]
    differences = {
        setting: crossed_mean((correct[setting] - correct[default])[None, :]) for setting in frame.setting[1:]
    }
    columns = family_columns("vs_default", differences)
    frame = frame.join(pd.DataFrame([columns.get(setting, {}) for setting in frame.setting]))
    print(frame.round(4).to_string(index=False))
    best = frame.loc[frame.moved.idxmax()]
    write(run.folder, config, config.argv, run.started, {"flgc_assignment": frame})
    print(
        f"moved_default={frame.moved.iloc[0]:.4f} moved_best={best.moved:.4f} best={best.setting.replace(' ', '_')} "
        f"duplicates_default={frame.duplicates_by_rule.iloc[0]} duplicates_best={best.duplicates_by_rule}"
    )


if __name__ == "__main__":
    main()
