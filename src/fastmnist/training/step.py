"""The training step as one unit: forward, loss, backward, optimizer update and the next learning rate,
chosen and built once per model (the engines run it; `optim.py` holds the optimizers and the schedule).

On CUDA, Adam keeps its state and reads its learning rate on the device (capturable), so a step asks
nothing of the host and a CUDA graph can capture it.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from fastmnist.recipes.recipe import Recipe
from fastmnist.training.device import native_bf16
from fastmnist.training.nets import NetSpec
from fastmnist.training.optim import learning_rates, make_optimizers


def effective_precision(recipe: Recipe, device: torch.device) -> str:
    """bf16 only where the hardware multiplies it natively; elsewhere fp32, recorded as such."""
    return "bf16" if recipe.precision == "bf16" and native_bf16(device) else "fp32"


def make_loss(recipe: Recipe) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Chosen once: our nets end in log_softmax, as the original's, so NLL; a user's net may give logits,
    and label smoothing needs the cross-entropy form, so those get cross-entropy (log_softmax of
    log-probabilities changes nothing)."""
    if recipe.label_smoothing or not isinstance(recipe.net, NetSpec):
        return functools.partial(F.cross_entropy, label_smoothing=recipe.label_smoothing)
    return F.nll_loss


def reads_lr_on_host(recipe: Recipe, device: torch.device, capturable: bool) -> bool:
    """Whether the step gives its optimizers Python-float learning rates. On CUDA, an optimizer that is handed
    a device tensor but has no capturable path (SGD, Adadelta, Muon) turns it into a number on every step,
    a host sync per parameter: eagerly, those get floats from the table, rewritten in Python each step.
    Adam on CUDA runs its capturable path instead (state and lr on the device, no sync); on the CPU a
    tensor costs nothing."""
    return device.type == "cuda" and not capturable and recipe.optimizer != "adam"


class TrainStep:
    """One optimisation step: forward (under autocast where the recipe trains in bf16), loss, backward,
    optimizer update, then the next step's learning rate from the table. Losses are summed on the device,
    read once an epoch for the divergence check; on CUDA a step asks nothing of the host."""

    def __init__(self, model: nn.Module, forward: Callable, recipe: Recipe, steps_per_epoch: int,
                 device: torch.device, capturable: bool = False):
        self.model, self.forward, self.loss = model, forward, make_loss(recipe)
        # CPU: float64 gives exactly the learning rates the Python floats of the eager loop gave; CUDA: fp32
        dtype = torch.float64 if device.type == "cpu" else torch.float32
        table = learning_rates(recipe.schedule, recipe.lr, recipe.pct_start, recipe.gamma, recipe.epochs,
                               steps_per_epoch)
        self.rates = torch.tensor(table, dtype=dtype, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.host_rates = table if reads_lr_on_host(recipe, device, capturable) else None
        self.host_step = 0
        first = table[0] if self.host_rates else self.rates[0]
        self.optimizers = make_optimizers(recipe, model, first, capturable or device.type == "cuda")
        self.lr = self.optimizers[-1][1]  # the recipe's own lr (Adam's, beside Muon)
        self.loss_sum = torch.zeros((), device=device)
        self.precision = effective_precision(recipe, device)  # decided here, once: training and test use it
        # a captured graph must not keep autocast's cache of cast weights from capture time
        self.autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16,
                                          enabled=self.precision == "bf16", cache_enabled=not capturable)
        self.set_to_none = not capturable  # captured: gradients stay where the graph reads them, zeroed in place

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with record_function("forward"):  # labels for `benchmarks/profile_run.py`
            with self.autocast():
                output = self.forward(x)
            loss = self.loss(output.float(), y)
        with record_function("backward"):
            for optimizer, _, _ in self.optimizers:
                optimizer.zero_grad(set_to_none=self.set_to_none)
            loss.backward()
        with record_function("optimizer"):
            for optimizer, _, _ in self.optimizers:
                optimizer.step()
            self.index += 1
            if self.host_rates is None:
                rate = self.rates.index_select(0, self.index)[0]
                for _, lr, scale in self.optimizers:
                    lr.copy_(rate * scale)  # x 1.0 is exact: the table's own value
            else:
                self.host_step += 1
                self.set_host_lr(self.host_rates[self.host_step])
        self.loss_sum += loss.detach()

    def set_host_lr(self, rate: float) -> None:
        for optimizer, _, scale in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate * scale

    def reset(self) -> None:
        """The state of a new step: first learning rate, no optimizer history, no losses. Zeroed state is what
        PyTorch's optimizers start from (a zero step count, zero moments; SGD's first momentum is the first
        gradient, which a zero buffer gives too)."""
        with torch.no_grad():
            for optimizer, lr, scale in self.optimizers:
                for state in optimizer.state.values():
                    for value in state.values():
                        if isinstance(value, torch.Tensor):
                            value.zero_()
                if isinstance(lr, torch.Tensor):
                    lr.copy_(self.rates[0] * scale)
            self.index.zero_()
            self.loss_sum.zero_()
        if self.host_rates is not None:
            self.host_step = 0
            self.set_host_lr(self.host_rates[0])
