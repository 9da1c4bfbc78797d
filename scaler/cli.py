"""Command line: `scaler profile | search | ...`; user errors end in one line and exit status 2."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, NoReturn, Sequence

from scaler.complexity import CONVENTION, DEFAULT_THREADS
from scaler.errors import UserError
from scaler.tasks import Task, dataset_task, parse_input
from scaler.variants import VARIANT_HELP, apply_variant
from scaler.zoo import BASES, base

EFFICIENTNET_COEFFICIENTS = (1.2, 1.1, 1.15)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"scaler: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """--dataset or --input/--classes."""
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (1x28x28), mnist, cifar10 (3x32x32)")
    parser.add_argument("--input", help="explicit input CxHxW, e.g. 3x224x224 (overrides --dataset)")
    parser.add_argument("--classes", type=int, default=1000, help="classes with --input (default 1000)")


def task_of(args: argparse.Namespace) -> Task:
    """Task from --input/--classes if given, else from --dataset."""
    return parse_input(args.input, args.classes) if args.input else dataset_task(args.dataset)


def add_architecture_args(parser: argparse.ArgumentParser) -> None:
    """--base, --variant, --activation/--frelu-stages."""
    parser.add_argument("--base", default="mobilenet", help=f"base network: {', '.join(BASES)}")
    parser.add_argument("--variant", default="relu", help=f"variant: {VARIANT_HELP}")
    parser.add_argument("--activation", choices=("frelu",), help="shorthand: FReLU on all stages or on --frelu-stages")
    parser.add_argument("--frelu-stages", help="1-based stages that get FReLU, e.g. 1,2")


def base_spec(args: argparse.Namespace):
    """The base NetSpec the arguments describe (task, base network, variant)."""
    task = task_of(args)
    spec = base(args.base, task.in_channels, task.resolution, task.num_classes)
    variant = args.variant
    if args.activation == "frelu" or args.frelu_stages:
        variant += "+" + (f"frelu:{args.frelu_stages}" if args.frelu_stages else "frelu")
    return apply_variant(spec, variant)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, Callable[[Any], str]]]) -> None:
    """Aligned table: (header, key, formatter) per column."""
    cells = [[fmt(row.get(key)) for _, key, fmt in columns] for row in rows]
    widths = [max(len(header), *(len(r[i]) for r in cells)) for i, (header, _, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (h, _, _), w in zip(columns, widths)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def millions(value: Any) -> str:
    """Value in millions with 3 decimals."""
    return "-" if value is None else f"{value / 1e6:.3f}"


def cmd_profile(args: argparse.Namespace) -> int:
    """scaler profile: one row per phi."""
    from scaler.profile import profile_multipliers, profile_phis

    spec = base_spec(args)
    direct = (args.width, args.depth, args.resolution)
    if any(v is not None for v in direct):
        if any(v is not None for v in (args.alpha, args.beta, args.gamma)):
            raise UserError("give either --alpha/--beta/--gamma or --width/--depth/--resolution, not both")
        width, depth, resolution = (1.0 if v is None else v for v in direct)
        rows = profile_multipliers(spec, depth, width, resolution, args.runs, args.threads)
    else:
        alpha, beta, gamma = (
            default if v is None else v
            for v, default in zip((args.alpha, args.beta, args.gamma), EFFICIENTNET_COEFFICIENTS)
        )
        rows = profile_phis(spec, sorted(set(args.phi)), (alpha, beta, gamma), args.runs, args.threads)
    if args.json:
        keys = ["phi", "depth", "width", "resolution", "params", "macs", "macs_ratio", "activations", "latency_ms"]
        print(json.dumps([{k: row[k] for k in keys} for row in rows], indent=1))
        return 0
    print(f"# {spec.name} on {spec.in_channels}x{spec.resolution}x{spec.resolution}, {spec.num_classes} classes")
    print(f"# {CONVENTION}; latency: median of {args.runs} runs at batch 1, {args.threads} threads")
    print_table(
        rows,
        [
            ("phi", "phi", _fmt),
            ("depth", "depth", _fmt),
            ("width", "width", _fmt),
            ("res", "resolution", _fmt),
            ("params(M)", "params", millions),
            ("MACs(M)", "macs", millions),
            ("MACs/φ0", "macs_ratio", _fmt),
            ("2^φ", "target_ratio", _fmt),
            ("acts(M)", "activations", millions),
            ("latency(ms)", "latency_ms", lambda v: _fmt(v, 2)),
        ],
    )
    return 0


def make_parser() -> Parser:
    """The whole command line."""
    parser = Parser(prog="scaler", description="Compound scaling of CNNs with FReLU and FLGC variants.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("profile", help="MACs, params, activations and latency of a base network across phi")
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
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scaler` console script."""
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as error:
        print(f"scaler: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scaler: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
