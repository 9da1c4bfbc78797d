"""`scaler export`: the scaled network in its deployed form as an ONNX file or a torch.export program, with a JSON
of what it is, loadable without scaler."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.experiments.options import DATASET_HELP, check_base, check_width, variant_of
from scaler.model.complexity import convention
from scaler.model.export import check_extra, check_out, format_of, save
from scaler.model.guard import check_fits
from scaler.model.scaling import compound
from scaler.report.files import git_commit, study_info
from scaler.study.run import built, count
from scaler.training.tasks import Task


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    p.add_argument("--study", help="a finished scaler search: its base, width, dataset and exported alpha, beta, gamma")
    p.add_argument("--base", help="base network or network file (default: the study's, else mobilenet)")
    p.add_argument("--alpha", type=float)
    p.add_argument("--beta", type=float)
    p.add_argument("--gamma", type=float)
    p.add_argument("--width", type=float, help="width multiplier of the base (default: the study's, else 1)")
    p.add_argument("--phi", type=float, default=1.0, help="compound scaling exponent (default 1)")
    p.add_argument("--variant", default="relu", help="variant, e.g. relu, frelu, flgc:4, fused:2 (default relu)")
    p.add_argument("--activation", choices=("frelu",), help="shorthand: FReLU on all stages or on --frelu-stages")
    p.add_argument("--frelu-stages", help="1-based stages that get FReLU, e.g. 1,2")
    p.add_argument("--dataset", help=f"the task's dataset (default: the study's, else fashion-mnist): {DATASET_HELP}")
    p.add_argument("--input", help="explicit input CxHxW instead of the dataset's, e.g. 3x224x224")
    p.add_argument("--classes", type=int, help="classes with --input (default: the dataset's)")
    p.add_argument("--out", required=True, help="file to write: NAME.onnx or NAME.pt2 (NAME.<suffix>.json beside it)")
    p.add_argument("--format", choices=("onnx", "pt2"), help="onnx or pt2 (default: from --out's suffix)")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained weights")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Base, width, dataset and coefficients: explicit options over the study's, over the defaults."""
    info = study_info(args.study) if args.study else None
    explicit = (args.alpha, args.beta, args.gamma)
    if all(value is not None for value in explicit):
        alpha, beta, gamma = (float(value) for value in explicit)
    elif info is not None and not any(value is not None for value in explicit):
        alpha, beta, gamma = info.alpha, info.beta, info.gamma
    else:
        raise UserError("give --study NAME (a finished scaler search) or all of --alpha --beta --gamma")
    compound(alpha, beta, gamma, args.phi)
    return {
        "study": args.study,
        "base": check_base(args.base or (info.base if info else "mobilenet")),
        "width": check_width(args.width if args.width is not None else (info.width if info else 1.0)),
        "dataset": args.dataset or (info.dataset if info else "fashion-mnist"),
        "alpha": alpha,
        "beta": beta,
        "gamma": gamma,
        "phi": args.phi,
        "variant": variant_of(args),
    }


def task_of(args: argparse.Namespace, dataset: str) -> Task:
    """The dataset's task, or --input/--classes."""
    from scaler.training.tasks import dataset_task, parse_input

    if args.input:
        return parse_input(args.input, args.classes or dataset_task(dataset).num_classes)
    task = dataset_task(dataset)
    if args.classes is not None:
        return parse_input(f"{task.in_channels}x{task.resolution}x{task.resolution}", args.classes)
    return task


def normalisation(dataset: str, task: Task, explicit_input: bool) -> dict[str, Any]:
    """The mean and std (in [0, 1]) that training subtracts and divides by, when the task is the dataset's."""
    if explicit_input:
        return {"mean": None, "std": None, "note": "--input given: normalise as your training does"}
    from scaler.training.data import load_dataset
    from scaler.training.folder import is_folder_dataset

    try:
        data = load_dataset(dataset, input=task if is_folder_dataset(dataset) else None, download=False)
    except UserError as error:
        return {"mean": None, "std": None, "note": f"dataset not read here ({error})"}
    mean, std = data.mean_std
    return {"mean": list(mean), "std": list(std), "classes": list(data.classes) or None}


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler export: build, deploy, export, describe."""
    out = check_out(Path(args.out))
    fmt = format_of(out, args.format)
    check_extra(fmt)
    chosen = resolve(args)
    task = task_of(args, chosen["dataset"])
    from scaler.api import scaled_spec

    spec = scaled_spec(
        chosen["base"],
        chosen["alpha"],
        chosen["beta"],
        chosen["gamma"],
        chosen["phi"],
        variant=chosen["variant"],
        width=chosen["width"],
        input=(task.in_channels, task.resolution, task.resolution),
        classes=task.num_classes,
    )
    check_fits(spec)
    macs, params = count(spec, seed=args.seed)
    commit, dirty = git_commit()
    from scaler import __version__

    about = chosen | {
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "normalisation": normalisation(chosen["dataset"], task, bool(args.input)),
        "macs": macs,
        "params": params,
        "counting": convention("fvcore"),
        "weights": f"untrained (seed {args.seed}): studies keep no trained weights",
        "form": "deployed: eval mode, BN folded into its convs, FLGC as grouped kernels",
        "scaler_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
    }
    model = built(spec, seed=args.seed)
    written, sidecar = save(model, spec, out, fmt, about)
    print(
        f"wrote {written} ({fmt}, {spec.input_shape[0]}x{spec.resolution}x{spec.resolution} input, "
        f"{macs / 1e6:.2f} M MACs, {params / 1e6:.3f} M params) and {sidecar}",
        file=sys.stdout,
    )
    return 0


COMMAND = Command(
    "export",
    "write the scaled network in its deployed form as ONNX or a torch.export program (.pt2), with a JSON",
    add_arguments,
    main,
)
