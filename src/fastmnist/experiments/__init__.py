"""Many runs: the commands bench.py, ladder.py, sweep.py and search.py, with what they share: seeds.py
(which seeds), stats.py (what they show), ledger.py (which seeds were used how), store.py (runs shared
through an Optuna storage), pooling.py (bench files pooled); seed_plan.py, front.py and verification.py serve the search."""
