"""MNIST on disk: find the four files, download them when allowed, verify, parse, and cache as arrays.

Everything here runs before the clock starts. The only thing the trainer needs is `load_mnist()`, which
returns verified uint8 arrays, from a cache when it holds exactly the canonical MNIST content.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from fastmnist.errors import DataError
from fastmnist.results.output import atomic_write

MEAN, STD = 0.1307, 0.3081  # pixel statistics of the training set, scaled to [0, 1]
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MIRROR_SETTING = "FASTMNIST_MIRROR"  # base URLs (comma-separated) tried instead of MIRRORS: a proxy, an internal copy
CACHE_FORMAT = 2  # bump when the cache layout changes


@dataclass(frozen=True)
class IdxFile:
    key: str
    stem: str  # canonical name, e.g. "train-images-idx3-ubyte"
    magic: int
    shape: tuple[int, ...]
    sha256: str  # of the decompressed IDX bytes: what every download and every file found is checked against

    def content_sha256(self, array: np.ndarray) -> str:
        """SHA-256 of the IDX file this array would be: header then bytes, as the canonical hash covers."""
        header = self.magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        return hashlib.sha256(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()

    @property
    def size(self) -> int:
        """Bytes of the uncompressed IDX file: header then pixels or labels."""
        return 4 + 4 * len(self.shape) + int(np.prod(self.shape))

    @property
    def names(self) -> tuple[str, ...]:
        """Every spelling we accept: -idx3-ubyte or .idx3-ubyte, raw or gzip."""
        dotted = self.stem.replace("-idx", ".idx")
        return (self.stem, self.stem + ".gz", dotted, dotted + ".gz")


FILES = (
    IdxFile("train_images", "train-images-idx3-ubyte", 2051, (60000, 28, 28),
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    IdxFile("train_labels", "train-labels-idx1-ubyte", 2049, (60000,),
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    IdxFile("test_images", "t10k-images-idx3-ubyte", 2051, (10000, 28, 28),
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    IdxFile("test_labels", "t10k-labels-idx1-ubyte", 2049, (10000,),
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)


@dataclass(frozen=True)
class Mnist:
    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8
    source: str  # where the data came from: a folder, or the cache file
    load_seconds: float
    cache: str = ""  # what happened to the cache: read, written, or why not


def mirrors() -> tuple[str, ...]:
    """Where downloads come from: $FASTMNIST_MIRROR's base URLs when set, else the public mirrors."""
    chosen = [url.strip() for url in os.environ.get(MIRROR_SETTING, "").split(",") if url.strip()]
    return tuple(url if url.endswith("/") else url + "/" for url in chosen) or MIRRORS


def candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """Where to look, in order: --data-dir alone if given, else $FASTMNIST_DATA, then the user cache."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    dirs = []
    if os.environ.get("FASTMNIST_DATA"):
        dirs.append(Path(os.environ["FASTMNIST_DATA"]).expanduser())
    dirs.append(default_data_dir())
    return dirs


def default_data_dir() -> Path:
    return Path(platformdirs.user_cache_dir("fastmnist")) / "mnist"


def cache_dir() -> Path:
    return Path(os.environ.get("FASTMNIST_CACHE") or platformdirs.user_cache_dir("fastmnist"))


def find_file(folder: Path, spec: IdxFile) -> Path | None:
    for name in spec.names:
        if (folder / name).is_file():
            return folder / name
    return None


def locate(data_dir=None) -> tuple[Path | None, list[Path]]:
    """The first candidate folder holding all four files, and every folder looked in."""
    dirs = candidate_dirs(data_dir)
    for folder in dirs:
        if all(find_file(folder, spec) for spec in FILES):
            return folder, dirs
    return None, dirs


READ_CHUNK = 1 << 20


def read_bytes(path: Path, spec: IdxFile) -> bytes:
    """The file's IDX bytes, raw or gunzipped in chunks, never more than one byte past the size MNIST's file
    has: a larger file (a gzip bomb under an MNIST name) is refused without being expanded."""
    too_big = DataError(f"{path}: larger than {spec.stem} is ({spec.size} bytes uncompressed): not an MNIST file")
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
        handle.seek(0)
        if not compressed:
            content = handle.read(spec.size + 1)
            if len(content) > spec.size:
                raise too_big
            return content
        parts, total = [], 0
        try:
            with gzip.GzipFile(fileobj=handle) as stream:
                while total <= spec.size:
                    chunk = stream.read(min(READ_CHUNK, spec.size + 1 - total))
                    if not chunk:
                        break
                    parts.append(chunk)
                    total += len(chunk)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path}: not a valid gzip file, truncated or corrupt ({exc})") from None
    if total > spec.size:
        raise too_big
    return b"".join(parts)


def parse_idx(content: bytes, spec: IdxFile, where: str) -> np.ndarray:
    """Parse one IDX file, checking magic number, dimensions, length and (for labels) range."""
    if len(content) < 8:
        raise DataError(f"{where}: too short to be an IDX file ({len(content)} bytes)")
    magic = int.from_bytes(content[:4], "big")
    if magic != spec.magic:
        raise DataError(f"{where}: wrong magic number {magic}, expected {spec.magic} for {spec.stem}")
    ndim = content[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(content[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims != spec.shape:
        raise DataError(f"{where}: shape {dims}, expected {spec.shape}")
    expected = header + int(np.prod(dims))
    if len(content) != expected:
        raise DataError(f"{where}: {len(content)} bytes, expected {expected} (truncated or padded file)")
    array = np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims).copy()  # owned, writable
    if spec.magic == 2049 and array.max() > 9:
        raise DataError(f"{where}: label {int(array.max())} out of range 0-9")
    return array


def read_folder(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for spec in FILES:
        path = find_file(folder, spec)
        if path is None:
            raise DataError(f"missing {spec.stem} (or .gz) in {folder}")
        content = read_bytes(path, spec)
        array = parse_idx(content, spec, str(path))
        digest = hashlib.sha256(content).hexdigest()
        if digest != spec.sha256:
            raise DataError(f"{path}: SHA-256 of the content is {digest[:16]}..., expected "
                            f"{spec.sha256[:16]}... (wrong or damaged file)")
        arrays[spec.key] = array
    return arrays


def download(folder: Path, hint: str) -> None:
    """Fetch the four .gz files from the public mirrors into `folder`, verified by MD5. A failure leaves
    nothing behind (a folder made for the download is removed again) and says first what to do (`hint`),
    then, on a second line, what went wrong."""
    import pooch  # only needed here; keeps `import fastmnist` light

    pooch.get_logger().setLevel("WARNING")  # its "known_hash" advice: fastmnist checks SHA-256 itself, and says so
    made = [parent for parent in [folder, *folder.parents] if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {folder} to download MNIST into ({exc.strerror or exc}); {hint}") from None
    try:
        fetch_all(folder, pooch, hint)
    except BaseException:
        for empty in made:  # innermost first: only folders this download made, and only if still empty
            with contextlib.suppress(OSError):
                empty.rmdir()
        raise


def fetch_all(folder: Path, pooch, hint: str) -> None:
    """Each missing file from the first mirror that serves it with MNIST's exact content: checked by the
    SHA-256 of the decompressed bytes (a mirror may recompress, changing the .gz's MD5, never the content)
    under a temporary name, then renamed into place, so a failed or wrong download leaves nothing."""
    for spec in FILES:
        if find_file(folder, spec):
            continue
        errors = []
        for mirror in mirrors():
            partial = folder / f".{spec.stem}.gz.part"
            try:
                pooch.retrieve(mirror + spec.stem + ".gz", known_hash=None, fname=partial.name, path=folder,
                               progressbar=sys.stderr.isatty())
                digest = hashlib.sha256(read_bytes(partial, spec)).hexdigest()
                if digest != spec.sha256:
                    raise DataError(f"served content with SHA-256 {digest[:16]}..., not MNIST's")
                os.replace(partial, folder / (spec.stem + ".gz"))
                break
            except Exception as exc:  # network errors come in many types; we report them all
                errors.append(f"{mirror}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            finally:
                partial.unlink(missing_ok=True)
        else:
            raise DataError(f"could not download MNIST: no network? {hint}\n  ({spec.stem}.gz: "
                            f"{'; '.join(errors)}; {MIRROR_SETTING} names other mirrors)"[:700])


def cache_path() -> Path:
    key = hashlib.sha256("".join(spec.sha256 for spec in FILES).encode()).hexdigest()[:16]
    return cache_dir() / f"mnist-v{CACHE_FORMAT}-{key}.npz"


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the cache is absent, unreadable, or not exactly MNIST: each array
    is checked against the canonical content hash, so a forged or damaged cache is rebuilt, never used."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {spec.key: stored[spec.key] for spec in FILES}
    except Exception:  # any unreadable cache is simply rebuilt
        return None
    for spec in FILES:
        array = arrays[spec.key]
        if array.dtype != np.uint8 or array.shape != spec.shape or spec.content_sha256(array) != spec.sha256:
            return None
    return arrays


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def warn(text: str) -> None:
    print(f"fastmnist: warning: {text}", file=sys.stderr)


def load_mnist(data_dir=None, allow_download: bool = False, use_cache: bool = True) -> Mnist:
    """Verified MNIST arrays: from --data-dir if given, else the verified cache, else the folders of
    `candidate_dirs` (downloading into the first when allowed). The cache is then (re)written."""
    try:
        return find_and_load(data_dir, allow_download, use_cache)
    except PermissionError as exc:  # a folder or file this user may not read: say which, in one line
        where = exc.filename or "a data file"
        raise DataError(f"{where}: permission denied; point FASTMNIST_DATA (or --data-dir) at a folder this user "
                        f"can read") from None


def find_and_load(data_dir, allow_download: bool, use_cache: bool) -> Mnist:
    start = time.perf_counter()
    if data_dir is not None and Path(data_dir).expanduser().exists() and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"--data-dir {data_dir}: is a file, not a folder")
    env = os.environ.get("FASTMNIST_DATA")
    if data_dir is None and env and Path(env).expanduser().exists() and not Path(env).expanduser().is_dir():
        raise DataError(f"FASTMNIST_DATA={env}: is a file, not a folder; point it at the folder holding the four "
                        f"MNIST files")
    cached = read_cache(cache_path()) if use_cache and data_dir is None else None
    if cached is not None:
        if env and locate(env)[0] is None:
            warn(f"FASTMNIST_DATA={env} holds no MNIST files; using the verified cache {cache_path()}")
        return Mnist(**cached, source=str(cache_path()), load_seconds=time.perf_counter() - start, cache="read")
    folder, looked = locate(data_dir)
    hint = (f"put the four MNIST files in {data_dir} (--data-dir)" if data_dir is not None else
            "set FASTMNIST_DATA (or --data-dir) to a folder holding the four MNIST files")
    if folder is None:
        if not allow_download:
            missing = [spec.stem for spec in FILES if not find_file(looked[0], spec)]
            raise DataError(f"MNIST not found: missing {', '.join(missing)} (looked in "
                            f"{', '.join(map(str, looked))}); run without --offline to download it, or {hint}")
        folder = looked[0]
        download(folder, hint)
    arrays = read_folder(folder)
    cache = "not used"
    if use_cache:
        try:
            write_cache(cache_path(), arrays)
            cache = "written"
        except OSError as exc:
            cache = f"not written ({exc.strerror or exc}): MNIST is read and verified from the files each time"
    return Mnist(**arrays, source=str(folder), load_seconds=time.perf_counter() - start, cache=cache)


def data(data_dir=None, offline: bool = False) -> list[str]:
    """Where MNIST is looked for, then found, verified (downloaded if allowed) and cached: a few lines."""
    looks = (f"looks in: {cache_path()} (verified cache), then {', '.join(map(str, candidate_dirs(data_dir)))}"
             if data_dir is None else f"looks in: {data_dir}")
    mnist = load_mnist(data_dir, allow_download=not offline)
    counts = " ".join(str(int((mnist.train_labels == d).sum())) for d in range(10))
    return [looks, f"MNIST OK: {len(mnist.train_labels)} training and {len(mnist.test_labels)} test images, "
                   f"verified by SHA-256, from {mnist.source}",
            f"training label counts 0-9: {counts}", f"cache: {cache_path()}: {mnist.cache}"]
