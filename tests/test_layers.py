"""Tests for scratchae.layers (and the gradient checker they rely on)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import signal

from scratchae import gradcheck
from scratchae.layers import (
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Upsample2D,
)

from conftest import to_np, to_xp

GRAD_TOL = 1e-6


# --------------------------------------------------------------------------
# reference implementations (pure NumPy, deliberately naive)
# --------------------------------------------------------------------------
def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _same_pads(size, k, s):
    out = -(-size // s)  # ceil
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def ref_conv2d(x, W, b, stride=1, padding="same"):
    """Cross-correlation via scipy.signal.correlate, one (n, o, c) at a time."""
    N, C, H, Wd = x.shape
    OC, C2, KH, KW = W.shape
    assert C == C2
    SH, SW = _pair(stride)
    if padding == "same":
        pt, pb = _same_pads(H, KH, SH)
        pl, pr = _same_pads(Wd, KW, SW)
    elif padding == "valid":
        pt = pb = pl = pr = 0
    else:
        pt = pb = pl = pr = int(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    outs = []
    for n in range(N):
        per_o = []
        for o in range(OC):
            acc = None
            for c in range(C):
                r = signal.correlate(xp[n, c], W[o, c], mode="valid")[::SH, ::SW]
                acc = r if acc is None else acc + r
            per_o.append(acc + b[o])
        outs.append(np.stack(per_o))
    return np.stack(outs)


def ref_maxpool(x, k=2, s=None, padding="valid"):
    KH, KW = _pair(k)
    SH, SW = _pair(s if s is not None else k)
    N, C, H, W = x.shape
    if padding == "same":
        pt, pb = _same_pads(H, KH, SH)
        pl, pr = _same_pads(W, KW, SW)
        x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf)
        OH, OW = -(-H // SH), -(-W // SW)
    else:
        OH, OW = (H - KH) // SH + 1, (W - KW) // SW + 1
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    out[n, c, i, j] = x[n, c, i * SH:i * SH + KH, j * SW:j * SW + KW].max()
    return out


def ref_upsample(x, OH, OW):
    N, C, H, W = x.shape
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for i in range(OH):
        for j in range(OW):
            out[:, :, i, j] = x[:, :, (i * H) // OH, (j * W) // OW]
    return out


def tie_free(shape, rng, scale=0.01):
    """Distinct values with gaps of `scale` (>> finite-difference eps)."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) - n / 2) * scale


def away_from_zero(shape, rng, lo=0.1, hi=2.0):
    mag = rng.uniform(lo, hi, size=shape)
    return mag * rng.choice([-1.0, 1.0], size=shape)


# --------------------------------------------------------------------------
# layer factories used by the generic tests (dtype, grads keys, dout intact)
# --------------------------------------------------------------------------
def _input(shape, rng, kind="normal"):
    if kind == "tie_free":
        return tie_free(shape, rng)
    if kind == "away":
        return away_from_zero(shape, rng)
    return rng.standard_normal(shape)


# (id, factory(dtype), input shape, input kind)
LAYER_CASES = [
    ("dense", lambda dt: Dense(6, 4, dtype=dt, seed=0), (3, 6), "normal"),
    ("conv_same", lambda dt: Conv2D(3, 4, 3, dtype=dt, seed=0), (2, 3, 7, 5), "normal"),
    ("conv_s2", lambda dt: Conv2D(3, 4, 3, stride=2, dtype=dt, seed=0), (2, 3, 7, 5), "normal"),
    ("conv_valid_rect", lambda dt: Conv2D(3, 2, (3, 2), padding="valid", dtype=dt, seed=0),
     (2, 3, 7, 5), "normal"),
    ("maxpool", lambda dt: MaxPool2D(2), (2, 3, 6, 4), "tie_free"),
    ("maxpool_same", lambda dt: MaxPool2D(2, padding="same"), (2, 3, 7, 7), "tie_free"),
    ("upsample", lambda dt: Upsample2D(size=(7, 7)), (2, 3, 4, 4), "normal"),
    ("upsample_scale", lambda dt: Upsample2D(scale_factor=2), (2, 3, 3, 5), "normal"),
    ("relu", lambda dt: ReLU(), (2, 3, 4, 5), "away"),
    ("sigmoid", lambda dt: Sigmoid(), (2, 3, 4, 5), "normal"),
    ("flatten", lambda dt: Flatten(), (2, 3, 4, 5), "normal"),
    ("reshape", lambda dt: Reshape((3, 20)), (2, 60), "normal"),
]
LAYER_IDS = [c[0] for c in LAYER_CASES]


