"""Tests for ``python -m scratchae.denoise`` (run as a subprocess, like a user would)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from PIL import Image

from scratchae.denoise import load_denoiser, read_luminance, to_mnist
from scratchae.layers import Dense
from scratchae.models import Sequential, conv_denoiser, dense_autoencoder

ROOT = Path(__file__).resolve().parents[1]


def seven(h, w):
    """A thick "7", light (1) on dark (0), drawn with numpy."""
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy / h, xx / w
    img = np.zeros((h, w))
    img[(yy > 0.18) & (yy < 0.3) & (xx > 0.25) & (xx < 0.75)] = 1  # the bar
    t = (yy - 0.24) / 0.61  # the stroke, from (0.24, 0.75) down to (0.85, 0.4)
    img[(t >= 0) & (t <= 1) & (np.abs(xx - (0.75 - 0.35 * t)) < 0.06)] = 1
    return img


def ring(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    return ((r > 0.45) & (r < 0.7)).astype(float)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("denoise")
    gray = dict(cmap="gray", vmin=0, vmax=1)
    mpimg.imsave(d / "dark_on_light.png", 1 - seven(56, 56), **gray)
    mpimg.imsave(d / "light_on_dark.png", seven(28, 28), **gray)
    mpimg.imsave(d / "ring.png", 1 - ring(40, 60), **gray)  # 60 wide, 40 high
    rgb = np.ones((50, 50, 3)) * [1.0, 0.95, 0.85]  # dark blue ink on cream paper
    rgb[seven(50, 50) > 0] = [0.1, 0.1, 0.6]
    mpimg.imsave(d / "rgb.png", rgb)
    (d / "text.png").write_text("not an image\n")
    (d / "text.npz").write_text("not a checkpoint\n")
    conv_denoiser(seed=0).save(d / "conv.npz")
    Sequential([Dense(784, 10, seed=0)]).save(d / "other.npz")
    return d


def run(*args, cwd):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, "-m", "scratchae.denoise", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_denoises_and_writes_pngs(files, tmp_path):
    out = tmp_path / "out"
    images = [files / n for n in ("dark_on_light.png", "light_on_dark.png", "ring.png", "rgb.png")]
    result = run(*images, "--checkpoint", files / "conv.npz", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("dark_on_light", "light_on_dark", "ring", "rgb"):
        small, big = out / f"{name}_denoised.png", out / f"{name}_denoised_x8.png"
        assert small.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(small) as img:
            assert img.size == (28, 28) and img.mode == "L"
        with Image.open(big) as img:
            assert img.size == (224, 224)
        assert f"wrote {small}" in result.stdout
    assert (out / "before_after.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*.part"))  # atomic writes leave no temporary files

    # resize notes: only for images that are not 28x28 already
    note = f"note: {files / 'ring.png'} is 60x40; padded to square and resized to 28x28"
    assert note in result.stderr
    assert str(files / "dark_on_light.png") + " is 56x56; resized to 28x28" in result.stderr
    assert "light_on_dark.png is" not in result.stderr
    # polarity: dark-on-light (and the RGB drawing on paper) are inverted, MNIST-like is not
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines()
                 if line.startswith(str(files)))
    assert lines[str(files / "dark_on_light.png")].startswith("inverted (light background")
    assert lines[str(files / "rgb.png")].startswith("inverted (light background")
    assert lines[str(files / "light_on_dark.png")].startswith("not inverted (dark background")


def test_invert_flag_and_noise(files, tmp_path):
    result = run(files / "dark_on_light.png", "--invert", "no", "--noise-factor", "0.5",
                 "--checkpoint", files / "conv.npz", "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "not inverted (--invert no)" in result.stdout
    assert (tmp_path / "before_after.png").exists()


def test_dense_checkpoint_is_detected(files, tmp_path):
    path = tmp_path / "dense.npz"
    dense_autoencoder(hidden=16, seed=0).save(path)
    model, kind = load_denoiser(path)
    assert kind == "dense (hidden 16)"
    assert model.architecture() == dense_autoencoder(hidden=16).architecture()


def test_training_checkpoint_loads(files, tmp_path):
    arrays = dict(np.load(files / "conv.npz"))
    arrays["train/step"] = np.array(7)  # what the training loop adds
    np.savez(tmp_path / "train.npz", **arrays)
    model, kind = load_denoiser(tmp_path / "train.npz")
    assert kind == "conv"
    np.testing.assert_array_equal(model.params["0.W"], arrays["0.W"])


def test_polarity_and_resize_in_process():
    light = seven(56, 84)
    a, inverted_a = to_mnist(light)
    b, inverted_b = to_mnist(1 - light)
    assert a.shape == (28, 28) and a.dtype == np.float32
    assert (inverted_a, inverted_b) == (False, True)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a[:4].max() == 0  # the padding (top rows) is background
    assert to_mnist(light, invert="yes")[1] and not to_mnist(1 - light, invert="no")[1]


def test_transparent_pixels_are_white(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[3:7, 3:7] = [0, 0, 0, 255]  # an opaque black square, transparent elsewhere
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    lum = read_luminance(tmp_path / "t.png")
    assert lum[0, 0] == 1.0 and lum[5, 5] == 0.0


@pytest.mark.parametrize("case", ["missing image", "text as png", "missing checkpoint",
                                  "other architecture", "not npz"])
def test_errors_are_one_line(files, tmp_path, case):
    image, checkpoint = files / "ring.png", files / "conv.npz"
    expected = {
        "missing image": f"error: cannot read image {files / 'nope.png'}: no such file",
        "text as png": f"error: cannot read image {files / 'text.png'}: not an image file",
        "missing checkpoint": f"error: checkpoint {files / 'nope.npz'} not found",
        "other architecture": f"error: {files / 'other.npz'} is not a checkpoint of a "
                              f"scratchae denoiser (architecture: Dense(784, 10))",
        "not npz": f"error: {files / 'text.npz'}: not a readable .npz checkpoint",
    }[case]
    if case == "missing image":
        image = files / "nope.png"
    elif case == "text as png":
        image = files / "text.png"
    else:
        checkpoint = files / {"missing checkpoint": "nope.npz", "other architecture": "other.npz",
                              "not npz": "text.npz"}[case]
    result = run(files / "light_on_dark.png", image, "--checkpoint", checkpoint,
                 "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr
    assert not (tmp_path / "out").exists()


def test_transposed_checkpoint_is_detected(tmp_path):
    from scratchae import models

    models.conv_denoiser_transposed(seed=0).save(tmp_path / "t.npz")
    assert load_denoiser(tmp_path / "t.npz")[1] == "conv (transposed)"
