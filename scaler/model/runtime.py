"""ONNX Runtime, the runtime CPU deployments use: a model's deployed form exported to ONNX and run in a session
that is called like a module, so that every latency measurement can time it beside the torch forms."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scaler.model.export import deployed_form, export_program, onnx_file, require


def check_onnxruntime() -> None:
    """onnxruntime, onnx and onnxscript are installed; else one line naming the extra."""
    require(("onnxruntime", "onnx", "onnxscript"), "--runtime onnxruntime")


class OrtModel(nn.Module):
    """An ONNX Runtime CPU session of `model`'s deployed form (BN folded, FLGC grouped), `threads` intra-op threads."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int], threads: int = 1) -> None:
        super().__init__()
        import onnxruntime

        check_onnxruntime()
        program = export_program(deployed_form(model), torch.randn(2, *input_shape))
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "model.onnx"
            onnx_file(program, path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The session's output on x (a CPU float tensor)."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])
