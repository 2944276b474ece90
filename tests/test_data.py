"""MNIST on disk: parsing, finding, verifying, caching and downloading (from a loopback mirror), and the one
line every bad file gets."""

import contextlib
import functools
import gzip
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from fastmnist.data import FILES, cache_path, load_mnist, parse_idx, read_cache, write_cache
from fastmnist.errors import DataError
from tests.conftest import idx_bytes, write_synthetic

LABELS = FILES[1]
IMAGES = FILES[2]


def test_parse_idx_round_trip():
    images = np.arange(10000 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(10000, 28, 28)
    parsed = parse_idx(idx_bytes(images, 2051), IMAGES, "x")
    assert parsed.shape == (10000, 28, 28)
    assert np.array_equal(parsed, images)


@pytest.mark.parametrize("content, message", [
    (idx_bytes(np.zeros(60000, np.uint8), 2051), "wrong magic number 2051"),
    (idx_bytes(np.zeros(60000, np.uint8), 2049)[:-5], "truncated"),
    (idx_bytes(np.zeros(59999, np.uint8), 2049), "shape (59999,)"),
    (idx_bytes(np.full(60000, 10, np.uint8), 2049), "label 10 out of range"),
    (b"\x00\x00", "too short"),
])
def test_parse_idx_rejects(content, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_idx(content, LABELS, "labels-file")


def test_real_data_is_verified_and_sane(real_mnist):
    assert real_mnist.train_images.shape == (60000, 28, 28)
    assert list(real_mnist.train_labels[:5]) == [5, 0, 4, 1, 9]
    assert np.bincount(real_mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(real_mnist.train_images.mean() / 255 - 0.1307) < 1e-3


def test_checksum_mismatch_is_refused(tmp_path):
    write_synthetic(tmp_path)
    with pytest.raises(DataError, match="SHA-256"):
        load_mnist(tmp_path)


def test_missing_file_names_file_and_folder(tmp_path):
    write_synthetic(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=f"missing t10k-labels-idx1-ubyte .*{tmp_path}"):
        load_mnist(tmp_path)


def test_truncated_gzip_is_refused(tmp_path):
    write_synthetic(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"  # the first file read
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_mnist(tmp_path)


def test_no_network_download_fails_with_advice(tmp_path, monkeypatch):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("network unreachable")
    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(DataError) as raised:
        load_mnist(tmp_path / "new" / "empty", allow_download=True)
    advice, detail = str(raised.value).splitlines()  # the advice first, in one short line; the why after
    assert advice.startswith("could not download MNIST: no network?") and len(advice) < 160
    assert "(--data-dir)" in advice and "FASTMNIST_DATA" not in advice  # --data-dir overrides it
    assert "network unreachable" in detail
    assert not (tmp_path / "new").exists()  # the folders made for the download are gone again
    monkeypatch.setenv("FASTMNIST_DATA", str(tmp_path / "env"))
    monkeypatch.setattr("fastmnist.data.default_data_dir", lambda: tmp_path / "user-data")
    with pytest.raises(DataError, match="no network\\? set FASTMNIST_DATA"):
        load_mnist(allow_download=True, use_cache=False)
    assert not (tmp_path / "env").exists()


def test_raw_and_dotted_spellings_are_found(tmp_path, real_mnist):
    for spec in FILES:
        array = getattr(real_mnist, spec.key)
        (tmp_path / spec.stem.replace("-idx", ".idx")).write_bytes(idx_bytes(array, spec.magic))
    mnist = load_mnist(tmp_path)
    assert np.array_equal(mnist.test_labels, real_mnist.test_labels)


def test_cache_round_trip_and_corrupt_cache_is_rebuilt(real_mnist, monkeypatch):
    shared = real_mnist.source
    first = load_mnist(shared)  # reads the folder, writes the cache
    assert cache_path().is_file()
    cached = read_cache(cache_path())
    assert cached is not None and np.array_equal(cached["train_labels"], first.train_labels)
    from_cache = load_mnist()
    assert from_cache.source == str(cache_path())
    # change bytes in the middle of the cache: it must fail the content hash and be rebuilt, not trusted
    blob = bytearray(cache_path().read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 64] = b"\xff" * 64
    cache_path().write_bytes(bytes(blob))
    assert read_cache(cache_path()) is None
    monkeypatch.setenv("FASTMNIST_DATA", shared)
    rebuilt = load_mnist()
    assert rebuilt.source == shared
    assert read_cache(cache_path()) is not None


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    arrays = {spec.key: np.zeros(spec.shape, np.uint8) for spec in FILES}

    def broken_savez(handle, **kwargs):
        handle.write(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        write_cache(tmp_path / "c.npz", arrays)
    assert list(tmp_path.iterdir()) == []


def test_forged_cache_is_not_taken_for_mnist(real_mnist, monkeypatch, capsys):
    """A well-formed cache of other arrays (Fashion-MNIST, say) is checked against MNIST's own hashes."""
    forged = {spec.key: getattr(real_mnist, spec.key).copy() for spec in FILES}
    forged["train_images"][0, 14, 14] ^= 1  # one pixel of 47 million
    write_cache(cache_path(), forged)
    assert read_cache(cache_path()) is None
    monkeypatch.setenv("FASTMNIST_DATA", real_mnist.source)
    assert load_mnist().source == real_mnist.source  # read from the files, and the cache rewritten
    assert read_cache(cache_path()) is not None
    monkeypatch.setenv("FASTMNIST_DATA", "/nonexistent/mnist")
    assert load_mnist().source == str(cache_path())
    assert "FASTMNIST_DATA=/nonexistent/mnist holds no MNIST files; using the verified cache" in capsys.readouterr().err


def test_unwritable_cache_is_reported_not_claimed(real_mnist, monkeypatch):
    monkeypatch.setenv("FASTMNIST_CACHE", "/proc/fastmnist-cache")
    mnist = load_mnist(real_mnist.source)
    assert mnist.cache.startswith("not written")


def test_a_gzip_bomb_under_an_mnist_name_is_refused_without_expanding_it(tmp_path):
    import gzip

    from fastmnist.data import read_bytes

    spec = FILES[1]  # train labels: 60,008 bytes uncompressed
    bomb = tmp_path / (spec.stem + ".gz")
    with gzip.open(bomb, "wb", compresslevel=1) as handle:
        for _ in range(64):
            handle.write(bytes(1 << 20))  # 64 MiB of zeros, ~64 KB on disk
    with pytest.raises(DataError, match="larger than train-labels-idx1-ubyte is \\(60008 bytes"):
        read_bytes(bomb, spec)
    raw = tmp_path / spec.stem
    raw.write_bytes(bytes(spec.size + 1))
    with pytest.raises(DataError, match="larger than"):
        read_bytes(raw, spec)


def test_data_dir_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_mnist(a_file, allow_download=True)
    with pytest.raises(DataError, match="cannot create .* to download MNIST into"):
        load_mnist(a_file / "below", allow_download=True)


def test_fastmnist_data_naming_a_file_is_one_clear_line(tmp_path, monkeypatch):
    a_file = tmp_path / "mnist.npz"
    a_file.write_bytes(b"not a folder")
    monkeypatch.setenv("FASTMNIST_DATA", str(a_file))
    with pytest.raises(DataError, match=r"FASTMNIST_DATA=.*mnist.npz: is a file, not a folder"):
        load_mnist(allow_download=True, use_cache=False)
    assert a_file.read_bytes() == b"not a folder"


@contextlib.contextmanager
def mirror_serving(folder: Path):
    """An HTTP mirror on the loopback interface serving `folder`, for the test's duration."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_mirror_is_downloaded_from_through_the_real_code_and_checked(real_mnist, tmp_path, monkeypatch):
    """FASTMNIST_MIRROR replaces the public mirrors: the files come through pooch, are checked by the SHA-256
    of their content (the mirror recompressed them), and a mirror serving something else leaves nothing."""
    served, wrong = tmp_path / "served", tmp_path / "wrong"
    served.mkdir()
    wrong.mkdir()
    for spec in FILES:
        content = idx_bytes(getattr(real_mnist, spec.key), spec.magic)
        (served / (spec.stem + ".gz")).write_bytes(gzip.compress(content, compresslevel=1))
    write_synthetic(wrong)
    with mirror_serving(wrong) as bad, mirror_serving(served) as good:
        monkeypatch.setenv("FASTMNIST_MIRROR", bad)
        with pytest.raises(DataError) as raised:
            load_mnist(tmp_path / "first", allow_download=True, use_cache=False)
        assert "not MNIST's" in str(raised.value) and "FASTMNIST_MIRROR" in str(raised.value)
        assert not (tmp_path / "first").exists()  # nothing half-downloaded is left
        monkeypatch.setenv("FASTMNIST_MIRROR", f"{bad},{good}")  # the first serves garbage, the second MNIST
        mnist = load_mnist(tmp_path / "second", allow_download=True, use_cache=False)
    assert mnist.source == str(tmp_path / "second") and np.array_equal(mnist.test_labels, real_mnist.test_labels)
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == sorted(s.stem + ".gz" for s in FILES)