# --------------------------------------------------------------------------
# gradient checks (float64, random upstream gradient)
# --------------------------------------------------------------------------
def _check(layer, x_np, tol=GRAD_TOL):
    x = to_xp(x_np, dtype=np.float64)
    errs = gradcheck.gradient_errors(layer, x, seed=0)
    assert "dx" in errs
    assert set(layer.params) <= set(errs), (sorted(layer.params), sorted(errs))
    assert max(errs.values()) < tol, errs
    assert gradcheck.check_layer(layer, x, seed=0) < tol
    # the checker restores x after perturbing it
    np.testing.assert_array_equal(to_np(x), x_np)


@pytest.mark.parametrize(
    "cin,cout,k,stride,padding,shape",
    [
        (3, 4, 3, 1, "same", (2, 3, 7, 5)),
        (3, 4, 3, 2, "same", (2, 3, 7, 5)),
        (3, 4, 3, 2, "same", (2, 3, 8, 6)),
        (3, 2, 3, 1, 1, (2, 3, 7, 5)),
        (3, 2, 3, 2, 2, (2, 3, 7, 5)),
        (3, 2, 3, 1, "valid", (2, 3, 7, 5)),
        (3, 2, 3, 2, "valid", (2, 3, 7, 5)),
        (3, 2, (3, 2), 1, "same", (2, 3, 7, 5)),
        (3, 2, (3, 2), (1, 2), "valid", (2, 3, 7, 5)),
        (2, 3, (1, 5), 1, "same", (2, 2, 7, 5)),
        (2, 3, (1, 5), (2, 1), 2, (2, 2, 7, 5)),
        (2, 3, 2, 1, "same", (2, 2, 7, 5)),
        (2, 3, 4, 2, "same", (1, 2, 7, 5)),
        (1, 2, 1, 1, "valid", (2, 1, 3, 3)),
        # fewer output than input channels: the multiply-first forward
        (4, 1, 3, 1, "same", (2, 4, 7, 5)),
        (5, 2, (3, 2), 1, 1, (2, 5, 6, 5)),
        (3, 2, (2, 3), 1, "same", (2, 3, 5, 6)),
    ],
)
def test_conv2d_gradcheck(backend, cin, cout, k, stride, padding, shape):
    layer = Conv2D(cin, cout, k, stride=stride, padding=padding, dtype=np.float64, seed=1)
    # non-zero biases so that the bias gradient path is exercised with b != 0
    layer.params["b"][...] = to_xp(np.linspace(-0.5, 0.5, cout))
    _check(layer, np.random.default_rng(0).standard_normal(shape))


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        (dict(kernel_size=2), (2, 3, 6, 4)),
        (dict(kernel_size=2), (2, 3, 7, 5)),  # valid drops the last row/col
        (dict(kernel_size=2, padding="same"), (2, 3, 7, 7)),
        (dict(kernel_size=2, padding="same"), (2, 2, 7, 4)),
        (dict(kernel_size=3, stride=2), (2, 3, 7, 7)),  # overlapping windows
        (dict(kernel_size=3, stride=2, padding="same"), (2, 2, 6, 5)),
        (dict(kernel_size=(2, 3), stride=(2, 1)), (2, 2, 6, 7)),
    ],
)
def test_maxpool_gradcheck(backend, kwargs, shape):
    layer = MaxPool2D(**kwargs)
    _check(layer, tie_free(shape, np.random.default_rng(3)))


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        (dict(size=(7, 7)), (2, 3, 4, 4)),
        (dict(size=(7, 6)), (2, 2, 3, 5)),
        (dict(size=(14, 14)), (1, 2, 7, 7)),
        (dict(scale_factor=2), (2, 3, 3, 5)),
    ],
)
def test_upsample_gradcheck(backend, kwargs, shape):
    layer = Upsample2D(**kwargs)
    _check(layer, np.random.default_rng(4).standard_normal(shape))


def test_dense_gradcheck(backend):
    layer = Dense(7, 5, dtype=np.float64, seed=2)
    layer.params["b"][...] = to_xp(np.linspace(-1, 1, 5))
    _check(layer, np.random.default_rng(5).standard_normal((3, 7)))


def test_relu_gradcheck(backend):
    _check(ReLU(), away_from_zero((2, 3, 7, 5), np.random.default_rng(6)))


def test_sigmoid_gradcheck(backend):
    _check(Sigmoid(), 3 * np.random.default_rng(7).standard_normal((2, 3, 7, 5)))


def test_flatten_gradcheck(backend):
    _check(Flatten(), np.random.default_rng(8).standard_normal((2, 3, 7, 5)))


