"""found by fastmnist search, study search-long-2026-12-02, trial 20: time ratio 0.89 against stage18, 99.07% (p 0.00812) on tuning seeds.

Claim it only from a bench on seeds this search never saw, e.g.
    fastmnist bench stage18 THIS_FILE.py:best --runs 25
"""

import fastmnist

best = fastmnist.derive(fastmnist.recipe('fastest'), "search_best",
                        'found by fastmnist search, study search-long-2026-12-02, trial 20: time ratio 0.89 against stage18, 99.07% (p 0.00812) on tuning seeds',
                        lr=0.019588172922, batch_size=480, train_fraction=1.0, label_smoothing=0.058958579407, pct_start=0.332663410471)
