"""Recipes: every hyperparameter of a training run in one place, and the ladder as data.

Each stage is the stage before it plus named changes (`derive`), so `fastmnist recipes --diff` and the
ladder report print what changed from the definitions themselves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fastmnist.errors import FastMnistError
from fastmnist.models import NETS, NetSpec, net_name


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line: what this recipe is
    net: NetSpec = NETS["A"]
    data_path: str = "dataloader"  # "dataloader": per-sample Dataset + DataLoader; "memory": whole tensors
    batch_size: int = 64
    test_batch_size: int = 1000
    drop_last: bool = False  # floor (True) or ceil (False) batches per epoch
    optimizer: str = "adadelta"  # adadelta | adam | sgd
    lr: float = 1.0  # the peak lr under onecycle
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    momentum: float = 0.9  # sgd (nesterov)
    weight_decay: float = 0.0
    schedule: str = "step"  # step: x gamma each epoch | onecycle: stepped every batch
    gamma: float = 0.7
    pct_start: float = 0.3  # onecycle warm-up share
    epochs: int = 14
    early_stop: bool = False  # stop after the first epoch whose test accuracy >= target
    target: float = 99.0
    eval_every_epoch: bool = True  # the seed evaluates after every epoch, inside the timed region
    train_fraction: float = 1.0  # share of the 60k training images used each epoch
    label_smoothing: float = 0.0
    channels_last: bool = False
    precision: str = "fp32"  # fp32 | bf16 (autocast; falls back to fp32 where the CPU lacks bf16)
    compile: bool = False  # torch.compile the model (compile time is warm-up, reported, not timed)
    parent: str | None = None
    changes: tuple[str, ...] = field(default=(), compare=False)  # the field names changed from the parent
    note: str = ""  # why the change, in a few words


PARAM_CHOICES = {
    "data_path": ("dataloader", "memory"),
    "optimizer": ("adadelta", "adam", "sgd"),
    "schedule": ("step", "onecycle"),
    "precision": ("fp32", "bf16"),
}
NET_FIELDS = {f.name for f in dataclasses.fields(NetSpec)}
BOOKKEEPING = {"name", "summary", "parent", "changes", "note"}


def derive(parent: Recipe, name: str, summary: str, note: str = "", **changes) -> Recipe:
    """`parent` with `changes` applied; net fields (conv1=24, ...) may be given directly."""
    net_changes = {k: changes.pop(k) for k in list(changes) if k in NET_FIELDS}
    if net_changes:
        changes["net"] = dataclasses.replace(changes.get("net", parent.net), **net_changes)
    changed = tuple(k for k, v in changes.items() if getattr(parent, k) != v)
    return dataclasses.replace(parent, name=name, summary=summary, parent=parent.name, changes=changed,
                               note=note, **changes)


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
        if f.name == "net":
            inner = [f"{g.name} {getattr(old, g.name)} -> {getattr(new, g.name)}"
                     for g in dataclasses.fields(NetSpec) if getattr(old, g.name) != getattr(new, g.name)]
            lines.append(f"net {net_name(old)} -> {net_name(new)} ({', '.join(inner)})")
        else:
            lines.append(f"{f.name} {old} -> {new}")
    return lines


def build_ladder() -> dict[str, Recipe]:
    """The seed's nine stages, exactly as LADDER.md gives them, then our CPU stages."""
    s0 = Recipe("stage0", "PyTorch's MNIST example, as is: 14 epochs, Adadelta + StepLR, batch 64")
    s1 = derive(s0, "stage1", "stop after the first epoch with test accuracy >= 99%", early_stop=True)
    s2 = derive(s1, "stage2", "smaller net: pool after conv1, first dropout removed", net=NETS["B"])
    s3 = derive(s2, "stage3", "whole dataset prepared once, kept in memory, sliced into batches",
                data_path="memory", drop_last=True)
    s4 = derive(s3, "stage4", "batch 128", batch_size=128)
    s5 = derive(s4, "stage5", "OneCycleLR with peak lr 4.0, fixed 2 epochs", schedule="onecycle", lr=4.0,
                epochs=2, early_stop=False, drop_last=False)
    s6 = derive(s5, "stage6", "batch 256", batch_size=256)
    s7 = derive(s6, "stage7", "widths 32/64 -> 24/32, last dropout removed", net=NETS["C"])
    s8 = derive(s7, "stage8", "conv1 kernel 5, fc 256, pool before ReLU, Adam, 1 epoch", net=NETS["D"],
                optimizer="adam", lr=0.01, betas=(0.7, 0.9), epochs=1, test_batch_size=2000)
    stages = [s0, s1, s2, s3, s4, s5, s6, s7, s8]
    return {r.name: r for r in stages}


RECIPES = build_ladder()
FASTEST = "stage8"  # the best recipe so far; `fastest` is its alias


def get_recipe(name: str) -> Recipe:
    if name == "fastest":
        name = FASTEST
    if name not in RECIPES:
        raise FastMnistError(f"unknown recipe {name!r}; choose from: fastest, {', '.join(RECIPES)}")
    return RECIPES[name]


def stage_number(name: str) -> int | None:
    return int(name[5:]) if name.startswith("stage") and name[5:].isdigit() else None
