"""The search's seed plan, applied to synthetic trials: how often a recipe of a given true mean (and seed-to-
seed SD) is judged feasible, and how many seeds a trial costs on average, at the default plan or another.
Writes JSON and prints the markdown table docs/search.md shows.

    python benchmarks/search_power.py --out results/statistics/search-power.json
    python benchmarks/search_power.py --feasible replicates --out results/statistics/search-power-replicates.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from fastmnist.experiments.seed_plan import SeedPlan, operating_characteristics
from fastmnist.results.output import write_json
from fastmnist.results.provenance import provenance

MEANS = (98.90, 98.95, 99.00, 99.02, 99.04, 99.06, 99.08, 99.10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd", type=float, default=0.07, help="seed-to-seed SD of a run's accuracy (default 0.07)")
    parser.add_argument("--trials", type=int, default=4000, help="synthetic trials per mean (default 4000)")
    parser.add_argument("--look", type=int, default=SeedPlan.look)
    parser.add_argument("--max-seeds", type=int, default=SeedPlan.max_seeds)
    parser.add_argument("--alpha", type=float, default=SeedPlan.alpha)
    parser.add_argument("--feasible", choices=("p", "replicates"), default=SeedPlan.rule,
                        help="the feasibility rule, as `fastmnist search --feasible` takes it")
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    plan = SeedPlan(look=args.look, max_seeds=args.max_seeds, alpha=args.alpha, rule=args.feasible)
    rows = [operating_characteristics(mean, args.sd, plan, trials=args.trials) for mean in MEANS]
    print(f"| true mean % (SD {args.sd:g}) | judged feasible | seeds a trial costs (mean) |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r['mean']:.2f} | {100 * r['p_feasible']:.1f}% | {r['mean_seeds']:.1f} |")
    if args.out:
        write_json(args.out, {"kind": "search-power", "provenance": provenance(), "plan": asdict(plan), "sd": args.sd, "trials": args.trials, "rows": rows})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
