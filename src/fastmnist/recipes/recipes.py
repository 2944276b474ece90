"""`fastmnist recipes`: the recipes, each with what it changes from its parent, and one recipe shown whole
as it runs on this machine."""

from __future__ import annotations

import importlib
import pkgutil

import torch

from fastmnist.recipes.overrides import get_recipe
from fastmnist.recipes.recipe import Recipe, applies
from fastmnist.recipes.stages import (FASTEST_BY_PRECISION, RECIPES, changes_from_parent, fastest_name, lineage,
                                      resolved_fields)
from fastmnist.training.engines import engine_used
from fastmnist.training.step import effective_precision


def listing(diff: bool = False) -> list[str]:
    """One line per recipe (the one `fastest` names here marked, and the other precision's); with `diff`, what
    each changes from its parent."""
    here = fastest_name()
    elsewhere = {name: f"  (= fastest where the step runs in {precision})"
                 for precision, name in FASTEST_BY_PRECISION.items() if name != here}
    lines = []
    for recipe in RECIPES.values():
        alias = "  (= fastest)" if recipe.name == here else elsewhere.get(recipe.name, "")
        lines.append(f"{recipe.name:<10} {recipe.summary}{alias}")
        if diff:
            lines += [f"{'':<12}{line}" for line in changes_from_parent(recipe)]
    return lines


def training_constants() -> list[tuple[str, object, str]]:
    """The constants of a run that no recipe field sets: the RUN_CONSTANTS (name: why) of every module of
    fastmnist.training, found by walking the package, so a constant is listed where it is defined or not at all."""
    from fastmnist import training

    rows = []
    for found in pkgutil.iter_modules(training.__path__):
        module = importlib.import_module(f"fastmnist.training.{found.name}")
        rows += [(f"{found.name}.{name}", getattr(module, name), why)
                 for name, why in getattr(module, "RUN_CONSTANTS", {}).items()]
    return rows


def show_recipe(recipe: Recipe | str, device: torch.device | None = None) -> str:
    """`fastmnist recipes --show`: every field that applies to the recipe, the value that runs on this machine
    (with the value asked for beside it where the machine changes it: bf16 without native bf16, a CUDA graph
    on a CPU, threads left to PyTorch) and the stage that last set it, then the constants of training."""
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    device = device or torch.device("cpu")
    ran = {"precision": effective_precision(recipe, device), "engine": engine_used(recipe, device),
           "threads": recipe.threads or torch.get_num_threads()}
    rows = [(name, ran.get(name, value), value, setter) for name, value, setter in resolved_fields(recipe)
            if applies(recipe, name)]
    hidden = [name for name, _, _ in resolved_fields(recipe) if not applies(recipe, name)]
    width = max(len(name) for name, *_ in rows) + 2
    value_width = max(len(str(here)) for _, here, _, _ in rows) + 2
    lines = [f"{recipe.name}: {recipe.summary}",
             f"lineage: {' -> '.join(r.name for r in lineage(recipe))}",
             f"values as they run here ({device.type}); where this machine changes a value, the one asked for follows",
             f"{'field':<{width}}{'value':<{value_width}}set by"]
    for name, here, value, setter in rows:
        asked = f"  (asked: {value})" if here != value else ""
        lines.append(f"{name:<{width}}{str(here):<{value_width}}{setter}{asked}")
    if hidden:
        lines.append(f"not shown, as they change nothing in this recipe: {', '.join(hidden)}")
    lines += ["", "constants of every run (not recipe fields):"]
    lines += [f"{name:<28}{str(value):<8}{why}" for name, value, why in training_constants()]
    return "\n".join(lines)
