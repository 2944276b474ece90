import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastmnist.training.device import pick_device
from fastmnist.training.nets import INIT_IMAGES, NETS, blocked_filters, whitening_filters
from fastmnist.recipes.overrides import get_recipe
from fastmnist.recipes.recipe import derive
from fastmnist.experiments.bench import benchmark
from fastmnist.training.runner import Runner
from fastmnist.experiments.stats import summarize, welch_p
from fastmnist.training.layout import TorchvisionStyleMnist, normalise, prepare

CPU = torch.device("cpu")
from tests.conftest import one_run


def quick(name="stage8", **changes):
    return dataclasses.replace(get_recipe(name), **changes)


def test_short_real_training_learns(small_mnist):
    result = one_run(quick(), prepare(small_mnist, quick(), CPU), seed=0)
    assert result.accuracy > 80.0  # chance is 10%; seeds 0-3 give 90-93% here, other CPUs round differently
    assert not result.diverged
    assert result.images_seen == 6000 and result.epochs == 1


def test_same_seed_same_accuracy_other_seed_differs(small_mnist):
    data = prepare(small_mnist, quick(), CPU)
    a, b, c = (one_run(quick(), data, seed=s) for s in (3, 3, 4))
    assert a.accuracy == b.accuracy
    assert torch.equal(a.model.fc2.weight, b.model.fc2.weight)
    assert not torch.equal(a.model.fc2.weight, c.model.fc2.weight)


def test_dataloader_path_and_early_stop(small_mnist):
    recipe = quick("stage2", epochs=3, target=50.0)  # any real learning passes 50%: stop after epoch 1
    result = one_run(recipe, prepare(small_mnist, recipe, CPU), seed=0)
    assert result.epochs == 1 and result.accuracy >= 50.0
    assert len(result.epoch_accuracies) == 1


def test_batch_counts_floor_and_ceil(small_mnist):
    floor = quick("stage4", epochs=1, early_stop=False)  # 6000 // 128 = 46 batches
    ceil = quick("stage8", batch_size=128)  # ceil(6000 / 128) = 47 batches, the last one partial
    for recipe, seen in ((floor, 46 * 128), (ceil, 6000)):
        assert one_run(recipe, prepare(small_mnist, recipe, CPU), seed=0).images_seen == seen


@pytest.mark.parametrize("lr", [1e12, 100.0])
def test_diverging_run_is_flagged_not_raised(small_mnist, lr):
    recipe = quick(optimizer="sgd", lr=lr)  # lr 100 ends at chance with NaN weights, not a NaN loss sum
    result = one_run(recipe, prepare(small_mnist, recipe, CPU), seed=0)
    assert result.diverged
    assert result.accuracy < 50.0


def test_warmup_run_covers_last_partial_batch(small_mnist):
    result = one_run(quick(), prepare(small_mnist, quick(), CPU), seed=0, warmup=True)
    assert result.images_seen == 8 * 256 + 6000 % 256


def test_benchmark_interleaves_and_summarises(small_mnist):
    recipes = [quick("stage14"), derive(quick("stage14"), "other", "conv1 24 channels", conv1=24)]
    seen = []
    report = benchmark(recipes, [0, 1], small_mnist, CPU, progress=False, on_run=lambda r: seen.append(r.recipe))
    assert seen == ["stage14", "other", "stage14", "other"]
    first, second = report["summary"]
    assert first["runs"] == 2 and first["median_time_ratio_vs_first"] == 1.0
    runs = {(r["recipe"], r["seed"]): r["seconds"] for r in report["runs"]}
    assert second["median_time_ratio_vs_first"] == pytest.approx(
        np.median([runs["other", s] / runs["stage14", s] for s in (0, 1)]))
    stage14 = [r["accuracy"] for r in report["runs"] if r["recipe"] == "stage14"]
    assert first["accuracy_mean"] == pytest.approx(np.mean(stage14))
    assert first["share_reaching_target"] == np.mean([a >= 99.0 for a in stage14])
    assert len(report["runs"]) == 4 and report["machine"]["torch_version"] == torch.__version__
    assert report["recipes"]["other"]["net"]["conv1"] == 24  # every recipe in full
    assert report["provenance"]["fastmnist_version"] and "command" in report["provenance"]


