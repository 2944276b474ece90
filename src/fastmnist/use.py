"""Using a trained model: evaluate it on the test set, predict digits in image files, export to ONNX."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from fastmnist.data import MEAN, STD, Mnist
from fastmnist.errors import FastMnistError


def logits_of(model: torch.nn.Module, images: np.ndarray, batch: int = 2000) -> torch.Tensor:
    """Log-probabilities for uint8 (N, 28, 28) images, normalised as in training."""
    x = torch.from_numpy(images).unsqueeze(1).float().div(255).sub(MEAN).div(STD)
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def evaluate(model: torch.nn.Module, mnist: Mnist) -> dict:
    predicted = logits_of(model, mnist.test_images).argmax(1).numpy()
    truth = mnist.test_labels.astype(np.int64)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = confusion.diagonal() / confusion.sum(1)
    return {"accuracy": float(100 * (predicted == truth).mean()), "per_class": (100 * per_class).tolist(),
            "confusion": confusion.tolist(), "predicted": predicted}


def format_evaluation(result: dict) -> str:
    lines = [f"test accuracy: {result['accuracy']:.2f}% ({int(np.trace(result['confusion']))}/10000)",
             "per class:    " + " ".join(f"{d}:{a:.1f}" for d, a in enumerate(result["per_class"])),
             "confusion (rows: true digit, columns: predicted):",
             "      " + " ".join(f"{d:>5}" for d in range(10))]
    lines += [f"  {d:>2}  " + " ".join(f"{n:>5}" for n in row) for d, row in enumerate(result["confusion"])]
    return "\n".join(lines)


def save_error_grid(mnist: Mnist, predicted: np.ndarray, path: Path, limit: int = 100) -> int:
    """A grid of misclassified test digits titled 'true->predicted'. Returns how many errors exist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastmnist.report import save_figure

    wrong = np.flatnonzero(predicted != mnist.test_labels)
    shown = wrong[:limit]
    cols = 10
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, shown):
        ax.imshow(mnist.test_images[index], cmap="gray_r")
        ax.set_title(f"{mnist.test_labels[index]}->{predicted[index]}", fontsize=8)
    fig.suptitle(f"{len(wrong)} misclassified test digits (true->predicted), first {len(shown)} shown")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return len(wrong)


def to_mnist_format(path: str | Path) -> np.ndarray:
    """An image file of one digit, made the way MNIST was: grey, ink bright on black, the digit fitted into
    20x20 keeping its aspect ratio, then centred by its centre of mass in 28x28. Returns uint8 (28, 28)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise FastMnistError(f"{path}: not a readable image ({type(exc).__name__})") from None
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper: MNIST is light ink on black
        grey, border = 1.0 - grey, 1.0 - border
    background = np.median(border)
    ink = np.clip((grey - background) / max(1.0 - background, 1e-6), 0.0, 1.0)
    rows, cols = np.nonzero(ink > 0.1)
    if len(rows) == 0:
        raise FastMnistError(f"{path}: empty image, no digit found")
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = 20.0 / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    fitted = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS), np.float64)
    total = fitted.sum()
    if total == 0:
        raise FastMnistError(f"{path}: empty image, no digit found")
    ys, xs = np.indices(fitted.shape)
    top = int(round(14 - (ys * fitted).sum() / total))
    left = int(round(14 - (xs * fitted).sum() / total))
    top = min(max(top, 0), 28 - fitted.shape[0])
    left = min(max(left, 0), 28 - fitted.shape[1])
    canvas = np.zeros((28, 28))
    canvas[top:top + fitted.shape[0], left:left + fitted.shape[1]] = fitted
    return np.clip(canvas, 0, 255).astype(np.uint8)


def predict_files(model: torch.nn.Module, paths: list[str]) -> list[dict]:
    """One record per file: digit and probability, or the error for that file alone."""
    records = []
    for path in paths:
        try:
            image = to_mnist_format(path)
        except FastMnistError as exc:
            records.append({"file": str(path), "error": str(exc)})
            continue
        probabilities = logits_of(model, image[None]).exp()[0]
        digit = int(probabilities.argmax())
        records.append({"file": str(path), "digit": digit, "probability": float(probabilities[digit])})
    return records


def export_onnx(model: torch.nn.Module, path: Path, mnist: Mnist) -> dict:
    """Write ONNX atomically, then check it with onnxruntime against PyTorch on the whole test set."""
    try:
        import onnxruntime
    except ImportError:
        raise FastMnistError("ONNX export needs onnx and onnxruntime: pip install 'fastmnist[onnx]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), tmp, input_names=["image"],
                          output_names=["log_probs"], dynamic_axes={"image": {0: "batch"}, "log_probs": {0: "batch"}},
                          dynamo=False)
        session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        x = torch.from_numpy(mnist.test_images).unsqueeze(1).float().div(255).sub(MEAN).div(STD).numpy()
        theirs = session.run(None, {"image": x})[0]
        ours = logits_of(model, mnist.test_images).numpy()
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"path": str(path), "max_abs_diff": float(np.abs(theirs - ours).max()),
            "same_predictions": int((theirs.argmax(1) == ours.argmax(1)).sum()), "images": len(x)}
