"""Command-line options the experiments share, each checked once: task, architecture, training, seeds, output."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from scaler.errors import UserError
from scaler.experiments import Argv
from scaler.model.scaling import compound
from scaler.model.variants import VARIANT_HELP, frelu_variant, joined
from scaler.model.zoo import BASES, base_label, is_spec_file, table
from scaler.report.files import study_info
from scaler.study.grid import Candidate, class_note
from scaler.study.run import RunConfig
from scaler.study.storage import check_url, study_folder
from scaler.study.workers import max_workers
from scaler.training.folder import dataset_label, is_folder_dataset
from scaler.training.tasks import Task, dataset_task, parse_input
from scaler.training.train import Progressive, TrainConfig, check_device


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """--dataset or --input/--classes."""
    parser.add_argument("--dataset", default="fashion-mnist", help=DATASET_HELP)
    parser.add_argument(
        "--input",
        help="explicit input CxHxW, e.g. 3x224x224 (overrides --dataset; with a folder, the shape its images are read at)",
    )
    parser.add_argument("--classes", type=int, default=1000, help="classes with --input (default 1000)")


DATASET_HELP = (
    "fashion-mnist (1x28x28), mnist, cifar10 (3x32x32), or a folder of images: one sub-folder per class, or train/, "
    "val/ and test/ folders holding them (e.g. ./photos)"
)


def task_of(args: argparse.Namespace) -> Task:
    """Task from --input/--classes if given, else from --dataset; --classes is checked either way."""
    if args.classes < 2:
        raise UserError(f"--classes must be at least 2 (got {args.classes})")
    if args.input and is_folder_dataset(args.dataset):
        return dataset_task(args.dataset, parse_input(args.input, args.classes))
    return parse_input(args.input, args.classes) if args.input else dataset_task(args.dataset)


def add_architecture_args(parser: argparse.ArgumentParser) -> None:
    """--base, --variant, --activation/--frelu-stages."""
    parser.add_argument(
        "--base",
        default="mobilenet",
        help=f"base network: {', '.join(BASES)}, or a .toml/.json network file (`scaler spec` writes one)",
    )
    parser.add_argument("--variant", default="relu", help=f"variant: {VARIANT_HELP}")
    parser.add_argument("--activation", choices=("frelu",), help="shorthand: FReLU on all stages or on --frelu-stages")
    parser.add_argument("--frelu-stages", help="1-based stages that get FReLU, e.g. 1,2")


def variant_of(args: argparse.Namespace) -> str:
    """--variant with the --activation/--frelu-stages shorthand folded in."""
    if args.activation == "frelu" or args.frelu_stages:
        return joined(args.variant, frelu_variant(args.frelu_stages.split(",") if args.frelu_stages else None))
    return args.variant


def add_train_args(
    parser: argparse.ArgumentParser,
    epochs: int | None,
    subset: int | None = None,
    batch_size: int | None = 64,
    epochs_help: str | None = None,
) -> None:
    """Options of the one training loop (a default of None is resolved by the command, e.g. by --quick)."""
    parser.add_argument(
        "--epochs", type=int, default=epochs, help=epochs_help or f"epochs per training run (default {epochs or 3})"
    )
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"images per step (default {batch_size or 256})"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=0.05,
        help="peak learning rate at batch 64, scaled linearly with --batch-size (cosine schedule, warm-up)",
    )
    parser.add_argument(
        "--optimizer", choices=("sgd", "rmsprop"), default="sgd", help="SGD with Nesterov momentum, or RMSProp"
    )
    parser.add_argument(
        "--assignment-lr-scale",
        type=float,
        help="FLGC group-assignment logits learn at this multiple of --lr (default: TrainConfig's)",
    )
    parser.add_argument(
        "--duplicate-after",
        type=float,
        help="fraction of training after which FLGC assignments are fixed and duplicates added; the rest "
        "fine-tunes (default: TrainConfig's, 0.5)",
    )
    parser.add_argument(
        "--no-masked-gradient",
        dest="masked_gradient",
        action="store_false",
        help="FLGC: weights masked out get no gradient (default: trained as if connected, straight-through)",
    )
    parser.add_argument(
        "--progressive",
        action="store_true",
        help="EfficientNetV2 progressive learning: size and regularisation ramp up",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the training step (pays on GPU and long runs)"
    )
    parser.add_argument(
        "--subset",
        type=int,
        default=subset,
        help=f"train on N images of the training split (default {subset or 'all'}; 0 = all 45000)",
    )
    parser.add_argument(
        "--data-dir", help="folder with the dataset files (else Debian's package, else torchvision download)"
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="validate and test an exponential moving average of the weights over this fraction of the run's "
        "steps (default 0: off; not for FLGC)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed: initialisation and data order")
    parser.add_argument(
        "--data-seed", type=int, default=0, help="seed of the train/validation split and subsets (fixed across --seed)"
    )
    parser.add_argument("--threads", type=int, help="torch threads for training (default: all cores)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


MAX_SEED = 2**32 - 1  # numpy's and torch's generators take seeds in [0, 2^32 - 1]


def check_seed(option: str, seed: int, more: int = 0) -> None:
    """A seed (and the `more` seeds after it) the random generators accept; else one line naming the option."""
    if not 0 <= seed <= MAX_SEED - more:
        runs = f" (it and the {more} seed(s) after it)" if more else ""
        raise UserError(f"{option} must be between 0 and {MAX_SEED - more}{runs} (got {seed})")


def train_config(args: argparse.Namespace, epochs: int | None = None, batch_size: int | None = None) -> TrainConfig:
    """TrainConfig from the training options (checked); `epochs` and `batch_size` override the options."""
    epochs = args.epochs if epochs is None else epochs
    batch_size = args.batch_size if batch_size is None else batch_size
    if (
        epochs < 1
        or batch_size < 2
        or not 0 < args.lr < math.inf
        or not 0 <= (args.assignment_lr_scale or 0) < math.inf
    ):
        raise UserError(
            "--epochs must be >= 1, --batch-size >= 2, --lr a finite number > 0 and --assignment-lr-scale finite >= 0"
        )
    check_seed("--seed", args.seed)
    check_seed("--data-seed", args.data_seed)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1 (got {args.threads})")
    for option in ("subset", "val_size", "test_size"):
        if (getattr(args, option, 0) or 0) < 0:
            raise UserError(f"--{option.replace('_', '-')} must be >= 0 (0 = the whole split)")
    check_device(args.device)
    if not 0.0 <= args.ema <= 1.0:
        raise UserError(f"--ema must be a fraction of the run's steps in [0, 1] (got {args.ema})")
    if args.progressive:
        Progressive().check(epochs)
    flgc = {} if args.assignment_lr_scale is None else {"assignment_lr_scale": args.assignment_lr_scale}
    if args.duplicate_after is not None:
        if not 0.0 <= args.duplicate_after <= 1.0:
            raise UserError(f"--duplicate-after must be a fraction of training in [0, 1] (got {args.duplicate_after})")
        flgc["assignment_freeze"] = args.duplicate_after
    if not args.masked_gradient:
        flgc["masked_gradient"] = False
    return TrainConfig(
        **flgc,
        epochs=epochs,
        batch_size=batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        progressive=Progressive() if args.progressive else None,
        compile=args.compile,
        ema=args.ema,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
    )


def experiment_config(
    args: argparse.Namespace, argv: Argv, latency_runs: int = 20
) -> tuple[RunConfig, tuple[float, float, float]]:
    """The run config and coefficients of scale, frelu, ladder and compare-scaling: from --study or explicit values."""
    info = study_info(args.study) if args.study else None
    explicit = (args.alpha, args.beta, args.gamma)
    if all(v is not None for v in explicit):
        coefficients = (float(args.alpha), float(args.beta), float(args.gamma))
    elif info:
        coefficients = (info.alpha, info.beta, info.gamma)
    else:
        raise UserError("give --study NAME (a finished scaler search) or all of --alpha --beta --gamma")
    compound(*coefficients, 1.0)
    base = check_base(args.base if args.base is not None else (info.base if info else "mobilenet"))
    width = check_width(args.width if args.width is not None else (info.width if info else 1.0))
    dataset = args.dataset if args.dataset is not None else (info.dataset if info else "fashion-mnist")
    folder = info.folder if info else output_folder(args.out, base, dataset)
    config = RunConfig(
        command=args.command,
        base=base,
        width=width,
        dataset=dataset,
        task=dataset_task(dataset),
        folder=folder,
        latency_runs=latency_runs,
        argv=argv,
        **data_options(args),
    )
    if info and info.members and coefficients == (info.alpha, info.beta, info.gamma):
        exported = Candidate(*coefficients).label
        note = class_note(config.base_spec(), info.members, exported, phis_of(args))
        if note:
            print(note)
    return config, coefficients


def phis_of(args: argparse.Namespace) -> list[float]:
    """The phi values a command scales the searched coefficients to: scale's --phi, compare-scaling's FLOPs
    factors as phi = log2(factor), else phi = 1."""
    if getattr(args, "phi", None):
        return [float(phi) for phi in args.phi]
    if getattr(args, "factors", None):
        return [math.log2(factor) for factor in args.factors if factor > 0]
    return [1.0]


def check_width(width: float) -> float:
    """A width multiplier the base can be built with: finite and > 0; else one line naming --width."""
    if not math.isfinite(width) or width <= 0:
        raise UserError(f"--width must be a finite number > 0 (got {width})")
    return width


def check_base(base: str) -> str:
    """A base network of the zoo or a network file (read and checked now); else one line naming --base or the file."""
    if is_spec_file(base):
        table(base)
    elif base not in BASES:
        raise UserError(
            f"--base {base!r} is not a base network; choose from {', '.join(BASES)}, or give a .toml/.json network file"
        )
    return base


def output_folder(out: str | None, base: str, dataset: str, prefix: str = "") -> Path:
    """studies/<--out>, or studies/<prefix><base>-<dataset> once the base and the dataset are known ones."""
    if out:
        return study_folder(out, option="--out")
    dataset_task(dataset)
    return study_folder(f"{prefix}{base_label(check_base(base))}-{dataset_label(dataset)}")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """--storage and --workers: where the engine keeps the command's runs, and how many local processes run them."""
    parser.add_argument(
        "--storage",
        help="Optuna RDB URL of the runs, e.g. postgresql://user@host/db, so that `scaler worker` on other machines "
        "can join (default sqlite:///studies/<name>/runs.db)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="local worker processes sharing the runs (each run trains once)"
    )


