"""The recipe: every field of a training run in one frozen dataclass, `derive` to make one from another
with named changes, and the checks every recipe passes (type, choices and bounds of each field, a network
that builds) before anything runs, whether it came from the command line or from Python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fastmnist.errors import FastMnistError
from fastmnist.training.nets import NETS, NetFactory, NetSpec, net_name
from fastmnist.training.views import TEST_VIEWS


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line: what this recipe is
    net: NetSpec | NetFactory = NETS["A"]  # our family's spec, or a user's factory of any nn.Module
    data_path: str = "dataloader"  # "dataloader": per-sample Dataset + DataLoader; "memory": whole tensors
    batch_size: int = 64
    test_batch_size: int = 1000
    drop_last: bool = False  # floor (True) or ceil (False) batches per epoch
    optimizer: str = "adadelta"  # adadelta | adam | sgd | muon (Muon for hidden weights, Adam for the rest)
    lr: float = 1.0  # the peak lr under onecycle
    beta1: float = 0.9  # adam
    beta2: float = 0.999
    momentum: float = 0.9  # sgd (nesterov)
    muon_lr: float = 0.02  # muon: the peak lr of the hidden weights' Muon update (lr stays Adam's)
    muon_momentum: float = 0.95
    muon_scope: str = "hidden"  # hidden: every hidden weight matrix (conv filters and fc1) | conv: conv filters only
    weight_decay: float = 0.0
    fused_optimizer: bool = False  # adam/sgd: one fused kernel updates every parameter (torch's fused=True)
    schedule: str = "step"  # step: x gamma each epoch | onecycle: stepped every batch
    gamma: float = 0.7
    pct_start: float = 0.3  # onecycle warm-up share
    epochs: int = 14
    early_stop: bool = False  # stop after the first epoch whose test accuracy >= target
    target: float = 99.0  # the test accuracy (%) the recipe is meant to reach: early stop and statistics
    eval_every_epoch: bool = True  # the original evaluates after every epoch, inside the timed region
    train_fraction: float = 1.0  # share of the 60k training images used each epoch
    data_order: str = "seed"  # in memory: seed: each seed draws its own order (and subset) | fixed: one for all
    label_smoothing: float = 0.0
    test_views: str = "plain"  # the test pass averages the softmax over shifted copies of each image (views.py)
    channels_last: bool = False
    precision: str = "fp32"  # fp32 | bf16 (autocast; falls back to fp32 where the CPU lacks bf16)
    bf16_images: bool = False  # in memory, under bf16: images prepared in bf16, not cast by autocast each batch
    threads: int = 0  # CPU threads for this recipe's runs, set before the clock starts (0: the process's)
    compile: bool = False  # torch.compile the model (compile time is warm-up, reported, not timed)
    engine: str = "eager"  # eager | graph: one epoch of steps captured once, replayed per run (CUDA; engine.py)
    backward: str = "autograd"  # autograd | explicit: gradients written out by hand, run eagerly (explicit.py)
    parent: str | None = None
    changes: tuple[str, ...] = field(default=(), compare=False)  # the field names changed from the parent


PARAM_CHOICES = {
    "data_path": ("dataloader", "memory"),
    "optimizer": ("adadelta", "adam", "sgd", "muon"),
    "muon_scope": ("hidden", "conv"),
    "schedule": ("step", "onecycle"),
    "precision": ("fp32", "bf16"),
    "engine": ("eager", "graph"),
    "backward": ("autograd", "explicit"),
    "data_order": ("seed", "fixed"),
    "test_views": tuple(TEST_VIEWS),
}
NET_FIELDS = {f.name for f in dataclasses.fields(NetSpec)}
BOOKKEEPING = {"name", "summary", "parent", "changes"}


def derive(parent: Recipe, name: str, summary: str, **changes) -> Recipe:
    """`parent` with `changes` applied: any Recipe field, `net=` a NetSpec or a factory returning a
    torch.nn.Module, or our network's fields (conv1=24, ...) directly."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Recipe)} - NET_FIELDS - BOOKKEEPING)
    if unknown:
        raise FastMnistError(f"derive {name!r}: unknown field {unknown[0]!r}; valid: {', '.join(tunable_params())}")
    net_changes = {k: changes.pop(k) for k in list(changes) if k in NET_FIELDS}
    if net_changes:
        base = changes.get("net", parent.net)
        if not isinstance(base, NetSpec):
            raise FastMnistError(f"derive {name!r}: {', '.join(net_changes)} are fields of fastmnist's own "
                                 f"network, and this recipe's net is {net_name(base)}")
        changes["net"] = dataclasses.replace(base, **net_changes)
    changed = tuple(k for k, v in changes.items() if getattr(parent, k) != v)
    child = dataclasses.replace(parent, name=name, summary=summary, parent=parent.name, changes=changed, **changes)
    if "net" not in changes or isinstance(child.net, NetSpec):
        check_fields(child)  # a user's factory is checked (built once) when it runs, not at every derive
    return child


