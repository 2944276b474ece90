"""One training run of a recipe: create, train and test a model, between two clock readings.

Read top to bottom, `train_run` writes the seed's data order (before the clock) and `timed_run` is the
whole timed run: model creation (the engine's reset to the seed), epochs of steps, the divergence check,
the test evaluation(s) and early stop, each part's seconds recorded. How steps run and how a model is
created lives in `engines.py`, the step itself in `step.py`, the data's layout in `layout.py`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch.profiler import record_function

from fastmnist.training.device import cpu_threads, sync
from fastmnist.training.engines import Engine
from fastmnist.training.layout import test_batches
from fastmnist.training.views import TEST_VIEWS, view_probabilities

COLLAPSED_BELOW = 20.0  # % test accuracy: twice chance; a finished run below it has diverged, NaN or not
RUN_CONSTANTS = {"COLLAPSED_BELOW": "% accuracy under which a run counts as diverged"}  # for `recipes --show`


@dataclass
class RunResult:
    recipe: str
    seed: int
    accuracy: float  # percent, on the full 10k test set
    seconds: float  # model creation + training + testing
    epochs: int
    epoch_accuracies: list[float]
    diverged: bool
    precision: str
    images_seen: int  # training images, summed over epochs
    test_images: int  # images in one test evaluation
    engine: str = "eager"  # what ran the steps: eager, or graph on CUDA
    data_order: str = ""  # fingerprint of the images an epoch walked, in order (layout.fingerprint)
    order_seconds: float = 0.0  # drawing and writing that order, before the clock (not timed)
    creation_seconds: float = 0.0  # the parts of `seconds`: model creation (a reset, for a captured model),
    training_seconds: float = 0.0  # the epochs of steps with their divergence checks,
    test_seconds: float = 0.0  # and the test evaluations
    model: torch.nn.Module | None = field(default=None, repr=False)

    def record(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


@record_function("evaluation")
def test_accuracy(model, batches, autocast, views: str = "plain") -> tuple[float, bool]:
    """Percent correct, and whether every output was a number: counted on the device, read once at the end
    (on CUDA one host sync for the whole test pass). With a set of views other than the plain image (a name
    of views.TEST_VIEWS, as evaluate takes it), the prediction is the argmax of the softmax averaged over
    them."""
    model.eval()
    correct, finite_outputs, total = None, None, 0
    plain, shifts = views == "plain", TEST_VIEWS[views]
    with torch.no_grad(), autocast():
        for x, y in batches:
            output = model(x) if plain else view_probabilities(model, x, shifts)
            hits, numbers = (output.argmax(1) == y).sum(), torch.isfinite(output).all()
            correct = hits if correct is None else correct + hits
            finite_outputs = numbers if finite_outputs is None else finite_outputs & numbers
            total += len(y)
    model.train()
    counts = torch.stack([correct, finite_outputs.long()]).tolist()
    return 100.0 * counts[0] / total, bool(counts[1])


def finite(model: torch.nn.Module, loss_sum: torch.Tensor) -> bool:
    """The loss and all weights are numbers (a run whose weights hold NaN/inf has diverged, whatever its loss
    said): one check on the device, read once."""
    checks = [torch.isfinite(loss_sum).all(), *(torch.isfinite(p).all() for p in model.parameters())]
    return bool(torch.stack(checks).all())


def train_run(engine: Engine, seed: int, warmup: bool = False, on_epoch=None) -> RunResult:
    """One run of the engine's recipe: its seed's data order written (before the clock), then `timed_run`.
    `on_epoch(epoch, accuracy, elapsed_seconds)` is told after each test evaluation (for progress lines)."""
    with cpu_threads(engine.recipe.threads):
        order, order_seconds = engine.lay_out(seed)
        result = timed_run(engine, seed, warmup, on_epoch)
        result.data_order, result.order_seconds = order, order_seconds
        return result


def timed_run(engine: Engine, seed: int, warmup: bool, on_epoch) -> RunResult:
    """Everything between the two clock readings: model creation, the epochs, the test evaluation(s)."""
    recipe, data = engine.recipe, engine.data
    device = data.device
    sync(device)
    start = time.perf_counter()

    run = engine.start(seed, warmup)  # model creation: the built model reset to a new one with this seed
    sync(device)
    created = time.perf_counter()
    epoch_accuracies, images_seen, diverged, training, testing = [], 0, False, 0.0, 0.0
    run.model.train()
    for epoch in range(1 if warmup else recipe.epochs):
        epoch_start = time.perf_counter()
        images_seen += run.train_epoch()
        diverged = not finite(run.model, run.step.loss_sum)  # once an epoch; one host sync
        trained = time.perf_counter()
        training += trained - epoch_start
        last_epoch = diverged or epoch == recipe.epochs - 1 or warmup
        if recipe.eval_every_epoch or last_epoch:
            accuracy, finite_outputs = test_accuracy(run.forward, test_batches(data, recipe), run.step.autocast,
                                                     recipe.test_views)
            testing += time.perf_counter() - trained  # test_accuracy reads its count: synced
            epoch_accuracies.append(accuracy)
            collapsed = last_epoch and not warmup and accuracy < COLLAPSED_BELOW
            diverged = diverged or not finite_outputs or collapsed
            if on_epoch:
                on_epoch(epoch + 1, epoch_accuracies[-1], time.perf_counter() - start)
            if diverged or (recipe.early_stop and epoch_accuracies[-1] >= recipe.target):
                break

    sync(device)
    seconds = time.perf_counter() - start
    model = copy.deepcopy(run.model)  # the engine's model is reset by the next run: keep this run's, untimed
    return RunResult(recipe.name, seed, epoch_accuracies[-1], seconds, epoch + 1, epoch_accuracies, diverged,
                     run.step.precision, images_seen, data.test_size, engine.used, model=model,
                     creation_seconds=created - start, training_seconds=training, test_seconds=testing)
