"""examples/fastest.py, `fastest` in one file of plain PyTorch, stays the recipe it says it is: the same
hyperparameters as the recipe (stage 27 where bf16 runs in hardware, stage 30 where the step runs in fp32), and
the same accuracy as `fastmnist train` seed for seed on this CPU, with autograd's backward as the example's
(tests/test_explicit.py checks fastmnist's hand-written one against it)."""

import importlib.util
from pathlib import Path

import pytest
import torch

import fastmnist
from fastmnist.recipes.stages import FASTEST_BY_PRECISION
from fastmnist.training.device import native_bf16
from fastmnist.training import layout, nets
from fastmnist.training.views import TEST_VIEWS
from fastmnist.recipes.overrides import get_recipe

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastest.py"


def example():
    spec = importlib.util.spec_from_file_location("fastest_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bf16, stage", [(True, "stage27"), (False, "stage30")])
def test_its_hyperparameters_are_the_recipes(bf16, stage, monkeypatch):
    module = example()
    monkeypatch.setattr(module, "native_bf16", lambda: bf16)
    h, r = module.hyp_here(), get_recipe(stage)
    assert FASTEST_BY_PRECISION["bf16" if bf16 else "fp32"] == stage
    net = r.net
    assert (2 * h["net"]["whitening_pairs"], h["net"]["kernel1"], h["net"]["stride1"], h["net"]["conv2"],
            h["net"]["kernel2"], h["net"]["fc"]) == (net.conv1, net.kernel1, net.stride1, net.conv2, net.kernel2, net.fc)
    assert (net.whiten1, net.batchnorm, net.hwc_features, net.inplace_relu, net.pool_before_relu, net.relu2,
            net.space_to_depth) == (True,) * 7 and not net.pool1 and net.dropout1 == net.dropout2 == 0
    assert h["bf16_images"] == r.bf16_images and h["test_views"] == TEST_VIEWS[r.test_views]
    assert (h["opt"]["lr"], h["opt"]["betas"], h["opt"]["pct_start"], h["opt"]["label_smoothing"]) == \
        (r.lr, (r.beta1, r.beta2), r.pct_start, r.label_smoothing)
    assert (r.optimizer, r.schedule, r.fused_optimizer, r.epochs, r.weight_decay, r.drop_last) == \
        ("adam", "onecycle", True, 1, 0.0, False)
    assert (h["batch_size"], h["test_batch_size"], h["train_fraction"]) == (r.batch_size, r.test_batch_size,
                                                                            r.train_fraction)
    assert (r.channels_last, r.precision, r.data_order, r.data_path) == (True, "bf16", "seed", "memory")
    assert (h["init_images"], h["whitening_eps"], h["order_stream"]) == (nets.INIT_IMAGES, nets.WHITENING_EPS,
                                                                         layout.ORDER_STREAM)


def test_it_picks_fastest_as_fastmnist_does_on_this_cpu():
    assert example().native_bf16() == native_bf16(torch.device("cpu"))


@pytest.mark.parametrize("seed", [0, 7])
def test_it_reaches_the_accuracy_fastmnist_train_reaches(seed, real_mnist, data_env, monkeypatch):
    for key, value in data_env.items():
        monkeypatch.setenv(key, value)
    stage = FASTEST_BY_PRECISION["bf16" if example().native_bf16() else "fp32"]  # fastest on this CPU
    ours = fastmnist.train(f"{stage}[backward=autograd]", seed=seed, mnist=real_mnist, warmup=False)
    assert example().main(seed) == ours.accuracy  # bit-equal: the same arithmetic in the same order