def check_fields(recipe: Recipe) -> None:
    """check_recipe without building a user's network: cheap enough for every derive."""
    check_recipe(dataclasses.replace(recipe, net=NetSpec()) if not isinstance(recipe.net, NetSpec) else recipe)


def describe_changes(parent: Recipe | None, child: Recipe) -> list[str]:
    """'field: old -> new' for each differing field; nets are described field by field."""
    if parent is None:
        return ["(starting point)"]
    lines = []
    for f in dataclasses.fields(Recipe):
        if f.name in BOOKKEEPING:
            continue
        old, new = getattr(parent, f.name), getattr(child, f.name)
        if old == new:
            continue
        if f.name == "net" and isinstance(old, NetSpec) and isinstance(new, NetSpec):
            inner = [f"{g.name} {getattr(old, g.name)} -> {getattr(new, g.name)}"
                     for g in dataclasses.fields(NetSpec) if getattr(old, g.name) != getattr(new, g.name)]
            lines.append(f"net {net_name(old)} -> {net_name(new)} ({', '.join(inner)})")
        elif f.name == "net":
            lines.append(f"net {net_name(old)} -> {net_name(new)}")
        else:
            lines.append(f"{f.name} {old} -> {new}")
    return lines


def flat_fields(recipe: Recipe) -> dict[str, object]:
    """The recipe's fields by the names --set takes, its own network's included (a user's network by its
    name)."""
    values = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(Recipe) if f.name not in BOOKKEEPING}
    net = values.pop("net")
    if isinstance(net, NetSpec):
        values.update({g.name: getattr(net, g.name) for g in dataclasses.fields(NetSpec)})  # as --set names them
    else:
        values["net"] = net_name(net)
    return values


APPLIES = {  # fields that only some recipes use, and when they do
    "momentum": lambda r: r.optimizer == "sgd",
    "beta1": lambda r: r.optimizer in ("adam", "muon"),
    "beta2": lambda r: r.optimizer in ("adam", "muon"),
    "muon_lr": lambda r: r.optimizer == "muon",
    "muon_momentum": lambda r: r.optimizer == "muon",
    "muon_scope": lambda r: r.optimizer == "muon",
    "fused_optimizer": lambda r: r.optimizer in ("adam", "sgd"),
    "bf16_images": lambda r: r.precision == "bf16" and r.data_path == "memory",
    "gamma": lambda r: r.schedule == "step",
    "pct_start": lambda r: r.schedule == "onecycle",
    "data_order": lambda r: True,
    "dropout1": lambda r: isinstance(r.net, NetSpec) and r.net.dropout1 > 0,
    "dropout2": lambda r: isinstance(r.net, NetSpec) and r.net.dropout2 > 0,
}


def applies(recipe: Recipe, name: str) -> bool:
    """Whether a field changes anything in this recipe's runs (momentum without SGD does not)."""
    return APPLIES.get(name, lambda r: True)(recipe)