def check_workers(workers: int) -> int:
    """A number of local workers this machine can hold; else one line."""
    limit = max_workers()
    if not 1 <= workers <= limit:
        raise UserError(
            f"--workers must be between 1 and {limit} on this machine (one per core, about 1.5 GB each; got {workers})"
        )
    return workers


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """storage and workers of a RunConfig, checked (a broken storage URL ends here, before anything is written)."""
    if args.storage:
        check_url(args.storage)
    return {"storage": args.storage, "workers": check_workers(args.workers)}


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """data_dir, subset, val_size, test_size, train, progress, storage and workers of a RunConfig, from the options."""
    return engine_options(args) | {
        "data_dir": args.data_dir,
        "subset": args.subset or None,
        "val_size": args.val_size or None,
        "test_size": args.test_size or None,
        "data_seed": args.data_seed,
        "train": train_config(args),
        "progress": args.progress,
    }


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    """Every parsed option, for run.json."""
    return {key: value for key, value in vars(args).items() if key != "func"}


def add_experiment_args(parser: argparse.ArgumentParser, epochs: int, subset: int | None) -> None:
    """--study or explicit coefficients, plus the task and training options."""
    parser.add_argument("--study", help="a finished scaler search: its base, dataset and best alpha, beta, gamma")
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--gamma", type=float)
    parser.add_argument("--base", help="base network (default: the study's, else mobilenet)")
    parser.add_argument("--width", type=float, help="width multiplier of the base (default: the study's, else 1)")
    parser.add_argument("--dataset", help="dataset or folder of images (default: the study's, else fashion-mnist)")
    parser.add_argument("--out", help="output folder name under studies/ when no --study is given")
    add_evaluation_args(parser)
    add_train_args(parser, epochs=epochs, subset=subset)


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """--val-size and --test-size (the images every run is judged on), and the engine's --storage and --workers."""
    parser.add_argument(
        "--val-size",
        type=int,
        default=0,
        help="validation images (default 0: the whole split, 15,000 for Fashion-MNIST: the lowest binomial floor)",
    )
    parser.add_argument("--test-size", type=int, default=0, help="test images (default 0: the whole test split)")
    add_engine_args(parser)


