"""Tests for ConvTranspose2D: gradients, references, the adjoint relation, contracts."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scratchae import gradcheck
from scratchae.layers import Conv2D, ConvTranspose2D

from conftest import to_np, to_xp

GRAD_TOL = 1e-6


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def ref_conv_transpose(x, W, b, stride=1, padding=0, output_padding=0):
    """Naive loop: scatter each input pixel times the kernel onto the output.

    x (N, C, H, W), W (C, OC, KH, KW), b (OC,) -> (N, OC, OH, OW), float64.
    """
    N, C, H, Wd = x.shape
    C2, OC, KH, KW = W.shape
    assert C == C2
    SH, SW = _pair(stride)
    AH, AW = _pair(output_padding)
    P = padding
    OH = (H - 1) * SH - 2 * P + KH + AH
    OW = (Wd - 1) * SW - 2 * P + KW + AW
    out = np.zeros((N, OC, OH, OW))
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(Wd):
                    for p in range(KH):
                        for q in range(KW):
                            r, s = i * SH + p - P, j * SW + q - P
                            if 0 <= r < OH and 0 <= s < OW:
                                out[n, :, r, s] += x[n, c, i, j] * W[c, :, p, q]
    return out + np.asarray(b)[None, :, None, None]


# (in, out, kernel, stride, padding, output_padding, input shape)
CASES = [
    (3, 4, 3, 1, 0, 0, (2, 3, 4, 5)),
    (3, 4, 3, 1, 1, 0, (2, 3, 5, 3)),
    (3, 2, 3, 2, 0, 0, (2, 3, 3, 4)),
    (3, 2, 3, 2, 1, 0, (2, 3, 5, 3)),
    (3, 2, 3, 2, 1, 1, (2, 3, 4, 5)),  # the decoder's 7 -> 14 step, small
    (2, 3, (3, 2), 1, 0, 0, (2, 2, 3, 5)),
    (2, 3, (3, 2), 2, 1, 0, (2, 2, 5, 3)),
    (2, 3, (3, 2), (2, 1), 1, (1, 0), (1, 2, 3, 5)),
    (2, 3, 4, 2, 1, 0, (2, 2, 3, 3)),  # kernel divisible by stride: exactly 2x
    (1, 2, 1, 1, 0, 0, (2, 1, 3, 3)),
    (2, 2, 2, 3, 0, 2, (1, 2, 3, 2)),  # stride > kernel: gaps between copies
]
def _id(v):
    return "x".join(map(str, _pair(v)))


CASE_IDS = [f"k{_id(k)}-s{_id(s)}-p{p}-a{_id(a)}-{'x'.join(map(str, shape))}"
            for _, _, k, s, p, a, shape in CASES]


def _layer(cin, cout, k, s, p, a, dtype=np.float64, seed=1):
    return ConvTranspose2D(cin, cout, k, stride=s, padding=p, output_padding=a,
                           dtype=dtype, seed=seed)


# --------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cin,cout,k,s,p,a,shape", CASES, ids=CASE_IDS)
def test_conv_transpose_gradcheck(backend, cin, cout, k, s, p, a, shape):
    layer = _layer(cin, cout, k, s, p, a)
    layer.params["b"][...] = to_xp(np.linspace(-0.5, 0.5, cout))  # exercise b != 0
    x_np = np.random.default_rng(0).standard_normal(shape)
    x = to_xp(x_np, dtype=np.float64)
    errors = gradcheck.gradient_errors(layer, x, seed=0)
    assert set(errors) == {"dx", "W", "b"}
    assert max(errors.values()) < GRAD_TOL, errors
    assert gradcheck.check_layer(layer, x, seed=3) < GRAD_TOL
    np.testing.assert_array_equal(to_np(x), x_np)  # the checker restored x


# --------------------------------------------------------------------------
# forward references
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cin,cout,k,s,p,a,shape", CASES, ids=CASE_IDS)
def test_forward_matches_naive_scatter(backend, cin, cout, k, s, p, a, shape):
    layer = _layer(cin, cout, k, s, p, a)
    layer.params["b"][...] = to_xp(np.linspace(-1.0, 1.0, cout))
    x = np.random.default_rng(2).standard_normal(shape)
    y = to_np(layer.forward(to_xp(x)))
    expected = ref_conv_transpose(x, to_np(layer.params["W"]), to_np(layer.params["b"]),
                                  stride=s, padding=p, output_padding=a)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cin,cout,k,s,p,a,shape", CASES, ids=CASE_IDS)
def test_forward_matches_torch(backend, cin, cout, k, s, p, a, shape):
    torch = pytest.importorskip("torch")
    layer = _layer(cin, cout, k, s, p, a)
    layer.params["b"][...] = to_xp(np.linspace(-1.0, 1.0, cout))
    x = np.random.default_rng(4).standard_normal(shape)
    y = to_np(layer.forward(to_xp(x)))
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(to_np(layer.params["W"])),
        torch.from_numpy(to_np(layer.params["b"])), stride=s, padding=p, output_padding=a,
    ).numpy()
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_single_pixel_paints_the_kernel(backend):
    """One input pixel of value 1 scatters exactly one copy of the kernel."""
    layer = _layer(1, 1, (3, 2), 2, 0, 0)
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 2] = 1.0
    y = to_np(layer.forward(to_xp(x)))
    W = to_np(layer.params["W"])[0, 0]
    expected = np.zeros((1, 1, 7, 6))
    expected[0, 0, 2:5, 4:6] = W  # rows 1*2 .. 1*2+2, columns 2*2 .. 2*2+1
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-15)


def test_overlap_counts_make_a_checkerboard(backend):
    """Kernel 3, stride 2, all-ones weights: each output counts the copies it got."""
    layer = _layer(1, 1, 3, 2, 1, 1)
    layer.params["W"][...] = 1.0
    y = to_np(layer.forward(to_xp(np.ones((1, 1, 4, 4)))))[0, 0]
    assert y.shape == (8, 8)
    # inside (away from the borders): 1 copy at even/even, 2 at mixed, 4 at odd/odd
    np.testing.assert_array_equal(y[2:6, 2:6], [[1, 2, 1, 2], [2, 4, 2, 4]] * 2)


# --------------------------------------------------------------------------
# the adjoint relation with Conv2D
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "c,o,k,s,p,hw",
    [
        (3, 4, 3, 1, 1, (5, 4)),
        (3, 4, 3, 2, 1, (7, 7)),  # (7 + 2 - 3) % 2 == 0: no output_padding
        (2, 3, 3, 2, 1, (8, 6)),  # needs output_padding 1 to get back to 8 x 6
        (2, 3, (3, 2), (2, 1), 0, (7, 5)),
        (2, 2, 4, 2, 1, (6, 8)),
    ],
)
def test_forward_is_conv2d_backward(backend, c, o, k, s, p, hw):
    """Shared weights: convT(y) == Conv2D's dx for dout = y, and <conv(x), y> == <x, convT(y)>."""
    rng = np.random.default_rng(5)
    conv = Conv2D(c, o, k, stride=s, padding=p, dtype=np.float64, seed=0)
    x = to_xp(rng.standard_normal((2, c) + hw))
    cx = conv.forward(x)
    (kh, kw), (sh, sw) = _pair(k), _pair(s)
    a = ((hw[0] + 2 * p - kh) % sh, (hw[1] + 2 * p - kw) % sw)  # sizes lost to the floor
    convT = ConvTranspose2D(o, c, k, stride=s, padding=p, output_padding=a,
                            dtype=np.float64, seed=1)
    convT.params["W"][...] = conv.params["W"]  # (O, C, KH, KW): the same array layout
    y = to_xp(rng.standard_normal(tuple(cx.shape)))
    ty = convT.forward(y)
    assert tuple(ty.shape) == tuple(x.shape)
    np.testing.assert_allclose(to_np(ty), to_np(conv.backward(y)), rtol=1e-12, atol=1e-12)
    lhs = float((to_np(cx) * to_np(y)).sum())  # conv has zero bias
    rhs = float((to_np(x) * to_np(ty)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)
    # and the other way round: convT's backward (its dx) is the convolution itself
    g = to_xp(rng.standard_normal(tuple(x.shape)))
    np.testing.assert_allclose(to_np(convT.backward(g)), to_np(conv.forward(g)),
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# contracts: shapes, dtypes, init, errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,in_shape,out_shape",
    [
        (dict(kernel_size=3, stride=2, padding=1), (2, 32, 4, 4), (2, 8, 7, 7)),
        (dict(kernel_size=3, stride=2, padding=1, output_padding=1), (2, 32, 7, 7), (2, 8, 14, 14)),
        (dict(kernel_size=4, stride=2, padding=1), (2, 32, 7, 7), (2, 8, 14, 14)),
        (dict(kernel_size=(3, 2), stride=(1, 2)), (1, 32, 5, 3), (1, 8, 7, 6)),
        (dict(kernel_size=1), (3, 32, 2, 9), (3, 8, 2, 9)),
    ],
)
def test_output_shape(backend, kwargs, in_shape, out_shape):
    layer = ConvTranspose2D(32, 8, seed=0, **kwargs)
    assert layer.output_shape(in_shape) == out_shape
    y = layer.forward(to_xp(np.zeros(in_shape, np.float32)))
    assert tuple(y.shape) == out_shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(backend, dtype):
    layer = _layer(3, 2, 3, 2, 1, 1, dtype=dtype)
    for p in layer.params.values():
        assert p.dtype == dtype
    x = to_xp(np.random.default_rng(0).standard_normal((2, 3, 4, 5)), dtype=dtype)
    y = layer.forward(x)
    assert y.dtype == dtype
    dx = layer.backward(to_xp(np.ones(tuple(y.shape)), dtype=dtype))
    assert dx.dtype == dtype
    for g in layer.grads.values():
        assert g.dtype == dtype


def test_grads_shapes_and_dout_untouched(backend):
    layer = _layer(3, 2, (3, 2), 2, 1, 0)
    x_np = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    x = to_xp(x_np)
    y = layer.forward(x)
    dout_np = np.random.default_rng(1).standard_normal(tuple(y.shape))
    dout = to_xp(dout_np)
    layer.backward(dout)
    assert set(layer.grads) == {"W", "b"}
    for k in layer.params:
        assert layer.grads[k].shape == layer.params[k].shape
    np.testing.assert_array_equal(to_np(dout), dout_np)
    np.testing.assert_array_equal(to_np(x), x_np)


def test_init_glorot_and_zero_bias(backend):
    layer = ConvTranspose2D(64, 32, 3, stride=2, seed=0)
    W = to_np(layer.params["W"])
    assert W.shape == (64, 32, 3, 3)
    limit = math.sqrt(6 / ((64 + 32) * 9))
    assert np.abs(W).max() <= limit
    assert np.abs(W).max() > 0.99 * limit
    assert abs(W.std() - limit / math.sqrt(3)) < 0.03 * limit
    np.testing.assert_array_equal(to_np(layer.params["b"]), 0)
    again = ConvTranspose2D(64, 32, 3, stride=2, seed=0)
    np.testing.assert_array_equal(to_np(again.params["W"]), W)


def test_bad_channels(backend):
    layer = ConvTranspose2D(13, 2, 3, seed=0)
    with pytest.raises(ValueError) as ei:
        layer.forward(to_xp(np.zeros((2, 17, 5, 5), np.float32)))
    msg = str(ei.value)
    assert "ConvTranspose2D(13, 2" in msg and "13" in msg and "17" in msg, msg


@pytest.mark.parametrize("shape", [(17, 5, 5), (1, 2, 17, 5, 5)])
def test_bad_ndim(backend, shape):
    with pytest.raises(ValueError) as ei:
        ConvTranspose2D(17, 2, 3, seed=0).forward(to_xp(np.zeros(shape, np.float32)))
    msg = str(ei.value)
    assert "ConvTranspose2D(17, 2" in msg and "4-D" in msg and str(shape) in msg, msg


def test_empty_output_rejected(backend):
    with pytest.raises(ValueError, match="ConvTranspose2D"):
        ConvTranspose2D(1, 1, 1, padding=1, seed=0).forward(to_xp(np.zeros((1, 1, 2, 2))))


def test_bad_dout_shape(backend):
    layer = _layer(1, 2, 3, 2, 1, 0)
    layer.forward(to_xp(np.zeros((1, 1, 3, 3))))
    with pytest.raises(ValueError, match="ConvTranspose2D"):
        layer.backward(to_xp(np.zeros((1, 2, 6, 6))))


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(in_channels=0, out_channels=2, kernel_size=3), "in_channels"),
        (dict(in_channels=2, out_channels=2.5, kernel_size=3), "out_channels"),
        (dict(in_channels=2, out_channels=2, kernel_size=0), "kernel_size"),
        (dict(in_channels=2, out_channels=2, kernel_size=3, padding=-1), "padding"),
        (dict(in_channels=2, out_channels=2, kernel_size=3, padding="same"), "padding"),
        (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, output_padding=2),
         "output_padding"),
        (dict(in_channels=2, out_channels=2, kernel_size=3, output_padding=-1), "output_padding"),
        (dict(in_channels=2, out_channels=2, kernel_size=3, dtype=np.int32), "dtype"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ConvTranspose2D(**kwargs)


def test_backward_before_forward(backend):
    with pytest.raises(RuntimeError, match="before forward"):
        ConvTranspose2D(1, 1, 3, seed=0).backward(to_xp(np.zeros((1, 1, 3, 3))))
