"""The training step as one unit, and the engines that run it.

`TrainStep` is forward, loss, backward, optimizer update and the next learning rate, chosen and built once
per model. The learning rates of the whole run are a table on the model's device, indexed by a step counter
that lives there too, and on CUDA Adam keeps its state and reads its learning rate there (capturable), so a
step asks nothing of the CPU. A table rather than a scheduler with a tensor learning rate because PyTorch's
schedulers compute each value in Python and write it into the optimizer after every step, which a captured
graph cannot replay; the table is filled by those same schedulers (OneCycleLR, StepLR), so the values are
the ones the eager loop always used.

Both engines build the model and its step once per recipe, before any clock, and reset them per run to
exactly what a new model with the run's seed and a new step would be (default init, `init_from_data` on the
run's first images, zeroed optimizer state; inside the clock). The recipe's `engine` picks how steps run:
- `eager`: Python calls the step for each batch.
- `graph`: on CUDA, one whole epoch of steps is captured as a CUDA graph once per recipe (reported as
  `capture`), and each run replays it once an epoch; evaluation and early stop run between replays. On a
  CPU there is nothing to capture: the same step runs eagerly (a compiled step was measured slower here,
  docs/engines-and-gpus.md), and every record says which engine ran.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from fastmnist.errors import FastMnistError
from fastmnist.layout import PreparedData, memory_batches, train_batches
from fastmnist.device import native_bf16
from fastmnist.models import INIT_IMAGES, NetSpec, build_net, net_name
from fastmnist.recipes import Recipe

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture: cuDNN/cuBLAS set-up, grads, Adam state
RUN_CONSTANTS = {"GRAPH_WARMUP_STEPS": "eager steps before a CUDA graph capture"}  # for `recipes --show`


def effective_precision(recipe: Recipe, device: torch.device) -> str:
    """bf16 only where the hardware multiplies it natively; elsewhere fp32, recorded as such."""
    return "bf16" if recipe.precision == "bf16" and native_bf16(device) else "fp32"


def engine_used(recipe: Recipe, device: torch.device) -> str:
    """What actually runs the steps: `graph` for engine=graph on CUDA (an epoch captured and replayed), else `eager`."""
    return "graph" if recipe.engine == "graph" and device.type == "cuda" else "eager"


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


def new_model(recipe: Recipe, data: PreparedData, seed: int) -> nn.Module:
    """Model creation as every run does it, inside the clock: the network with PyTorch's default init from
    `seed`, its data-dependent init (the run's first training images), then its memory layout. The seed goes
    into torch's global generator because PyTorch's default init and dropout draw from it; the data order
    has its own (layout.training_order)."""
    torch.manual_seed(seed)
    model = build_net(recipe.net).to(data.device)
    if hasattr(model, "init_from_data"):
        model.init_from_data(data.first_train_images(INIT_IMAGES))
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass
class Run:
    """What the trainer drives: the model (and what evaluates it), the step, and one epoch of training that
    returns how many images it trained on."""
    model: nn.Module
    forward: Callable
    step: TrainStep
    train_epoch: Callable[[], int]


class EagerEngine:
    """The model and its step are built once per recipe, before any clock; each run resets them to what a
    new model with its seed and a new step would be (`reset`, inside the clock), then Python feeds the step
    batch by batch."""

    used = "eager"

    def __init__(self, recipe: Recipe, data: PreparedData):
        self.recipe, self.data = recipe, data
        self.model: nn.Module | None = None

    def build(self, capturable: bool = False) -> float:
        """The model, its forward (compiled where the recipe says) and its step, once; returns the seconds
        of a graph capture (none here)."""
        if self.model is None:
            self.model = new_model(self.recipe, self.data, seed=0)  # any weights do: every run resets them
            self.forward = torch.compile(self.model) if self.recipe.compile else self.model
            _, steps_per_epoch = train_batches(self.data, self.recipe, seed=0, warmup=False)
            self.step = TrainStep(self.model, self.forward, self.recipe, steps_per_epoch, self.data.device,
                                  capturable=capturable)
        return 0.0

    def reset(self, seed: int) -> None:
        """Model creation, inside the clock: a model is created with the run's seed exactly as a new one would
        be (default init, `init_from_data` on the run's first images, its memory layout), and every
        parameter and buffer, persistent or not, is copied into the built one; the step starts afresh."""
        fresh = new_model(self.recipe, self.data, seed)
        with torch.no_grad():
            for target, source in zip([*self.model.parameters(), *self.model.buffers()],
                                      [*fresh.parameters(), *fresh.buffers()]):
                target.copy_(source)
        self.step.reset()

    def start(self, seed: int, warmup: bool) -> Run:
        self.reset(seed)
        epoch_batches, _ = train_batches(self.data, self.recipe, seed, warmup)
        step = self.step

        def train_epoch() -> int:
            seen = 0
            for x, y in epoch_batches():
                step(x, y)
                seen += len(y)
            return seen
        return Run(self.model, self.forward, step, train_epoch)


class CudaGraphEngine(EagerEngine):
    """One epoch of steps captured as a CUDA graph once per recipe; each run resets and replays it."""

    used = "graph"

    def __init__(self, recipe: Recipe, data: PreparedData):
        problems = graph_problems(recipe)
        if problems:
            raise FastMnistError(f"{recipe.name}: engine=graph {problems[0]}; use engine=eager")
        super().__init__(recipe, data)
        self.graph: torch.cuda.CUDAGraph | None = None

    def build(self) -> float:
        """Build the model and step, warm them up on a side stream, capture one epoch. Untimed; once.
        The warm-up runs with CUDA's sync debug mode set to error, so a network that asks the host
        anything is refused before any capture; a capture that fails anyway leaves PyTorch's allocator
        unable to capture again in this process (torch.cuda.graph has no try/finally), so after one,
        every graph recipe of the process is refused in one line."""
        global FAILED_CAPTURE
        if self.graph is not None:
            return 0.0
        if FAILED_CAPTURE:
            raise FastMnistError(f"{self.recipe.name}: a CUDA graph capture failed earlier in this process "
                                 f"({FAILED_CAPTURE}), after which PyTorch cannot capture again; run this "
                                 f"recipe in a new process, or use engine=eager")
        start = time.perf_counter()
        super().build(capturable=True)
        unreset = unregistered_tensors(self.model)
        if unreset:
            raise FastMnistError(f"{self.recipe.name}: network {net_name(self.recipe.net)} keeps tensor "
                                 f"{unreset[0]} outside its parameters and buffers, so a replayed run could not "
                                 f"start afresh; register it (register_buffer) or use engine=eager")
        self.batches = memory_batches(self.data, self.recipe)
        self.images = sum(len(y) for _, y in self.batches)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            torch.cuda.set_sync_debug_mode("error")
            try:
                with torch.cuda.stream(side):  # every batch shape once (the last batch may be partial)
                    for x, y in [*self.batches[:GRAPH_WARMUP_STEPS - 1], self.batches[-1]]:
                        self.step(x, y)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            torch.cuda.current_stream().wait_stream(side)
        except Exception as exc:
            raise FastMnistError(f"{self.recipe.name}: network {net_name(self.recipe.net)} cannot be captured as "
                                 f"a CUDA graph (its step {one_line(exc)}); use engine=eager") from None
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                for x, y in self.batches:
                    self.step(x, y)
        except Exception as exc:
            FAILED_CAPTURE = f"{self.recipe.name}: {one_line(exc)}"
            raise FastMnistError(f"{self.recipe.name}: network {net_name(self.recipe.net)} cannot be captured as "
                                 f"a CUDA graph ({one_line(exc)}); use engine=eager") from None
        torch.cuda.synchronize()
        self.graph = graph
        return time.perf_counter() - start

    def start(self, seed: int, warmup: bool) -> Run:
        """The captured model reset as the eager engine resets its own (inside the clock), then one replay an
        epoch. The run's data order is already in the buffers the graph reads (written before the clock)."""
        self.reset(seed)

        def train_epoch() -> int:
            self.graph.replay()
            return self.images
        return Run(self.model, self.model, self.step, train_epoch)


FAILED_CAPTURE = ""  # what failed, once a capture has failed in this process (see CudaGraphEngine.build)


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def unregistered_tensors(model: nn.Module) -> list[str]:
    """Tensors a module keeps as plain attributes, outside its parameters and buffers: a captured model
    is reset through those two, so such a tensor would carry over from one replayed run to the next."""
    return [f"{name}.{attr}" if name else attr for name, module in model.named_modules()
            for attr, value in vars(module).items() if isinstance(value, torch.Tensor)]


def graph_problems(recipe: Recipe) -> list[str]:
    """Why a recipe's steps cannot be captured, one line each."""
    found = []
    if recipe.data_path != "memory":
        found.append("needs data_path=memory: the per-sample DataLoader of stages 0-2 feeds each batch from "
                     "the CPU, which a captured graph cannot")
    if recipe.optimizer != "adam":
        found.append(f"captures Adam's update only (capturable, its learning rate on the device); this recipe "
                     f"uses {recipe.optimizer}")
    if recipe.compile:
        found.append("and compile=True are two ways to build one step: choose one")
    return found


def make_engine(recipe: Recipe, data: PreparedData):
    """The engine that runs `recipe` on this data's device (see the module's docstring)."""
    if engine_used(recipe, data.device) == "graph":
        return CudaGraphEngine(recipe, data)
    return EagerEngine(recipe, data)