@pytest.mark.parametrize(
    "shape,target",
    [((2, 105), (3, 7, 5)), ((2, 784), (1, 28, 28)), ((2, 3, 7, 5), (105,))],
)
def test_reshape_gradcheck(backend, shape, target):
    _check(Reshape(target), np.random.default_rng(9).standard_normal(shape))


# --------------------------------------------------------------------------
# forward references
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "k,stride,padding",
    [
        (3, 1, "same"),
        (3, 2, "same"),
        (3, 1, "valid"),
        (3, 2, "valid"),
        (3, 1, 1),
        (3, 2, 2),
        ((3, 2), 1, "same"),
        ((3, 2), (2, 1), 1),
        ((1, 5), 1, "same"),
        ((1, 5), (1, 2), "valid"),
        (2, 1, "same"),
        (4, 3, "same"),
        (5, 1, 2),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv2d_forward_matches_scipy(backend, k, stride, padding, dtype):
    rng = np.random.default_rng(10)
    layer = Conv2D(3, 4, k, stride=stride, padding=padding, dtype=dtype, seed=3)
    layer.params["b"][...] = to_xp(rng.standard_normal(4), dtype=dtype)
    x = rng.standard_normal((2, 3, 7, 5)).astype(dtype)
    y = layer.forward(to_xp(x))
    W = to_np(layer.params["W"]).astype(np.float64)
    b = to_np(layer.params["b"]).astype(np.float64)
    ref = ref_conv2d(x.astype(np.float64), W, b, stride=stride, padding=padding)
    assert tuple(y.shape) == ref.shape
    assert y.dtype == dtype
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_np(y), ref, **tol)


_HYP = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@_HYP
@given(
    h=st.integers(1, 9), w=st.integers(1, 9),
    kh=st.integers(1, 4), kw=st.integers(1, 4),
    sh=st.integers(1, 3), sw=st.integers(1, 3),
    padding=st.sampled_from(["same", "valid", 0, 1, 2]),
    seed=st.integers(0, 2**16),
)
def test_conv2d_forward_property(backend, h, w, kh, kw, sh, sw, padding, seed):
    """Random geometry (stride > kernel, kernel > input, ...) vs scipy."""
    p = 0 if padding in ("same", "valid") else padding
    if padding == "valid" or isinstance(padding, int):
        if h + 2 * p < kh or w + 2 * p < kw:
            return  # no output pixel: nothing to compare
    rng = np.random.default_rng(seed)
    layer = Conv2D(2, 3, (kh, kw), stride=(sh, sw), padding=padding, dtype=np.float64, seed=seed)
    layer.params["b"][...] = to_xp(rng.standard_normal(3))
    x = rng.standard_normal((2, 2, h, w))
    y = layer.forward(to_xp(x))
    ref = ref_conv2d(x, to_np(layer.params["W"]), to_np(layer.params["b"]), (sh, sw), padding)
    assert tuple(y.shape) == ref.shape
    np.testing.assert_allclose(to_np(y), ref, rtol=1e-10, atol=1e-12)
    dx = layer.backward(to_xp(np.ones(ref.shape)))
    assert tuple(dx.shape) == x.shape


@_HYP
@given(
    h=st.integers(1, 9), w=st.integers(1, 9),
    kh=st.integers(1, 3), kw=st.integers(1, 3),
    sh=st.integers(1, 3), sw=st.integers(1, 3),
    padding=st.sampled_from(["same", "valid"]),
    seed=st.integers(0, 2**16),
)
def test_maxpool_forward_property(backend, h, w, kh, kw, sh, sw, padding, seed):
    if padding == "valid" and (h < kh or w < kw):
        return
    x = np.random.default_rng(seed).standard_normal((1, 2, h, w))
    layer = MaxPool2D((kh, kw), stride=(sh, sw), padding=padding)
    y = layer.forward(to_xp(x))
    ref = ref_maxpool(x, (kh, kw), (sh, sw), padding)
    assert tuple(y.shape) == ref.shape
    np.testing.assert_array_equal(to_np(y), ref)
    dx = to_np(layer.backward(to_xp(np.ones(ref.shape))))
    # every output sends exactly its gradient to one input
    assert dx.sum() == pytest.approx(ref.size)


@_HYP
@given(h=st.integers(1, 8), w=st.integers(1, 8), oh=st.integers(1, 16), ow=st.integers(1, 16),
       seed=st.integers(0, 2**16))
def test_upsample_forward_property(backend, h, w, oh, ow, seed):
    x = np.random.default_rng(seed).standard_normal((1, 2, h, w))
    layer = Upsample2D(size=(oh, ow))
    y = layer.forward(to_xp(x))
    np.testing.assert_array_equal(to_np(y), ref_upsample(x, oh, ow))
    dx = to_np(layer.backward(to_xp(np.ones((1, 2, oh, ow)))))
    assert dx.shape == x.shape
    assert dx.sum() == pytest.approx(2 * oh * ow)


