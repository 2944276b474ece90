"""A process that opens a store and nothing else: spawned by the store-creation race test, so each child
imports Optuna and fastmnist's store, not PyTorch."""

from fastmnist.experiments.store import open_store


def worker_opens(path, barrier, results):
    barrier.wait()
    try:
        open_store(f"sqlite:///{path}", "race")
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - the test reports whatever escaped
        results.put(f"{type(exc).__name__}: {exc}")
