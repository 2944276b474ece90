import dataclasses

import numpy as np
import torch

from fastmnist.bench import Preparer, benchmark, summarize
from fastmnist.recipes import get_recipe
from fastmnist.train import pick_device, prepare, train_run

CPU = torch.device("cpu")


def quick(name="stage8", **changes):
    return dataclasses.replace(get_recipe(name), **changes)


def test_short_real_training_learns(small_mnist):
    result = train_run(quick(), prepare(small_mnist, quick(), CPU), seed=0)
    assert result.accuracy > 80.0  # chance is 10%; seeds 0-3 give 90-93% here, other CPUs round differently
    assert not result.diverged
    assert result.images_seen == 6000 and result.epochs == 1


def test_same_seed_same_accuracy_other_seed_differs(small_mnist):
    data = prepare(small_mnist, quick(), CPU)
    a, b, c = (train_run(quick(), data, seed=s) for s in (3, 3, 4))
    assert a.accuracy == b.accuracy
    assert torch.equal(a.model.fc2.weight, b.model.fc2.weight)
    assert not torch.equal(a.model.fc2.weight, c.model.fc2.weight)


def test_dataloader_path_and_early_stop(small_mnist):
    recipe = quick("stage2", epochs=3, target=50.0)  # any real learning passes 50%: stop after epoch 1
    result = train_run(recipe, prepare(small_mnist, recipe, CPU), seed=0)
    assert result.epochs == 1 and result.accuracy >= 50.0
    assert len(result.epoch_accuracies) == 1


def test_batch_counts_floor_and_ceil(small_mnist):
    floor = quick("stage4", epochs=1, early_stop=False)  # 6000 // 128 = 46 batches
    ceil = quick("stage8", batch_size=128)  # ceil(6000 / 128) = 47 batches, the last one partial
    for recipe, seen in ((floor, 46 * 128), (ceil, 6000)):
        assert train_run(recipe, prepare(small_mnist, recipe, CPU), seed=0).images_seen == seen


def test_diverging_run_is_flagged_not_raised(small_mnist):
    recipe = quick(optimizer="sgd", lr=1e12)
    result = train_run(recipe, prepare(small_mnist, recipe, CPU), seed=0)
    assert result.diverged
    assert result.accuracy < 50.0


def test_warmup_run_covers_last_partial_batch(small_mnist):
    result = train_run(quick(), prepare(small_mnist, quick(), CPU), seed=0, warmup=True)
    assert result.images_seen == 8 * 256 + 6000 % 256


def test_benchmark_interleaves_and_summarises(small_mnist):
    recipes = [quick(), dataclasses.replace(quick(), name="other", channels_last=True)]
    seen = []
    report = benchmark(recipes, 2, small_mnist, CPU, progress=False, on_run=lambda r: seen.append(r.recipe))
    assert seen == ["stage8", "other", "stage8", "other"]
    first, second = report["summary"]
    assert first["runs"] == 2 and first["median_time_ratio_vs_first"] == 1.0
    assert second["median_time_ratio_vs_first"] > 0
    assert 0.0 <= first["share_at_least_99"] <= 1.0
    assert len(report["runs"]) == 4 and report["machine"]["torch_version"] == torch.__version__


def test_summary_statistics():
    class R:
        def __init__(self, acc, sec):
            self.accuracy, self.seconds, self.diverged = acc, sec, False
            self.epochs, self.epoch_accuracies, self.images_seen = 1, [acc], 60000
    row = summarize([R(99.0, 1.0), R(98.8, 3.0), R(99.2, 2.0)], get_recipe("stage8"))
    assert np.isclose(row["accuracy_mean"], 99.0) and np.isclose(row["accuracy_std"], 0.2)
    assert np.isclose(row["share_at_least_99"], 2 / 3)
    assert row["seconds_median"] == 2.0 and row["reaches_99"]
    # stage 8 is about 0.45 TFLOP of training (LADDER, issue 5)
    assert 0.40 < row["tflop_per_run"] < 0.50


def test_preparer_shares_layouts(small_mnist):
    preparer = Preparer(small_mnist, CPU)
    assert preparer(get_recipe("stage6")) is preparer(get_recipe("stage8"))
    assert preparer(get_recipe("stage2")) is not preparer(get_recipe("stage8"))


def test_auto_device_on_this_machine():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bf16_falls_back_to_fp32_without_native_support(small_mnist):
    from fastmnist.train import native_bf16

    recipe = quick("fastest", precision="bf16")
    result = train_run(recipe, prepare(small_mnist, recipe, CPU), seed=0)
    assert result.precision == ("bf16" if native_bf16(CPU) else "fp32")
    assert result.accuracy > 75.0  # 12 steps of batch 512; chance is 10%, seeds 0-3 give 86-88% here


def test_fastest_recipe_learns_on_a_slice(small_mnist):
    recipe = get_recipe("fastest")
    result = train_run(recipe, prepare(small_mnist, recipe, CPU), seed=0)
    assert result.accuracy > 75.0 and result.images_seen == 6000  # 12 steps; seeds 0-3 give 86-88% here
