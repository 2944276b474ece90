"""`fastmnist ladder`: run the stages, N seeds each, and keep every run in DIR/ladder.json.

A later call with other stages updates those stages and keeps the rest, so a slow stage 0 need not be rerun
to add a new stage at the top.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from fastmnist.bench import Preparer, machine, matmul_gflops, recipe_record, summarize, warm_up, write_json
from fastmnist.errors import FastMnistError
from fastmnist.models import flops_per_image
from fastmnist.recipes import RECIPES, Recipe, stage_number
from fastmnist.train import RunResult, effective_precision, train_run

TYPICAL_EARLY_STOP_EPOCHS = 3  # for the time estimate only: stages 1-4 stop after 2-5 epochs


def ladder_stages() -> list[Recipe]:
    return [r for r in RECIPES.values() if stage_number(r.name) is not None]


def parse_stages(text: str) -> list[Recipe]:
    """'0-8', '3,5,9-12' or 'all' -> those stages, in ladder order."""
    known = {stage_number(r.name): r for r in ladder_stages()}
    if text == "all":
        return list(known.values())
    wanted = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            wanted.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise FastMnistError(f"--stages {text!r}: expected e.g. 0-8 or 3,5,9-12") from None
    unknown = sorted(wanted - set(known))
    if unknown:
        raise FastMnistError(f"--stages: no stage {unknown[0]}; stages are {min(known)}-{max(known)}")
    return [known[n] for n in sorted(wanted)]


def estimated_tflop(recipe: Recipe) -> float:
    """Work of one run, for the progress bar's time estimate: stages differ 100x in cost, runs do not."""
    train, infer = flops_per_image(recipe.net)
    epochs = min(recipe.epochs, TYPICAL_EARLY_STOP_EPOCHS) if recipe.early_stop else recipe.epochs
    evaluations = epochs if recipe.eval_every_epoch else 1
    return (epochs * 60000 * recipe.train_fraction * train + evaluations * 10000 * infer) / 1e12


def run_ladder(stages: list[Recipe], runs: int, mnist, device, out_dir: Path, progress: bool = True) -> dict:
    """Each stage: one warm-up, then seeds 0..runs-1. The JSON is rewritten after every stage."""
    path = out_dir / "ladder.json"
    report = load_ladder(path) if path.is_file() else {"kind": "ladder", "stages": {}}
    preparer = Preparer(mnist, device)
    peak = matmul_gflops(device)
    bar = tqdm(total=sum(estimated_tflop(r) for r in stages) * runs, unit="TFLOP", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} TFLOP [{elapsed}<{remaining}]")
    for recipe in stages:
        data = preparer(recipe)
        warmup = warm_up(recipe, data)
        results: list[RunResult] = []
        for seed in range(runs):
            bar.set_description(f"{recipe.name} seed {seed}")
            results.append(train_run(recipe, data, seed))
            bar.update(estimated_tflop(recipe))
        report["stages"][recipe.name] = {
            "recipe": recipe_record(recipe),
            "summary": {**summarize(results, recipe), "precision": effective_precision(recipe, device)},
            "excluded_seconds": {"data_load": mnist.load_seconds, "prepare": data.seconds, "warmup": warmup},
            "runs": [r.record() for r in results],
            "machine": {**machine(device), "matmul_gflops_fp32": peak},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        report["stages"] = dict(sorted(report["stages"].items(), key=lambda kv: stage_number(kv[0])))
        write_json(path, report)
    bar.close()
    return report


def load_ladder(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
        assert report.get("kind") == "ladder" and isinstance(report.get("stages"), dict)
        return report
    except (OSError, ValueError, AssertionError):
        raise FastMnistError(f"{path}: not a ladder.json written by fastmnist; move it away or pick another "
                             f"--out") from None