def test_conv2d_identity_kernel(backend):
    """A centred delta kernel with 'same' padding reproduces its input."""
    layer = Conv2D(2, 2, 3, dtype=np.float64, seed=0)
    W = np.zeros((2, 2, 3, 3))
    W[0, 0, 1, 1] = 1.0
    W[1, 1, 1, 1] = 2.0
    layer.params["W"][...] = to_xp(W)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 6))
    y = to_np(layer.forward(to_xp(x)))
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-12)
    np.testing.assert_allclose(y[:, 1], 2 * x[:, 1], atol=1e-12)


def test_conv2d_is_cross_correlation_not_convolution(backend):
    """Kernel with a single 1 at the top-left picks the up-left neighbour."""
    layer = Conv2D(1, 1, 3, padding="valid", dtype=np.float64, seed=0)
    W = np.zeros((1, 1, 3, 3))
    W[0, 0, 0, 0] = 1.0
    layer.params["W"][...] = to_xp(W)
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    y = to_np(layer.forward(to_xp(x)))
    np.testing.assert_array_equal(y[0, 0], x[0, 0, :3, :3])


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        (dict(kernel_size=2), (2, 3, 6, 4)),
        (dict(kernel_size=2), (2, 3, 7, 5)),
        (dict(kernel_size=2, padding="same"), (2, 3, 7, 7)),
        (dict(kernel_size=2, padding="same"), (1, 2, 5, 8)),
        (dict(kernel_size=3, stride=2), (2, 3, 7, 7)),
        (dict(kernel_size=3, stride=2, padding="same"), (2, 2, 6, 5)),
        (dict(kernel_size=3, stride=1), (1, 2, 5, 6)),
        (dict(kernel_size=(2, 3), stride=(2, 1)), (2, 2, 6, 7)),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_maxpool_forward_matches_loop(backend, kwargs, shape, dtype):
    x = np.random.default_rng(11).standard_normal(shape).astype(dtype)
    layer = MaxPool2D(**kwargs)
    y = layer.forward(to_xp(x))
    ref = ref_maxpool(x, kwargs["kernel_size"], kwargs.get("stride"),
                      kwargs.get("padding", "valid"))
    assert tuple(y.shape) == ref.shape
    assert y.dtype == dtype
    np.testing.assert_array_equal(to_np(y), ref)


def test_maxpool_same_pads_bottom_right(backend):
    """7x7 'same' -> 4x4; the extra row/col is at the bottom/right."""
    x = np.arange(49.0).reshape(1, 1, 7, 7)
    y = to_np(MaxPool2D(2, padding="same").forward(to_xp(x)))
    assert y.shape == (1, 1, 4, 4)
    # top-left window is rows 0-1, cols 0-1 (no padding at top/left)
    assert y[0, 0, 0, 0] == 8.0
    # last row/col of windows contain only the single real row/col 6
    np.testing.assert_array_equal(y[0, 0, 3, :3], [43.0, 45.0, 47.0])
    np.testing.assert_array_equal(y[0, 0, :3, 3], [13.0, 27.0, 41.0])
    assert y[0, 0, 3, 3] == 48.0
    # negative inputs: padding must be -inf, never 0
    y2 = to_np(MaxPool2D(2, padding="same").forward(to_xp(-x - 1)))
    assert (y2 < 0).all()


def test_maxpool_backward_routes_to_argmax(backend):
    x = np.array([[1.0, 5.0, 2.0, 0.0],
                  [3.0, 4.0, 9.0, 7.0],
                  [0.5, 0.1, 0.2, 0.3],
                  [0.4, 6.0, 0.6, 0.7]]).reshape(1, 1, 4, 4)
    layer = MaxPool2D(2)
    y = to_np(layer.forward(to_xp(x)))
    np.testing.assert_array_equal(y[0, 0], [[5.0, 9.0], [6.0, 0.7]])
    dout = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    dx = to_np(layer.backward(to_xp(dout)))
    expected = np.zeros((4, 4))
    expected[0, 1] = 1.0
    expected[1, 2] = 2.0
    expected[3, 1] = 3.0
    expected[3, 3] = 4.0
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_upsample_4_to_7_row_map(backend):
    x = np.arange(4.0).reshape(1, 1, 4, 1) * np.ones((1, 1, 1, 4))
    y = to_np(Upsample2D(size=(7, 7)).forward(to_xp(x)))
    assert y.shape == (1, 1, 7, 7)
    np.testing.assert_array_equal(y[0, 0, :, 0], [0, 0, 1, 1, 2, 2, 3])
    xt = np.swapaxes(x, 2, 3)
    yt = to_np(Upsample2D(size=(7, 7)).forward(to_xp(xt)))
    np.testing.assert_array_equal(yt[0, 0, 0, :], [0, 0, 1, 1, 2, 2, 3])


