"""A commit's fastmnist against this checkout's, in one process, seed by seed: the same accuracy for every
recipe and seed (a change that should move nothing), and the paired time ratio (this checkout / the commit).

    python benchmarks/before_after.py c4d9189 stage18 fastest --seeds 100-111 --out results/house/x.json

The commit's `src/fastmnist` is unpacked (git archive) under another package name, so both run warm in this
process; for each seed every recipe runs once with each, the order alternating from seed to seed (ABBA), so
a drift in the machine's speed falls on both alike. The ratio's interval is the order-statistic one that
`fastmnist bench` gives (stats.median_interval).
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from fastmnist.data import load_mnist
from fastmnist.experiments.seeds import parse_seed_range
from fastmnist.experiments.stats import paired_ratio_interval
from fastmnist.recipes.overrides import get_recipe
from fastmnist.results.machine import describe, machine_info
from fastmnist.results.output import write_json
from fastmnist.results.records import envelope
from fastmnist.training.device import pick_device
from fastmnist.training.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "fastmnist_before"  # the package name the commit's code is imported under


def unpack(commit: str, folder: Path) -> str:
    """The commit's package under `folder` as BEFORE, its imports renamed; returns the commit's full hash."""
    full = subprocess.run(["git", "rev-parse", "--verify", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True,
                          text=True)
    if full.returncode:
        sys.exit(f"before_after: {commit!r} is not a commit of this repository")
    archive = subprocess.run(["git", "archive", full.stdout.strip(), "src/fastmnist"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    package = folder / BEFORE
    (folder / "src" / "fastmnist").rename(package)
    for path in package.rglob("*.py"):
        text = re.sub(r"\bfastmnist(?=[.\s])(?![-\w])", BEFORE, path.read_text())
        path.write_text(text.replace(f'"{BEFORE} ', '"fastmnist '))  # names of stores and studies stay
    return full.stdout.strip()


def module(package: str, *candidates: str):
    """The first of `candidates` (module paths in the layout of one commit or another) that imports."""
    for name in candidates:
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            continue
    raise SystemExit(f"before_after: none of {candidates} in {package}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the commit to compare this checkout with")
    parser.add_argument("recipes", nargs="+", help="recipe names as `fastmnist bench` takes them")
    parser.add_argument("--seeds", default="100-111", help="seeds, e.g. 100-111 (default: 100-111)")
    parser.add_argument("--out", help="write the runs and the comparison as JSON")
    args = parser.parse_args(argv)
    seeds = parse_seed_range(args.seeds)
    with tempfile.TemporaryDirectory() as folder:
        commit = unpack(args.commit, Path(folder))
        sys.path.insert(0, folder)
        old_recipes = module(BEFORE, "recipes.overrides", "recipes")
        old_runner = module(BEFORE, "training.runner", "runner")
        old_data = module(BEFORE, "data")
        device = pick_device("auto")
        sides = {"before": (old_runner.Runner(old_data.load_mnist(), device), old_recipes.get_recipe),
                 "after": (Runner(load_mnist(), device), get_recipe)}
        runs = {name: {"before": [], "after": []} for name in args.recipes}
        for name in args.recipes:  # warm-ups first, untimed
            for runner, resolve in sides.values():
                runner.warm(resolve(name))
        for i, seed in enumerate(seeds):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for name in args.recipes:
                for side in order:
                    runner, resolve = sides[side]
                    result = runner.run(resolve(name), seed)
                    runs[name][side].append({"seed": seed, "accuracy": result.accuracy, "seconds": result.seconds,
                                             "data_order": result.data_order})
    comparison = {}
    for name, by_side in runs.items():
        ratio = paired_ratio_interval([r["seconds"] for r in by_side["before"]], [r["seconds"] for r in by_side["after"]])
        same = all(a["accuracy"] == b["accuracy"] and a["data_order"] == b["data_order"]
                   for a, b in zip(by_side["after"], by_side["before"]))
        comparison[name] = {"same_accuracy_every_seed": same, "time_ratio_after_over_before": ratio}
        interval = f"[{ratio['ci95'][0]:.3f}, {ratio['ci95'][1]:.3f}]" if ratio["ci95"] else "(too few seeds)"
        print(f"{name}: same accuracy on every seed: {same}; time after/before {ratio['median']:.3f} {interval}")
    if args.out:
        write_json(args.out, {**envelope("before-after", machine_info(device), [get_recipe(n) for n in args.recipes]),
                              "before_commit": commit, "seeds": args.seeds, "machine_line": describe(machine_info(device)),
                              "comparison": comparison, "runs": runs})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
