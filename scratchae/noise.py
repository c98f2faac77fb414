"""Corruptions for denoising autoencoders.

Each function takes a batch of clean images in [0, 1], a NumPy
``Generator`` (so a seed makes the noise reproducible and identical on both
backends) and returns a corrupted copy in [0, 1] on the same backend as
the input. The random numbers are drawn in float32 on the host: a batch of
noise is small, and drawing it with NumPy keeps one random stream whatever
the backend.
"""

import numpy as np

from . import backend
from .validate import positive_float


def _like(x, host_array):
    """Move a host array to the backend of ``x``."""
    return backend.get_array_module(x).asarray(host_array)


def gaussian(x, factor, rng):
    """The tutorial's noise: ``clip(x + factor * randn, 0, 1)``.

    Parameters
    ----------
    x : ndarray, shape (N, 1, 28, 28) or any shape, values in [0, 1]
    factor : float
        Standard deviation of the added noise (the tutorial uses 0.5).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, shape and dtype of ``x``
    """
    positive_float(factor, "noise factor")
    xp = backend.get_array_module(x)
    z = rng.standard_normal(x.shape, dtype=np.float32)
    z *= np.float32(factor)
    noisy = x + _like(x, z).astype(x.dtype, copy=False)
    return xp.clip(noisy, 0, 1, out=noisy)


def salt_and_pepper(x, amount, rng):
    """Set a fraction ``amount`` of the pixels to 0 or 1 (half each).

    Parameters
    ----------
    x : ndarray, any shape, values in [0, 1]
    amount : float in (0, 1]
    rng : numpy.random.Generator
    """
    positive_float(amount, "salt-and-pepper amount", at_most=1)
    xp = backend.get_array_module(x)
    u = _like(x, rng.random(x.shape, dtype=np.float32))
    # pepper where u < amount/2, salt where amount/2 <= u < amount; a select,
    # not a boolean-mask assignment (which makes CuPy wait for the GPU)
    return xp.where(u < amount / 2, 0, xp.where(u < amount, 1, x)).astype(x.dtype, copy=False)


def masking(x, fraction, rng):
    """Masking noise: set a random ``fraction`` of the pixels to 0.

    Parameters
    ----------
    x : ndarray, any shape, values in [0, 1]
    fraction : float in (0, 1]
    rng : numpy.random.Generator
    """
    positive_float(fraction, "masking fraction", at_most=1)
    u = _like(x, rng.random(x.shape, dtype=np.float32))
    return x * (u >= fraction)


NOISES = {"gaussian": gaussian, "salt-pepper": salt_and_pepper, "mask": masking}


def make_noise(name, amount):
    """Return ``corrupt(x, rng)`` for a noise named in :data:`NOISES`.

    Parameters
    ----------
    name : {"gaussian", "salt-pepper", "mask"}
    amount : float
        The noise factor (gaussian) or the fraction of pixels hit.
    """
    if name not in NOISES:
        raise ValueError(f"unknown noise {name!r}; expected one of: {', '.join(NOISES)}")
    function = NOISES[name]
    function(np.zeros((1,), dtype=np.float32), amount, np.random.default_rng(0))  # validates amount

    def corrupt(x, rng):
        return function(x, amount, rng)

    corrupt.__name__ = f"{name}({amount})"
    return corrupt

