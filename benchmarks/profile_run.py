"""Where one warm run's time goes: forward (with the loss), backward (with zeroing the gradients),
optimizer (with the lr schedule), evaluation, and the rest (model creation, batch slicing, the Python
loop, per-epoch checks). Uses the labels `train_run` puts on each phase and PyTorch's profiler.

    python benchmarks/profile_run.py stage14 fastest --out results/profile.json
    python benchmarks/profile_run.py stage21 stage23 --by-shape  # conv1's operators apart from conv2's

Each recipe: one warm-up, then `--runs` profiled runs (seeds 0..), interleaved; the median share of each
phase is reported. The profiler adds some overhead of its own, so the absolute seconds run higher than in
`fastmnist bench`; the shares are what this is for.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from torch.profiler import ProfilerActivity, profile

from fastmnist.data import load_mnist
from fastmnist.training.device import pick_device
from fastmnist.recipes.overrides import get_recipe
from fastmnist.results.machine import describe, machine_info
from fastmnist.results.output import write_json
from fastmnist.results.records import envelope
from fastmnist.training.runner import Runner

PHASES = ("forward", "backward", "optimizer", "evaluation")


def phase_seconds(prof) -> dict[str, float]:
    """Wall time inside each labelled region, summed over its occurrences (regions do not nest)."""
    totals = dict.fromkeys(PHASES, 0.0)
    for event in prof.events():
        if event.name in totals:
            totals[event.name] += event.time_range.elapsed_us() / 1e6
    return totals


def heaviest_ops(prof, count: int = 8, by_shape: bool = False) -> dict[str, float]:
    """The operators (ATen's, and oneDNN's fused convolution + ReLU) that took the most self CPU time, as shares
    of all of it; by_shape: each operator apart for each shape of its first input (conv1's convolution apart
    from conv2's)."""
    averages = prof.key_averages(group_by_input_shape=by_shape)
    ops = [e for e in averages if e.key.startswith(("aten::", "mkldnn::"))]
    total = sum(e.self_cpu_time_total for e in averages)
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    name = lambda e: f"{e.key} {e.input_shapes[0]}" if by_shape and e.input_shapes else e.key  # noqa: E731
    return {name(e): e.self_cpu_time_total / total for e in ops[:count]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--by-shape", action="store_true", help="each operator apart per input shape (slower)")
    parser.add_argument("--out")
    args = parser.parse_args()
    recipes = [get_recipe(name) for name in args.recipes]
    device = pick_device("auto")
    runner = Runner(load_mnist(), device)
    rows = {r.name: [] for r in recipes}
    top_ops = {}
    for recipe in recipes:
        runner.warm(recipe)
    for seed in range(args.runs):
        for recipe in recipes:
            with profile(activities=[ProfilerActivity.CPU], record_shapes=args.by_shape) as prof:
                result = runner.run(recipe, seed)
            phases = phase_seconds(prof)
            phases["other"] = max(0.0, result.seconds - sum(phases.values()))
            top_ops[recipe.name] = heaviest_ops(prof, 10 if args.by_shape else 8, args.by_shape)
            rows[recipe.name].append({"seconds": result.seconds, "accuracy": result.accuracy, **phases})
    summary = {}
    for name, runs in rows.items():
        total = statistics.median(r["seconds"] for r in runs)
        summary[name] = {"seconds_median": total, **{
            f"{p}_share": statistics.median(r[p] / r["seconds"] for r in runs) for p in (*PHASES, "other")}}
        shares = ", ".join(f"{p} {100 * summary[name][p + '_share']:.0f}%" for p in (*PHASES, "other"))
        print(f"{name}: {total:.2f} s under the profiler; {shares}")
    for name, ops in top_ops.items():
        print(f"{name}, heaviest operators (share of self CPU time, last run): "
              + ", ".join(f"{op} {100 * share:.0f}%" for op, share in ops.items()))
    report = {**envelope("profile", machine_info(device, peaks=True), recipes), "runs": rows, "summary": summary,
              "top_ops": top_ops}
    print(describe(report["machine"]))
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
