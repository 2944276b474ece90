"""What the project declares it runs on is what it is tested on."""

import tomllib
from pathlib import Path

import optuna
import torch
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, dependencies)}


def test_torch_and_optuna_ranges_are_the_tested_ones():
    torch_range, optuna_range = declared()["torch"].specifier, declared()["optuna"].specifier
    assert Version(torch.__version__.split("+")[0]) in torch_range  # the torch these tests run on
    assert {"2.13.0", "2.14.1"} <= {v for v in ("2.13.0", "2.14.1") if Version(v) in torch_range}
    assert Version("2.2.0") not in torch_range and Version("2.15.0") not in torch_range  # untested
    assert Version(optuna.__version__) in optuna_range
    assert Version("3.5.0") not in optuna_range and Version("6.0.0") not in optuna_range
    readme = (ROOT / "README.md").read_text()
    assert "torch 2.13" in readme and "Optuna 5.0" in readme  # the README says what is tested
