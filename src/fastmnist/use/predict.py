"""`fastmnist predict`: the digit in each image file, read and reduced as MNIST's digits are."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from fastmnist.errors import FastMnistError
from fastmnist.use.checkpoint import load_model
from fastmnist.use.evaluate import log_probabilities, trained_views


def predict(model_path: str | Path, images: list[str]) -> list[dict]:
    """The digit in each image file (a folder: each file in it), or that file's error."""
    model, info = load_model(model_path)
    return predict_files(model, images, trained_views(info, model_path))


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


def predict_files(model: torch.nn.Module, paths: list[str], views: str = "plain") -> list[dict]:
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
        probabilities = log_probabilities(model, image[None], views=views).exp()[0]
        digit = int(probabilities.argmax())
        records.append({"file": str(path), "digit": digit, "probability": float(probabilities[digit]),
                        **({"note": note} if note else {})})
    return records
