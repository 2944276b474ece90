"""Test-time views: the shift, the test pass that averages over views, and a saved model evaluated as its run
tested it."""

import contextlib
import dataclasses

import pytest
import torch

from fastmnist.errors import FastMnistError
from fastmnist.recipes.overrides import get_recipe
from fastmnist.training import layout
from fastmnist.training.layout import network_input, normalise, prepare
from fastmnist.training.nets import blocked
from fastmnist.training import trainer
from fastmnist.training.views import TEST_VIEWS, shifted
from fastmnist.use.checkpoint import load_model, save_model
from fastmnist.use.evaluate import evaluate_model, trained_views
from tests.conftest import in_process, one_run

SHIFTS = sorted({shift for views in TEST_VIEWS.values() for shift in views})


@pytest.mark.parametrize("dx, dy", SHIFTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_shift_is_a_roll_of_the_pixels_in_either_layout(dx, dy, dtype):
    images = torch.randn(5, 1, 28, 28).to(dtype)
    expected = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    assert torch.equal(shifted(images, dx, dy), expected)
    blocks = shifted(blocked(images), dx, dy)
    assert torch.equal(blocks, blocked(expected))
    assert blocks.is_contiguous(memory_format=torch.channels_last)


def test_the_test_pass_averages_the_softmax_over_the_views(small_mnist):
    recipe = dataclasses.replace(get_recipe("stage28"), precision="fp32")  # images prepared as 2x2 blocks
    data = prepare(small_mnist, recipe, torch.device("cpu"))
    model = one_run(recipe, data, seed=0).model.eval()
    images = normalise(small_mnist.test_images)
    with torch.no_grad():
        summed = sum(model(network_input(torch.roll(images, shifts=(dy, dx), dims=(2, 3)), recipe)).softmax(1)
                     for dx, dy in TEST_VIEWS["diagonal3"])
        plain = model(network_input(images, recipe)).argmax(1)
    accuracy, finite_outputs = trainer.test_accuracy(model, layout.test_batches(data, recipe), contextlib.nullcontext,
                                                     "diagonal3")  # leaves the model in training mode
    expected = 100.0 * (summed.argmax(1).numpy() == small_mnist.test_labels).mean()
    assert finite_outputs and accuracy == pytest.approx(expected)
    assert (summed.argmax(1) != plain).any()  # the views change some predictions of a model trained on a slice


def test_a_saved_model_is_evaluated_through_its_runs_views(small_mnist, tmp_path):
    recipe = dataclasses.replace(get_recipe("stage28"), test_views="xy4", precision="fp32")
    result = one_run(recipe, prepare(small_mnist, recipe, torch.device("cpu")), seed=1)
    save_model(tmp_path / "m.safetensors", result.model, {"recipe": recipe.name, "test_views": recipe.test_views})
    model, info = load_model(tmp_path / "m.safetensors")
    views = trained_views(info, "m.safetensors")
    report = evaluate_model(model, small_mnist, views)
    assert views == "xy4" and report["test_views"] == "xy4"
    assert report["accuracy"] == pytest.approx(result.accuracy)
    assert (evaluate_model(model, small_mnist)["predicted"] != report["predicted"]).any()


def test_unknown_views_are_refused(data_env, monkeypatch, capsys, tmp_path):
    proc = in_process(["train", "stage28", "--set", "test_views=mirror"], data_env, monkeypatch, capsys)
    assert proc.returncode == 2 and "test_views='mirror': choose from plain" in proc.stderr
    with pytest.raises(FastMnistError, match="its test_views 'mirror' is none of plain"):
        trained_views({"test_views": "mirror"}, tmp_path / "m.safetensors")
