"""Tests for scratchae.plots: each figure is a readable PNG, written atomically."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from scratchae import plots

K = 6


@pytest.fixture
def digits():
    """(K, 1, 28, 28) blobs in [0, 1] that look vaguely like digits."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    centres = rng.uniform(9, 19, size=(K, 2))
    blobs = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 30)
    return blobs[:, None].astype(np.float32)


def read_png(path):
    """Check ``path`` is a real PNG over 1 kB; return (height, width) as read back."""
    path = Path(path)
    data = path.read_bytes()
    assert data[:4] == b"\x89PNG"
    assert len(data) > 1024
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.std() > 0.01, "figure is blank"
    return img.shape[:2]


def only_file(directory):
    """The one file in ``directory`` (fails if temp files were left behind)."""
    files = sorted(p.name for p in Path(directory).iterdir())
    assert len(files) == 1, files
    return Path(directory) / files[0]


# --------------------------------------------------------------------------
# The four figures
# --------------------------------------------------------------------------

def test_image_rows(tmp_path, digits):
    noisy = np.clip(digits + 0.3, 0, 1)
    out = tmp_path / "new" / "dir" / "rows.png"  # parents do not exist yet
    got = plots.image_rows([("noisy", noisy), ("denoised", digits[:, 0]), ("clean", digits)],
                           str(out), title="t", col_labels=[f"PSNR {i}.0 dB" for i in range(K)],
                           footer="a footer")
    assert isinstance(got, Path) and got == out
    assert only_file(out.parent) == out
    h, w = read_png(out)
    assert w >= K * 80 and h >= 3 * 80  # roughly an inch per digit at 100 dpi
    assert 1.3 < w / h < 3.5  # 6 columns over 3 rows


def test_image_rows_bare_arrays_with_row_labels(tmp_path, digits):
    out = plots.image_rows([digits[:5], digits[:5]], tmp_path / "r.png", row_labels=["a", "b"])
    h, w = read_png(out)
    assert 1.5 < w / h < 3.5  # 5 columns over 2 rows


def test_code_grid(tmp_path, digits):
    codes = np.random.default_rng(1).random((K, 64))
    out = plots.code_grid(codes, tmp_path / "codes.png", title="codes", images=digits)
    h, w = read_png(out)
    assert only_file(tmp_path) == out
    assert w >= K * 80 and h >= 2 * 80
    assert 1.8 < w / h < 4  # 6 columns over 2 rows


def test_code_grid_other_shape_without_images(tmp_path):
    codes = np.random.default_rng(2).normal(size=(3, 32))
    h, w = read_png(plots.code_grid(codes, tmp_path / "c.png", shape=(4, 8)))
    assert w > 2 * h  # a single row


@pytest.mark.parametrize("test_loss", [[0.5, 0.4, 0.3], [None, 0.4, float("nan")]])
def test_loss_curves(tmp_path, test_loss):
    out = plots.loss_curves({"train_loss": [0.6, 0.45, 0.35], "test_loss": test_loss},
                            tmp_path / "sub" / "loss.png", title="loss")
    h, w = read_png(out)
    assert only_file(out.parent) == out
    assert 1.2 < w / h < 1.9  # landscape


def test_loss_curves_single_epoch(tmp_path):
    read_png(plots.loss_curves({"train_loss": [0.3], "test_loss": [None]}, tmp_path / "l.png"))


def test_side_by_side(tmp_path, digits):
    noisy = np.clip(digits + 0.3, 0, 1)
    out = plots.side_by_side(noisy, {"dense": digits * 0.9, "conv": digits}, digits,
                             tmp_path / "side.png", psnr={"conv": 20.14}, title="dense vs conv")
    h, w = read_png(out)
    assert only_file(tmp_path) == out
    assert w >= K * 80 and h >= 4 * 80
    assert 1.0 < w / h < 2.5  # 6 columns over 4 rows


# --------------------------------------------------------------------------
# Writing: atomic, overwrites, no pyplot
# --------------------------------------------------------------------------

