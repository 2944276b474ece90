"""The training step with its gradients written out by hand (`backward=explicit`), for our network family
with a frozen (whitened) conv1: the same function and the same update as `step.TrainStep`, in fewer operators.

On a 2-core CPU about a third of a step of stage 25 at batch 448 does not grow with the batch (docs/speedrun.md):
autograd's graph and engine, autocast's casts, Python module calls, the optimizer's Python wrapper and the lr
tensor's arithmetic, each operator's dispatch. Here the forward keeps what the backward needs
(pool indices, BatchNorm's batch statistics), and the backward calls the same ATen kernels autograd would
(`convolution_backward`, `max_pool2d_with_indices_backward`, `native_batch_norm_backward`, matrix products),
in bf16 exactly where autocast runs them in bf16. The loss's gradient is closed-form: softmax minus the
(smoothed) one-hot targets. Adam is PyTorch's fused kernel, called directly with this step's lr as a Python
float from the schedule's table. tests/test_explicit.py checks the gradients and steps against autograd's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from fastmnist.recipes.recipe import Recipe
from fastmnist.training.nets import NetSpec
from fastmnist.training.optim import learning_rates
from fastmnist.training.step import effective_precision

aten = torch.ops.aten


def explicit_problems(recipe: Recipe) -> list[str]:
    """Why `backward=explicit` cannot run this recipe, one line each (checked before anything runs)."""
    net = recipe.net
    if not isinstance(net, NetSpec):
        return ["backward=explicit derives the gradients of fastmnist's own network only, not a user's factory"]
    found = []
    if not net.whiten1:
        found.append("backward=explicit needs whiten1=true: it derives gradients from conv2 on, conv1 frozen")
    if net.dropout1 or net.dropout2:
        found.append("backward=explicit has no dropout: set dropout1=0 and dropout2=0")
    if net.pool2 and not net.pool_before_relu:
        found.append("backward=explicit pools conv2 before its BatchNorm and ReLU: set pool_before_relu=true")
    if recipe.optimizer != "adam" or not recipe.fused_optimizer:
        found.append("backward=explicit updates with PyTorch's fused Adam: set optimizer=adam and "
                     "fused_optimizer=true")
    if recipe.compile:
        found.append("backward=explicit and compile=true are two ways to build one step: choose one")
    return found


def conv_relu(x: torch.Tensor, weight: torch.Tensor, stride) -> torch.Tensor:
    """ReLU(conv(x)) for the frozen conv1: on the CPU one oneDNN call with the ReLU applied as the outputs are
    written (the same values, and one pass fewer over the largest maps; the kernel PyTorch's compiler uses
    for this pattern), elsewhere a convolution and an in-place ReLU."""
    if x.device.type == "cpu" and torch.backends.mkldnn.is_available():
        return torch.ops.mkldnn._convolution_pointwise(x, weight, None, [0, 0], list(stride), [1, 1], 1, "relu",
                                                       [], "")
    return F.conv2d(x, weight, None, stride).relu_()


class ExplicitStep:
    """One optimisation step, as `TrainStep` (forward, loss, backward, Adam, the next lr), without autograd;
    `evaluator` is the model's forward for the test pass, conv1's ReLU fused as in training."""

    def __init__(self, model: nn.Module, recipe: Recipe, steps_per_epoch: int, device: torch.device):
        self.model, self.recipe = model, recipe
        self.spec: NetSpec = recipe.net
        self.rates = learning_rates(recipe.schedule, recipe.lr, recipe.pct_start, recipe.gamma, recipe.epochs,
                                    steps_per_epoch)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.precision = effective_precision(recipe, device)
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16,
                                          enabled=self.precision == "bf16")  # the test pass's, as TrainStep's
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.state_steps = [torch.zeros((), device=device) for _ in self.params]
        self.loss_sum = torch.zeros((), device=device)
        self.evaluator = ExplicitEvaluation(self)
        self.reset()

    def reset(self) -> None:
        """A new step's state: no Adam history, no losses, the schedule's first lr; conv1's filters (frozen,
        and just whitened for this run) cast once for the whole run."""
        with torch.no_grad():
            for state in (*self.exp_avgs, *self.exp_avg_sqs, *self.state_steps, self.loss_sum):
                state.zero_()
        self.index = 0
        self.conv1_weight = self.model.conv1.weight.detach().to(self.dtype)

    def first_block(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 (frozen, cast once a run) and its ReLU, then its pool where the network has one: conv2's input,
        in training and in the test pass."""
        maps = conv_relu(x.to(self.dtype), self.conv1_weight, self.model.conv1.stride)
        return F.max_pool2d(maps, 2) if self.spec.pool1 else maps  # pooled after the ReLU or before: the same

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        grads = self.gradients(x, y)
        with record_function("optimizer"):
            self.adam([grads[id(p)] for p in self.params])

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> dict[int, torch.Tensor]:
        """The loss's gradient for each trainable parameter (by id, in the parameter's dtype), from the batch's
        forward in training mode (BatchNorm's running statistics updated, the loss added to `loss_sum`)."""
        model, spec, dtype = self.model, self.spec, self.dtype
        with torch.no_grad():
            with record_function("forward"):  # labels for `benchmarks/profile_run.py`, as TrainStep's
                conv2_weight = model.conv2.weight.to(dtype)
                fc1_weight, fc1_bias = model.fc1.weight.to(dtype), model.fc1.bias.to(dtype)
                fc2_weight, fc2_bias = model.fc2.weight.to(dtype), model.fc2.bias.to(dtype)
                a1 = self.first_block(x)
                conv2_bias = None if model.conv2.bias is None else model.conv2.bias.to(dtype)
                c2 = F.conv2d(a1, conv2_weight, conv2_bias, spec.stride2)
                pooled, indices = aten.max_pool2d_with_indices(c2, [2, 2], [2, 2]) if spec.pool2 else (c2, None)
                bn = model.bn2
                if spec.batchnorm:
                    normed, saved_mean, saved_invstd = aten.native_batch_norm(
                        pooled, bn.weight, bn.bias, bn.running_mean, bn.running_var, True, bn.momentum, bn.eps)[:3]
                    bn.num_batches_tracked.add_(1)
                else:
                    normed = pooled
                maps = normed.relu_() if spec.relu2 else normed
                features = model.features(maps)
                hidden = torch.addmm(fc1_bias, features, fc1_weight.t()).relu_()
                log_probs = torch.addmm(fc2_bias, hidden, fc2_weight.t()).float().log_softmax(1)
                # targets as cross_entropy's label smoothing spreads them: the loss is -sum(targets * log p)
                smoothing, batch = self.recipe.label_smoothing, len(y)
                targets = torch.full_like(log_probs, smoothing / 10).scatter_(
                    1, y[:, None], 1 - smoothing + smoothing / 10)
                self.loss_sum -= (targets * log_probs).sum() / batch
            with record_function("backward"):
                grad_logits = log_probs.exp_().sub_(targets).div_(batch)  # softmax - targets, the mean's 1/N
                grad_out = grad_logits.to(dtype)
                fc2_grad, fc2_bias_grad = grad_out.t() @ hidden, grad_logits.sum(0)
                grad_hidden = aten.threshold_backward(grad_out @ fc2_weight, hidden, 0)
                fc1_grad, fc1_bias_grad = grad_hidden.t() @ features, grad_hidden.sum(0, dtype=torch.float32)
                grad_features = grad_hidden @ fc1_weight
                side = maps.shape[-1]
                grad_maps = (grad_features.view(batch, side, side, -1).permute(0, 3, 1, 2) if spec.hwc_features
                             else grad_features.view(maps.shape))
                grad_normed = aten.threshold_backward(grad_maps, maps, 0) if spec.relu2 else grad_maps
                if spec.batchnorm:
                    grad_pooled, gamma_grad, beta_grad = aten.native_batch_norm_backward(
                        grad_normed, pooled, bn.weight, bn.running_mean, bn.running_var, saved_mean, saved_invstd,
                        True, bn.eps, [True, True, True])
                else:
                    grad_pooled = grad_normed
                grad_c2 = aten.max_pool2d_with_indices_backward(
                    grad_pooled, c2, [2, 2], [2, 2], [0, 0], [1, 1], False, indices) if spec.pool2 else grad_pooled
                has_bias = conv2_bias is not None
                _, conv2_grad, conv2_bias_grad = aten.convolution_backward(
                    grad_c2, a1, conv2_weight, [spec.conv2] if has_bias else None, [spec.stride2] * 2, [0, 0],
                    [1, 1], False, [0, 0], 1, [False, True, has_bias])
                grads = [(model.conv2.weight, conv2_grad), (model.fc1.weight, fc1_grad), (model.fc1.bias, fc1_bias_grad),
                         (model.fc2.weight, fc2_grad), (model.fc2.bias, fc2_bias_grad)]
                if spec.batchnorm:
                    grads += [(bn.weight, gamma_grad), (bn.bias, beta_grad)]
                if has_bias:
                    grads.append((model.conv2.bias, conv2_bias_grad))
                return {id(p): g.to(p.dtype) for p, g in grads}

    def adam(self, grads: list[torch.Tensor]) -> None:
        """PyTorch's fused Adam kernel with this step's lr, then the next step's lr from the table."""
        recipe = self.recipe
        torch._foreach_add_(self.state_steps, 1)
        torch._fused_adam_(self.params, grads, self.exp_avgs, self.exp_avg_sqs, [], self.state_steps,
                           lr=self.rates[self.index], beta1=recipe.beta1, beta2=recipe.beta2,
                           weight_decay=recipe.weight_decay, eps=1e-8, amsgrad=False, maximize=False)
        self.index += 1


class ExplicitEvaluation(nn.Module):
    """The model's forward in eval mode (BatchNorm's running statistics), in the step's precision, conv1's
    ReLU fused: the log-probabilities the module's own forward gives under autocast, for the test pass."""

    def __init__(self, step: ExplicitStep):
        super().__init__()
        self.step = step
        self.model = step.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model, spec, dtype = self.model, self.step.spec, self.step.dtype
        conv2_bias = None if model.conv2.bias is None else model.conv2.bias.to(dtype)
        maps = F.conv2d(self.step.first_block(x), model.conv2.weight.to(dtype), conv2_bias, spec.stride2)
        if spec.pool2:
            maps = F.max_pool2d(maps, 2)
        maps = model.bn2(maps)
        if spec.relu2:
            maps = maps.relu_()
        hidden = F.linear(model.features(maps), model.fc1.weight.to(dtype), model.fc1.bias.to(dtype)).relu_()
        return F.linear(hidden, model.fc2.weight.to(dtype), model.fc2.bias.to(dtype)).log_softmax(1)
