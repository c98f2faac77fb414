"""Tests for scratchae.backend, plus NumPy-vs-CuPy agreement tests: real CuPy on a GPU
(skipped elsewhere), and scratchae's CuPy branches on the strict stand-in (NumPy on
both sides)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import scratchae.backend as B

from conftest import REAL_CUPY, to_np


def test_default_backend_is_numpy_in_fresh_process():
    out = subprocess.run(
        [sys.executable, "-c",
         "import scratchae.backend as b, numpy; "
         "print(b.get_backend(), b.get_xp() is numpy)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["numpy", "True"]


def test_default_backend_is_numpy():
    assert B.get_backend() == "numpy"
    assert B.get_xp() is np


def test_unknown_backend_raises_value_error():
    with pytest.raises(ValueError) as ei:
        B.set_backend("tensorflow")
    msg = str(ei.value)
    assert "numpy" in msg and "cupy" in msg, msg
    assert B.get_backend() == "numpy"


@pytest.mark.skipif(B.cupy_available(), reason="CuPy and a GPU are available")
def test_cupy_backend_without_cupy_raises_runtime_error():
    assert B.cupy_available() is False
    with pytest.raises(RuntimeError) as ei:
        B.set_backend("cupy")
    assert "pip install cupy-cuda12x" in str(ei.value)
    # the failed switch leaves the backend untouched
    assert B.get_backend() == "numpy"
    assert B.get_xp() is np


def test_cupy_available_returns_bool():
    assert isinstance(B.cupy_available(), bool)


def test_set_backend_numpy_roundtrip():
    B.set_backend("numpy")
    assert B.get_backend() == "numpy"
    assert B.get_xp() is np


def test_get_array_module_numpy():
    a = np.zeros(3)
    assert B.get_array_module(a) is np
    assert B.get_array_module(a, np.ones((2, 2))) is np


def test_numpy_asarray_to_numpy_roundtrip():
    a = np.arange(12.0).reshape(3, 4)
    b = B.asarray(a)
    assert isinstance(b, np.ndarray)
    np.testing.assert_array_equal(b, a)
    c = B.asarray(a, dtype=np.float32)
    assert c.dtype == np.float32
    np.testing.assert_array_equal(c, a.astype(np.float32))
    d = B.to_numpy(c)
    assert isinstance(d, np.ndarray) and d.dtype == np.float32
    np.testing.assert_array_equal(d, a)
    # lists and scalars are accepted too
    np.testing.assert_array_equal(B.to_numpy(B.asarray([1.0, 2.0])), [1.0, 2.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_asarray_to_numpy_roundtrip_on_backend(backend, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    b = B.asarray(a)
    xp = B.get_xp()
    assert B.get_array_module(b) is xp
    assert b.dtype == dtype
    assert tuple(b.shape) == a.shape
    back = B.to_numpy(b)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a)
    assert B.asarray(a, dtype=np.float32).dtype == np.float32
    assert B.get_backend() == backend


def test_fixture_restores_numpy(backend):
    # the fixture switched to the requested backend; teardown restores numpy
    assert B.get_backend() == backend


def test_backend_is_numpy_after_fixture_tests():
    assert B.get_backend() == "numpy"


# --------------------------------------------------------------------------
# NumPy vs CuPy agreement: on a GPU; without one, NumPy against scratchae's CuPy
# branches run by the strict stand-in
# --------------------------------------------------------------------------
def _run_denoiser_step(backend_name, weights, x_np, t_np, dtype, path):
    """One forward and backward of the conv denoiser on a backend, as host arrays."""
    from scratchae import fast
    from scratchae.losses import SigmoidCrossEntropy
    from scratchae.models import conv_denoiser

    B.set_backend(backend_name)
    try:
        model = conv_denoiser(seed=0, dtype=dtype)
        for k, p in model.params.items():
            p[...] = B.asarray(weights[k], dtype=dtype)
        net = fast.compile(model, input_grad=True, workers=1) if path == "fast" else model
        loss = SigmoidCrossEntropy()
        logits = net.forward(B.asarray(x_np, dtype=dtype))
        val = float(loss.forward(logits, B.asarray(t_np, dtype=dtype)))
        dx = net.backward(loss.backward())
        return {
            "logits": to_np(logits),
            "loss": val,
            "dx": to_np(dx),
            "grads": {k: to_np(g) for k, g in net.grads.items()},
            "init": {k: to_np(p) for k, p in conv_denoiser(seed=0).params.items()},
        }
    finally:
        B.set_backend("numpy")


def _batch():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4, 1, 28, 28))
    return x, np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)


def _agree_in_float64(path):
    """One step of the conv denoiser agrees to 1e-9 in float64 on both backends: rounding
    differences between cuBLAS and OpenBLAS (~1e-16) cannot flip a ReLU mask or a max-pool
    argmax, as they can in float32."""
    from scratchae.models import conv_denoiser

    weights = {k: to_np(p) for k, p in conv_denoiser(seed=0, dtype=np.float64).params.items()}
    x, t = _batch()
    cpu = _run_denoiser_step("numpy", weights, x, t, np.float64, path)
    gpu = _run_denoiser_step("cupy", weights, x, t, np.float64, path)
    np.testing.assert_allclose(gpu["logits"], cpu["logits"], rtol=1e-9, atol=1e-12)
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-12)
    np.testing.assert_allclose(gpu["dx"], cpu["dx"], rtol=1e-9,
                               atol=1e-9 * np.abs(cpu["dx"]).max())
    assert set(gpu["grads"]) == set(cpu["grads"])
    for k, g in cpu["grads"].items():
        assert gpu["grads"][k].dtype == np.float64
        np.testing.assert_allclose(gpu["grads"][k], g, rtol=1e-9, atol=1e-9 * np.abs(g).max(),
                                   err_msg=k)
    for k in cpu["init"]:  # same seed -> same initial weights on both backends
        np.testing.assert_array_equal(gpu["init"][k], cpu["init"][k], err_msg=k)


def _agree_in_float32_forward():
    """float32: the forward pass only (a backward can differ wherever rounding flips an
    argmax); the logits agree to float32 precision."""
    from scratchae.models import conv_denoiser

    weights = {k: to_np(p) for k, p in conv_denoiser(seed=0).params.items()}
    x, t = _batch()
    cpu = _run_denoiser_step("numpy", weights, x, t, np.float32, "fast")
    gpu = _run_denoiser_step("cupy", weights, x, t, np.float32, "fast")
    assert gpu["logits"].dtype == np.float32
    np.testing.assert_allclose(gpu["logits"], cpu["logits"], rtol=1e-4, atol=1e-5)
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-5)


def on_a_gpu(test):
    """Marks ``cupy`` and ``gpu``; skipped unless real CuPy and a CUDA GPU are usable."""
    for mark in (pytest.mark.cupy, pytest.mark.gpu,
                 pytest.mark.skipif(not REAL_CUPY, reason="needs CuPy and a usable CUDA GPU")):
        test = mark(test)
    return test


@on_a_gpu
@pytest.mark.parametrize("path", ["textbook", "fast"])
def test_conv_denoiser_step_on_a_gpu_agrees_with_numpy_float64(path):
    """Real CuPy on a CUDA GPU against NumPy: the GPU's numerics."""
    _agree_in_float64(path)


@on_a_gpu
def test_conv_denoiser_forward_on_a_gpu_agrees_with_numpy_float32():
    """Real CuPy on a CUDA GPU against NumPy, float32."""
    _agree_in_float32_forward()


@pytest.mark.cupy
@pytest.mark.parametrize("path", ["textbook", "fast"])
def test_scratchaes_cupy_branches_agree_with_its_numpy_ones_float64(strict_cupy_backend, path):
    """No GPU needed: the strict stand-in computes with NumPy on both sides, so this
    compares NumPy with NumPy, through scratchae's two code paths: what runs only on
    CuPy (one im2col slice for the whole batch, index arrays on the device, the
    kernel's twin...) against what runs on NumPy. It checks that those branches compute
    the same function; it says nothing about a GPU's numerics."""
    _agree_in_float64(path)


@pytest.mark.cupy
def test_scratchaes_cupy_branches_agree_with_its_numpy_ones_float32_forward(
        strict_cupy_backend):
    """The same, float32 (NumPy on both sides: see the float64 test)."""
    _agree_in_float32_forward()