@pytest.mark.parametrize(
    "kwargs,shape,out_hw",
    [
        (dict(size=(7, 7)), (2, 3, 4, 4), (7, 7)),
        (dict(size=(7, 6)), (2, 2, 3, 5), (7, 6)),
        (dict(size=(28, 28)), (1, 2, 14, 14), (28, 28)),
        (dict(scale_factor=2), (2, 3, 3, 5), (6, 10)),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_upsample_forward_matches_loop(backend, kwargs, shape, out_hw, dtype):
    x = np.random.default_rng(12).standard_normal(shape).astype(dtype)
    layer = Upsample2D(**kwargs)
    y = layer.forward(to_xp(x))
    ref = ref_upsample(x, *out_hw)
    assert tuple(y.shape) == ref.shape
    assert y.dtype == dtype
    np.testing.assert_array_equal(to_np(y), ref)


def test_upsample_backward_sums(backend):
    x = np.zeros((1, 1, 4, 4))
    layer = Upsample2D(size=(7, 7))
    layer.forward(to_xp(x))
    dx = to_np(layer.backward(to_xp(np.ones((1, 1, 7, 7)))))
    # rows 0..3 receive 2,2,2,1 copies; same for columns
    counts = np.array([2.0, 2.0, 2.0, 1.0])
    np.testing.assert_array_equal(dx[0, 0], np.outer(counts, counts))
    assert dx.sum() == 49.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_forward_matches_matmul(backend, dtype):
    rng = np.random.default_rng(13)
    layer = Dense(6, 4, dtype=dtype, seed=0)
    layer.params["b"][...] = to_xp(rng.standard_normal(4), dtype=dtype)
    x = rng.standard_normal((5, 6)).astype(dtype)
    y = layer.forward(to_xp(x))
    W = to_np(layer.params["W"]).astype(np.float64)
    b = to_np(layer.params["b"]).astype(np.float64)
    assert tuple(y.shape) == (5, 4)
    assert y.dtype == dtype
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_np(y), x.astype(np.float64) @ W + b, **tol)


def test_activation_and_shape_forwards(backend):
    x = np.random.default_rng(14).standard_normal((2, 3, 4, 5)) * 4
    np.testing.assert_array_equal(to_np(ReLU().forward(to_xp(x))), np.maximum(x, 0))
    np.testing.assert_allclose(to_np(Sigmoid().forward(to_xp(x))), 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_array_equal(to_np(Flatten().forward(to_xp(x))), x.reshape(2, 60))
    np.testing.assert_array_equal(to_np(Reshape((5, 12)).forward(to_xp(x))), x.reshape(2, 5, 12))
    # Flatten / Reshape backward restore the input shape
    f = Flatten()
    f.forward(to_xp(x))
    assert tuple(f.backward(to_xp(np.ones((2, 60)))).shape) == x.shape
    r = Reshape((1, 28, 28))
    r.forward(to_xp(np.zeros((3, 784))))
    assert tuple(r.backward(to_xp(np.ones((3, 1, 28, 28)))).shape) == (3, 784)


def test_sigmoid_extreme_inputs_finite(backend):
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]])
    layer = Sigmoid()
    y = to_np(layer.forward(to_xp(x)))
    assert np.isfinite(y).all()
    expected = [[0.0, 1 / (1 + np.exp(50.0)), 0.5, 1 / (1 + np.exp(-50.0)), 1.0]]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-300)
    dx = to_np(layer.backward(to_xp(np.ones_like(x))))
    assert np.isfinite(dx).all()


