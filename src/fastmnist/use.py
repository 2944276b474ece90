"""Using a trained model: evaluate it on the test set, predict digits in image files, export to ONNX."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from fastmnist.data import Mnist
from fastmnist.errors import FastMnistError
from fastmnist.layout import normalise


def log_probabilities(model: torch.nn.Module, images: np.ndarray, batch: int = 2000) -> torch.Tensor:
    """The model's log-probabilities (N x 10) for uint8 images (log_softmax leaves our nets' outputs as
    they are, and turns a user network's logits into log-probabilities)."""
    x = normalise(images)
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).log_softmax(1) for i in range(0, len(x), batch)])


def evaluate_model(model: torch.nn.Module, mnist: Mnist) -> dict:
    """Accuracy, per-class accuracy, confusion matrix and every prediction on the test set."""
    predicted = log_probabilities(model, mnist.test_images).argmax(1).numpy()
    truth = mnist.test_labels.astype(np.int64)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = confusion.diagonal() / confusion.sum(1)
    return {"accuracy": round(float(100 * (predicted == truth).mean()), 4), "per_class":
            [round(a, 4) for a in (100 * per_class).tolist()], "confusion": confusion.tolist(),
            "predicted": predicted}


def read_grey(path: str | Path) -> tuple[np.ndarray, str | None]:
    """An image file as grey values in [0, 1], whatever Pillow mode it comes in, and a note when something
    about it was decided for the user (a multi-page file's first page). Transparency is composited onto
    white paper first, so a black digit on a transparent background stays a black digit; 16-bit, 32-bit
    and float greys are scaled by their own range, not clipped at 255."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning is not an answer
            with Image.open(path) as img:
                pages = getattr(img, "n_frames", 1)
                notes = [f"{pages} pages: used the first"] if pages > 1 else []
                if max(img.size) > LARGEST_SIDE:  # a digit needs no more; decoding large costs GBs and seconds
                    size = img.size
                    img.draft(img.mode, (LARGEST_SIDE, LARGEST_SIDE))  # JPEG decodes at a fraction of its size
                    img.thumbnail((LARGEST_SIDE, LARGEST_SIDE), Image.Resampling.BOX)
                    notes.append(f"{size[0]}x{size[1]} pixels: reduced to {img.size[0]}x{img.size[1]} first")
                return grey_values(img), "; ".join(notes) or None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FastMnistError(f"{path}: image too large (over {Image.MAX_IMAGE_PIXELS // 1_000_000} million "
                             f"pixels); scale it down first") from None
    except IsADirectoryError:
        raise FastMnistError(f"{path}: is a folder, not an image") from None
    except (UnidentifiedImageError, OSError, ValueError, TypeError) as exc:
        raise FastMnistError(f"{path}: not a readable image ({type(exc).__name__})") from None


LARGEST_SIDE = 1024  # pixels: larger images are reduced (box filter) while decoding, before anything else
WIDE_GREYS = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}


def grey_values(img) -> np.ndarray:
    from PIL import Image

    if img.mode in WIDE_GREYS or img.mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        if img.mode in WIDE_GREYS:
            top = WIDE_GREYS[img.mode]
        elif img.mode == "F" and values.max() <= 1.0:
            top = 1.0  # floats already in [0, 1]
        else:  # 32-bit integers or floats: 8-bit, 16-bit or their own range
            top = next((t for t in (255.0, 65535.0) if values.max() <= t), float(values.max()))
        return np.clip(values / top, 0.0, 1.0)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def to_mnist_format(path: str | Path) -> tuple[np.ndarray, str | None]:
    """An image file of one digit, made the way MNIST was: grey, ink bright on black, the digit fitted into
    20x20 keeping its aspect ratio, then centred by its centre of mass in 28x28. Returns uint8 (28, 28), and
    `read_grey`'s note."""
    from PIL import Image

    grey, note = read_grey(path)
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
    return np.clip(canvas, 0, 255).astype(np.uint8), note


def image_paths(paths: list[str]) -> list[str]:
    """The files to predict: each path given, a folder standing for the files in it (not hidden, sorted)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            found += inside or [str(path)]  # an empty folder is reported as such, below
        else:
            found.append(str(path))
    return found


def predict_files(model: torch.nn.Module, paths: list[str]) -> list[dict]:
    """One record per file (a folder: each file in it): digit and probability, or the error for that file
    alone."""
    records = []
    for path in image_paths(paths):
        if Path(path).is_dir():
            records.append({"file": path, "error": f"{path}: an empty folder, no images in it"})
            continue
        try:
            image, note = to_mnist_format(path)
        except FastMnistError as exc:
            records.append({"file": str(path), "error": str(exc)})
            continue
        probabilities = log_probabilities(model, image[None]).exp()[0]
        digit = int(probabilities.argmax())
        records.append({"file": str(path), "digit": digit, "probability": float(probabilities[digit]),
                        **({"note": note} if note else {})})
    return records


def export_onnx(model: torch.nn.Module, mnist: Mnist) -> tuple[bytes, dict]:
    """The model as ONNX bytes, and how onnxruntime running them agrees with PyTorch on the test set."""
    try:
        import onnxruntime
    except ImportError:
        raise FastMnistError("ONNX export needs onnx and onnxruntime: pip install -e '.[onnx]' in a checkout of "
                             "fastmnist (pip install 'fastmnist[onnx]' where it was installed as a package)") from None
    buffer = io.BytesIO()
    graph = torch.nn.Sequential(model, torch.nn.LogSoftmax(1)).eval()  # log-probabilities from any net
    torch.onnx.export(graph, (torch.zeros(1, 1, 28, 28),), buffer, input_names=["image"],
                      output_names=["log_probs"], dynamic_axes={"image": {0: "batch"}, "log_probs": {0: "batch"}},
                      dynamo=False)
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"image": normalise(mnist.test_images).numpy()})[0]
    ours = log_probabilities(model, mnist.test_images).numpy()
    return buffer.getvalue(), {"max_abs_diff": float(np.abs(theirs - ours).max()),
                               "same_predictions": int((theirs.argmax(1) == ours.argmax(1)).sum()),
                               "images": len(ours)}
