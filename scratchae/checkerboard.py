"""Measure checkerboard artifacts: how much of an image repeats every 2 pixels.

A stride-2 transposed convolution whose kernel is not a multiple of 2
adds up a different number of kernel copies on even and odd rows and
columns (see :mod:`scratchae.layers.conv_transpose`), so its output
carries a pattern of period 2, a "checkerboard". In the 2-D discrete
Fourier transform of an H x W image, a pattern of period 2 along the rows
lives at the Nyquist frequency ``H/2`` (the fastest oscillation there is,
``(-1)^i``), and along the columns at ``W/2``. Any image that repeats with
period 2 in both directions (a 2 x 2 tile ``[[a, b], [c, d]]`` repeated)
has all of its non-constant energy at the three frequencies
``(H/2, 0)``, ``(0, W/2)`` and ``(H/2, W/2)``.

The score of one image ``x`` (H x W, both even) is the fraction of its
energy on the Nyquist row and column of its spectrum::

    X = FFT2(x - mean(x))
    score = sum_{(u, v): u = H/2 or v = W/2} |X[u, v]|^2  /  sum_{u, v} |X[u, v]|^2

* 0 for a constant image (no energy at all, defined as 0) and ~0 for a
  smooth one, whose energy sits at low frequencies;
* 1 for a pure checkerboard ``(-1)^(i+j)`` (all of it at (H/2, W/2)), or
  for stripes ``(-1)^i``;
* in between for a mix: the share of the (mean-removed) energy that the
  period-2 part holds, by Parseval's theorem.

Removing the mean first makes the score blind to overall brightness: a
mid-grey output with a faint checkerboard scores as high as a black one
with the same pattern. The score is scale-free, so on a nearly blank
output it measures the *shape* of the small residual, which is exactly
where a decoder's own pattern shows: feed a constant image (all zeros,
all 0.5) and a smooth decoder answers with a smooth image, a transposed
convolution with a checkerboard.

Nearest-neighbour upsampling by 2 has no energy at Nyquist at all (each
value is repeated twice, and ``[1, 1]`` has a zero at frequency 1/2), so
"resize + conv" can make a period-2 pattern only through its borders and
its nonlinearities.
"""

import numpy as np

from . import backend

__all__ = ["checkerboard_score", "checkerboard_scores"]


def checkerboard_scores(images):
    """The checkerboard score of each image (see the module docstring).

    Parameters
    ----------
    images : ndarray, shape (N, 1, H, W) or (N, H, W)
        Grayscale images (e.g. a decoder's sigmoid outputs in [0, 1]),
        NumPy or CuPy; H and W must be even.

    Returns
    -------
    ndarray of float64, shape (N,)
        Each image's fraction of spectral energy on the Nyquist row
        ``u = H/2`` and column ``v = W/2``; 0 for a constant image.

    Raises
    ------
    ValueError
        If the shape is not (N, 1, H, W) or (N, H, W) with N >= 1, or H or
        W is odd (an odd size has no frequency of exactly period 2).
    """
    x = np.asarray(backend.to_numpy(images), dtype=np.float64)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"checkerboard_score: expected images of shape (N, 1, H, W) or "
                         f"(N, H, W) with N >= 1, got {np.shape(images)}")
    _, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"checkerboard_score: H and W must be even (a period-2 pattern "
                         f"needs an exact Nyquist frequency), got {h} x {w}")
    energy = (x * x).sum(axis=(1, 2))  # before removing the mean, for the scale
    x = x - x.mean(axis=(1, 2), keepdims=True)  # drop the DC term: brightness doesn't count
    power = np.abs(np.fft.fft2(x)) ** 2  # (N, H, W): |X[u, v]|^2
    total = power.sum(axis=(1, 2))
    # The Nyquist row and column; their crossing (H/2, W/2) is counted once.
    nyquist = power[:, h // 2, :].sum(axis=1) + power[:, :, w // 2].sum(axis=1)
    nyquist -= power[:, h // 2, w // 2]
    # A constant image has no energy left after removing its mean: score 0.
    # "None" is relative to the image's scale, so that the rounding error of
    # the mean (~1e-16 of it) is not mistaken for a pattern. (Parseval:
    # total = H*W * the sum of squares of the mean-removed pixels.)
    tiny = total <= 1e-24 * h * w * energy
    return np.where(tiny, 0.0, nyquist / np.where(tiny, 1.0, total))


def checkerboard_score(images):
    """Mean checkerboard score of a batch: a float in [0, 1].

    Parameters
    ----------
    images : ndarray, shape (N, 1, H, W) or (N, H, W)
        See :func:`checkerboard_scores`.

    Returns
    -------
    float
        The mean over the N images of their fraction of (mean-removed)
        spectral energy at period 2: ~0 for smooth images, 1 for a pure
        ``(-1)^(i+j)`` checkerboard.
    """
    return float(checkerboard_scores(images).mean())