# --------------------------------------------------------------------------
# output shapes
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer_fn,in_shape,out_shape",
    [
        (lambda: Conv2D(1, 4, 3, stride=2, padding="same"), (2, 1, 28, 28), (2, 4, 14, 14)),
        (lambda: Conv2D(1, 4, 3), (2, 1, 28, 28), (2, 4, 28, 28)),
        (lambda: Conv2D(1, 4, 3, padding="valid"), (2, 1, 28, 28), (2, 4, 26, 26)),
        (lambda: Conv2D(1, 4, 3, padding=1), (2, 1, 28, 28), (2, 4, 28, 28)),
        (lambda: Conv2D(1, 4, 3, padding=2), (2, 1, 7, 5), (2, 4, 9, 7)),
        (lambda: Conv2D(1, 4, 3, stride=2, padding="valid"), (2, 1, 7, 5), (2, 4, 3, 2)),
        (lambda: Conv2D(1, 4, 3, stride=2, padding="same"), (2, 1, 7, 5), (2, 4, 4, 3)),
        (lambda: Conv2D(1, 4, (3, 2), padding="valid"), (2, 1, 7, 5), (2, 4, 5, 4)),
        (lambda: Conv2D(1, 4, (1, 5), stride=(2, 1)), (2, 1, 7, 5), (2, 4, 4, 5)),
        (lambda: MaxPool2D(2, padding="same"), (2, 3, 7, 7), (2, 3, 4, 4)),
        (lambda: MaxPool2D(2), (2, 3, 7, 7), (2, 3, 3, 3)),
        (lambda: MaxPool2D(2), (2, 3, 28, 28), (2, 3, 14, 14)),
        (lambda: MaxPool2D(3, stride=2), (2, 3, 7, 7), (2, 3, 3, 3)),
        (lambda: MaxPool2D(3, stride=2, padding="same"), (2, 3, 7, 7), (2, 3, 4, 4)),
        (lambda: Upsample2D(size=(7, 7)), (2, 3, 4, 4), (2, 3, 7, 7)),
        (lambda: Upsample2D(scale_factor=2), (2, 3, 7, 7), (2, 3, 14, 14)),
        (lambda: Flatten(), (2, 3, 4, 5), (2, 60)),
        (lambda: Reshape((1, 28, 28)), (2, 784), (2, 1, 28, 28)),
        (lambda: Dense(5, 3), (4, 5), (4, 3)),
    ],
)
def test_output_shapes(backend, layer_fn, in_shape, out_shape):
    layer = layer_fn()
    x = to_xp(np.random.default_rng(0).standard_normal(in_shape), dtype=np.float32)
    y = layer.forward(x)
    assert tuple(y.shape) == out_shape
    dx = layer.backward(to_xp(np.ones(out_shape), dtype=np.float32))
    assert tuple(dx.shape) == in_shape


# --------------------------------------------------------------------------
# generic layer contract
# --------------------------------------------------------------------------
@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(backend, case, dtype):
    _, factory, shape, kind = case
    layer = factory(dtype)
    for k, p in layer.params.items():
        assert p.dtype == dtype, k
    x = to_xp(_input(shape, np.random.default_rng(0), kind), dtype=dtype)
    y = layer.forward(x)
    assert y.dtype == dtype
    dout = np.random.default_rng(1).standard_normal(tuple(y.shape))
    dx = layer.backward(to_xp(dout, dtype=dtype))
    assert dx.dtype == dtype
    for k, g in layer.grads.items():
        assert g.dtype == dtype, k


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_IDS)
def test_grads_keys_shapes_and_overwrite(backend, case):
    _, factory, shape, kind = case
    layer = factory(np.float64)
    assert isinstance(layer.params, dict) and isinstance(layer.grads, dict)
    # (grads may be empty until the first backward; keys must match after it)
    rng = np.random.default_rng(2)
    x = to_xp(_input(shape, rng, kind), dtype=np.float64)
    y = layer.forward(x)
    dout = to_xp(rng.standard_normal(tuple(y.shape)))
    dx1 = to_np(layer.backward(dout))
    assert set(layer.grads) == set(layer.params)
    g1 = {k: to_np(g) for k, g in layer.grads.items()}
    for k, p in layer.params.items():
        assert tuple(layer.grads[k].shape) == tuple(p.shape), k
    # a second backward with the same dout gives the same result (overwrite)
    dx2 = to_np(layer.backward(dout))
    np.testing.assert_array_equal(dx1, dx2)
    for k, g in layer.grads.items():
        np.testing.assert_array_equal(to_np(g), g1[k], err_msg=f"grads[{k!r}] accumulated")
    # a forward/backward with a different dout must not retain old grads
    layer.forward(x)
    layer.backward(dout * 0)
    for k, g in layer.grads.items():
        np.testing.assert_array_equal(to_np(g), np.zeros_like(g1[k]))


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_IDS)
def test_grads_keys_match_params_before_backward(backend, case):
    """The spec: params and grads are dicts with identical keys (always)."""
    layer = case[1](np.float64)
    assert set(layer.grads) == set(layer.params)


