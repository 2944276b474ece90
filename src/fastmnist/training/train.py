"""`fastmnist train`: one warm run of a recipe, its record, and its weights saved where asked."""

from __future__ import annotations

from pathlib import Path

from fastmnist.recipes.recipe import Recipe
from fastmnist.results.machine import load_average, machine_info
from fastmnist.results.output import check_writable, write_or_fallback
from fastmnist.results.records import envelope, with_load
from fastmnist.training.runner import Load, Runner
from fastmnist.training.trainer import RunResult
from fastmnist.use.checkpoint import save_model


def train(recipe: Recipe, seed: int, load: Load, warmup: bool = True, on_epoch=None, save: str | Path | None = None,
          show=None) -> tuple[RunResult, dict]:
    """One warm run, and its record: the run, what was excluded from its clock, the machine, provenance.
    `show(result, record)` sees them before the weights are saved to `save` (not when the run diverged);
    `save` is checked before the data loads (`load()`)."""
    if save:
        check_writable(save, "--save")
    start = load_average()
    device, mnist = load()
    runner = Runner(mnist, device, warmup=warmup, on_epoch=on_epoch)
    result = runner.run(recipe, seed)
    record = with_load({**envelope("train", machine_info(device), [recipe]), **result.record(),
                        "device": device.type, "excluded_seconds": runner.excluded_seconds(recipe)}, start)
    if show:
        show(result, record)
    if save and not result.diverged:
        write_or_fallback(save, lambda path: save_model(path, result.model, {
            "recipe": recipe.name, "seed": seed, "accuracy": result.accuracy, "device": device.type,
            "data_order": result.data_order, "test_views": recipe.test_views}, recipe.net), "the model")
    return result, record
