"""Tests for scratchae.data: IDX parsing, loading, downloading, the sample.

Everything runs offline: downloads go to a local http.server on 127.0.0.1,
and all MNIST files are tiny synthetic ones written into tmp_path.
"""

import functools
import gzip
import hashlib
import http.server
import socket
import struct
import threading

import numpy as np
import pytest

import scratchae.data as data
from scratchae.data import (
    MNIST,
    DownloadError,
    build_sample,
    default_cache_dir,
    download_mnist,
    load_mnist,
    load_sample,
    read_idx,
)

NAMES = data.FILES  # train images, train labels, test images, test labels


# --------------------------------------------------------------------------
# Helpers: tiny synthetic MNIST
# --------------------------------------------------------------------------

def idx_bytes(array):
    """IDX encoding of a uint8 array of shape (n, 28, 28) or (n,)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x803 if array.ndim == 3 else 0x801
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def tiny_arrays(n_train=20, n_test=10, seed=0):
    """Random uint8 images and labels i % 10, in FILES order."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            (np.arange(n_train) % 10).astype(np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            (np.arange(n_test) % 10).astype(np.uint8))


def file_name(name, gz=True, dotted=False):
    if dotted:
        name = name.replace("-idx", ".idx", 1)
    return name + ".gz" if gz else name


