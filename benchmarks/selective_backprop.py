"""Selective backprop (Jiang et al., 2019) on stage 18, tried for issue #20: after a share of the epoch
trained as usual, each step scores `pool` x 448 fresh images with a no-grad forward and trains on the 448
with the highest loss. The hope: most MNIST images are learnt early, so the backward work goes where the
loss is. The scoring forward is paid inside the clock, like all training.

    python benchmarks/selective_backprop.py --runs 5 --out results/speed/selective-backprop.json

Each variant is written IMAGES:WARM:POOL (images walked, share of them trained as usual, candidates per
trained image); `48000:1:1` is stage 18's own epoch through this loop. Variants run interleaved per seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from common import finish
from fastmnist.data import load_mnist
from fastmnist.engine import learning_rates, new_model
from fastmnist.layout import prepare, test_batches
from fastmnist.machine import machine_info
from fastmnist.records import envelope
from fastmnist.recipes import get_recipe
from fastmnist.trainer import test_accuracy

RECIPE = get_recipe("stage18")


def run(data, seed: int, images: int, warm: float, pool: float) -> tuple[float, float]:
    """One timed run: model creation, the epoch (plain steps, then selected ones), the test pass."""
    bs, train_x, train_y = RECIPE.batch_size, *data.train
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = new_model(RECIPE, data)
    plain_steps = int(images * warm) // bs
    candidates = int(pool * bs)
    steps = plain_steps + (images - plain_steps * bs) // candidates
    rates = learning_rates(RECIPE.schedule, RECIPE.lr, RECIPE.pct_start, RECIPE.gamma, 1, steps)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=rates[0],
                                 betas=(RECIPE.beta1, RECIPE.beta2))
    at = 0
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = rates[step]
        take = bs if step < plain_steps else candidates
        x, y = train_x[at:at + take], train_y[at:at + take]
        at += take
        if take > bs:
            model.eval()
            with torch.no_grad(), autocast():
                losses = F.nll_loss(model(x).float(), y, reduction="none")
            model.train()
            hardest = losses.topk(bs).indices
            x, y = x[hardest], y[hardest]
        with autocast():
            output = model(x)
        loss = F.cross_entropy(output.float(), y, label_smoothing=RECIPE.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    accuracy, _ = test_accuracy(model, test_batches(data, RECIPE), autocast)
    return accuracy, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=["48000:1:1", "36000:1:1", "48000:0.5:2", "60000:0.4:2",
                                                        "60000:0.5:3", "40000:0.5:1.5"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    variants = {v: dict(zip(("images", "warm", "pool"), (int(v.split(":")[0]), *map(float, v.split(":")[1:]))))
                for v in args.variants}
    device = torch.device("cpu")
    data = prepare(load_mnist(), RECIPE, device)
    runs = {v: [] for v in variants}
    for spec in variants.values():
        run(data, 1000, **spec)  # warm-up, untimed
    for seed in range(args.runs):
        for name, spec in variants.items():
            accuracy, seconds = run(data, seed, **spec)
            runs[name].append({"seed": seed, "accuracy": accuracy, "seconds": seconds})
    summary = {}
    for name, rows in runs.items():
        first = runs[args.variants[0]]
        summary[name] = {
            "accuracy_mean": statistics.mean(r["accuracy"] for r in rows),
            "accuracy_std": statistics.stdev(r["accuracy"] for r in rows) if len(rows) > 1 else 0.0,
            "seconds_median": statistics.median(r["seconds"] for r in rows),
            "median_time_ratio_vs_first": statistics.median(r["seconds"] / f["seconds"] for r, f in zip(rows, first))}
        s = summary[name]
        print(f"{name:14s} {s['accuracy_mean']:.3f} +- {s['accuracy_std']:.3f} %  median {s['seconds_median']:.2f} s"
              f"  ratio {s['median_time_ratio_vs_first']:.2f}")
    report = {**envelope("selective-backprop", machine_info(device, peaks=True), [RECIPE]), "runs": runs,
              "summary": summary}
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
