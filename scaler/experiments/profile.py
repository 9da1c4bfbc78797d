"""`scaler profile`: MACs, parameters, activations and latency of a base network across phi, no training."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import pandas as pd

from scaler.errors import UserError
from scaler.experiments import Argv, Command
from scaler.experiments.options import add_architecture_args, add_task_args, check_base, options_of, task_of, variant_of
from scaler.model.complexity import COUNTERS, DEFAULT_THREADS, convention
from scaler.model.profile import PROFILE_COLUMNS, profile_multipliers, profile_phis
from scaler.model.runtime import check_onnxruntime
from scaler.model.scaling import EFFICIENTNET_COEFFICIENTS
from scaler.report.files import write
from scaler.report.tables import fmt, millions, print_table
from scaler.study.run import LATENCY_WORDS, RunConfig
from scaler.study.storage import check_writable, study_folder

RUNTIMES = {"torch": "eager", "onnxruntime": "onnxruntime"}  # --runtime: the latency form measure() times


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the command."""
    add_architecture_args(p)
    add_task_args(p)
    p.add_argument("--phi", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    p.add_argument("--alpha", type=float, help="depth coefficient (default EfficientNet's 1.2)")
    p.add_argument("--beta", type=float, help="width coefficient (default 1.1)")
    p.add_argument("--gamma", type=float, help="resolution coefficient (default 1.15)")
    p.add_argument("--width", type=float, help="direct width multiplier w (instead of alpha/beta/gamma)")
    p.add_argument("--depth", type=float, help="direct depth multiplier d")
    p.add_argument("--resolution", type=float, help="direct resolution multiplier r")
    p.add_argument("--runs", type=int, default=30, help="latency runs (median is reported)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads for latency")
    p.add_argument(
        "--counter",
        choices=COUNTERS,
        default="fvcore",
        help="who counts MACs: fvcore (default, a TorchScript trace) or torch (torch.utils.flop_counter, FLOPs / 2)",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torch",
        help="what runs the timed forward passes: torch (eager, default) or onnxruntime (the deployed form exported "
        "to ONNX, in an ONNX Runtime CPU session with --threads threads; needs the export extra)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--out", help="also write profile.csv and run.json into studies/OUT")


def main(args: argparse.Namespace, argv: Argv) -> int:
    """scaler profile: one row per phi."""
    if args.runs < 1 or args.threads < 1:
        raise UserError(f"--runs and --threads must be >= 1 (got {args.runs}, {args.threads})")
    form = RUNTIMES[args.runtime]
    if form == "onnxruntime":
        check_onnxruntime()
    started = time.time()
    folder = study_folder(args.out, option="--out") if args.out is not None else None
    config = RunConfig(
        command="profile",
        base=check_base(args.base),
        variant=variant_of(args),
        dataset=args.dataset,
        task=task_of(args),
        argv=argv,
    )
    if folder:
        config = replace(config, folder=folder)
    spec = config.base_spec()
    if folder:
        check_writable(folder, "the study folder")
    direct = (args.width, args.depth, args.resolution)
    if any(v is not None for v in direct):
        if any(v is not None for v in (args.alpha, args.beta, args.gamma)):
            raise UserError("give either --alpha/--beta/--gamma or --width/--depth/--resolution, not both")
        width, depth, resolution = (1.0 if v is None else v for v in direct)
        rows = profile_multipliers(spec, depth, width, resolution, args.runs, args.threads, args.counter, form)
    else:
        alpha, beta, gamma = (
            default if v is None else v
            for v, default in zip((args.alpha, args.beta, args.gamma), EFFICIENTNET_COEFFICIENTS)
        )
        rows = profile_phis(
            spec, sorted(set(args.phi)), (alpha, beta, gamma), args.runs, args.threads, args.counter, form
        )
    if folder:
        frame = pd.DataFrame([{k: row[k] for k in PROFILE_COLUMNS} for row in rows])
        paths = write(folder, config, argv, started, {"profile": frame}, options=options_of(args))
        print(f"wrote {', '.join(map(str, paths))}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps([{k: row[k] for k in PROFILE_COLUMNS} for row in rows], indent=1))
        return 0
    print(f"# {spec.name} on {spec.in_channels}x{spec.resolution}x{spec.resolution}, {spec.num_classes} classes")
    print(
        f"# {convention(args.counter)}; latency: median (and IQR) of {args.runs} runs at batch 1, {args.threads} threads, "
        f"in {LATENCY_WORDS[RUNTIMES[args.runtime]]}"
    )
    print_table(
        rows,
        [
            ("phi", "phi", fmt),
            ("depth", "depth", fmt),
            ("width", "width", fmt),
            ("res", "resolution", fmt),
            ("params(M)", "params", millions),
            ("MACs(M)", "macs", millions),
            ("MACs/φ0", "macs_ratio", fmt),
            ("2^φ", "target_ratio", fmt),
            ("acts(M)", "activations", millions),
            ("latency(ms)", "latency_ms", lambda v: fmt(v, 2)),
            ("IQR(ms)", "latency_iqr_ms", lambda v: fmt(v, 2)),
        ],
    )
    return 0


COMMAND = Command(
    "profile",
    "MACs, params, activations and latency of a base network across phi",
    add_arguments,
    main,
)