@pytest.mark.parametrize("case", LAYER_CASES, ids=LAYER_IDS)
def test_backward_does_not_modify_dout(backend, case):
    _, factory, shape, kind = case
    layer = factory(np.float64)
    rng = np.random.default_rng(3)
    x_np = _input(shape, rng, kind)
    x = to_xp(x_np, dtype=np.float64)
    y = layer.forward(x)
    dout_np = rng.standard_normal(tuple(y.shape))
    dout = to_xp(dout_np)
    layer.backward(dout)
    np.testing.assert_array_equal(to_np(dout), dout_np)
    # forward does not modify its input either
    np.testing.assert_array_equal(to_np(x), x_np)


# --------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------
def test_dense_init_glorot_and_zero_bias(backend):
    layer = Dense(784, 64, seed=0)
    W = to_np(layer.params["W"])
    assert W.shape == (784, 64)
    assert to_np(layer.params["b"]).shape == (64,)
    limit = math.sqrt(6 / (784 + 64))
    assert np.abs(W).max() <= limit
    assert np.abs(W).max() > 0.99 * limit
    assert abs(W.std() - limit / math.sqrt(3)) < 0.03 * limit
    assert abs(W.mean()) < 0.01 * limit
    np.testing.assert_array_equal(to_np(layer.params["b"]), 0)