def write_mnist_dir(directory, arrays=None, gz=True, dotted=False):
    """Write four IDX files into ``directory``; return the arrays."""
    arrays = tiny_arrays() if arrays is None else arrays
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in zip(NAMES, arrays):
        raw = idx_bytes(array)
        (directory / file_name(name, gz, dotted)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def sha256s(arrays):
    return {name: hashlib.sha256(idx_bytes(a)).hexdigest() for name, a in zip(NAMES, arrays)}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Never touch the real cache or a user's SCRATCHAE_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SCRATCHAE_DATA", raising=False)


def closed_port():
    """A localhost port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    images, labels, _, _ = tiny_arrays(n_train=5)
    for name, array in (("img", images), ("lbl", labels)):
        raw = idx_bytes(array)
        path = tmp_path / name
        path.write_bytes(gzip.compress(raw) if gz else raw)  # no suffix: detect by magic
        out = read_idx(path)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, array)
    assert read_idx(tmp_path / "img").shape == (5, 28, 28)
    assert read_idx(tmp_path / "lbl").shape == (5,)


def test_read_idx_raw_file_named_gz(tmp_path):
    labels = np.arange(7, dtype=np.uint8)
    path = tmp_path / "labels.gz"
    path.write_bytes(idx_bytes(labels))  # not actually compressed
    np.testing.assert_array_equal(read_idx(path), labels)


def _write(tmp_path, content, name="train-images-idx3-ubyte"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_read_idx_bad_magic(tmp_path):
    path = _write(tmp_path, struct.pack(">II", 0x999, 0))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: bad magic number "
                                         r"0x00000999, expected 0x00000803 \(images\) "
                                         r"or 0x00000801 \(labels\)"):
        read_idx(path)


def test_read_idx_truncated_body(tmp_path):
    raw = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    path = _write(tmp_path, gzip.compress(raw[:-100]), "train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: truncated: header says "
                                         r"5 items \(3920 bytes\), file has 3820 bytes"):
        read_idx(path)


def test_read_idx_trailing_bytes(tmp_path):
    raw = idx_bytes(np.zeros(5, np.uint8)) + b"junk"
    path = _write(tmp_path, raw, "train-labels-idx1-ubyte")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: trailing garbage: header "
                                         r"says 5 items \(5 bytes\), file has 9 bytes"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(tiny_arrays(n_train=5)[0]))
    path = _write(tmp_path, packed[: len(packed) // 2], "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_read_idx_short_header_and_wrong_size(tmp_path):
    with pytest.raises(ValueError, match=r"a: too short"):
        read_idx(_write(tmp_path, b"\x00\x00", "a"))
    with pytest.raises(ValueError, match=r"b: truncated header"):
        read_idx(_write(tmp_path, struct.pack(">II", 0x803, 5), "b"))
    with pytest.raises(ValueError, match=r"c: images are 14x14, expected 28x28"):
        read_idx(_write(tmp_path, struct.pack(">IIII", 0x803, 1, 14, 14) + bytes(196), "c"))


# --------------------------------------------------------------------------
# load_mnist from a directory
# --------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dotted", [False, True])
def test_load_mnist_data_dir(tmp_path, gz, dotted):
    arrays = write_mnist_dir(tmp_path / "mnist", gz=gz, dotted=dotted)
    mnist = load_mnist(tmp_path / "mnist", download=False)
    assert isinstance(mnist, MNIST)
    assert mnist.source == str(tmp_path / "mnist")
    for images, labels, raw_images, raw_labels in (
            (mnist.train_images, mnist.train_labels, arrays[0], arrays[1]),
            (mnist.test_images, mnist.test_labels, arrays[2], arrays[3])):
        assert images.shape == (len(raw_images), 1, 28, 28)
        assert images.dtype == np.float32 and labels.dtype == np.int64
        assert labels.shape == (len(raw_labels),)
        assert 0.0 <= images.min() and images.max() <= 1.0
        np.testing.assert_allclose(images[:, 0], raw_images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(labels, raw_labels)
    assert "20 train / 10 test" in repr(mnist)


def test_load_mnist_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mnist(tmp_path / "nowhere")


def test_load_mnist_incomplete_dir(tmp_path):
    write_mnist_dir(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path / "mnist")  # explicit dir: no silent fallback
    message = str(info.value)
    assert str(tmp_path / "mnist") in message
    assert "t10k-labels-idx1-ubyte" in message and "train-images-idx3-ubyte" in message
    assert "train-labels-idx1-ubyte" not in message


def test_load_mnist_mismatched_counts(tmp_path):
    arrays = list(tiny_arrays())
    arrays[1] = arrays[1][:-1]
    write_mnist_dir(tmp_path / "mnist", arrays)
    with pytest.raises(ValueError, match="20 train images but 19 labels"):
        load_mnist(tmp_path / "mnist")


def test_load_mnist_env_var(tmp_path, monkeypatch):
    write_mnist_dir(tmp_path / "mnist", dotted=True)
    monkeypatch.setenv("SCRATCHAE_DATA", str(tmp_path / "mnist"))
    mnist = load_mnist(download=False)
    assert len(mnist.train_labels) == 20
    assert "SCRATCHAE_DATA" in mnist.source

    monkeypatch.setenv("SCRATCHAE_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*train-images-idx3-ubyte"):
        load_mnist(download=False)


def test_default_cache_dir(tmp_path, monkeypatch):
    assert default_cache_dir() == tmp_path / "xdg" / "scratchae" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "scratchae" / "mnist"


# --------------------------------------------------------------------------
# Downloading (from a local HTTP server)
# --------------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror_server(tmp_path, monkeypatch):
    """Serve tmp_path/www on 127.0.0.1 with three mirrors (plus 404s).

    - ``good/``: valid tiny MNIST .gz files (SHA256 is patched to match)
    - ``truncated/``: the same files cut in half
    - ``badsum/``: valid IDX .gz files with different content
    - anything else: 404
    Returns (base_url, arrays).
    """
    www = tmp_path / "www"
    arrays = write_mnist_dir(www / "good")
    write_mnist_dir(www / "badsum", tiny_arrays(seed=1))
    (www / "truncated").mkdir()
    for name in NAMES:
        packed = (www / "good" / f"{name}.gz").read_bytes()
        (www / "truncated" / f"{name}.gz").write_bytes(packed[: len(packed) // 2])
    monkeypatch.setattr(data, "SHA256", sha256s(arrays))

    handler = functools.partial(QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", arrays
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_then_load_from_cache(mirror_server, tmp_path):
    base, arrays = mirror_server
    cache = download_mnist(mirrors=(base + "good/",), progress=False)
    assert cache == tmp_path / "xdg" / "scratchae" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES)

    # The cache is complete now: no mirror is needed.
    dead = (f"http://127.0.0.1:{closed_port()}/",)
    mnist = load_mnist(mirrors=dead, progress=False)
    assert mnist.source.startswith("cache ")
    np.testing.assert_array_equal(mnist.test_labels, arrays[3])
    # download_mnist skips files that are already valid.
    assert download_mnist(mirrors=dead, progress=False) == cache


def test_load_mnist_downloads_when_cache_empty(mirror_server):
    base, arrays = mirror_server
    mnist = load_mnist(mirrors=(base + "good/",), progress=False)
    assert mnist.source.startswith("cache ")
    np.testing.assert_allclose(mnist.train_images[:, 0], arrays[0] / 255.0, rtol=1e-6)


def test_bad_mirrors_are_skipped(mirror_server, tmp_path):
    base, _ = mirror_server
    mirrors = (base + "missing/", base + "truncated/", base + "badsum/", base + "good/")
    cache = download_mnist(tmp_path / "c", mirrors=mirrors, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    for name in NAMES:
        assert data._is_valid_download(cache / f"{name}.gz", name)


def test_corrupt_cached_file_is_replaced(mirror_server, tmp_path):
    base, _ = mirror_server
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    download_mnist(cache, mirrors=(base + "good/",), progress=False)
    assert data._is_valid_download(cache / "train-labels-idx1-ubyte.gz",
                                   "train-labels-idx1-ubyte")


def test_all_mirrors_fail(mirror_server, tmp_path):
    base, _ = mirror_server
    mirrors = (base + "missing/", base + "truncated/", base + "badsum/",
               f"http://127.0.0.1:{closed_port()}/")
    cache = tmp_path / "c"
    with pytest.raises(DownloadError) as info:
        download_mnist(cache, mirrors=mirrors, progress=False)
    error = info.value
    assert isinstance(error, OSError)
    assert len(error.failures) == 4
    message = str(error)
    assert "train-images-idx3-ubyte.gz" in message
    for mirror in mirrors:
        assert mirror + "train-images-idx3-ubyte.gz" in message
    assert "404" in message and "truncated" in message and "SHA-256" in message
    assert list(cache.iterdir()) == []  # nothing corrupt, no temp files


def test_interrupted_download_leaves_nothing(mirror_server, tmp_path, monkeypatch):
    base, _ = mirror_server
    real_urlopen = data.urllib.request.urlopen

    class Interrupting:
        def __init__(self, response):
            self.response = response
            self.headers = response.headers

        def read(self, n):
            raise KeyboardInterrupt

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

    monkeypatch.setattr(data.urllib.request, "urlopen",
                        lambda url, timeout: Interrupting(real_urlopen(url, timeout=timeout)))
    cache = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        download_mnist(cache, mirrors=(base + "good/",), progress=False)
    assert list(cache.iterdir()) == []


def test_fallback_to_sample_without_network(tmp_path, capsys):
    dead = (f"http://127.0.0.1:{closed_port()}/",)
    mnist = load_mnist(mirrors=dead, timeout=2.0)
    assert mnist.source.startswith("bundled sample")
    assert len(mnist.train_labels) == 10_000
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("scratchae: could not download MNIST (no network?); using the "
                          "bundled sample of 10000 train / 2000 test digits.")
    assert "--data-dir" in err
    assert list((tmp_path / "xdg" / "scratchae" / "mnist").iterdir()) == []


def test_fallback_quiet_and_no_download(capsys):
    mnist = load_mnist(download=False, verbose=False)
    assert mnist.source.startswith("bundled sample")
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------
# The bundled sample and build_sample
# --------------------------------------------------------------------------

def test_load_sample():
    sample = load_sample()
    # Numbers documented in load_sample's docstring and scratchae/_data/README.md.
    assert sample.train_images.shape == (10_000, 1, 28, 28)
    assert sample.test_images.shape == (2_000, 1, 28, 28)
    assert sample.train_images.dtype == np.float32 and sample.test_images.dtype == np.float32
    assert sample.train_labels.dtype == np.int64 and sample.test_labels.dtype == np.int64
    for images in (sample.train_images, sample.test_images):
        assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(sample.train_labels), [1000] * 10)
    np.testing.assert_array_equal(np.bincount(sample.test_labels), [200] * 10)
    assert data.SAMPLE_PATH.stat().st_size <= 2_100_000
    readme = (data.SAMPLE_PATH.parent / "README.md").read_text()
    assert "10,000" in readme and "2,000" in readme and "LeCun" in readme


def test_build_sample(tmp_path):
    write_mnist_dir(tmp_path / "src", tiny_arrays(n_train=40, n_test=30), dotted=True)
    out = tmp_path / "out" / "sample.npz"
    out.parent.mkdir()
    out.write_bytes(b"old content")  # replaced atomically
    assert build_sample(tmp_path / "src", out, n_train=20, n_test=15, seed=3) == (20, 15)
    assert sorted(p.name for p in out.parent.iterdir()) == ["sample.npz"]  # no temp left
    with np.load(out) as z:
        assert sorted(z.files) == ["test_images", "test_labels", "train_images", "train_labels"]
        assert z["train_images"].shape == (20, 28, 28) and z["train_images"].dtype == np.uint8
        assert z["train_labels"].dtype == np.uint8
        assert z["test_images"].shape == (15, 28, 28)
        np.testing.assert_array_equal(np.bincount(z["train_labels"]), [2] * 10)
        assert sorted(np.bincount(z["test_labels"])) == [1] * 5 + [2] * 5
        first = z["train_images"].copy()
    # Deterministic for a given seed.
    build_sample(tmp_path / "src", out, n_train=20, n_test=15, seed=3)
    with np.load(out) as z:
        np.testing.assert_array_equal(z["train_images"], first)


def test_build_sample_shrinks_to_fit(tmp_path):
    write_mnist_dir(tmp_path / "src", tiny_arrays(n_train=40, n_test=10))
    out = tmp_path / "s.npz"
    assert build_sample(tmp_path / "src", out, n_train=40, n_test=10, max_bytes=1) == (10, 10)


def test_build_sample_cli(tmp_path, capsys):
    write_mnist_dir(tmp_path / "src")
    out = tmp_path / "s.npz"
    assert data.main(["build-sample", "--src", str(tmp_path / "src"), "--out", str(out),
                      "--n-train", "10", "--n-test", "10"]) == 0
    assert "10 train / 10 test" in capsys.readouterr().out
    with np.load(out) as z:
        assert z["train_images"].shape == (10, 28, 28)


def test_float_images_are_the_textbook_division():
    """Every byte value maps to the float32 that ``astype(float32) / 255.0`` gives."""
    from scratchae.data import _to_float_images

    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(2, axis=0)
    out = _to_float_images(images)
    assert out.dtype == np.float32 and out.shape == (2, 1, 16, 16)
    np.testing.assert_array_equal(out, (images.astype(np.float32) / 255.0)[:, None])
    assert out.min() == 0.0 and out.max() == 1.0
