"""scaler export: files that load and match in a process where scaler cannot be imported; scaler.build; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import Cli

import scaler
from scaler.model.export import deployed_form

COEFFS = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15"]

LOADER = r"""
import importlib.abc, json, sys

class NoScaler(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "scaler" or name.startswith("scaler."):
            raise ImportError("scaler is not installed here")

sys.meta_path.insert(0, NoScaler())
try:
    import scaler
except ImportError:
    pass
else:
    raise SystemExit("scaler was importable")
import numpy as np, onnxruntime, torch

x = np.load(sys.argv[1])
outputs = {}
for path in sys.argv[2:]:
    if path.endswith(".pt2"):
        outputs[path] = torch.export.load(path).module()(torch.from_numpy(x)).detach().numpy().tolist()
    else:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outputs[path] = session.run(None, {name: x})[0].tolist()
print(json.dumps(outputs))
"""


def run_without_scaler(tmp_path: Path, x: np.ndarray, files: list[Path]) -> dict[str, np.ndarray]:
    """Each file's outputs on x, computed in a fresh process that cannot import scaler."""
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path / "x.npy"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {path: np.array(values) for path, values in json.loads(done.stdout.splitlines()[-1]).items()}


@pytest.mark.parametrize("variant", ["relu", "frelu", "flgc:4"])
def test_exported_files_load_and_match_without_scaler(tmp_path: Path, cli: Cli, variant: str) -> None:
    import onnx

    files = [tmp_path / f"net.{suffix}" for suffix in ("onnx", "pt2")]
    for path in files:
        status, out, err = cli(["export", *COEFFS, "--phi", "1", "--variant", variant, "--out", str(path)])
        assert status == 0, err[-2000:]
        about = json.loads(Path(f"{path}.json").read_text())
        assert about["variant"] == variant and about["phi"] == 1.0 and about["weights"].startswith("untrained")
    onnx.checker.check_model(str(files[0]), full_check=True)
    shape = about["input_shape"]
    model = scaler.build("mobilenet", 1.2, 1.1, 1.15, 1.0, variant=variant, seed=0).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        expected = model(x).numpy()
    for path, got in run_without_scaler(tmp_path, x.numpy(), files).items():
        assert got.shape == expected.shape, path
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max(), path


def test_the_deployed_form_computes_what_the_model_computes() -> None:
    model = scaler.build("mobilenet", 1.2, 1.1, 1.15, 1.0, variant="frelu", seed=1).eval()
    x = torch.randn(2, *scaler.scaled_spec("mobilenet", 1.2, 1.1, 1.15, 1.0, variant="frelu").input_shape)
    with torch.no_grad():
        assert torch.allclose(deployed_form(model)(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_study_exports_its_answer_and_reads_in_one_call(tmp_path: Path, cli: Cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies" / "s").mkdir(parents=True)
    grid = {"base": "mobilenet", "width": 0.25, "dataset": "fashion-mnist"}
    (tmp_path / "studies" / "s" / "summary.json").write_text(
        json.dumps({"alpha": 1.0, "beta": 1.4, "gamma": 1.0, "grid": grid})
    )
    answer = scaler.load_study("s")
    assert (answer.alpha, answer.beta, answer.gamma, answer.width) == (1.0, 1.4, 1.0, 0.25)
    status, out, err = cli(["export", "--study", "s", "--phi", "2", "--out", "net.pt2"])
    assert status == 0, err[-2000:]
    about = json.loads((tmp_path / "net.pt2.json").read_text())
    assert about["width"] == 0.25 and about["beta"] == 1.4 and about["phi"] == 2.0
    assert len(about["normalisation"]["mean"]) == 1 and about["macs"] > 0
    program = torch.export.load(str(tmp_path / "net.pt2"))
    net = answer.build(phi=2, seed=0).eval()
    x = torch.randn(1, *about["input_shape"])
    with torch.no_grad():
        assert torch.allclose(program.module()(x), net(x), rtol=1e-4, atol=1e-5)


def missing_onnxscript(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxscript not importable."""
    monkeypatch.setitem(sys.modules, "onnxscript", None)


@pytest.mark.parametrize(
    "args,phrase,prepare",
    [
        (["--study", "nope", "--out", "net.onnx"], "no finished search", None),
        ([*COEFFS, "--phi", "50", "--out", "net.onnx"], "bytes", None),
        ([*COEFFS, "--out", "net.onnx"], "scaler[export]", missing_onnxscript),
        ([*COEFFS, "--out", "missing/net.onnx"], "does not exist", None),
        ([*COEFFS, "--out", "net.bin"], "--format", None),
        ([*COEFFS, "--alpha", "0.5", "--out", "net.pt2"], "alpha must be >= 1", None),
    ],
)
def test_bad_export_is_one_line_and_writes_nothing(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, args: list[str], phrase: str, prepare
) -> None:
    monkeypatch.chdir(tmp_path)
    if prepare:
        prepare(monkeypatch)
    status, out, err = cli(["export", *args])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and phrase in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_profile_times_the_deployed_form_in_onnx_runtime(cli: Cli) -> None:
    status, out, err = cli(["profile", "--phi", "0", "1", "--runs", "3", "--runtime", "onnxruntime", "--json"])
    assert status == 0, err[-2000:]
    rows = json.loads(out)
    assert [row["phi"] for row in rows] == [0.0, 1.0] and all(row["latency_ms"] > 0 for row in rows)


def test_the_onnx_runtime_form_computes_what_the_model_computes() -> None:
    from scaler.model.runtime import OrtModel

    spec = scaler.scaled_spec("mobilenet", 1.2, 1.1, 1.15, 1.0, variant="flgc:4")
    model = scaler.build("mobilenet", 1.2, 1.1, 1.15, 1.0, variant="flgc:4", seed=2).eval()
    x = torch.randn(4, *spec.input_shape)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(OrtModel(model, spec.input_shape)(x), expected, rtol=1e-4, atol=1e-5)


def test_duplicated_channels_export_and_run_in_onnx_runtime(tmp_path: Path) -> None:
    """Frozen FLGC layers with duplicates, as kernels of their own or padded into the groups' kernel, compute the
    same in ONNX Runtime and in a loaded torch.export program as in scaler."""
    import onnxruntime

    from scaler.model.export import export_program, onnx_file
    from scaler.model.nn.deploy import deploy
    from scaler.model.nn.flgc import flgc_layers, freeze_assignments
    from scaler.model.nn.flgc_deploy import DeployedFLGC

    torch.manual_seed(5)
    spec = scaler.scaled_spec("mobilenet", 1.0, 1.0, 1.0, 0.0, variant="flgc-dup:4")
    model = scaler.build("mobilenet", 1.0, 1.0, 1.0, 0.0, variant="flgc-dup:4", seed=5)
    for layer in flgc_layers(model):
        layer.in_logits.data.normal_(0, 1.5)
        layer.score = "weight"  # duplicates without training (the logit rule waits for learned logits)
    freeze_assignments(model)
    model.eval()
    x = torch.randn(3, *spec.input_shape)
    for duplicates in ("split", "padded"):
        form = deploy(model, shifts=False, compile=False, duplicates=duplicates)
        assert any(len(m.extras) for m in form.modules() if isinstance(m, DeployedFLGC)) == (duplicates == "split")
        with torch.no_grad():
            expected = model(x)
            program = export_program(form, torch.randn(2, *spec.input_shape))
            torch.export.save(program, str(tmp_path / "dup.pt2"))
            loaded = torch.export.load(str(tmp_path / "dup.pt2")).module()(x)
            assert torch.allclose(loaded, expected, rtol=1e-4, atol=1e-5)
            onnx_file(program, tmp_path / "dup.onnx")
            session = onnxruntime.InferenceSession(str(tmp_path / "dup.onnx"), providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
            assert np.abs(got - expected.numpy()).max() <= 1e-5 * np.abs(expected.numpy()).max()


def test_scale_times_in_onnx_runtime_and_says_so(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """scale --runtime onnxruntime times every network in ONNX Runtime; the CSV, report and figure say so."""
    from scaler.report.figures import latency_label
    from scaler.report.study import study_report

    monkeypatch.chdir(tmp_path)
    args = ["scale", *COEFFS, "--phi", "0", "1", "--train-max-phi", "-1", "--runtime", "onnxruntime", "--out", "s"]
    status, out, err = cli(args)
    assert status == 0, err[-2000:]
    frame = pd.read_csv(tmp_path / "studies" / "s" / "scale.csv")
    assert set(frame.latency_form) == {"onnxruntime"} and (frame.latency_ms > 0).all()
    assert "ONNX Runtime" in latency_label(frame)
    assert "Latency: batch 1, in ONNX Runtime" in study_report(tmp_path / "studies" / "s")


@pytest.mark.parametrize("command", ["scale", "frelu"])
def test_runtime_without_onnxruntime_is_one_line(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    status, out, err = cli([command, *COEFFS, "--runtime", "onnxruntime", "--out", "s"])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "scaler[export]" in lines[0], err
    assert list(tmp_path.iterdir()) == []
