"""A seed is a whole try (weights and data order, so the subset), claims and tuning use apart seed ranges,
and a paired time ratio carries its interval."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from fastmnist.experiments.bench import benchmark
from fastmnist.cli.main import main as cli_main
from fastmnist.errors import FastMnistError
from fastmnist.training.layout import prepare, training_order
from fastmnist.recipes.overrides import get_recipe
from fastmnist.experiments.sweep import SweepSpec
from fastmnist.experiments.seeds import CLAIM_FIRST_SEED, TUNING_FIRST_SEED, choose_seeds, parse_seed_range
from fastmnist.experiments.stats import paired_ratio_interval, verdict

CPU = torch.device("cpu")
SUBSET = dataclasses.replace(get_recipe("stage18"), train_fraction=0.5)  # half of the slice: the subset shows
from tests.conftest import one_run


def trained_indices(data, recipe):
    """Which training images (by position in the files) the run's epoch walks, in order."""
    images = data.train[0][:int(len(data.train[1]) * recipe.train_fraction)]
    flat_source = data.file_order[0].flatten(1)
    lookup = {bytes(row.numpy().tobytes()): i for i, row in enumerate(flat_source)}
    return [lookup[bytes(row.numpy().tobytes())] for row in images.flatten(1)]


def test_two_seeds_walk_two_orders_and_two_subsets(small_mnist):
    data = prepare(small_mnist, SUBSET, CPU)
    a, b = (one_run(SUBSET, data, seed=s) for s in (101, 102))
    assert a.data_order != b.data_order and len(a.data_order) == 12
    data.lay_out(SUBSET, 101)
    first = trained_indices(data, SUBSET)
    data.lay_out(SUBSET, 102)
    second = trained_indices(data, SUBSET)
    assert first != second and set(first) != set(second)  # another order, and another half of the images
    assert len(set(first)) == len(first) == 3000
    labels = data.train[1][:3000].tolist()
    assert labels == [int(small_mnist.train_labels[i]) for i in second]  # labels moved with their images


def test_the_same_seed_is_the_same_run_twice(small_mnist):
    data = prepare(small_mnist, SUBSET, CPU)
    a = one_run(SUBSET, data, seed=7)
    one_run(SUBSET, data, seed=8)  # another run in between writes its own order into the buffers
    b = one_run(SUBSET, data, seed=7)
    assert (a.data_order, a.accuracy) == (b.data_order, b.accuracy)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_fixed_order_is_one_order_for_every_seed(small_mnist):
    fixed = dataclasses.replace(SUBSET, data_order="fixed")
    data = prepare(small_mnist, fixed, CPU)
    a, b = (one_run(fixed, data, seed=s) for s in (1, 2))
    assert a.data_order == b.data_order and a.accuracy != b.accuracy  # the weights still differ
    assert np.array_equal(training_order(fixed, 1, 60000), training_order(fixed, 99, 60000))


def test_whitening_sees_the_runs_own_first_images(small_mnist):
    recipe = get_recipe("stage16")
    data = prepare(small_mnist, recipe, CPU)
    a, b = (one_run(recipe, data, seed=s) for s in (1, 2))
    assert not torch.equal(a.model.conv1.weight, b.model.conv1.weight)


def test_bench_records_seeds_and_an_order_per_run(small_mnist):
    report = benchmark([SUBSET], [200, 201, 202], small_mnist, CPU, progress=False)
    orders = [r["data_order"] for r in report["runs"]]
    assert [r["seed"] for r in report["runs"]] == [200, 201, 202] and len(set(orders)) == 3
    assert report["seeds"] == "200-202" and report["seed_use"] == "claim"
    row = report["summary"][0]
    assert row["distinct_data_orders"] == 3 and row["seeds"] == "200-202"
    assert all(r["order_seconds"] > 0 for r in report["runs"])


def test_sweeps_and_benches_default_to_seeds_that_never_meet():
    bench_defaults = set(choose_seeds(10_000, None, None, CLAIM_FIRST_SEED))
    sweep_defaults = set(SweepSpec(SUBSET, ()).seeds) | set(choose_seeds(10_000, None, None, TUNING_FIRST_SEED))
    assert not bench_defaults & sweep_defaults
    assert min(sweep_defaults) == TUNING_FIRST_SEED and min(bench_defaults) == CLAIM_FIRST_SEED


def test_seed_ranges_parse_and_bad_ones_are_one_line():
    assert parse_seed_range("100-103") == [100, 101, 102, 103]
    assert parse_seed_range("3,5,9-10") == [3, 5, 9, 10]
    assert choose_seeds(3, 50, None, CLAIM_FIRST_SEED) == [50, 51, 52]
    for bad, fragment in [("9-3", "reversed"), ("a-b", "expected"), ("1,1", "twice"), ("-5", "-5 is negative")]:
        with pytest.raises(FastMnistError, match=fragment):
            parse_seed_range(bad)
    with pytest.raises(FastMnistError, match="not both"):
        choose_seeds(3, 5, "1-3", CLAIM_FIRST_SEED)


def test_cli_bench_takes_a_seed_range(data_env, monkeypatch, tmp_path, capsys):
    for key, value in data_env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "b.json"
    recipe = "stage18[train_fraction=0.05,threads=1]"
    assert cli_main(["bench", recipe, "--seeds", "300-301", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["seed"] for r in report["runs"]] == [300, 301]
    assert "seeds 300-301 (claim)" in capsys.readouterr().out
    assert cli_main(["bench", recipe, "--seeds", "5-1"]) == 2
    assert "reversed" in capsys.readouterr().err


def test_a_ratio_is_faster_only_when_its_interval_lies_below_one():
    rng = np.random.default_rng(0)
    reference = 1 + rng.random(25) * 0.1
    faster = paired_ratio_interval(list(reference), list(reference * 0.9 * (1 + rng.normal(0, 0.02, 25))))
    assert faster["ci95"][1] < 1 and verdict(faster) == "faster" and faster["sign_p"] < 0.001
    same = paired_ratio_interval(list(reference), list(reference * (1 + rng.normal(0, 0.02, 25))))
    assert same["ci95"][0] < 1 < same["ci95"][1] and verdict(same) == "no clear difference"
    few = paired_ratio_interval([1.0, 2.0, 4.0, 1.0, 1.0], [0.5, 1.0, 4.0, 0.9, 0.8])  # 5 pairs: no interval covers
    assert few["ci95"] is None and few["sign_p"] is None and verdict(few) == "too few pairs"
