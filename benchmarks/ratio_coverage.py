"""How often a paired time ratio's 95% interval covers the truth, by simulation (A/A: two recipes with the same
time, so the true median ratio is 1): the order-statistic interval the bench uses (stats.median_interval)
against the BCa bootstrap it replaced, at the numbers of pairs the tool meets, for ratio noise shaped like a
bench's (normal on the log scale), heavy-tailed (a busy machine's outliers) and skewed. Also the rate of a
false "faster/slower" verdict, which is 1 - coverage. Writes JSON and prints a markdown table.

    python benchmarks/ratio_coverage.py --out results/statistics/ratio-coverage.json
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy import stats

from fastmnist.results.output import write_json
from fastmnist.results.provenance import provenance
from fastmnist.experiments.stats import median_interval

PAIRS = (6, 7, 10, 15, 25, 50, 100)
NOISE = {  # log-ratio draws whose true median is 0, so the ratio's is 1
    "normal (log sd 0.03)": lambda rng, n: rng.normal(0, 0.03, n),
    "heavy-tailed (t, 2 df)": lambda rng, n: 0.02 * rng.standard_t(2, n),
    "skewed (exponential)": lambda rng, n: 0.03 * (rng.exponential(1.0, n) - np.log(2)),  # median ln 2
}


def bca_covers(logs: np.ndarray) -> bool:
    result = stats.bootstrap((logs,), np.median, confidence_level=0.95, n_resamples=999, method="BCa",
                             random_state=0)
    low, high = result.confidence_interval
    return bool(np.isfinite(low) and np.isfinite(high) and low <= 0 <= high)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4000, help="simulated benches per cell (order statistics)")
    parser.add_argument("--bca-reps", type=int, default=400, help="simulated benches per cell (BCa, slow)")
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for noise in NOISE:
        draw = NOISE[noise]
        for n in PAIRS:
            covered = sum(1 for _ in range(args.reps)
                          if (ci := median_interval(np.exp(draw(rng, n)))[0]) and ci[0] <= 1 <= ci[1])
            bca = (sum(bca_covers(draw(rng, n)) for _ in range(args.bca_reps)) / args.bca_reps
                   if n in (7, 25) else None)
            rows.append({"noise": noise, "pairs": n, "order_statistic_coverage": covered / args.reps,
                         "exact_coverage": median_interval(np.arange(n, dtype=float))[1],
                         "bca_coverage": bca})
    record = {"kind": "ratio-coverage", "provenance": provenance(), "reps": args.reps, "bca_reps": args.bca_reps,
              "rows": rows}
    print("| noise | pairs | order-statistic interval: simulated coverage | its exact coverage | BCa bootstrap |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        bca = "-" if r["bca_coverage"] is None else f"{r['bca_coverage']:.3f}"
        print(f"| {r['noise']} | {r['pairs']} | {r['order_statistic_coverage']:.3f} | {r['exact_coverage']:.3f} | {bca} |")
    if args.out:
        write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
