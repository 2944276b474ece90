"""Does a compiled training step pay on this CPU? The question behind engine=graph on a CPU.

Builds the recipe's model and `TrainStep` once per variant, as the graph engine does, and times runs that
reset them (model creation with the run's seed, the optimizer state zeroed), train one epoch and test,
interleaved A B A B:
  eager     the step as the eager engine runs it
  compiled  the same step with the model's forward (and so its backward) and the optimizer update under
            torch.compile; compilation happens in an untimed first run and is reported
Writes the median seconds and the median paired ratio with the machine and provenance.

    python benchmarks/compiled_step.py stage18 --runs 10 --out results/cpu-compiled-step.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from common import finish

from fastmnist.data import load_mnist
from fastmnist.engine import TrainStep, effective_precision, new_model
from fastmnist.layout import memory_batches, prepare, test_batches
from fastmnist.recipes import get_recipe
from fastmnist.machine import machine_info
from fastmnist.records import envelope
from fastmnist.trainer import test_accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="stage18")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out")
    args = parser.parse_args()
    recipe, device = get_recipe(args.recipe), torch.device("cpu")
    data = prepare(load_mnist(), recipe, device)
    batches = memory_batches(data, recipe)
    bf16 = effective_precision(recipe, device) == "bf16"

    def build(compiled: bool) -> TrainStep:
        torch.manual_seed(0)
        model = new_model(recipe, data)
        step = TrainStep(model, model, recipe, len(batches), device)
        if compiled:
            step.forward = torch.compile(model)
            step.optimizer.step = torch.compile(step.optimizer.step)
        return step

    def run(step: TrainStep, seed: int) -> tuple[float, float]:
        torch.manual_seed(seed)
        start = time.perf_counter()
        fresh = new_model(recipe, data)
        with torch.no_grad():
            for name, value in step.model.state_dict().items():
                value.copy_(fresh.state_dict()[name])
        step.reset()
        for x, y in batches:
            step(x, y)
        accuracy, _ = test_accuracy(step.forward, test_batches(data, recipe),
                                    lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16))
        return time.perf_counter() - start, accuracy

    steps = {"eager": build(False), "compiled": build(True)}
    untimed = {}
    for name, step in steps.items():
        start = time.perf_counter()
        run(step, 0)  # compiles the compiled variant
        untimed[name] = time.perf_counter() - start
    rows = {name: [] for name in steps}
    for seed in range(args.runs):
        for name, step in steps.items():
            seconds, accuracy = run(step, seed)
            rows[name].append({"seed": seed, "seconds": seconds, "accuracy": accuracy})
    summary = {name: {"seconds_median": statistics.median(r["seconds"] for r in runs),
                      "first_run_seconds_untimed": untimed[name],
                      "median_ratio_vs_eager": statistics.median(
                          b["seconds"] / a["seconds"] for a, b in zip(rows["eager"], runs))}
               for name, runs in rows.items()}
    for name, row in summary.items():
        print(f"{name:>9}: median {row['seconds_median']:.3f} s, ratio vs eager {row['median_ratio_vs_eager']:.2f}, "
              f"first (untimed) run {row['first_run_seconds_untimed']:.1f} s")
    report = {**envelope("compiled-step", machine_info(device, peaks=True), [recipe]), "precision": "bf16" if bf16 else "fp32",
              "runs": rows, "summary": summary}
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
