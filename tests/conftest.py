"""Shared fixtures and helpers for the scratchae test suite.

Every layer / loss / model test takes the ``backend`` fixture, so the same
test body runs on NumPy and on CuPy. Reference values are always computed in
NumPy on the host and compared against ``to_np(result)``.

Where the "cupy" runs happen
----------------------------
* On **real CuPy** when CuPy is installed and a CUDA GPU is usable.
* Otherwise on **tests/strict_cupy.py**, a strict stand-in for CuPy written
  for these tests and backed by NumPy. It is NOT a GPU and proves nothing
  about CUDA: it only checks host/device discipline the way real CuPy
  enforces it (no implicit ``np.asarray`` of a device array, no NumPy array
  as an operand of a CuPy operation or assigned into a device array, C-order
  ufunc outputs...) and counts kernel launches, transfers and syncs. For the
  duration of each such test it sits in ``sys.modules["cupy"]`` and
  ``["cupyx"]``; it is removed afterwards, so tests of the "CuPy is not
  installed" behaviour still see no CuPy.
* ``SCRATCHAE_CUPY=stand-in`` forces the stand-in even where a GPU is usable.
* The tests that count launches and transfers (``strict_cupy_backend``) run
  on the stand-in everywhere, GPU machines included: there most of all the
  host/device checks must run. scratchae keeps a few device objects between
  calls (the fused Adam kernel, the conv workspaces) under the library's
  name, "cupy" for both; :func:`stand_in` empties them on every switch, so
  neither library ever gets the other's objects.

Markers (declared in setup.cfg)
-------------------------------
* ``cupy``: the test runs through the "cupy" param (stand-in or real CuPy).
* ``gpu``: needs a real CUDA GPU. The "cupy" param carries it only when it
  runs on real CuPy. So on a GPU machine ``pytest -m gpu`` runs every
  backend-parametrized test on the device (and the GPU-only tests), while on
  a CPU machine ``-m gpu`` selects only GPU-only tests (skipped there) and
  ``-m "not gpu"`` keeps the stand-in runs, which need no GPU.
  ``pytest -m cupy`` runs the CuPy path wherever it can: on the device or on
  the stand-in. The test id stays ``[cupy]`` either way; the header of the
  pytest run says which one is in use.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

import scratchae.backend as B

import strict_cupy

# Decided once, before any stand-in is installed.
REAL_CUPY = B.cupy_available() and os.environ.get("SCRATCHAE_CUPY", "") != "stand-in"
CUPY_MARKS = [pytest.mark.cupy] + ([pytest.mark.gpu] if REAL_CUPY else [])


def pytest_report_header(config):
    if REAL_CUPY:
        import cupy
        return f"cupy backend: real CuPy {cupy.__version__} on a CUDA GPU"
    return ("cupy backend: tests/strict_cupy.py, a NumPy stand-in that checks host/device "
            "discipline (NOT a GPU)")


def forget_device_objects():
    """Empty what scratchae keeps on a device between calls: the fused Adam kernel
    (``backend._ADAM_KERNEL``) and this thread's conv workspaces (the only thread that
    uses a device: ``workers`` is 1 on CuPy). Both are keyed by the library's name,
    which the stand-in shares with real CuPy."""
    from scratchae.fast import conv

    B._ADAM_KERNEL = None
    conv._WORKSPACES.__dict__.pop("buffers", None)


@contextlib.contextmanager
def stand_in():
    """The strict stand-in in ``sys.modules`` for the block, with scratchae's device
    objects forgotten on the way in and out (so it never gets real CuPy's, nor the
    other way round)."""
    forget_device_objects()
    try:
        with strict_cupy.installed():
            yield strict_cupy
    finally:
        forget_device_objects()


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=CUPY_MARKS)])
def backend(request):
    """Run the test on the given backend, restoring NumPy afterwards.

    "cupy" is real CuPy on a GPU machine, else the strict stand-in (no GPU).
    """
    name = request.param
    with contextlib.ExitStack() as stack:
        if name == "cupy" and not REAL_CUPY:
            stack.enter_context(stand_in())
        B.set_backend(name)
        try:
            yield name
        finally:
            B.set_backend("numpy")


@pytest.fixture
def strict_cupy_backend():
    """The strict stand-in as the "cupy" backend, for tests that count launches and transfers.

    Yields the ``strict_cupy`` module: ``with strict_cupy_backend.counting() as c: ...``.
    The stand-in even where real CuPy is usable: that is where the host/device checks
    matter most (:func:`stand_in` keeps the two libraries' device objects apart).
    """
    with stand_in():
        B.set_backend("cupy")
        try:
            yield strict_cupy
        finally:
            B.set_backend("numpy")


# NumPy twins of scratchae's CUDA kernels, for the stand-in (which cannot run
# CUDA C). Each repeats its kernel's body, so the stand-in can tell when the
# kernel changes and the twin has not followed.
_ADAM_BODY = """
            m = b1 * m + c1 * g;
            v = b2 * v + c2 * g * g;
            p -= lr_t * m / (sqrt(v) + eps_t);
"""


@strict_cupy.register_kernel_twin("scratchae_adam", operation=_ADAM_BODY)
def _adam_twin(g, lr_t, b1, c1, b2, c2, eps_t, p, m, v):
    m[...] = b1 * m + c1 * g
    v[...] = b2 * v + c2 * g * g
    p -= lr_t * m / (np.sqrt(v) + eps_t)


def to_xp(a, dtype=None):
    """Host (NumPy) array -> array of the current backend (always a fresh copy)."""
    a = np.array(a, dtype=dtype, copy=True)
    return B.asarray(a, dtype=dtype)


def to_np(a):
    """Any backend array -> NumPy array (copy on the host)."""
    return np.array(B.to_numpy(a), copy=True)


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