def test_summary_statistics():
    row = summarize([99.0, 98.8, 99.2], [1.0, 3.0, 2.0], target=99.0)
    assert np.isclose(row["accuracy_mean"], 99.0) and np.isclose(row["accuracy_std"], 0.2)
    assert np.isclose(row["accuracy_se"], 0.2 / np.sqrt(3))
    assert np.isclose(row["share_reaching_target"], 2 / 3)
    assert row["seconds_median"] == 2.0 and row["reaches_target"]
    assert not summarize([99.0, 98.8, 99.2], [1, 1, 1], target=99.5)["reaches_target"]  # the target counts
    one = summarize([99.3], [1.0], target=99.0)
    assert one["accuracy_std"] is None and one["accuracy_se"] is None  # one run has no spread


def test_welch():
    assert welch_p([99.0, 99.1, 99.2], [98.0, 98.1, 98.2]) < 0.001
    assert welch_p([99.0], [98.0]) is None


def test_flops_of_a_bench_row(small_mnist):
    report = benchmark([quick()], [0], small_mnist, CPU, progress=False)
    row = report["summary"][0]
    # stage 8 on the 6k slice: 6000 training images at 3x the forward FLOPs (less conv1's input gradient)
    # plus one 10k-image test pass: 0.044 TFLOP; the full stage 8 is about 0.43 TFLOP
    assert 0.040 < row["tflop_per_run"] < 0.048


def test_runner_shares_layouts_and_warms_once(small_mnist):
    runner = Runner(small_mnist, CPU)
    assert runner.data(get_recipe("stage6")) is runner.data(get_recipe("stage8"))
    assert runner.data(get_recipe("stage2")) is not runner.data(get_recipe("stage8"))
    recipe = quick("stage2", epochs=1, early_stop=False)
    first = runner.warm(recipe)
    assert first > 0 and runner.warm(recipe) == first  # a DataLoader recipe warms up once, then is warm
    assert set(runner.excluded_seconds(recipe)) == {"data_load", "prepare", "warmup", "capture"}


def test_torchvision_style_dataset_matches_normalised_pixels(small_mnist):
    dataset = TorchvisionStyleMnist(small_mnist.train_images, small_mnist.train_labels)
    image, label = dataset[5]
    expected = (torch.from_numpy(small_mnist.train_images[5]).float() / 255 - 0.1307) / 0.3081
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert torch.allclose(image[0], expected, atol=1e-6) and label == int(small_mnist.train_labels[5])


def test_auto_device_on_this_machine():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bf16_falls_back_to_fp32_without_native_support(small_mnist):
    from fastmnist.training.device import native_bf16

    recipe = quick("fastest", precision="bf16")
    result = one_run(recipe, prepare(small_mnist, recipe, CPU), seed=0)
    assert result.precision == ("bf16" if native_bf16(CPU) else "fp32")
    assert result.accuracy > 75.0  # 12 steps of batch 512; chance is 10%, seeds 0-3 give 86-88% here


def test_fastest_recipe_learns_on_a_slice(small_mnist):
    recipe = get_recipe("fastest")
    data = prepare(small_mnist, recipe, CPU)
    result = one_run(recipe, data, seed=0)
    assert result.accuracy > 75.0  # 11 steps; seeds 0-3 give 86-88% here
    assert result.images_seen == int(6000 * recipe.train_fraction)
    if recipe.net.whiten1:  # its first layer came from the data, inside the clock, and stayed as it was
        first = data.train[0][:INIT_IMAGES].float()
        if recipe.net.space_to_depth:  # prepared as 2x2 blocks: the filters come from the images they hold
            first = F.pixel_shuffle(first.contiguous(), 2)
        expected = whitening_filters(first, recipe.net.conv1 // 2, recipe.net.kernel1, recipe.net.stride1)
        if recipe.net.space_to_depth:
            expected = blocked_filters(expected)
        assert torch.allclose(result.model.conv1.weight, expected)


def test_whitening_works_on_the_per_sample_data_path(small_mnist):
    recipe = quick("stage2", net=dataclasses.replace(NETS["B"], whiten1=True, conv1=18), early_stop=False,
                   epochs=1)
    data = prepare(small_mnist, recipe, CPU)
    first = data.first_train_images(5)
    assert torch.allclose(first, normalise(small_mnist.train_images[:5], CPU, False))
    assert torch.allclose(first, torch.stack([data.train[i][0] for i in range(5)]), atol=1e-6)  # as trained on
    result = one_run(recipe, data, seed=0)
    assert result.accuracy > 80.0 and not result.diverged  # 94 steps of batch 64
    assert not result.model.conv1.weight.requires_grad
