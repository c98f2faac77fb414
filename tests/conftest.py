"""Shared fixtures and helpers for the scratchae test suite.

Every layer / loss / model test takes the ``backend`` fixture, so the same
test body runs on NumPy and (when CuPy and a usable GPU are present) on CuPy.
Reference values are always computed in NumPy on the host and compared
against ``to_np(result)``.
"""
from __future__ import annotations

import numpy as np
import pytest

import scratchae.backend as B


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend(request):
    """Run the test on the given backend, restoring NumPy afterwards."""
    name = request.param
    if name == "cupy" and not B.cupy_available():
        pytest.skip("CuPy and a usable CUDA GPU are required for the cupy backend")
    B.set_backend(name)
    try:
        yield name
    finally:
        B.set_backend("numpy")


def to_xp(a, dtype=None):
    """Host (NumPy) array -> array of the current backend (always a fresh copy)."""
    a = np.array(a, dtype=dtype, copy=True)
    return B.asarray(a, dtype=dtype)


def to_np(a):
    """Any backend array -> NumPy array (copy on the host)."""
    return np.array(B.to_numpy(a), copy=True)


@pytest.fixture
def xp_of():
    """Fixture form of :func:`to_xp` for tests that prefer fixtures."""
    return to_xp


def sampled_gradient_errors(model, x, *, n_samples=4, seed=0, eps=1e-6, keys=None):
    """Gradient check on a random subset of entries of every array.

    Same convention as ``scratchae.gradcheck.gradient_errors`` (scalar
    L = sum(forward(x) * dout) with a random upstream gradient ``dout``) but
    only ``n_samples`` randomly chosen entries of ``x`` and of every
    parameter are perturbed, which keeps the check affordable for large
    models.  The relative error of an array is
    max|analytic - numeric| over the sampled entries divided by
    max(max|full analytic gradient|, max|numeric|, 1e-12).
    Returns a dict {"dx": err, "<param key>": err, ...}.
    """
    rng = np.random.default_rng(seed)
    out = model.forward(x)
    dout_np = rng.standard_normal(tuple(out.shape))
    dout = to_xp(dout_np, dtype=to_np(out).dtype)
    dx = to_np(model.backward(dout))
    analytic = {"dx": dx}
    for k, g in model.grads.items():
        analytic[k] = to_np(g)

    def loss():
        return float(to_np(model.forward(x) * dout).sum())

    arrays = {"dx": x}
    arrays.update(model.params)
    if keys is not None:
        arrays = {k: arrays[k] for k in keys}
    errors = {}
    for key, arr in arrays.items():
        a_full = analytic[key]
        flat = rng.choice(arr.size, size=min(n_samples, arr.size), replace=False)
        num = []
        ana = []
        for f in flat:
            idx = np.unravel_index(int(f), tuple(arr.shape))
            orig = float(arr[idx])
            arr[idx] = orig + eps
            lp = loss()
            arr[idx] = orig - eps
            lm = loss()
            arr[idx] = orig
            num.append((lp - lm) / (2 * eps))
            ana.append(a_full[idx])
        num = np.asarray(num)
        ana = np.asarray(ana)
        denom = max(np.abs(a_full).max(), np.abs(num).max(), 1e-12)
        errors[key] = float(np.abs(ana - num).max() / denom)
    return errors
