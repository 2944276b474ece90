"""`fastmnist evaluate`: a saved model's test accuracy, per-class accuracy and confusion matrix, and a grid
of the digits it gets wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fastmnist.data import Mnist
from fastmnist.errors import FastMnistError
from fastmnist.results.output import check_writable, pyplot, save_figure, write_or_fallback
from fastmnist.training.layout import normalise
from fastmnist.training.views import TEST_VIEWS, view_probabilities
from fastmnist.use.checkpoint import load_model


def evaluate(model_path: str | Path, load: Callable[[], Mnist], errors: str | Path | None = None,
             show=None) -> tuple[dict, dict, int | None]:
    """Test accuracy, per-class accuracy and confusion matrix of a saved model, and how it was trained;
    with `errors`, a grid of the misclassified digits, written after `show(result, info)`. The model is read
    before the data is (`load()`), so a bad model file costs nothing. Returns the evaluation, the model's
    info and how many digits the grid shows."""
    if errors:
        check_writable(errors, "--errors", suffixes=(".png",))
    model, info = load_model(model_path)
    views = trained_views(info, model_path)
    mnist = load()
    result = evaluate_model(model, mnist, views)
    if show:
        show(result, info)
    if not errors:
        return result, info, None
    counted = []
    write_or_fallback(errors, lambda path: counted.append(
        error_grid(mnist.test_images, mnist.test_labels, result["predicted"], path)), "the error grid")
    return result, info, counted[-1]


def trained_views(info: dict, model_path) -> str:
    """The test-time views the model's run was tested with (its recipe's test_views), so that evaluate and
    predict see what the run's test pass saw; models saved before views existed were tested plain."""
    name = info.get("test_views", "plain")
    if name not in TEST_VIEWS:
        raise FastMnistError(f"{model_path}: its test_views {name!r} is none of {', '.join(TEST_VIEWS)} "
                             f"(saved by a newer fastmnist?)")
    return name


def log_probabilities(model: torch.nn.Module, images: np.ndarray, batch: int = 2000,
                      views: str = "plain") -> torch.Tensor:
    """The model's log-probabilities (N x 10) for uint8 images (log_softmax leaves our nets' outputs as
    they are, and turns a user network's logits into log-probabilities); with test-time views, the log of
    the softmax averaged over them (views.py)."""
    x = normalise(images)
    with torch.no_grad():
        if views == "plain":
            return torch.cat([model(x[i:i + batch]).log_softmax(1) for i in range(0, len(x), batch)])
        return torch.cat([view_probabilities(model, x[i:i + batch], TEST_VIEWS[views]).log()
                          for i in range(0, len(x), batch)])


def evaluate_model(model: torch.nn.Module, mnist: Mnist, views: str = "plain") -> dict:
    """Accuracy, per-class accuracy, confusion matrix and every prediction on the test set, seen through the
    given test-time views."""
    predicted = log_probabilities(model, mnist.test_images, views=views).argmax(1).numpy()
    truth = mnist.test_labels.astype(np.int64)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = confusion.diagonal() / confusion.sum(1)
    return {"accuracy": round(float(100 * (predicted == truth).mean()), 4), "test_views": views, "per_class":
            [round(a, 4) for a in (100 * per_class).tolist()], "confusion": confusion.tolist(),
            "predicted": predicted}


def evaluation_text(result: dict) -> str:
    views = result.get("test_views", "plain")
    seen = "" if views == "plain" else f", test-time views {views} ({len(TEST_VIEWS[views])} views)"
    lines = [f"test accuracy: {result['accuracy']:.2f}% ({int(np.trace(result['confusion']))}/"
             f"{int(np.sum(result['confusion']))}{seen})",
             "per class:    " + " ".join(f"{d}:{a:.1f}" for d, a in enumerate(result["per_class"])),
             "confusion (rows: true digit, columns: predicted):",
             "      " + " ".join(f"{d:>5}" for d in range(10))]
    lines += [f"  {d:>2}  " + " ".join(f"{n:>5}" for n in row) for d, row in enumerate(result["confusion"])]
    return "\n".join(lines)


def error_grid(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, path: Path, limit: int = 100) -> int:
    """A grid of misclassified digits titled 'true->predicted'. Returns how many errors exist."""
    plt = pyplot()
    wrong = np.flatnonzero(predicted != labels)
    shown = wrong[:limit]
    cols = 10
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, shown):
        ax.imshow(images[index], cmap="gray_r")
        ax.set_title(f"{labels[index]}->{predicted[index]}", fontsize=8)
    fig.suptitle(f"{len(wrong)} misclassified test digits (true->predicted), first {len(shown)} shown")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return len(wrong)
