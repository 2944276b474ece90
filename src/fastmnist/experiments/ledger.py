"""The seed ledger: which seeds each sweep, search and bench has run for each recipe definition, and what
for. A claim must come from seeds no tuning saw, and a seed's range alone cannot say that (a search can be
pointed at any seeds), so every command that runs seeds writes them here, and a bench labels its seeds
"tuning" where a sweep or search of the same definition already used them.

A recipe is known by its definition (every resolved field, a user network's file by its content), hashed,
never by its name: `fastest` today and `fastest` after an edit are two recipes. The ledger lives in the
user's cache folder (one JSON line an entry, appended whole) and, for commands that run through a store, in
that store too (a study of its own), so every worker of a shared study sees what the others used.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import uuid
from pathlib import Path

from fastmnist.recipes.recipe import Recipe
from fastmnist.experiments.seeds import TUNING_FIRST_SEED, describe_seeds, parse_seed_range

LEDGER_FILE = "seed-ledger.jsonl"
STORE_STUDY = "fastmnist seed ledger"
SELECTING = ("tuning", "verification")  # uses that pick among recipes by their results: not fresh afterwards


# Fields of Recipe and NetSpec added after definitions were first recorded, with their neutral values: left out
# of the hash at those values, so every recipe defined before keeps the definition its seeds were recorded under.
ADDED_SINCE_THE_LEDGER = {"space_to_depth": False, "bf16_images": False, "stride2": 1, "pool2": True,
                          "backward": "autograd", "test_views": "plain"}


def without_neutral(fields: dict, neutral: dict) -> dict:
    """`fields` less those at the neutral value of a field added later: an identity hashed from them (a
    definition, a search's) stays what it was before the field existed."""
    return {k: v for k, v in fields.items() if (k, v) not in neutral.items()}


def definition(recipe: Recipe) -> str:
    """12 hex digits naming what a recipe runs: its fields without name, summary and lineage, and for a user's
    network the bytes of the file that defines it (an edit makes a new definition)."""
    from fastmnist.results.records import recipe_record

    record = {k: v for k, v in recipe_record(recipe).items() if k not in ("name", "summary", "parent", "changes")}
    record = without_neutral(record, ADDED_SINCE_THE_LEDGER)
    if isinstance(record.get("net"), dict):  # a field added since is hashed only where it changes something
        record["net"] = without_neutral(record["net"], ADDED_SINCE_THE_LEDGER)
    if isinstance(record.get("net"), dict) and "factory" in record["net"]:
        where = record["net"]["factory"].rpartition(":")[0]
        if where.endswith(".py") and Path(where).is_file():
            record["net"]["source_sha256"] = hashlib.sha256(Path(where).read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:12]


def entry(recipe: Recipe, seeds: list[int], use: str, command: str, where: str = "") -> dict:
    """One line of the ledger: `recipe` ran `seeds` for `use` (tuning, verification or claim) in `command`."""
    return {"definition": definition(recipe), "recipe": recipe.name, "seeds": describe_seeds(list(seeds)),
            "use": use, "command": command, "where": where,
            "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def same_use(e: dict) -> tuple:
    """What makes two entries one: the definition, seeds, use, command and where (not when)."""
    return e["definition"], e["seeds"], e["use"], e.get("command"), e.get("where")


def local_path() -> Path:
    from fastmnist.data import cache_dir

    return cache_dir() / LEDGER_FILE


class Ledger:
    """The ledger of this user (the cache folder) and, with `storage`, of that store."""

    def __init__(self, storage: str | None = None):
        self.storage = storage
        self._study = None

    def study(self):
        if self._study is None and self.storage:
            from fastmnist.experiments.store import open_study

            self._study, _ = open_study(self.storage, STORE_STUDY)
        return self._study

    def add(self, entries: list[dict]) -> None:
        """Append entries: each one line written by one call, so concurrent writers never interleave; in the
        store, each a study attribute of its own key, so workers never overwrite each other."""
        known = {same_use(e) for e in self.entries()}
        entries = [e for e in entries if same_use(e) not in known]  # a rerun adds nothing new
        if not entries:
            return
        path = local_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
        if self.study() is not None:
            for e in entries:
                self.study().set_user_attr(f"{e['when']} {uuid.uuid4().hex[:8]}", e)

    def entries(self) -> list[dict]:
        """Every entry of the local file (a line cut short by a crash is skipped) and of the store."""
        found = []
        path = local_path()
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict) and {"definition", "seeds", "use"} <= set(value):
                    found.append(value)
        if self.study() is not None:
            found += [v for v in self.study().user_attrs.values() if isinstance(v, dict)]
        return found

    def seed_use(self, recipe: Recipe, seeds: list[int]) -> tuple[str, str]:
        """'claim' or 'tuning' for `recipe` on `seeds`, and why: tuning when any seed lies in the tuning range or
        a sweep's or search's tuning or verification of the same definition ran it."""
        if any(s >= TUNING_FIRST_SEED for s in seeds):
            return "tuning", f"seeds from {TUNING_FIRST_SEED:,} are the tuning range"
        mine, wanted = definition(recipe), set(seeds)
        for e in self.entries():
            if e["definition"] != mine or e["use"] not in SELECTING:
                continue
            shared = wanted & set(parse_seed_range(e["seeds"]))
            if shared:
                return "tuning", (f"seeds {describe_seeds(sorted(shared))} were used for {e['use']} by "
                                  f"{e.get('command', '?')} {e.get('where', '')}".rstrip() + f" ({e.get('when', '?')})")
        return "claim", "no sweep or search of this definition used these seeds"
