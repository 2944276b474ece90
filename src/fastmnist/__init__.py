"""fastmnist: train a network to 99% on MNIST as fast as the hardware allows, and show where the time goes.

The Python API (`recipe`, `derive`, `train`, `bench`, `sweep`, `load_mnist`, `Recipe`) lives in
`fastmnist.api` and is imported on first use, so `fastmnist --help` does not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.2.0"

API = ("Recipe", "Report", "RunResult", "bench", "derive", "load_mnist", "recipe", "sweep", "train")
__all__ = ["__version__", *API]

if TYPE_CHECKING:
    from fastmnist.api import Recipe, Report, RunResult, bench, derive, load_mnist, recipe, sweep, train  # noqa: F401


def __getattr__(name: str):
    if name in API:
        from fastmnist import api

        return getattr(api, name)
    raise AttributeError(f"module 'fastmnist' has no attribute {name!r}")
