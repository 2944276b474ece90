"""fastmnist: train a network to 99% on MNIST as fast as the hardware allows, and show where the time goes.

The Python API (`recipe`, `derive`, `train`, `bench`, `sweep`, `ladder`, `load_mnist`, `Recipe`, `NetSpec`
and `FastMnistError`, what every refusal raises) lives in
`fastmnist.api` and is imported on first use, so `fastmnist --help` does not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastmnist.version import __version__

API = ("FastMnistError", "NetSpec", "Recipe", "Report", "RunResult", "bench", "derive", "ladder", "load_mnist", "recipe", "sweep",
       "train")
__all__ = ["__version__", *API]

if TYPE_CHECKING:
    from fastmnist.api import (FastMnistError, NetSpec, Recipe, Report, RunResult, bench, derive, ladder,  # noqa: F401
                               load_mnist, recipe, sweep, train)


def __getattr__(name: str):
    if name in API:
        from fastmnist import api

        return getattr(api, name)
    raise AttributeError(f"module 'fastmnist' has no attribute {name!r}")
