"""The checkerboard score, the transposed-conv denoiser and the checkerboard demo."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchae.checkerboard import checkerboard_score, checkerboard_scores
from scratchae.layers import ConvTranspose2D
from scratchae.models import conv_denoiser, conv_denoiser_transposed

from conftest import to_xp
from test_train import _sample_idx_dir

ROOT = Path(__file__).resolve().parents[1]
FINAL = re.compile(r"^checkerboard hidden transposed=\d+\.\d{4} upsample=\d+\.\d{4}  "
                   r"output\(0\.5\) transposed=\d+\.\d{4} upsample=\d+\.\d{4}$")

ROWS, COLS = np.mgrid[:28, :28]
CHECKER = (-1.0) ** (ROWS + COLS)  # the pure period-2 pattern
SMOOTH = np.exp(-((ROWS - 13.5) ** 2 + (COLS - 13.5) ** 2) / 30.0)  # a soft blob, ~0 at the borders


def _batch(*images):
    return np.stack(images)[:, None]  # (N, 1, 28, 28)


def test_constant_images_score_zero(backend):
    images = to_xp(_batch(np.zeros((28, 28)), np.full((28, 28), 0.5), np.full((28, 28), 0.1)))
    assert checkerboard_score(images) == 0.0


def test_smooth_image_scores_near_zero():
    assert checkerboard_score(_batch(SMOOTH)) < 1e-6


@pytest.mark.parametrize("pattern", [CHECKER, (-1.0) ** ROWS, (-1.0) ** COLS,
                                     np.tile([[0.0, 1.0], [0.3, 0.6]], (14, 14))])
def test_period_two_patterns_score_one(pattern):
    image = 0.5 + 0.25 * pattern  # in [0, 1]; brightness does not matter
    assert checkerboard_score(_batch(image)) == pytest.approx(1.0, abs=1e-12)


def test_mix_is_in_between_and_grows_with_the_pattern():
    scores = checkerboard_scores(_batch(*(0.3 * SMOOTH + a * CHECKER for a in (0.01, 0.05, 0.2))))
    assert 0.0 < scores[0] < scores[1] < scores[2] < 1.0
    # Parseval: the share of energy is ||a*checker||^2 / (||a*checker||^2 + ||smooth - mean||^2)
    smooth = 0.3 * SMOOTH - (0.3 * SMOOTH).mean()
    share = (0.05**2 * 784) / (0.05**2 * 784 + (smooth**2).sum())
    assert scores[1] == pytest.approx(share, rel=1e-3)
    assert checkerboard_score(_batch(SMOOTH, CHECKER)) == pytest.approx(0.5, abs=1e-6)


def test_scale_and_shape_checks():
    image = _batch(0.3 * SMOOTH + 0.05 * CHECKER)
    assert checkerboard_score(image) == pytest.approx(checkerboard_score(10 * image + 3))
    assert checkerboard_score(image[:, 0]) == checkerboard_score(image)  # (N, H, W) too
    with pytest.raises(ValueError, match="even"):
        checkerboard_score(np.zeros((1, 1, 27, 28)))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        checkerboard_score(np.zeros((1, 3, 28, 28)))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        checkerboard_score(np.zeros((0, 28, 28)))


def test_untrained_transposed_decoder_paints_a_checkerboard():
    """Before training, on a constant input, the transposed decoder shows the pattern.

    (Not on an all-zero input: with zero biases an untrained model maps it to
    an exactly constant output, which scores 0.)
    """
    constant = np.full((1, 1, 28, 28), 0.5, np.float32)
    scores = {}
    for name, build in (("upsample", conv_denoiser), ("transposed", conv_denoiser_transposed)):
        logits = build(seed=0).forward(constant)
        scores[name] = checkerboard_score(1 / (1 + np.exp(-logits)))
    assert scores["transposed"] > 10 * scores["upsample"], scores


def test_transposed_denoiser_shapes_and_encoder():
    model = conv_denoiser_transposed(seed=3, dtype=np.float64)
    assert model.output_shape((2, 1, 28, 28)) == (2, 1, 28, 28)
    reference = conv_denoiser(seed=3, dtype=np.float64)
    for i in range(9):  # the encoder: same layers, same initial weights
        assert repr(model.layers[i]) == repr(reference.layers[i])
        for k, v in reference.layers[i].params.items():
            np.testing.assert_array_equal(model.layers[i].params[k], v)
    names = [type(layer).__name__ for layer in model.layers[9:]]
    assert names == ["ConvTranspose2D", "ReLU"] * 3 + ["Conv2D"]
    shape, sizes = (1, 1, 28, 28), []
    for layer in model.layers:
        shape = layer.output_shape(shape)
        if isinstance(layer, ConvTranspose2D):
            sizes.append(shape[1:])
    assert sizes == [(32, 7, 7), (64, 14, 14), (64, 28, 28)]  # as conv_denoiser's decoder


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "checkerboard.py"), "--epochs", "1",
         "--train-size", "256", "--batch-size", "64", "--no-progress", "--out", str(out),
         "--data-dir", str(_sample_idx_dir(tmp_path))],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert FINAL.match(lines[-1]), lines[-1]
    assert any(line.split()[:1] == ["transposed"] for line in lines), result.stdout
    assert (out / "checkerboard.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkerboard_upsample.npz").exists()
    assert (out / "checkerboard_transposed.npz").exists()


def test_demo_error_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "checkerboard.py"), "--no-progress",
         "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
