"""The optimizers and the learning-rate schedule of a step.

The learning rates of a whole run are a table (`learning_rates`) on the model's device, read by a step
counter that lives there too: PyTorch's schedulers compute each value in Python and write it into the
optimizer after every step, which a captured CUDA graph cannot replay, so the table is filled once by those
same schedulers (OneCycleLR, StepLR) and the values are the ones an eager loop with a scheduler would use.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from fastmnist.errors import FastMnistError
from fastmnist.recipes.recipe import Recipe
from fastmnist.training.nets import net_name


@functools.lru_cache(maxsize=64)
def learning_rates(schedule: str, lr: float, pct_start: float, gamma: float, epochs: int,
                   steps_per_epoch: int) -> tuple[float, ...]:
    """The learning rate of every step of a run, plus the value after the last step, computed by PyTorch's
    own scheduler on a throwaway optimizer: OneCycleLR stepped every batch, or StepLR every epoch."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    total = epochs * steps_per_epoch
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, pct_start=pct_start,
                                                        total_steps=total, cycle_momentum=False)
    elif schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=gamma)
    else:
        raise FastMnistError(f"unknown schedule {schedule!r}")
    rates = [optimizer.param_groups[0]["lr"]]  # OneCycleLR starts at max_lr / 25
    for step in range(total):
        if schedule == "onecycle" or (step + 1) % steps_per_epoch == 0:
            optimizer.step()  # no gradients: nothing moves, but the scheduler sees the order it expects
            scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return tuple(rates)


class FlatMuon(torch.optim.Optimizer):
    """PyTorch's Muon update (momentum, Nesterov, Newton-Schulz orthogonalisation, its lr adjustment) for
    weights of any shape: a conv filter bank (out, in, k, k) is updated as the (out, in*k*k) matrix it is,
    as airbench does. `torch.optim.Muon` refuses anything but 2-D parameters; this only flattens, through
    views that share the parameter's storage (columns in memory order, channels_last included: the
    orthogonalisation does not depend on the columns' order), and calls PyTorch's own Muon step on them."""

    def __init__(self, params, lr: torch.Tensor, momentum: float, weight_decay: float):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                order = sorted(range(p.ndim), key=lambda d: -p.stride(d))  # memory order: a view, in any layout
                params.append(p.permute(order).view(len(p), -1))
                grads.append(p.grad.permute(order).reshape(len(p), -1))  # read only: a copy will do
                buffers.append(state["momentum_buffer"].permute(order).view(len(p), -1))
            pytorch_muon_update(params, grads, buffers, group["lr"], group["weight_decay"], group["momentum"])


def pytorch_muon_update(params, grads, buffers, lr, weight_decay: float, momentum: float) -> None:
    """PyTorch's own Muon update of 2-D parameters, with its default Newton-Schulz coefficients. The one
    private call into torch.optim: `torch.optim.Muon` has no public functional form and refuses views of
    conv filters. Tested with torch 2.13 and 2.14, the range pyproject.toml admits."""
    from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, DEFAULT_NS_STEPS, EPS, _single_tensor_muon

    _single_tensor_muon(params, grads, buffers, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=True,
                        ns_coefficients=(DEFAULT_A, DEFAULT_B, DEFAULT_C), ns_steps=DEFAULT_NS_STEPS, eps=EPS,
                        adjust_lr_fn=None, has_complex=False)


def muon_split(model: nn.Module, scope: str = "hidden") -> tuple[list, list]:
    """(Muon's, Adam's) trainable parameters. `hidden`: every weight of two or more dimensions but the output
    layer's (the last Linear), as in modded-nanogpt; `conv`: the convolution filters only, as in airbench,
    where the only Linear is the head. Biases, BatchNorm and whatever Muon does not take go to Adam."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    in_head = {id(p) for m in head for p in m.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    least = 3 if scope == "conv" else 2  # a conv filter bank is 3-D (1-D convs) or more
    matrices = [p for p in trainable if p.ndim >= least and id(p) not in in_head]
    return matrices, [p for p in trainable if id(p) not in {id(m) for m in matrices}]


def make_optimizers(recipe: Recipe, model: nn.Module, rate: torch.Tensor | float,
                    capturable: bool) -> list[tuple[torch.optim.Optimizer, torch.Tensor | float, float]]:
    """The optimizers of a step, each with the learning rate it reads (a tensor on the device, or a Python
    float the step rewrites) and that rate's scale to the table (the recipe's lr): one optimizer, or Muon
    for the hidden weights beside Adam for the rest."""
    if recipe.optimizer != "muon":
        lr = rate.clone() if isinstance(rate, torch.Tensor) else rate
        params = [p for p in model.parameters() if p.requires_grad]
        return [(make_optimizer(recipe, params, lr, capturable), lr, 1.0)]
    matrices, others = muon_split(model, recipe.muon_scope)
    if not matrices:
        kind = "convolution filters" if recipe.muon_scope == "conv" else "hidden weight matrices"
        raise FastMnistError(f"{recipe.name}: optimizer=muon, and network {net_name(recipe.net)} has no "
                             f"{kind} for Muon (muon_scope={recipe.muon_scope}); use adam")
    scale = recipe.muon_lr / recipe.lr
    muon_lr, adam_lr = rate * scale, rate.clone() if isinstance(rate, torch.Tensor) else rate
    adam = make_optimizer(dataclasses.replace(recipe, optimizer="adam"), others, adam_lr, capturable)
    return [(FlatMuon(matrices, muon_lr, recipe.muon_momentum, recipe.weight_decay), muon_lr, scale),
            (adam, adam_lr, 1.0)]


def make_optimizer(recipe: Recipe, params, lr: torch.Tensor | float, capturable: bool) -> torch.optim.Optimizer:
    fused = {"fused": True} if recipe.fused_optimizer else {}
    if recipe.optimizer == "adadelta":
        if fused:
            raise FastMnistError("fused_optimizer: PyTorch has no fused Adadelta; use adam or sgd")
        return torch.optim.Adadelta(params, lr=lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(recipe.beta1, recipe.beta2), weight_decay=recipe.weight_decay,
                                capturable=capturable, **fused)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, nesterov=True,
                               weight_decay=recipe.weight_decay, **fused)
    raise FastMnistError(f"unknown optimizer {recipe.optimizer!r}")
