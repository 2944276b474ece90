"""Every file fastmnist writes goes through here: checked before the work starts, written atomically.

A write goes to a temporary file in the target's folder and is renamed into place, so a reader (or an
interrupted run) never sees half a file. The file gets the mode `open()` would give it under the user's
umask, not the temporary file's private 0600.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from fastmnist.errors import FastMnistError, OutputError


def file_mode() -> int:
    """0666 less the process umask: what a plain `open(path, "w")` would create."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def not_a_regular_file(path: Path) -> str | None:
    """What `path` is when it exists and is not a plain file: a rename would replace that thing with a file."""
    if not path.exists() or path.is_file():
        return None
    if path.is_dir():
        return "a directory"
    kind = "a device" if path.is_block_device() or path.is_char_device() else "a FIFO" if path.is_fifo() else \
        "a socket" if path.is_socket() else "not a regular file"
    return kind


def atomic_write(path: str | os.PathLike, write: Callable) -> Path:
    """Call `write(handle)` on a temporary file beside `path`, then rename it into place. An existing target
    that is not a regular file (a device, a FIFO) is never renamed over."""
    path = Path(path)
    if kind := not_a_regular_file(path):
        raise OSError(errno.EEXIST, f"{path} is {kind}, not a file fastmnist may replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode())


def json_text(payload) -> str:
    return json.dumps(payload, indent=1, default=str)


def write_json(path, payload) -> Path:
    return write_text(path, json_text(payload))


def save_figure(fig, path) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def check_writable(path: str | os.PathLike, what: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse, before any run starts, an output path that cannot be written: a directory, a folder that
    is a file or cannot be created, no write permission, or (when given) the wrong file type."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise FastMnistError(f"{what} {path}: expected a {' or '.join(suffixes)} file name")
    if kind := not_a_regular_file(path):
        raise FastMnistError(f"{what} {path}: is {kind}, expected a file name (fastmnist writes a new file and "
                             f"renames it into place)")
    check_folder(path.parent, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise FastMnistError(f"{what} {path}: the file exists and is not writable")
    return path


def check_folder(folder: str | os.PathLike, what: str) -> Path:
    """The folder exists (or can be made) and a file can be created in it; tried for real."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fastmnist-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FastMnistError(f"{what}: cannot write into {folder} ({exc.strerror or exc})") from None
    return folder


def fallback_path(path: Path) -> Path:
    """Where a result goes when its own path failed after the work: the temp folder, same file name."""
    fd, name = tempfile.mkstemp(prefix=f"fastmnist-{Path(path).stem}-", suffix=Path(path).suffix)
    os.close(fd)
    return Path(name)


def write_or_fallback(path, writer: Callable[[Path], object], what: str) -> Path:
    """Write with `writer(path)`; if that fails, write to a fallback file and raise OutputError naming it,
    so finished work is never lost to a full disk or a permission changed mid-run."""
    return write_results([(Path(path), writer, what)])[0]


def write_results(writes: list[tuple[Path, Callable[[Path], object], str]]) -> list[Path]:
    """Every (path, writer, what) of a finished command, each tried even when one before it failed; what
    could not be written where asked goes to a fallback file, and one OutputError (exit 1) then names them
    all. Returns the paths written."""
    written, failures = [], []
    for path, writer, what in writes:
        try:
            writer(Path(path))
            written.append(Path(path))
            continue
        except OSError as exc:
            reason = exc.strerror or str(exc)
        spare = fallback_path(Path(path))
        try:
            writer(spare)
        except OSError as exc:
            failures.append(f"could not write {what} to {path} ({reason}), nor to {spare} ({exc.strerror or exc}); "
                            f"the result above is all that is left")
            spare.unlink(missing_ok=True)
            continue
        written.append(spare)
        failures.append(f"could not write {what} to {path} ({reason}); saved it to {spare} instead")
    if failures:
        raise OutputError("; ".join(failures))
    return written


def pyplot():
    """matplotlib on its file backend, its font cache in fastmnist's cache folder (a HOME that cannot be
    written would otherwise cost a two-line warning on every plot)."""
    import os

    if "MPLCONFIGDIR" not in os.environ:
        from fastmnist.data import cache_dir

        os.environ["MPLCONFIGDIR"] = str(cache_dir() / "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_study(out_dir: str | os.PathLike, kind: str, record: dict, table: str, show, more=(),
                summary: str = "") -> list[Path]:
    """A sweep's or a search's files: KIND.json (its record), KIND.md (its table, then `summary`) and `more`
    (path, writer, what), written once `show(table, record)` has printed the table, so a full disk cannot take
    it away."""
    if show:
        show(table, record)
    out_dir, text = Path(out_dir), "\n".join([table, summary] if summary else [table])
    return write_results([(out_dir / f"{kind}.json", lambda path: write_json(path, record), f"the {kind}'s record"),
                          (out_dir / f"{kind}.md", lambda path: write_text(path, "```\n" + text + "\n```\n"),
                           f"the {kind}'s table"), *more])


def read_json_if_any(path: str | Path) -> dict | None:
    """A results file's JSON, or None when there is none (or it is not JSON: it will be replaced)."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return None