def add_seeds_arg(parser: argparse.ArgumentParser, per: str, across: str) -> None:
    """--seeds: how many training seeds, from --seed on, each run paired across the compared networks."""
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help=f"training seeds per {per} from --seed on, paired across {across} (default 3)",
    )


def add_decision_args(parser: argparse.ArgumentParser, candidate: str) -> None:
    """--seeds (paired across candidates) and --latency (the form every candidate is timed in, interleaved)."""
    add_seeds_arg(parser, candidate, f"{candidate}s")
    add_latency_arg(parser, candidate)


def add_latency_arg(parser: argparse.ArgumentParser, candidate: str) -> None:
    """--latency and --runtime: the form every candidate is timed in, all of them interleaved in one run."""
    parser.add_argument(
        "--latency",
        choices=("eager", "folded", "deployed"),
        default="deployed",
        help=f"form every {candidate} is timed in by torch, interleaved: deployed (BN folded, compiled; default), "
        "folded (no compile) or eager",
    )
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="what runs the timed passes: torch (in the --latency form, default) or onnxruntime (the deployed form "
        "exported to ONNX, in an ONNX Runtime CPU session; needs the export extra)",
    )


def latency_form(args: argparse.Namespace) -> str:
    """The latency form --runtime and --latency name; one line naming the extra if ONNX Runtime is missing."""
    if getattr(args, "runtime", "torch") != "onnxruntime":
        return str(args.latency)
    from scaler.model.runtime import check_onnxruntime

    check_onnxruntime()
    return "onnxruntime"


def seeds_of(args: argparse.Namespace) -> list[int]:
    """--seeds training seeds from --seed on; a UserError below one."""
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1 (got {args.seeds})")
    check_seed("--seed", args.seed, more=args.seeds - 1)
    return list(range(args.seed, args.seed + args.seeds))
