"""The statistics of many runs, one definition for bench, ladder and sweep.

A claim about a recipe is about its mean over seeds, so every summary carries the spread (std), the
uncertainty of the mean (standard error), the share of runs that reach the recipe's target, and the
one-sided p-value that the mean reaches it (a record needs p < 0.01 over 25 seeds or more).
Times are summarised by the median, and recipes compared by the median of paired ratios: pairs run
back to back on one machine, so its drifting speed cancels.
"""

from __future__ import annotations

import statistics

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


def paired_ratio(reference: list[float], other: list[float]) -> float:
    """Median over seeds of other/reference time; each pair ran back to back on one machine."""
    return float(statistics.median(b / a for a, b in zip(reference, other)))


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch's t-test p-value of a vs b; None when it is undefined (too few runs, no spread)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def plus_minus(mean: float, spread: float | None, digits: int = 2) -> str:
    """'99.07 +- 0.07', or '99.07 +- n/a' for a single run."""
    return f"{mean:.{digits}f} +- " + ("n/a" if spread is None else f"{spread:.{digits}f}")
