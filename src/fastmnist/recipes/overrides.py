"""Recipes from text, one syntax for all of it: a name (`stage14`, `fastest`), `NAME[FIELD=VALUE,...]`,
`FILE.py:NAME`, `--set FIELD=VALUE`, and the `FIELD=V1,V2,...` or `FIELD=LOW:HIGH[:STEP|:log]` of a sweep's
`--param` and a search's `--space`. Every value is checked as its field's type, choices and bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastmnist.errors import FastMnistError
from fastmnist.recipes.recipe import (NET_FIELDS, PARAM_BOUNDS, PARAM_CHOICES, Recipe, derive, in_bounds,
                                      tunable_params)
from fastmnist.recipes.stages import RECIPES, fastest_name
from fastmnist.training.nets import NetSpec, net_name


def parse_param(recipe: Recipe, key: str, text: str):
    """Parse `text` as the type of `recipe.key`, checking choices and bounds."""
    if key not in tunable_params():
        raise FastMnistError(f"unknown parameter {key!r}; valid: {', '.join(tunable_params())}")
    if key in NET_FIELDS and not isinstance(recipe.net, NetSpec):
        raise FastMnistError(f"{key} is a field of fastmnist's own network; {recipe.name} uses "
                             f"{net_name(recipe.net)}")
    current = getattr(recipe.net if key in NET_FIELDS else recipe, key)
    text = text.strip()
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            value = text.lower() in ("true", "1", "yes")
        elif isinstance(current, int):
            value = int(text)
        elif isinstance(current, float):
            value = float(text)
        else:
            value = text
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(type(current), "a text")
        raise FastMnistError(f"{key}={text!r}: expected {kind}") from None
    if key in PARAM_CHOICES and value not in PARAM_CHOICES[key]:
        raise FastMnistError(f"{key}={text!r}: choose from {', '.join(PARAM_CHOICES[key])}")
    if key in PARAM_BOUNDS and not in_bounds(value, PARAM_BOUNDS[key]):
        raise FastMnistError(f"{key}={text!r}: out of range {PARAM_BOUNDS[key]}")
    return value


def split_assignment(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise FastMnistError(f"{text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), value


def with_overrides(recipe: Recipe, assignments: list[str]) -> Recipe:
    """The recipe with KEY=VALUE assignments applied; the name gains a marker so reports show it."""
    if not assignments:
        return recipe
    changes = {}
    for text in assignments:
        key, value = split_assignment(text)
        changes[key] = parse_param(recipe, key, value)
    return overridden(recipe, changes)


def overridden(recipe: Recipe, changes: dict) -> Recipe:
    """The recipe with parsed `changes`, named NAME[key=value,...] as reports print it: a name that
    `get_recipe` turns back into this recipe."""
    label = ",".join(f"{k}={v}" for k, v in changes.items())
    return derive(recipe, f"{recipe.name}[{label}]", f"{recipe.name} with {label}", **changes)


def get_recipe(name: str) -> Recipe:
    """A recipe by name: built in, 'fastest', or 'FILE.py:NAME' from the user's own file;
    'NAME[key=value,...]' is that recipe with overrides, as reports print them."""
    if name.endswith("]") and "[" in name:
        base, inner = name[:-1].split("[", 1)
        return with_overrides(get_recipe(base), [a for a in inner.split(",") if a.strip()])
    if ".py:" in name:
        from fastmnist.recipes.userfile import load_object

        recipe = load_object(name)
        if not isinstance(recipe, Recipe):
            raise FastMnistError(f"{name} is a {type(recipe).__name__}, not a fastmnist Recipe "
                                 f"(make one with fastmnist.derive(fastmnist.recipe('stage14'), ...))")
        return recipe
    if name == "fastest":
        name = fastest_name()
    if name not in RECIPES:
        raise FastMnistError(f"unknown recipe {name!r}; choose from: fastest, {', '.join(RECIPES)}, "
                             f"or FILE.py:NAME")
    return RECIPES[name]


@dataclass(frozen=True)
class Dimension:
    """One field's values to try: a list (`choices`), or for a search a range (low:high[:step|log])."""
    name: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple | None = None


def parse_fields(recipe: Recipe, texts: list[str], option: str, ranges: bool) -> tuple[Dimension, ...]:
    """['lr=0.005,0.01', 'batch_size=256:1024:64', ...] -> one Dimension per field, in the order given, every
    value and bound checked as --set checks it, before anything runs. `ranges`: LOW:HIGH forms allowed
    (a search's --space; a sweep's --param takes lists)."""
    forms = "NAME=LOW:HIGH[:STEP|:log] or NAME=V1,V2,..." if ranges else "NAME=V1,V2,..."
    if not texts:
        raise FastMnistError(f"give at least one {option} {forms}")
    dims: list[Dimension] = []
    for text in texts:
        name, values = split_assignment(text)
        if name in {d.name for d in dims}:
            raise FastMnistError(f"{option} {name} given twice")
        if ranges and ":" in values:
            dims.append(parse_range(recipe, f"{option} {text!r}", name, values.split(":")))
            continue
        choices = tuple(dict.fromkeys(parse_param(recipe, name, v) for v in values.split(",") if v.strip()))
        if not choices:
            raise FastMnistError(f"{option} {text!r}: no values")
        dims.append(Dimension(name, choices=choices))
    return tuple(dims)


def parse_range(recipe: Recipe, where: str, name: str, parts: list[str]) -> Dimension:
    if len(parts) not in (2, 3):
        raise FastMnistError(f"{where}: expected NAME=LOW:HIGH, NAME=LOW:HIGH:STEP or LOW:HIGH:log")
    low, high = (parse_param(recipe, name, v) for v in parts[:2])
    if isinstance(low, (bool, str)):
        raise FastMnistError(f"{where}: {name} takes a list of values, not a range")
    if not low < high:
        raise FastMnistError(f"{where}: LOW must be below HIGH")
    log = len(parts) == 3 and parts[2].strip() == "log"
    if log and low <= 0:
        raise FastMnistError(f"{where}: a log range needs LOW above 0")
    step = None
    if len(parts) == 3 and not log:
        try:
            step = type(low)(parts[2].strip())
        except ValueError:
            raise FastMnistError(f"{where}: STEP {parts[2].strip()!r} is not "
                                 f"{'an integer' if isinstance(low, int) else 'a number'} (or 'log')") from None
        if not step > 0:
            raise FastMnistError(f"{where}: STEP must be > 0")
        if step > high - low:
            raise FastMnistError(f"{where}: STEP {step:g} is larger than the range {low:g}..{high:g}, "
                                 f"which would hold one point")
    return Dimension(name, low, high, step, log)


def read_space_file(path: str | Path) -> list[str]:
    """A named space: a TOML file of NAME = "LOW:HIGH[:STEP|:log]" or "V1,V2,..." lines (a [space] table or
    top level), so a search is reproducible from a file kept beside its results."""
    import tomllib

    try:
        table = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise FastMnistError(f"--space-file {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise FastMnistError(f"--space-file {path}: not TOML ({exc})") from None
    table = table.get("space", table)
    texts = []
    for name, value in table.items():
        if isinstance(value, list):
            value = ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in value)
        if not isinstance(value, str):
            raise FastMnistError(f"--space-file {path}: {name} = {value!r}: expected a text such as "
                                 f"\"0.01:0.03:log\" or a list of values")
        texts.append(f"{name}={value}")
    return texts
