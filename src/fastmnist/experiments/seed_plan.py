"""How many seeds a search's trial gets, and the rules that decide it: seeds come in looks of a few at a
time; after any look a trial whose mean is already shown below the target (one-sided p < `futility`) is
pruned; at `max_seeds` it is feasible when the one-sided t-test puts its mean above the target at level
`alpha`, and, under the `replicates` rule, when a fresh 25-seed bench of a recipe with its measured mean
and SD would also pass >= 95% of the time: the rule a claim is held to, asked of every trial, so the
search does not spend its verification on points that reach 99% but would not replicate.
`operating_characteristics` gives the chance of each verdict for a true mean and SD."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastmnist.experiments.stats import CLAIM_REPLICATION, p_reaches, replication_probability


@dataclass(frozen=True)
class SeedPlan:
    """How many seeds a trial gets, and the rules that decide it. The defaults meet the operating
    characteristics in docs/search.md: at SD 0.07, P(feasible | mean 99.06) >= 0.80 and
    P(feasible | mean 99.00) <= 0.05, and a clearly worse trial stops after its first look."""
    look: int = 4  # seeds per look: the pruning rule is checked after each
    max_seeds: int = 12  # the verdict: feasible or not, at this many seeds
    alpha: float = 0.04  # feasible when the one-sided p that the mean reaches the target is below this
    futility: float = 0.05  # pruned at a look when the one-sided p that the mean lies below it is below this
    rule: str = "p"  # p: feasible at p < alpha | replicates: and its replication estimate >= CLAIM_REPLICATION

    def judge(self, accuracies, target: float) -> str:
        """'continue', 'pruned' (shown below the target at a look) or, at max_seeds, 'feasible' / 'infeasible'."""
        n = len(accuracies)
        if n >= self.max_seeds:
            acc = np.asarray(accuracies, float)
            replication = (replication_probability(float(acc.mean()), float(acc.std(ddof=1)) if n > 1 else None, target)
                           if self.rule == "replicates" else None)  # the p rule does not read it
            feasible = meets_rule(self.rule, p_reaches(acc, target), replication, self.alpha)
            return "feasible" if feasible else "infeasible"
        if n >= 2 and n % self.look == 0 and below_target_p(accuracies, target) < self.futility:
            return "pruned"
        return "continue"


FEASIBILITY_RULES = ("p", "replicates")


def meets_rule(rule: str, p: float | None, replication: float | None, alpha: float) -> bool:
    """One feasibility rule for a trial on its tuning seeds (at the plan's alpha) and a verified candidate on
    its fresh seeds (at the claim's): p < alpha, and under `replicates` also a replication estimate
    (stats.replication_probability: a fresh 25-seed bench would pass) >= CLAIM_REPLICATION."""
    passes = p is not None and p < alpha
    return passes and (rule == "p" or (replication is not None and replication >= CLAIM_REPLICATION))


def below_target_p(accuracies, target: float) -> float:
    """One-sided p that the mean lies below the target (1.0 when there is no spread to test with, unless
    every run lies below it)."""
    from scipy import stats

    acc = np.asarray(accuracies, float)
    if acc.std() == 0:
        return 0.0 if acc.mean() < target else 1.0
    return float(stats.ttest_1samp(acc, target, alternative="less").pvalue)


def operating_characteristics(mean: float, sd: float, plan: SeedPlan, target: float = 99.0, trials: int = 4000,
                              seed: int = 0) -> dict:
    """The plan applied to `trials` synthetic trials whose runs are normal(mean, sd): how often each is
    judged feasible, and the seeds one costs on average."""
    rng = np.random.default_rng(seed)
    feasible, seeds = 0, 0
    for _ in range(trials):
        draws = rng.normal(mean, sd, plan.max_seeds)
        for n in range(1, plan.max_seeds + 1):
            verdict = plan.judge(draws[:n], target)
            if verdict != "continue":
                break
        feasible += verdict == "feasible"
        seeds += n
    return {"mean": mean, "sd": sd, "p_feasible": feasible / trials, "mean_seeds": seeds / trials}