def test_overwrites_existing_file(tmp_path, digits):
    out = tmp_path / "rows.png"
    out.write_bytes(b"old")
    plots.image_rows([("x", digits)], out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert only_file(tmp_path) == out


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, digits, monkeypatch):
    out = tmp_path / "rows.png"
    out.write_bytes(b"old")

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk on fire"):
        plots.image_rows([("x", digits)], out)
    assert out.read_bytes() == b"old"
    assert only_file(tmp_path) == out


def test_does_not_import_pyplot():
    code = "import sys, scratchae.plots; sys.exit('matplotlib.pyplot' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


# --------------------------------------------------------------------------
# Bad input: ValueError naming the argument, expected vs actual
# --------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    (np.zeros((K, 3, 28, 28)), r"rows\[1\].*expected shape \(K, 1, H, W\).*got \(6, 3, 28, 28\)"),
    (np.zeros((K, 784)), r"rows\[1\].*got \(6, 784\)"),
    (np.zeros((K - 1, 1, 28, 28)), r"rows\[1\].*expected 6 images, got 5"),
])
def test_image_rows_bad_shape(tmp_path, digits, bad, match):
    with pytest.raises(ValueError, match=match):
        plots.image_rows([("a", digits), ("b", bad)], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_image_rows_bad_labels(tmp_path, digits):
    with pytest.raises(ValueError, match=r"col_labels: expected 6 labels, got 2"):
        plots.image_rows([("a", digits)], tmp_path / "x.png", col_labels=["1", "2"])
    with pytest.raises(ValueError, match=r"row_labels: expected 1 labels, got 2"):
        plots.image_rows([("a", digits)], tmp_path / "x.png", row_labels=["1", "2"])
    with pytest.raises(ValueError, match=r"rows: expected at least one row"):
        plots.image_rows([], tmp_path / "x.png")


def test_code_grid_bad_input(tmp_path, digits):
    with pytest.raises(ValueError,
                       match=r"codes: expected shape \(K, 64\).*shape=\(8, 8\).*got \(6, 32\)"):
        plots.code_grid(np.zeros((K, 32)), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"codes: .*got \(64,\)"):
        plots.code_grid(np.zeros(64), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"images: expected 6 images, got 3"):
        plots.code_grid(np.zeros((K, 64)), tmp_path / "x.png", images=digits[:3])


def test_loss_curves_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"history: expected key 'test_loss'"):
        plots.loss_curves({"train_loss": [1.0]}, tmp_path / "x.png")
    with pytest.raises(ValueError,
                       match=r"history\['train_loss'\]: expected at least 1 epoch, got 0"):
        plots.loss_curves({"train_loss": [], "test_loss": []}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"same length, got 2 and 1"):
        plots.loss_curves({"train_loss": [1.0, 0.5], "test_loss": [1.0]}, tmp_path / "x.png")


def test_side_by_side_bad_input(tmp_path, digits):
    with pytest.raises(ValueError, match=r"outputs\['conv'\]: expected 6 images, got 2"):
        plots.side_by_side(digits, {"conv": digits[:2]}, digits, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"clean: expected shape .*got \(6, 28\)"):
        plots.side_by_side(digits, {"conv": digits}, digits[:, 0, 0], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"psnr: .*unknown \['dense'\]"):
        plots.side_by_side(digits, {"conv": digits}, digits, tmp_path / "x.png",
                           psnr={"dense": 1.0})
    with pytest.raises(ValueError, match=r"outputs: expected at least one model"):
        plots.side_by_side(digits, {}, digits, tmp_path / "x.png")


def test_error_curves_name_each_best_epoch_in_the_legend(tmp_path, monkeypatch):
    """Runs that end alike put their stars on one spot: the values are in the legend, not
    written beside the stars, where they would overlap."""
    seen, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.append(fig) or save(fig, path))
    path = plots.error_curves({"pretrained": [0.03, 0.0125, 0.013],
                               "no pretraining": [0.05, 0.02, None, 0.0151]}, tmp_path / "v.png")
    read_png(path)
    ax, = seen[0].axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "pretrained: 1.25% at epoch 2", "no pretraining: 1.51% at epoch 4"]
    assert not ax.texts  # no annotation beside the stars