@pytest.mark.parametrize("cin,cout,k", [(64, 64, 3), (1, 64, 3), (3, 5, (3, 2)), (2, 7, (1, 5))])
def test_conv_init_glorot_and_zero_bias(backend, cin, cout, k):
    KH, KW = _pair(k)
    layer = Conv2D(cin, cout, k, seed=0)
    W = to_np(layer.params["W"])
    assert W.shape == (cout, cin, KH, KW)
    assert to_np(layer.params["b"]).shape == (cout,)
    limit = math.sqrt(6 / (cin * KH * KW + cout * KH * KW))
    assert np.abs(W).max() <= limit
    if W.size > 1000:
        assert np.abs(W).max() > 0.99 * limit
        assert abs(W.std() - limit / math.sqrt(3)) < 0.03 * limit
    else:
        # a wrong fan (e.g. ignoring the kernel size) would change the scale a lot
        assert np.abs(W).max() > 0.5 * limit
    np.testing.assert_array_equal(to_np(layer.params["b"]), 0)


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: Dense(10, 6, **kw),
        lambda **kw: Conv2D(3, 4, (3, 2), **kw),
    ],
    ids=["dense", "conv"],
)
def test_seeded_init_reproducible(backend, make):
    a, b, c = make(seed=7), make(seed=7), make(seed=8)
    np.testing.assert_array_equal(to_np(a.params["W"]), to_np(b.params["W"]))
    assert not np.array_equal(to_np(a.params["W"]), to_np(c.params["W"]))
    # an explicit Generator is reproducible too, and is consumed as it is used
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    d, e = make(rng=r1), make(rng=r2)
    np.testing.assert_array_equal(to_np(d.params["W"]), to_np(e.params["W"]))
    f = make(rng=r1)
    assert not np.array_equal(to_np(d.params["W"]), to_np(f.params["W"]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_dtype(backend, dtype):
    for layer in (Dense(4, 3, dtype=dtype, seed=0), Conv2D(2, 3, 3, dtype=dtype, seed=0)):
        for k, p in layer.params.items():
            assert p.dtype == dtype, (type(layer).__name__, k)


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------
def _raises_naming(layer, x, name, *must_contain):
    with pytest.raises(ValueError) as ei:
        layer.forward(x)
    msg = str(ei.value)
    assert name in msg, msg
    for s in must_contain:
        assert s in msg, (s, msg)
    return msg


def test_dense_bad_feature_count(backend):
    _raises_naming(Dense(11, 3, seed=0), to_xp(np.zeros((2, 19), np.float32)), "Dense", "11", "19")


def test_dense_bad_ndim(backend):
    msg = _raises_naming(Dense(12, 3, seed=0), to_xp(np.zeros((2, 3, 4), np.float32)), "Dense")
    assert "3" in msg and "2" in msg, msg


def test_conv_bad_channels(backend):
    _raises_naming(Conv2D(13, 2, 3, seed=0), to_xp(np.zeros((2, 17, 5, 5), np.float32)),
                   "Conv2D", "13", "17")


@pytest.mark.parametrize("shape", [(17, 5, 5), (1, 2, 17, 5, 5)])
def test_conv_bad_ndim(backend, shape):
    msg = _raises_naming(Conv2D(17, 2, 3, seed=0), to_xp(np.zeros(shape, np.float32)), "Conv2D")
    assert "4" in msg and (str(len(shape)) in msg or str(shape) in msg), msg


@pytest.mark.parametrize(
    "layer,name",
    [(MaxPool2D(2), "MaxPool2D"), (Upsample2D(size=(7, 7)), "Upsample2D")],
)
def test_spatial_layers_bad_ndim(backend, layer, name):
    msg = _raises_naming(layer, to_xp(np.zeros((3, 8, 8), np.float32)), name)
    assert "4" in msg and ("3" in msg or "(3, 8, 8)" in msg), msg


# --------------------------------------------------------------------------
# the gradient checker itself
# --------------------------------------------------------------------------
def test_numerical_gradient_simple_function(backend):
    x_np = np.array([[0.5, -1.0, 2.0], [1.5, -0.25, 3.0]])
    x = to_xp(x_np)

    def f():
        return float(to_np((x ** 3).sum()))

    g = to_np(gradcheck.numerical_gradient(f, x))
    np.testing.assert_allclose(g, 3 * x_np ** 2, rtol=1e-7)
    np.testing.assert_array_equal(to_np(x), x_np)  # restored


def test_relative_error_formula():
    a = np.array([1.0, 2.0, -4.0])
    b = np.array([1.0, 2.5, -4.0])
    assert gradcheck.relative_error(a, b) == pytest.approx(0.5 / 4.0)
    assert gradcheck.relative_error(a, a) == 0.0
    assert gradcheck.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert gradcheck.relative_error(np.zeros(2), np.array([0.0, 1e-3])) == pytest.approx(1.0)


class _BrokenScale:
    """y = w * x with a deliberately wrong parameter gradient (x1.5)."""

    def __init__(self, wrong_dx=False):
        self.params = {"w": to_xp(np.array([0.7, -1.3]))}
        self.grads = {"w": to_xp(np.zeros(2))}
        self.wrong_dx = wrong_dx

    def forward(self, x):
        self.x = x
        return x * self.params["w"]

    def backward(self, dout):
        self.grads["w"] = (dout * self.x).sum(axis=0) * (1.0 if self.wrong_dx else 1.5)
        return dout * self.params["w"] * (2.0 if self.wrong_dx else 1.0)


@pytest.mark.parametrize("wrong_dx", [False, True])
def test_checker_detects_wrong_gradients(backend, wrong_dx):
    x = to_xp(np.random.default_rng(0).standard_normal((3, 2)))
    errs = gradcheck.gradient_errors(_BrokenScale(wrong_dx), x)
    assert set(errs) == {"dx", "w"}
    bad, good = ("dx", "w") if wrong_dx else ("w", "dx")
    assert errs[bad] > 0.1
    assert errs[good] < 1e-8
    assert gradcheck.check_layer(_BrokenScale(wrong_dx), x) > 0.1


def test_checker_max_entries_samples(backend):
    x = to_xp(np.random.default_rng(1).standard_normal((3, 2)))
    errs = gradcheck.gradient_errors(_BrokenScale(False), x, max_entries=1)
    assert set(errs) == {"dx", "w"}
    assert errs["w"] > 0.1 and errs["dx"] < 1e-8
    layer = Dense(5, 4, dtype=np.float64, seed=0)
    assert gradcheck.check_layer(layer, to_xp(np.random.default_rng(2).standard_normal((2, 5))),
                                 max_entries=3) < GRAD_TOL


class _BrokenLoss:
    """Mean squared error whose backward forgets the factor 2."""

    def forward(self, logits, targets):
        self.d = logits - targets
        return (self.d ** 2).mean()

    def backward(self):
        return self.d / self.d.size


def test_check_loss_detects_wrong_gradient(backend):
    rng = np.random.default_rng(3)
    x = to_xp(rng.standard_normal((3, 4)))
    t = to_xp(rng.uniform(size=(3, 4)))
    assert gradcheck.check_loss(_BrokenLoss(), x, t) > 0.1


@pytest.mark.parametrize("cin, cout", [(4, 1), (5, 2), (2, 3)])
@pytest.mark.parametrize("padding", ["same", "valid", 1, 2])
def test_conv2d_every_route_matches_scipy(backend, cin, cout, padding):
    """Conv2D picks im2col on the input or multiply-first by channel counts; both match scipy."""
    rng = np.random.default_rng(7)
    layer = Conv2D(cin, cout, (3, 2), padding=padding, dtype=np.float64, seed=2)
    layer.params["b"][...] = to_xp(rng.standard_normal(cout))
    x = rng.standard_normal((2, cin, 6, 5))
    ref = ref_conv2d(x, to_np(layer.params["W"]), to_np(layer.params["b"]), (1, 1), padding)
    np.testing.assert_allclose(to_np(layer.forward(to_xp(x))), ref, rtol=1e-10, atol=1e-12)


