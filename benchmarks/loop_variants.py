"""Training-loop ideas for issue #20 that the recipe fields cannot express, on stage 18's network, data
order, optimizer and schedule, each run timed as the trainer times one (model creation, the epoch, the test
pass). A variant is a comma-separated list of KEY=VALUE:

- `images=N`: images walked in the epoch (stage 18: 48000); alone, this is stage 18's own epoch.
- selective backprop (Jiang et al., 2019): `warm=W,pool=P`: after the first W of the images are trained as
  usual, each step scores P x 448 fresh images with a no-grad forward and trains on the 448 with the highest
  loss (the scoring is inside the clock, like all training).
- an average of the weights: `ema=D,ema_start=S`: from the share S of the steps on, keep an exponential
  moving average of the weights and BatchNorm statistics (decay D) and test it instead of the last weights.
- batch sizes that change over the epoch: `phases=16000x224+32000x896`: images x batch size, in order.

    python benchmarks/loop_variants.py --runs 6 --out results/speed/loop-variants.json

Variants run interleaved per seed, after one untimed warm-up each; the first is the reference of the ratios.
"""

from __future__ import annotations

import argparse
import copy
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
from fastmnist.stats import paired_ratio, plus_minus, summarize
from fastmnist.trainer import test_accuracy

RECIPE = get_recipe("stage18")
DEFAULT_VARIANTS = [
    "images=48000", "images=36000",
    "images=48000,warm=0.5,pool=2", "images=60000,warm=0.4,pool=2", "images=40000,warm=0.5,pool=1.5",
    "images=48000,ema=0.9,ema_start=0.5", "images=40000,ema=0.9,ema_start=0.5",
    "phases=16000x224+32000x896", "phases=16000x224+24000x448", "phases=24000x896+12000x224",
]


def parse(variant: str) -> dict:
    spec = {"images": 48000, "warm": 1.0, "pool": 1.0, "ema": 0.0, "ema_start": 0.5, "phases": None}
    for item in variant.split(","):
        key, value = item.split("=")
        if key not in spec:
            raise SystemExit(f"loop_variants.py: unknown key {key!r} in {variant!r}; keys: {', '.join(spec)}")
        spec[key] = value if key == "phases" else type(spec[key])(float(value))
    return spec


def batch_sizes(spec: dict) -> list[int]:
    """Every step's batch size: the phases given, or plain steps of 448 then selected ones."""
    bs = RECIPE.batch_size
    if spec["phases"]:
        sizes = []
        for phase in spec["phases"].split("+"):
            images, batch = (int(v) for v in phase.split("x"))
            sizes += [batch] * (images // batch) + ([images % batch] if images % batch else [])
        return sizes
    plain = int(spec["images"] * spec["warm"]) // bs
    candidates = int(spec["pool"] * bs)
    return [bs] * plain + [candidates] * ((spec["images"] - plain * bs) // candidates)


def run(data, seed: int, spec: dict) -> tuple[float, float]:
    train_x, train_y = data.train
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = new_model(RECIPE, data)
    sizes = batch_sizes(spec)
    rates = learning_rates(RECIPE.schedule, RECIPE.lr, RECIPE.pct_start, RECIPE.gamma, 1, len(sizes))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=rates[0],
                                 betas=(RECIPE.beta1, RECIPE.beta2), fused=True)
    averaged, at = None, 0
    for step, take in enumerate(sizes):
        optimizer.param_groups[0]["lr"] = rates[step]
        x, y = train_x[at:at + take], train_y[at:at + take]
        at += take
        if take > RECIPE.batch_size and not spec["phases"]:  # selective backprop: train on the hardest
            model.eval()
            with torch.no_grad(), autocast():
                losses = F.nll_loss(model(x).float(), y, reduction="none")
            model.train()
            hardest = losses.topk(RECIPE.batch_size).indices
            x, y = x[hardest], y[hardest]
        with autocast():
            output = model(x)
        loss = F.cross_entropy(output.float(), y, label_smoothing=RECIPE.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if spec["ema"] and step >= spec["ema_start"] * len(sizes):
            weights = [v for v in model.state_dict().values() if v.is_floating_point()]
            if averaged is None:
                average_model = copy.deepcopy(model)
                averaged = [v for v in average_model.state_dict().values() if v.is_floating_point()]
            else:
                torch._foreach_lerp_(averaged, weights, 1 - spec["ema"])
    tested = average_model if averaged is not None else model
    accuracy, _ = test_accuracy(tested, test_batches(data, RECIPE), autocast)
    return accuracy, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=DEFAULT_VARIANTS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    variants = {v: parse(v) for v in args.variants}
    device = torch.device("cpu")
    data = prepare(load_mnist(), RECIPE, device)
    runs = {v: [] for v in variants}
    for spec in variants.values():
        run(data, 1000, spec)  # warm-up, untimed
    for seed in range(args.runs):
        for name, spec in variants.items():
            accuracy, seconds = run(data, seed, spec)
            runs[name].append({"seed": seed, "accuracy": accuracy, "seconds": seconds})
    reference, summary = [r["seconds"] for r in runs[args.variants[0]]], {}
    for name, rows in runs.items():
        seconds = [r["seconds"] for r in rows]
        s = summary[name] = {**summarize([r["accuracy"] for r in rows], seconds, RECIPE.target),
                             "steps": len(batch_sizes(variants[name])),
                             "median_time_ratio_vs_first": paired_ratio(reference, seconds)}
        print(f"{name:38s} {plus_minus(s['accuracy_mean'], s['accuracy_std'], 3)} %  {s['steps']:4d} steps  "
              f"median {s['seconds_median']:.2f} s  ratio {s['median_time_ratio_vs_first']:.2f}")
    report = {**envelope("loop-variants", machine_info(device, peaks=True), [RECIPE]), "runs": runs,
              "summary": summary}
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
