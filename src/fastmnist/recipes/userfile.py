"""Objects from the user's own Python files: `my_exp.py:my_recipe`, and the import path of a network
factory that a saved model records so it can be rebuilt later."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from fastmnist.errors import FastMnistError

LOADED: dict[str, Path] = {}  # module name -> the user file it was loaded from


def load_module(path: str | Path):
    """Import a .py file once per process, under a name of its own, so its objects have a stable home."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FastMnistError(f"{path}: no such file")
    name = "fastmnist_user_" + "".join(c if c.isalnum() else "_" for c in str(path))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a file that calls exit() must not pass its code off as fastmnist's
        del sys.modules[name]
        raise FastMnistError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    LOADED[name] = path
    return module


def load_object(reference: str):
    """'FILE.py:NAME' or 'package.module:NAME' -> that object."""
    where, _, attr = reference.rpartition(":")
    if not where or not attr:
        raise FastMnistError(f"{reference!r}: expected FILE.py:NAME or module:NAME")
    if where.endswith(".py"):
        module = load_module(where)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise FastMnistError(f"{reference}: cannot import {where} ({exc})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(module) if not n.startswith("_"))
            raise FastMnistError(f"{reference}: {where} has no {attr!r} (it defines: {', '.join(names)})")
        obj = getattr(obj, part)
    return obj


def reference_of(obj) -> str:
    """Where `obj` can be loaded from again: 'FILE.py:NAME' for user files, else 'module:NAME'."""
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not name or "<" in name:
        raise FastMnistError(f"{obj!r} cannot be referred to by name (a lambda or a nested function?); "
                             f"define it at the top level of a module or file")
    return f"{LOADED[module]}:{name}" if module in LOADED else f"{module}:{name}"


def short_name(obj) -> str:
    """'residual.py:make_residual' for a user file's object, 'module:name' otherwise: for tables."""
    module, name = getattr(obj, "__module__", "?"), getattr(obj, "__qualname__", repr(obj))
    return f"{LOADED[module].name}:{name}" if module in LOADED else f"{module}:{name}"
