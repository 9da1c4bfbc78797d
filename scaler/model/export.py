"""What leaves the tool: a network in its deployed form (BN folded, FLGC as deployed) as a torch.export program
(.pt2) or an ONNX file, beside a JSON of what it is; both load where scaler is not installed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scaler.errors import UserError, shown_path
from scaler.model.spec import NetSpec

FORMATS = ("onnx", "pt2")
SUFFIXES = {".onnx": "onnx", ".pt2": "pt2"}
EXTRA = "pip install 'scaler[export]' (onnx, onnxscript, onnxruntime)"
OPSET = 18


def format_of(path: Path, given: str | None) -> str:
    """--format, else the one the file's suffix names; one line when neither says."""
    if given is not None:
        if given not in FORMATS:
            raise UserError(f"--format {given!r} is not one of {', '.join(FORMATS)}")
        return given
    if path.suffix.lower() in SUFFIXES:
        return SUFFIXES[path.suffix.lower()]
    raise UserError(f"--out {shown_path(path)}: give --format onnx or pt2, or a file ending in .onnx or .pt2")


def require(modules: tuple[str, ...], what: str) -> None:
    """`modules` are installed; else one line saying that `what` needs the first one missing, and the extra."""
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"{what} needs the {module} package: {EXTRA}") from None


def check_extra(fmt: str) -> None:
    """The packages an ONNX export needs are installed; else one line naming the extra."""
    if fmt == "onnx":
        require(("onnx", "onnxscript"), "--format onnx")


def check_out(path: Path) -> Path:
    """An --out file whose folder exists and can be written (checked before anything is built)."""
    path = path.expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"--out {shown_path(path)} is a folder; give a file name, e.g. {shown_path(path / 'net.onnx')}")
    if not folder.is_dir():
        raise UserError(f"--out {shown_path(path)}: folder {shown_path(folder)} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {shown_path(path)}: folder {shown_path(folder)} is not writable")
    return path


def deployed_form(model: nn.Module) -> nn.Module:
    """The model as it is deployed: eval mode, BN folded into its convs, FLGC layers as grouped kernels (no
    compilation, no shifted depthwise: both are the runtime's business)."""
    from scaler.model.nn.deploy import deploy

    return deploy(model, shifts=False, compile=False).eval()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' progress prints and warnings kept off the user's terminal."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export_program(form: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`form` traced by torch.export with a dynamic batch dimension (static where the model will not allow one)."""
    with quiet():
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            return torch.export.export(form, (example,), dynamic_shapes=({0: batch},))
        except Exception:  # noqa: BLE001 - a model whose trace fixes the batch is exported at that batch
            return torch.export.export(form, (example[:1],))


def onnx_file(program: torch.export.ExportedProgram, target: Path) -> None:
    """The exported program written as an ONNX file (opset OPSET)."""
    with quiet():
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=OPSET, verbose=False)
        assert onnx_program is not None
        onnx_program.save(str(target))


def write_onnx(program: torch.export.ExportedProgram, target: Path) -> None:
    """The exported program as an ONNX file, checked by onnx.checker."""
    import onnx

    onnx_file(program, target)
    onnx.checker.check_model(str(target), full_check=True)


def save(model: nn.Module, spec: NetSpec, out: Path, fmt: str, about: dict[str, Any]) -> tuple[Path, Path]:
    """Write the deployed `model` to `out` in `fmt` and `about` (with the form's batch dimension) to `out`.json; both
    files appear together or not at all."""
    form = deployed_form(model)
    example = torch.randn(2, *spec.input_shape)  # batch 2: torch.export would fix a batch of 1 as a constant
    program = export_program(form, example)
    dynamic = bool(program.range_constraints)
    sidecar = out.with_suffix(out.suffix + ".json")
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        staged = Path(scratch) / out.name
        if fmt == "pt2":
            torch.export.save(program, str(staged))
        else:
            write_onnx(program, staged)
        record = about | {"format": fmt, "file": out.name, "batch": "dynamic" if dynamic else 1}
        staged_json = Path(scratch) / sidecar.name
        staged_json.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(staged, out)
        os.replace(staged_json, sidecar)
    return out, sidecar
