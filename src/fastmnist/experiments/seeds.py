"""Which seeds a command runs. A seed is a whole try (initial weights and data order), and a claim must come
from tries that no tuning saw: `sweep` draws from the tuning range, `bench` and `ladder` from the claims
range, so their defaults never meet. Either can be given any range (`--seeds 100-124`, `--first-seed`), and
every record names the seeds it used.
"""

from __future__ import annotations

from fastmnist.errors import FastMnistError

MAX_SEED = 2 ** 63 - 1  # what every RNG PyTorch and numpy seed accepts
CLAIM_FIRST_SEED = 100  # bench, ladder: claims (seeds below 100 served early tuning: never a claim's)
TUNING_FIRST_SEED = 1_000_000  # sweep: tuning; a bench would need a million seeds to reach it
MAX_RUNS = 1_000_000  # the most seeds one command runs, however they are written


def int_range(part: str, option: str, text: str, example: str) -> tuple[int, int]:
    """'9-12' -> (9, 12), '7' -> (7, 7): one piece of a range option (--seeds, --stages); a piece that is not
    one, or runs backwards, is one line naming the option."""
    low, dash, high = part.strip().partition("-")
    try:
        first, last = int(low), int(high if dash else low)
    except ValueError:
        raise FastMnistError(f"{option} {text!r}: expected e.g. {example}") from None
    if first > last:
        raise FastMnistError(f"{option} {text!r}: range {part.strip()} is reversed; write {last}-{first}")
    return first, last


def parse_seed_range(text: str) -> list[int]:
    """'100-124' -> seeds 100..124; '7' -> [7]; '3,5,9-10' -> [3, 5, 9, 10]."""
    seeds: list[int] = []
    for part in text.split(","):
        if part.strip().startswith("-"):
            negative = "-" + part.strip()[1:].split("-")[0]
            raise FastMnistError(f"--seeds {text!r}: {negative} is negative; seeds run from 0 to {MAX_SEED}")
        first, last = int_range(part, "--seeds", text, "100-124 or 3,5,9-12")
        if first < 0 or last > MAX_SEED:
            raise FastMnistError(f"--seeds {text!r}: seeds run from 0 to {MAX_SEED}")
        if len(seeds) + last - first >= MAX_RUNS:
            raise FastMnistError(f"--seeds {text!r}: more than {MAX_RUNS:,} runs in all")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        raise FastMnistError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


def checked_int(name: str, value, low: int, high: int | None = None) -> int:
    """`value` if it is an integer in [low, high], else the one line the CLI would give for it: the Python
    API checks what the command line checks, before anything is loaded."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FastMnistError(f"{name}={value!r}: expected an integer")
    if value < low:
        raise FastMnistError(f"{name}={value}: must be at least {low}")
    if high is not None and value > high:
        raise FastMnistError(f"{name}={value}: too large (at most {high})")
    return value


def choose_seeds(runs: int, first_seed: int | None, seeds: str | list[int] | None, default_first: int) -> list[int]:
    """The seeds a command runs: `seeds` when given (a range text or a list), else `runs` of them from
    `first_seed` (default: the command's range)."""
    checked_int("runs", runs, 1, MAX_RUNS)
    if first_seed is not None:
        checked_int("first_seed", first_seed, 0, MAX_SEED)
    if seeds is not None:
        if first_seed is not None:
            raise FastMnistError("give --seeds or --first-seed, not both")
        return parse_seed_range(seeds) if isinstance(seeds, str) else check_seed_list(seeds)
    first = default_first if first_seed is None else first_seed
    if not 0 <= first <= MAX_SEED - runs:
        raise FastMnistError(f"--first-seed {first}: seeds run from 0 to {MAX_SEED}")
    return list(range(first, first + runs))


def check_seed_list(seeds) -> list[int]:
    if not isinstance(seeds, (list, tuple, range)) or not seeds:
        raise FastMnistError(f"seeds={seeds!r}: expected a range text such as '100-124', or a list of integers")
    for seed in seeds:
        checked_int("seed", seed, 0, MAX_SEED)
    if len(set(seeds)) != len(seeds):
        raise FastMnistError("a seed is listed twice")
    return list(seeds)


def seed_use(seeds: list[int]) -> str:
    """What a record's seeds are fit for: a claim, or tuning (any of them in the tuning range)."""
    return "tuning" if any(s >= TUNING_FIRST_SEED for s in seeds) else "claim"


def describe_seeds(seeds: list[int]) -> str:
    """'100-124' for a run of consecutive seeds, else the list."""
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ",".join(map(str, seeds))
