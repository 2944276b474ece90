"""A probe for the next stage (issue #36): how much test accuracy would averaging the softmax over shifted copies of
each test image buy (test-time views, as airbench's flips and translations)? Each seed trains the recipe once
(`Runner`, as `fastmnist bench`), then its trained model is evaluated, untimed, on the 10,000 test images with
each set of views a recipe's `test_views` can name (training/views.py: the image rolled by (dx, dy) pixels).
Accuracy only, every set from one trained model: in a timed run (`--set test_views=NAME`) each view costs one
more test pass.

    python benchmarks/test_views.py stage26 --seeds 1900000-1900015 --out results/speed/test-views-stage26.json
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from fastmnist.data import load_mnist
from fastmnist.experiments.seeds import parse_seed_range
from fastmnist.recipes.overrides import get_recipe
from fastmnist.results.machine import describe, machine_info
from fastmnist.results.output import write_json
from fastmnist.results.records import envelope
from fastmnist.training.device import pick_device
from fastmnist.training.layout import normalise
from fastmnist.training.runner import Runner
from fastmnist.training.step import effective_precision
from fastmnist.training.views import TEST_VIEWS, view_probabilities


def view_accuracies(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    bf16: bool) -> dict[str, float]:
    """Test accuracy (%) of each set of views: the argmax of the softmax summed over the set's shifted copies,
    in the precision the run's own test pass used (bf16 autocast only where the step ran in bf16)."""
    model.eval()
    probabilities = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for dx, dy in {view for views in TEST_VIEWS.values() for view in views}:
            probabilities[dx, dy] = torch.cat([view_probabilities(model, images[i:i + 2000], ((dx, dy),))
                                               for i in range(0, len(images), 2000)])
    return {name: 100.0 * int((sum(probabilities[v] for v in views).argmax(1) == labels).sum()) / len(labels)
            for name, views in TEST_VIEWS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--seeds", default="1900000-1900015", help="seeds to train (default: 16 tuning seeds)")
    parser.add_argument("--out")
    args = parser.parse_args()
    recipe, seeds = get_recipe(args.recipe), parse_seed_range(args.seeds)
    device = pick_device("cpu")
    mnist = load_mnist()
    runner = Runner(mnist, device)
    runner.warm(recipe)
    images = normalise(mnist.test_images, channels_last=True)
    labels = torch.as_tensor(mnist.test_labels).long()
    bf16 = effective_precision(recipe, device) == "bf16"  # as the run's own test pass
    rows = []
    for seed in seeds:
        result = runner.run(recipe, seed)
        rows.append({"seed": seed, "run_accuracy": result.accuracy,
                     **view_accuracies(result.model, images, labels, bf16)})
        print(seed, {k: round(v, 2) for k, v in rows[-1].items() if k != "seed"}, flush=True)
    summary = {name: {"mean": statistics.mean(r[name] for r in rows), "std": statistics.stdev(r[name] for r in rows),
                      "mean_gain_over_plain": statistics.mean(r[name] - r["plain"] for r in rows)}
               for name in TEST_VIEWS}
    for name, s in summary.items():
        print(f"{name:12s} {s['mean']:.3f} +- {s['std']:.3f}  ({s['mean_gain_over_plain']:+.3f} over plain)")
    report = {**envelope("test-views", machine_info(device), [recipe]), "views": TEST_VIEWS, "runs": rows,
              "summary": summary}
    print(describe(report["machine"]))
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
