"""The hand-written step (`backward=explicit`, stage 26): autograd's gradients and BatchNorm statistics, autograd's
trajectory step for step, the module's own forward for the test pass, and one-line refusals where it does not
apply."""

import pytest
import torch

from fastmnist.errors import FastMnistError
from fastmnist.recipes.overrides import get_recipe
from fastmnist.training.explicit import ExplicitStep
from fastmnist.training.layout import memory_batches, prepare
from fastmnist.training.step import TrainStep, effective_precision
from tests.conftest import assert_one_line_error, in_process, new_model, one_run

CPU = torch.device("cpu")
VARIANTS = ["stage26[precision=fp32]", "stage26[precision=fp32,batchnorm=false,label_smoothing=0.0]",
            "stage26[precision=fp32,hwc_features=false,space_to_depth=false,channels_last=false]",
            "stage26[precision=fp32,stride1=1,pool1=true,space_to_depth=false,relu2=false]"]


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    found, expected = found.detach().float(), expected.detach().float()
    return float((found - expected).norm() / expected.norm())


def autograd_reference(recipe, model, x, y):
    """Gradients by autograd for the same batch, through the module's forward and TrainStep's loss."""
    step = TrainStep(model, model, recipe, 10, CPU)
    with step.autocast():
        output = model(x)
    step.loss(output.float(), y).backward()
    return {id(p): p.grad for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("name", VARIANTS + ["stage26"])
def test_the_gradients_are_autograds(small_mnist, name):
    recipe = get_recipe(name)
    data = prepare(small_mnist, recipe, CPU)
    (x, y), = memory_batches(data, recipe)[:1]
    explicit_model, autograd_model = new_model(recipe, data, 5), new_model(recipe, data, 5)
    found = ExplicitStep(explicit_model, recipe, 10, CPU).gradients(x, y)
    expected = autograd_reference(recipe, autograd_model, x, y)
    # bf16 (where the step runs in it): the same products, rounded in another order
    tolerance = 1e-4 if effective_precision(recipe, CPU) == "fp32" else 3e-2
    pairs = list(zip(explicit_model.parameters(), autograd_model.parameters()))
    assert len(found) == len(expected) == sum(p.requires_grad for p, _ in pairs) >= 5
    for mine, theirs in pairs:
        if mine.requires_grad:
            assert relative_error(found[id(mine)], expected[id(theirs)]) < tolerance, mine.shape
    if recipe.net.batchnorm:  # the forward in training mode moved the running statistics as the module's did
        assert relative_error(explicit_model.bn2.running_var, autograd_model.bn2.running_var) < tolerance
        assert explicit_model.bn2.num_batches_tracked.item() == autograd_model.bn2.num_batches_tracked.item() == 1


@pytest.mark.parametrize("name", VARIANTS[:2])
def test_steps_follow_autograds_steps(small_mnist, name):
    """Five steps of each from one model, in fp32: the same weights and the same summed loss."""
    recipe = get_recipe(name)
    data = prepare(small_mnist, recipe, CPU)
    explicit_model, autograd_model = new_model(recipe, data, 7), new_model(recipe, data, 7)
    explicit, autograd = ExplicitStep(explicit_model, recipe, 20, CPU), TrainStep(autograd_model, autograd_model,
                                                                                   recipe, 20, CPU)
    for x, y in memory_batches(data, recipe)[:5]:
        explicit(x, y)
        autograd(x, y)
    for mine, theirs in zip(explicit_model.parameters(), autograd_model.parameters()):
        assert relative_error(mine, theirs) < 1e-4
    assert relative_error(explicit.loss_sum, autograd.loss_sum) < 1e-5 and explicit.index == 5


def test_reset_is_a_new_step(small_mnist):
    recipe = get_recipe("stage26")
    data = prepare(small_mnist, recipe, CPU)
    step = ExplicitStep(new_model(recipe, data, 0), recipe, 11, CPU)
    for x, y in memory_batches(data, recipe)[:3]:
        step(x, y)
    assert step.index == 3 and step.loss_sum.item() > 0 and all(s.item() == 3 for s in step.state_steps)
    step.reset()
    assert step.index == 0 and step.loss_sum.item() == 0
    assert all(float(t.abs().sum()) == 0 for t in (*step.exp_avgs, *step.exp_avg_sqs, *step.state_steps))


@pytest.mark.parametrize("name", ["stage26", VARIANTS[2]])
def test_the_test_pass_is_the_modules_forward(small_mnist, name):
    """Exactly the module's outputs under autocast (bf16) or in fp32, after some training."""
    recipe = get_recipe(name)
    data = prepare(small_mnist, recipe, CPU)
    model = new_model(recipe, data, 1)
    step = ExplicitStep(model, recipe, 10, CPU)
    for x, y in memory_batches(data, recipe)[:3]:
        step(x, y)
    images = data.test[0][:500]
    model.eval(), step.evaluator.eval()
    with torch.no_grad(), step.autocast():
        assert torch.allclose(step.evaluator(images).float(), model(images).float(), atol=1e-5, rtol=0)


def test_a_run_says_which_step_ran_and_learns(small_mnist):
    recipe = get_recipe("stage26")
    data = prepare(small_mnist, recipe, CPU)
    explicit, autograd = one_run(recipe, data, seed=3), one_run(get_recipe("stage25"), data, seed=3)
    assert explicit.engine == "explicit" and autograd.engine == "eager"
    assert min(explicit.accuracy, autograd.accuracy) > 70 and abs(explicit.accuracy - autograd.accuracy) < 3  # 1 epoch, a slice


@pytest.mark.parametrize("change, fragment", [
    ("whiten1=false", "needs whiten1=true"), ("optimizer=sgd", "fused Adam"), ("fused_optimizer=false", "fused Adam"),
    ("dropout2=0.5", "no dropout"), ("pool_before_relu=false", "pool_before_relu=true"),
    ("engine=eager,compile=true", "choose one")])
def test_what_the_explicit_step_cannot_run_is_refused_in_one_line(change, fragment):
    with pytest.raises(FastMnistError, match=fragment):
        get_recipe(f"stage26[{change}]")


def test_the_cli_refuses_it_in_one_line(data_env, monkeypatch, capsys):
    assert_one_line_error(in_process(["train", "stage26[whiten1=false]"], data_env, monkeypatch, capsys),
                          "backward=explicit needs whiten1=true")
