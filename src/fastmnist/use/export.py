"""`fastmnist export`: a saved model as ONNX, checked against PyTorch with onnxruntime on the test set."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fastmnist.data import Mnist
from fastmnist.errors import FastMnistError
from fastmnist.results.output import check_writable, write_bytes, write_or_fallback
from fastmnist.training.layout import normalise
from fastmnist.use.checkpoint import load_model
from fastmnist.use.evaluate import log_probabilities


def export(model_path: str | Path, load: Callable[[], Mnist], onnx_path: str | Path) -> dict:
    """The model as ONNX at `onnx_path`, and onnxruntime's agreement with PyTorch on test images (the model
    read before the data is; `onnx_path` checked before either)."""
    check_writable(onnx_path, "--onnx")
    model, _ = load_model(model_path)
    blob, check = export_onnx(model, load())
    write_or_fallback(onnx_path, lambda path: write_bytes(path, blob), "the ONNX model")
    return check


def export_onnx(model: torch.nn.Module, mnist: Mnist) -> tuple[bytes, dict]:
    """The model as ONNX bytes, and how onnxruntime running them agrees with PyTorch on the test set."""
    try:
        import onnxruntime
    except ImportError:
        raise FastMnistError("ONNX export needs onnx and onnxruntime: pip install -e '.[onnx]' in a checkout of "
                             "fastmnist (pip install 'fastmnist[onnx]' where it was installed as a package)") from None
    buffer = io.BytesIO()
    graph = torch.nn.Sequential(model, torch.nn.LogSoftmax(1)).eval()  # log-probabilities from any net
    with warnings.catch_warnings():  # a network reading 2x2 blocks checks its input's channels: always 1 here
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(graph, (torch.zeros(1, 1, 28, 28),), buffer, input_names=["image"],
                          output_names=["log_probs"], dynamic_axes={"image": {0: "batch"}, "log_probs": {0: "batch"}},
                          dynamo=False)
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"image": normalise(mnist.test_images).numpy()})[0]
    ours = log_probabilities(model, mnist.test_images).numpy()
    return buffer.getvalue(), {"max_abs_diff": float(np.abs(theirs - ours).max()),
                               "same_predictions": int((theirs.argmax(1) == ours.argmax(1)).sum()),
                               "images": len(ours)}
