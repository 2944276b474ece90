"""The statistics of many runs, one definition for bench, ladder and sweep.

A claim about a recipe is about its mean over seeds, so every summary carries the spread (std), the
uncertainty of the mean (standard error), the share of runs that reach the recipe's target, and the
one-sided p-value that the mean reaches it (a record needs p < 0.01 over 25 seeds or more).
A claim must also replicate: `replication_probability` estimates how often a user's fresh 25-seed bench
of the recipe would pass the same test, and a recipe is claimed only when that is >= 95%, estimated from
>= 100 seeds no tuning saw (`claim_status`).
Times are summarised by the median, and recipes compared by the median of paired ratios: pairs run
back to back on one machine, so its drifting speed cancels. A ratio carries the order-statistic 95%
interval of that median (exact at any number of pairs) and the sign test's p; a recipe is called faster
only when the whole interval lies below 1.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.01  # a claim's one-sided p must be below this
CLAIM_RUNS = 25  # the size of the bench a user runs to check a claim
CLAIM_MIN_SEEDS = 100  # fresh seeds a claim's replication estimate rests on at least
CLAIM_REPLICATION = 0.95  # the share of fresh CLAIM_RUNS-seed benches a claimed recipe must pass
MIN_PAIRS = 6  # the fewest pairs whose median has a 95% order-statistic interval


def summarize(accuracies: list[float], seconds: list[float], target: float) -> dict:
    acc, secs = np.asarray(accuracies, float), np.asarray(seconds, float)
    n = len(acc)
    std = float(acc.std(ddof=1)) if n > 1 else None  # one run has no spread to speak of
    return {
        "runs": n,
        "target": target,
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": std,
        "accuracy_se": std / np.sqrt(n) if std is not None else None,
        "accuracy_min": float(acc.min()),
        "share_reaching_target": float((acc >= target).mean()),
        "reaches_target": bool(acc.mean() >= target),
        "p_value": p_reaches(acc, target),
        "replication_probability": replication_probability(float(acc.mean()), std, target),
        "block_p_values": block_p_values(acc, target),
        "seconds_mean": float(secs.mean()),
        "seconds_std": float(secs.std(ddof=1)) if n > 1 else None,
        "seconds_median": float(np.median(secs)),
    }


def p_reaches(accuracies, target: float) -> float | None:
    """One-sided p-value of the t-test over seeds that the mean accuracy is above `target` (H0: mean <=
    target); None when undefined (one run, or no spread)."""
    from scipy import stats

    acc = np.asarray(accuracies, float)
    if len(acc) < 2 or acc.std() == 0:
        return None
    return float(stats.ttest_1samp(acc, target, alternative="greater").pvalue)


def replication_probability(mean: float, std: float | None, target: float, runs: int = CLAIM_RUNS,
                            alpha: float = ALPHA) -> float | None:
    """The probability that a fresh bench of `runs` seeds reaches p < alpha, were the recipe's true mean and
    seed-to-seed SD the ones measured: the power of the one-sided t-test, P(T > t(1-alpha, runs-1)) for T
    noncentral t with runs-1 degrees of freedom and noncentrality (mean - target) / (std / sqrt(runs)).
    None without a spread."""
    from scipy import stats

    if std is None or not std > 0:
        return None
    df = runs - 1
    noncentrality = (mean - target) / (std / np.sqrt(runs))
    return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, noncentrality))


def block_p_values(accuracies, target: float, block: int = CLAIM_RUNS) -> list[float | None]:
    """The p of each whole block of `block` runs, in run order: a long bench read as the 25-seed benches it
    holds, so a reader sees how often one of them passes."""
    acc = np.asarray(accuracies, float)
    return [p_reaches(acc[i:i + block], target) for i in range(0, len(acc) - block + 1, block)]


def claim_status(row: dict, seed_use: str) -> str:
    """'claimed', or why a summary row cannot carry a claim: a claim needs seeds no tuning saw, at least
    CLAIM_MIN_SEEDS of them, p < ALPHA and a replication probability >= CLAIM_REPLICATION."""
    reasons = []
    if seed_use != "claim":
        reasons.append(f"{seed_use} seeds")
    if row["runs"] < CLAIM_MIN_SEEDS:
        reasons.append(f"{row['runs']} seeds (a claim rests on >= {CLAIM_MIN_SEEDS})")
    if row["p_value"] is None or row["p_value"] >= ALPHA:
        reasons.append(f"p >= {ALPHA:g}")
    replication = row.get("replication_probability")
    if replication is None:
        reasons.append("no replication estimate (no spread between seeds)")
    elif replication < CLAIM_REPLICATION:
        reasons.append(f"replicates {format_share(replication)} of the time (< {CLAIM_REPLICATION:.0%})")
    return "claimed" if not reasons else "not claimed: " + "; ".join(reasons)


def format_share(share: float | None) -> str:
    """'97%', '>99.9%' or 'n/a'."""
    if share is None:
        return "n/a"
    return ">99.9%" if share > 0.999 else "<0.1%" if share < 0.001 else f"{100 * share:.0f}%" if share >= 0.1 \
        else f"{100 * share:.1f}%"


def format_p(p: float | None) -> str:
    """'0.003', '<0.001' or 'n/a'."""
    return "n/a" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def median_interval(values, confidence: float = 0.95) -> tuple[list[float] | None, float | None]:
    """The distribution-free interval for a median: the order statistics x(k) and x(n-k+1), with k the
    largest rank whose binomial tail P(Binomial(n, 1/2) <= k-1) stays within (1 - confidence)/2. It covers
    the true median with probability >= `confidence` at any n and any continuous distribution (exactly
    1 - 2 P(B <= k-1), returned as its coverage); below MIN_PAIRS values no such k exists and it is None.
    Where ties make x(k) equal x(n-k+1), the bounds move outward to the next distinct values, so an interval
    never has zero width unless every value is the same (then it is None): a wider interval still covers."""
    from scipy.stats import binom

    x = np.sort(np.asarray(values, float))
    n = len(x)
    tail = (1 - confidence) / 2
    k = 0
    while k < n // 2 and binom.cdf(k, n, 0.5) <= tail:
        k += 1  # binom.cdf(k - 1) <= tail holds for this k
    if k == 0 or np.ptp(x) == 0:
        return None, None
    low, high = k - 1, n - k
    while x[low] == x[high]:  # ties at the median: widen to the nearest distinct values
        low, high = max(low - 1, 0), min(high + 1, n - 1)
    return [float(x[low]), float(x[high])], float(1 - 2 * binom.cdf(k - 1, n, 0.5))


def paired_ratio_interval(reference: list[float], other: list[float], confidence: float = 0.95) -> dict:
    """The median paired ratio other/reference, its order-statistic confidence interval (median_interval: it
    covers at any number of pairs, so the verdict it allows holds), and the two-sided sign-test p that half
    the ratios lie below 1 (the test that interval inverts). Interval and p are None below MIN_PAIRS pairs,
    or when every pair gave one ratio."""
    from scipy import stats

    ratios = np.asarray(other, float) / np.asarray(reference, float)
    row = {"median": float(np.median(ratios)), "ci95": None, "coverage": None, "sign_p": None}
    row["ci95"], row["coverage"] = median_interval(ratios, confidence)
    if row["ci95"] is not None:
        below, unequal = int((ratios < 1).sum()), int((ratios != 1).sum())
        row["sign_p"] = float(stats.binomtest(below, unequal, 0.5).pvalue) if unequal else None
    return row


def verdict(interval: dict) -> str:
    """'faster', 'slower' or 'no clear difference', from where the ratio's interval lies; 'too few pairs'
    when there are fewer than MIN_PAIRS (no interval that covers, so no verdict)."""
    ci = interval.get("ci95")
    if ci is None:
        return "too few pairs"
    return "faster" if ci[1] < 1 else "slower" if ci[0] > 1 else "no clear difference"


def format_ratio(interval: dict) -> str:
    """'0.92 [0.90, 0.95]', or the bare median when there is no interval."""
    ci = interval.get("ci95")
    return f"{interval['median']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch's t-test p-value of a vs b; None when it is undefined (too few runs, no spread)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def plus_minus(mean: float, spread: float | None, digits: int = 2) -> str:
    """'99.07 +- 0.07', or '99.07 +- n/a' for a single run."""
    return f"{mean:.{digits}f} +- " + ("n/a" if spread is None else f"{spread:.{digits}f}")
