"""How a recipe's steps run, and how each run starts from a new model.

An engine builds the model and its step (`step.py`) once per recipe, before any clock (`build`). Each run
then has two parts: `lay_out(seed)` writes the seed's data order before the clock, and `start(seed)`,
inside it, is model creation: the built model re-initialised in place to exactly what a new model with that
seed would be (`FreshWeights`), and the step started afresh. `start` refuses a seed whose order is not the
one written. The recipe's `engine` picks how steps run:
- `eager`: Python calls the step for each batch.
- `graph`: on CUDA, one whole epoch of steps is captured as a CUDA graph once per recipe (reported as
  `capture`), and each run replays it once an epoch; evaluation and early stop run between replays. On a
  CPU there is nothing to capture: the same step runs eagerly (a compiled step was measured slower here,
  docs/engines-and-gpus.md), and every record says which engine ran.
Where steps run eagerly, `backward=explicit` makes the step `explicit.ExplicitStep` (gradients written out
by hand, no autograd), recorded as engine `explicit`; a CUDA graph captures autograd's step as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol

import torch
from torch import nn

from fastmnist.errors import FastMnistError
from fastmnist.recipes.recipe import Recipe
from fastmnist.training.explicit import ExplicitStep
from fastmnist.training.layout import PreparedData, memory_batches, train_batches
from fastmnist.training.nets import INIT_IMAGES, build_net, net_name
from fastmnist.training.step import TrainStep

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture: cuDNN/cuBLAS set-up, grads, Adam state
RUN_CONSTANTS = {"GRAPH_WARMUP_STEPS": "eager steps before a CUDA graph capture"}  # for `recipes --show`


def engine_used(recipe: Recipe, device: torch.device) -> str:
    """What actually runs the steps: `graph` for engine=graph on CUDA (an epoch captured and replayed), else
    `explicit` for backward=explicit (the hand-written step, eagerly), else `eager`."""
    if recipe.engine == "graph" and device.type == "cuda":
        return "graph"
    return "explicit" if recipe.backward == "explicit" else "eager"


@dataclass
class Run:
    """What the trainer drives: the model (and what evaluates it), the step, and one epoch of training that
    returns how many images it trained on."""
    model: nn.Module
    forward: Callable
    step: TrainStep | ExplicitStep
    train_epoch: Callable[[], int]


class Engine(Protocol):
    """What the trainer asks of an engine; both engines below implement it with these signatures."""
    recipe: Recipe
    data: PreparedData
    used: str  # what ran the steps, as records name it: eager, explicit or graph

    def build(self) -> float:
        """The model and its step (and a graph capture), once, untimed; returns the capture's seconds."""

    def lay_out(self, seed: int) -> tuple[str, float]:
        """The seed's training order written, before the clock: its fingerprint and the seconds it took."""

    def start(self, seed: int, warmup: bool) -> Run:
        """Model creation, inside the clock: the model reset to a new one with this seed, the step afresh."""


class FreshWeights:
    """Model creation without building a model. PyTorch's default init lives in each layer's
    `reset_parameters`, which a layer's constructor calls once; so re-seeding torch's global generator and
    calling them again, in the order the constructor did, draws the same numbers a new model would. They are
    drawn into a template on the CPU in the default memory layout, where a new model draws them (a model
    made on CUDA or converted to channels_last is built on the CPU first), then copied into the model in
    place, and `init_from_data` runs on the run's first images. The seed goes into torch's global generator
    because the default init and dropout draw from it; the data order has its own (layout.training_order).

    Checked once per recipe, before any clock, against models built from scratch: a user's network whose
    constructor draws numbers no `reset_parameters` redraws is instead built anew each run and copied in."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.template = build_net(recipe.net)
        self.layers = [m for m in self.template.modules() if hasattr(m, "reset_parameters")]
        self.in_place = all(self.reproduces_new_model(seed) for seed in (0, 1))

    def draw(self, seed: int) -> nn.Module:
        """The template holding a new model's default init for `seed`."""
        torch.manual_seed(seed)
        if not self.in_place:
            return build_net(self.recipe.net)
        with torch.no_grad():
            for layer in self.layers:
                layer.reset_parameters()
        return self.template

    def reproduces_new_model(self, seed: int) -> bool:
        torch.manual_seed(seed)
        new = build_net(self.recipe.net)
        after_new = torch.get_rng_state()
        self.in_place = True
        drawn = self.draw(seed)
        return torch.equal(after_new, torch.get_rng_state()) and all(
            a.shape == b.shape and torch.equal(a, b) for a, b in zip(tensors(new), tensors(drawn), strict=True))

    def new_model(self, data: PreparedData) -> nn.Module:
        """A model on the data's device in the recipe's memory layout (weights: the template's), once."""
        model = build_net(self.recipe.net).to(data.device)
        if self.recipe.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def reset(self, model: nn.Module, data: PreparedData, seed: int) -> None:
        """`model` re-initialised in place as a new model with `seed` would be, inside the clock."""
        with torch.no_grad():
            for target, source in zip(tensors(model), tensors(self.draw(seed)), strict=True):
                target.copy_(source)
        if hasattr(model, "init_from_data"):
            model.init_from_data(data.first_train_images(INIT_IMAGES))


def tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer, persistent or not: what makes one model's state another's."""
    return [*model.parameters(), *model.buffers()]


class EagerEngine:
    """Python feeds the step batch by batch."""

    capturable = False  # the step's optimizers keep their state where a captured graph can replay them

    def __init__(self, recipe: Recipe, data: PreparedData):
        self.recipe, self.data = recipe, data
        self.used = engine_used(recipe, data.device)
        self.model: nn.Module | None = None

    def build(self) -> float:
        if self.model is None:
            self.weights = FreshWeights(self.recipe)
            self.model = self.weights.new_model(self.data)
            self.forward = torch.compile(self.model) if self.recipe.compile else self.model
            _, steps_per_epoch = train_batches(self.data, self.recipe, warmup=False)
            if self.used == "explicit":
                self.step = ExplicitStep(self.model, self.recipe, steps_per_epoch, self.data.device)
                self.forward = self.step.evaluator
            else:
                self.step = TrainStep(self.model, self.forward, self.recipe, steps_per_epoch, self.data.device,
                                      capturable=self.capturable)
        return 0.0

    def lay_out(self, seed: int) -> tuple[str, float]:
        return self.data.lay_out(self.recipe, seed)

    def reset(self, seed: int) -> None:
        if not self.data.holds_order(self.recipe, seed):
            raise RuntimeError(f"{self.recipe.name}: seed {seed}'s data order is not laid out: call lay_out first")
        self.weights.reset(self.model, self.data, seed)
        self.step.reset()

    def start(self, seed: int, warmup: bool) -> Run:
        self.reset(seed)
        epoch_batches, _ = train_batches(self.data, self.recipe, warmup)
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

    capturable = True
    # What failed, once a capture has failed in this process: PyTorch's allocator cannot capture again after
    # a failed capture (torch.cuda.graph has no try/finally), so the state is the process's, not an engine's.
    failed_capture: ClassVar[str] = ""

    def __init__(self, recipe: Recipe, data: PreparedData):
        problems = graph_problems(recipe)
        if problems:
            raise FastMnistError(f"{recipe.name}: engine=graph {problems[0]}; use engine=eager")
        super().__init__(recipe, data)
        self.graph: torch.cuda.CUDAGraph | None = None

    def build(self) -> float:
        """Build the model and step, warm them up on a side stream, capture one epoch. Untimed; once.
        The warm-up runs with CUDA's sync debug mode set to error, so a network that asks the host
        anything is refused before any capture; after a failed capture every graph recipe of the process is
        refused in one line."""
        if self.graph is not None:
            return 0.0
        if CudaGraphEngine.failed_capture:
            raise FastMnistError(f"{self.recipe.name}: a CUDA graph capture failed earlier in this process "
                                 f"({CudaGraphEngine.failed_capture}), after which PyTorch cannot capture again; "
                                 f"run this recipe in a new process, or use engine=eager")
        start = time.perf_counter()
        super().build()
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
            CudaGraphEngine.failed_capture = f"{self.recipe.name}: {one_line(exc)}"
            raise FastMnistError(f"{self.recipe.name}: network {net_name(self.recipe.net)} cannot be captured as "
                                 f"a CUDA graph ({one_line(exc)}); use engine=eager") from None
        torch.cuda.synchronize()
        self.graph = graph
        return time.perf_counter() - start

    def start(self, seed: int, warmup: bool) -> Run:
        """The captured model reset as the eager engine resets its own, then one replay an epoch: the graph
        reads the buffers `lay_out` wrote the seed's order into."""
        self.reset(seed)

        def train_epoch() -> int:
            self.graph.replay()
            return self.images
        return Run(self.model, self.model, self.step, train_epoch)


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


def make_engine(recipe: Recipe, data: PreparedData) -> Engine:
    """The engine that runs `recipe` on this data's device (see the module's docstring)."""
    if engine_used(recipe, data.device) == "graph":
        return CudaGraphEngine(recipe, data)
    return EagerEngine(recipe, data)
