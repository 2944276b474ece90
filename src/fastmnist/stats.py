"""The statistics of many runs, one definition for bench, ladder and sweep.

A claim about a recipe is about its mean over seeds, so every summary carries the spread (std), the
uncertainty of the mean (standard error), the share of runs that reach the recipe's target, and the
one-sided p-value that the mean reaches it (a record needs p < 0.01 over 25 seeds or more).
Times are summarised by the median, and recipes compared by the median of paired ratios: pairs run
back to back on one machine, so its drifting speed cancels. A ratio carries its 95% confidence interval
(a bootstrap over the pairs) and a Wilcoxon signed-rank p on the log-ratios; a recipe is called faster only
when the whole interval lies below 1.
"""

from __future__ import annotations

import numpy as np


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


def format_p(p: float | None) -> str:
    """'0.003', '<0.001' or 'n/a'."""
    return "n/a" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def paired_ratio_interval(reference: list[float], other: list[float], confidence: float = 0.95) -> dict:
    """The median paired ratio other/reference, its bootstrap confidence interval over the pairs (scipy's
    BCa; percentile where BCa is undefined), and the two-sided Wilcoxon signed-rank p of the log-ratios.
    Interval and p are None below 5 pairs, or when every pair gave one ratio (nothing to resample)."""
    from scipy import stats

    ratios = np.asarray(other, float) / np.asarray(reference, float)
    row = {"median": float(np.median(ratios)), "ci95": None, "wilcoxon_p": None}
    if len(ratios) < 5 or np.ptp(ratios) == 0:
        return row
    logs = np.log(ratios)
    interval = None
    for method in ("BCa", "percentile"):
        result = stats.bootstrap((logs,), np.median, confidence_level=confidence, n_resamples=4999,
                                 method=method, random_state=0)
        interval = result.confidence_interval
        if np.isfinite(interval.low) and np.isfinite(interval.high):
            break
    row["ci95"] = [float(np.exp(interval.low)), float(np.exp(interval.high))]
    row["wilcoxon_p"] = float(stats.wilcoxon(logs).pvalue) if np.any(logs != 0) else None
    return row


def verdict(interval: dict) -> str:
    """'faster', 'slower' or 'no clear difference', from where the ratio's interval lies."""
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
