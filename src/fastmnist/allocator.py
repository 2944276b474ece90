"""Who keeps the memory a step frees: the C library (`system`), or this process (`retain`).

On a CPU, PyTorch allocates each activation and gradient with the C library's malloc and frees it again
within the step. glibc hands blocks over 128 KiB (and, after a while, whatever it adjusts that to) straight
back to the kernel and trims the top of its heaps, so the next step's tensors land on fresh pages, and the
kernel zero-fills every 4 KiB page on first touch: hundreds to thousands of page faults per step of stage 20,
a fifth or more of its time. `retain` tells glibc, with `mallopt`, to keep what is freed (no trimming below
1 GiB, nothing under 32 MiB served by its own mmap), which is what PyTorch's CUDA caching allocator does on
a GPU by default, and what Intel's CPU tuning guides get by preloading jemalloc or tcmalloc.

A process cannot undo it: glibc stops adjusting its thresholds once they are set, so a process that has
retained is no longer a `system` process. `Runner` therefore runs a recipe whose allocator differs from
the process's in a worker process started for that allocator (`Worker`), so that one bench can compare
both side by side. Where there is no glibc (macOS, Windows, musl) `retain` does nothing, and every run
record says which allocator ran.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import socket
import subprocess
import sys
import warnings
from multiprocessing.connection import Connection

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
RETAIN_TRIM_BYTES = 1 << 30  # free memory at a heap's top kept up to this much
RETAIN_MMAP_BYTES = 32 << 20  # the largest threshold glibc accepts on 64-bit: blocks under it come from heaps

_current = "system"
_ran = False  # whether a run has happened here: after one, the process keeps the allocator it ran with
_unavailable = False  # retain was asked for where mallopt is missing: warned once


def current() -> str:
    """The allocator this process runs with."""
    return _current


def running() -> str:
    """The allocator a run starting now runs with; from here on this process does not switch."""
    global _ran
    _ran = True
    return _current


def here(allocator: str) -> bool:
    """Whether a run wanting `allocator` can run in this process: it is in force, or nothing has run yet and
    this process can switch to it (or, lacking mallopt, cannot retain anywhere)."""
    if allocator != _current and not _ran and _current == "system":
        use(allocator)
    return allocator == _current or _unavailable


def mallopt():
    """glibc's mallopt, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt
    except (OSError, AttributeError):
        return None


def use(allocator: str) -> str:
    """Switch this process to `allocator` (only ever from system to retain); returns the one in force."""
    global _current, _unavailable
    if allocator == _current or _unavailable:
        return _current
    if allocator != "retain" or _current != "system":
        raise ValueError(f"a process cannot go from the {_current} allocator to {allocator!r}")
    setter = mallopt()
    if setter is None or not (setter(M_TRIM_THRESHOLD, RETAIN_TRIM_BYTES) and
                              setter(M_MMAP_THRESHOLD, RETAIN_MMAP_BYTES)):
        warnings.warn("allocator=retain: this C library has no glibc mallopt, so the system allocator runs "
                      "(each run's record says so)", RuntimeWarning, stacklevel=2)
        _unavailable = True
        return _current
    _current = "retain"
    return _current


WORKERS: dict[tuple[str, int], Worker] = {}  # one per allocator and thread count, kept for the process's life


def worker(allocator: str, threads: int) -> Worker:
    """The worker process for `allocator`, started on first use (a second or two: Python, PyTorch)."""
    key = (allocator, threads)
    if key not in WORKERS or WORKERS[key].process.poll() is not None:
        WORKERS[key] = Worker(allocator, threads)
    return WORKERS[key]


class Worker:
    """A process of its own, started once with the allocator a recipe needs, that runs recipes as this one
    would: the same data, device, threads and warm-up, one `Runner` of its own. Runs are sent one at a
    time and waited for, so the two processes never run at once (one bench's pairs stay side by side)."""

    def __init__(self, allocator: str, threads: int):
        from fastmnist.userfile import LOADED

        # a new interpreter (not a fork: its C library must not have retained anything), started as a module
        # so that a user's script without a `__main__` guard is not run again in it; one socket carries
        # pickled commands and answers both ways
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fastmnist.allocator", str(theirs.fileno()), allocator, str(threads),
             *map(str, LOADED.values())], pass_fds=[theirs.fileno()])
        theirs.close()
        self.name = f"the {allocator}-allocator worker process"
        self.connection = Connection(ours.detach())
        self.bound = None

    def bind(self, runner: int, mnist, device, warmup: bool) -> Worker:
        """Serve the runner numbered `runner` (the data and settings it was made with) from now on."""
        if self.bound != runner:
            self.call("runner", mnist, device, warmup)
            self.bound = runner
        return self

    def call(self, *message):
        from fastmnist.errors import FastMnistError

        try:
            self.connection.send(message)
            status, value = self.connection.recv()
        except (EOFError, OSError):
            raise FastMnistError(f"{self.name} ended unexpectedly (exit code {self.process.poll()})") from None
        if status == "error":
            raise FastMnistError(value)
        return value


def serve(connection: Connection, allocator: str, user_files: list[str], threads: int) -> None:
    """The worker's loop: switch allocator, load the user's files (so their recipes unpickle), then answer
    `runner`, `warm`, `run` and `excluded` until the parent goes."""
    import torch

    from fastmnist.errors import FastMnistError
    from fastmnist.runner import Runner
    from fastmnist.userfile import load_module

    use(allocator)
    torch.set_num_threads(threads)
    for path in user_files:
        load_module(path)
    runner = None
    while True:
        try:
            command, *args = connection.recv()
        except (EOFError, OSError):  # the parent is gone (finished, or stopped with Ctrl-C)
            return
        try:
            if command == "runner":
                mnist, device, warmup = args
                runner = Runner(mnist, device, warmup=warmup)
                answer = ("ok", None)
            elif command == "warm":
                answer = ("ok", runner.warm(args[0]))
            elif command == "run":
                result = runner.run(*args)
                result.model = None  # the model stays here: commands that keep one run it in their own process
                answer = ("ok", result)
            elif command == "excluded":
                answer = ("ok", runner.excluded_seconds(args[0]))
            else:
                answer = ("error", f"unknown worker command {command!r}")
        except FastMnistError as exc:
            answer = ("error", str(exc))
        except Exception as exc:  # a bug or a failed run: the parent reports it in one line
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            connection.send(answer)
        except OSError:
            return


if __name__ == "__main__":  # a Worker's process: python -m fastmnist.allocator FD ALLOCATOR THREADS [USER_FILE ...]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; this one ends with it
    from fastmnist import allocator  # the module the trainer reads, not this __main__ copy of it

    allocator.serve(Connection(int(sys.argv[1])), sys.argv[2], sys.argv[4:], int(sys.argv[3]))