# Allowed ranges for values given on the command line (--set, sweep --param), in interval notation.
PARAM_BOUNDS = {
    "batch_size": "[1, 60000]", "test_batch_size": "[1, 10000]", "epochs": "[1, 100]", "lr": "(0, 100]",
    "beta1": "[0, 1)", "beta2": "[0, 1)", "momentum": "[0, 1)",
    "muon_lr": "(0, 10]", "muon_momentum": "[0, 1)", "weight_decay": "[0, 1]", "gamma": "(0, 1]",
    "pct_start": "(0, 1)", "target": "(0, 100]", "train_fraction": "(0, 1]", "label_smoothing": "[0, 1)",
    "dropout1": "[0, 1)", "dropout2": "[0, 1)", "conv1": "[1, 1024]", "conv2": "[1, 1024]", "fc": "[1, 8192]",
    "kernel1": "[1, 7]", "kernel2": "[1, 5]", "stride1": "[1, 2]", "stride2": "[1, 2]", "threads": "[0, 1024]",
}


def in_bounds(value: float, interval: str) -> bool:
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


def tunable_params() -> list[str]:
    """Every field that --set and sweep --param accept: the recipe's own and its network's."""
    own = [f.name for f in dataclasses.fields(Recipe) if f.name not in BOOKKEEPING | {"net"}]
    return own + sorted(NET_FIELDS)


def check_value(key: str, value, default) -> None:
    """One field's value as --set would accept it: its type (the default's), choices and bounds."""
    kind = type(default)
    ok = isinstance(value, bool) if kind is bool else (
        isinstance(value, int) and not isinstance(value, bool) if kind is int else
        isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else isinstance(value, kind))
    if not ok:
        words = {bool: "true or false", int: "an integer", float: "a number", str: "a text"}.get(kind, kind.__name__)
        raise FastMnistError(f"{key}={value!r}: expected {words}")
    if key in PARAM_CHOICES and value not in PARAM_CHOICES[key]:
        raise FastMnistError(f"{key}={value!r}: choose from {', '.join(PARAM_CHOICES[key])}")
    if key in PARAM_BOUNDS and not (value == value and in_bounds(value, PARAM_BOUNDS[key])):
        raise FastMnistError(f"{key}={value!r}: out of range {PARAM_BOUNDS[key]}")


def check_recipe(recipe) -> Recipe:
    """`recipe` if every field is one --set would accept (type, choices, bounds), its name is a name and its
    network can be built; else the one line the CLI gives. The Python API and `derive` check with it, so a
    recipe made in Python is refused before anything loads, as on the command line."""
    from fastmnist.training.nets import check_net

    if not isinstance(recipe, Recipe):
        raise FastMnistError(f"{recipe!r}: not a recipe (a name such as 'stage14', or a fastmnist Recipe)")
    if not isinstance(recipe.name, str) or not recipe.name.strip():
        raise FastMnistError(f"name={recipe.name!r}: a recipe needs a name (reports list runs by it)")
    defaults = Recipe("", "")
    for f in dataclasses.fields(Recipe):
        if f.name not in BOOKKEEPING | {"net"}:
            check_value(f.name, getattr(recipe, f.name), getattr(defaults, f.name))
    if isinstance(recipe.net, NetSpec):
        for f in dataclasses.fields(NetSpec):
            check_value(f.name, getattr(recipe.net, f.name), getattr(NetSpec(), f.name))
    elif not callable(recipe.net):
        raise FastMnistError(f"net={recipe.net!r}: expected a NetSpec or a function that returns a torch.nn.Module")
    check_net(recipe.net)
    if recipe.backward == "explicit":
        from fastmnist.training.explicit import explicit_problems

        problems = explicit_problems(recipe)
        if problems:
            raise FastMnistError(f"{recipe.name}: {problems[0]}")
    return recipe
