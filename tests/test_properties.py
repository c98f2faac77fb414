"""Property tests: random layer configurations and input shapes.

For every layer, hypothesis draws a configuration and an input shape, then:

* a valid shape never raises; ``forward``'s output has the shape that
  ``layer.output_shape`` promises (and that an independent formula gives),
  ``backward`` returns ``dx`` of the input's shape, and every gradient has
  its parameter's shape;
* an invalid one (wrong channel count, wrong number of dimensions, an image
  smaller than the kernel) raises ``ValueError`` naming the layer.

NumPy only and small arrays, so the whole file runs in a few seconds.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchae.layers import Conv2D, ConvTranspose2D, Dense, Flatten, MaxPool2D, Reshape, Upsample2D

SETTINGS = settings(max_examples=40, deadline=None)
small = st.integers(1, 4)
side = st.integers(1, 10)
dtypes = st.sampled_from([np.float32, np.float64])


def _random(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _check_valid(layer, shape, expected, dtype=np.float32):
    """Forward/backward shapes on a valid input; returns the output."""
    assert tuple(layer.output_shape(shape)) == tuple(expected)
    x = _random(shape, dtype)
    y = layer.forward(x)
    assert tuple(y.shape) == tuple(expected)
    assert y.dtype == dtype
    dx = layer.backward(_random(y.shape, dtype, seed=1))
    assert tuple(dx.shape) == tuple(shape)
    assert set(layer.grads) == set(layer.params)
    for k, p in layer.params.items():
        assert tuple(layer.grads[k].shape) == tuple(p.shape), k
    return y


def _check_invalid(layer, shape, *must_contain):
    with pytest.raises(ValueError) as info:
        layer.forward(np.zeros(shape, np.float32))
    message = str(info.value)
    assert type(layer).__name__ in message, message
    for text in must_contain:
        assert text in message, (text, message)
    assert layer._cache is None  # nothing kept from the failed call


def _conv_size(size, kernel, stride, padding):
    """Output size of a convolution or pooling along one axis (None if empty)."""
    if padding == "same":
        return -(-size // stride)
    pad = 0 if padding == "valid" else padding
    out = (size + 2 * pad - kernel) // stride + 1
    return out if out >= 1 else None


# --------------------------------------------------------------------------
# Conv2D
# --------------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    c, o, n = draw(small), draw(small), draw(st.integers(1, 3))
    kernel = (draw(small), draw(small))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["same", "valid", 0, 1, 2]))
    h, w = draw(side), draw(side)
    return c, o, kernel, stride, padding, (n, c, h, w)


@SETTINGS
@given(conv_cases(), dtypes)
def test_conv2d_shapes(case, dtype):
    c, o, kernel, stride, padding, shape = case
    layer = Conv2D(c, o, kernel, stride=stride, padding=padding, dtype=dtype, seed=0)
    n, _, h, w = shape
    oh = _conv_size(h, kernel[0], stride[0], padding)
    ow = _conv_size(w, kernel[1], stride[1], padding)
    if oh is None or ow is None:
        _check_invalid(layer, shape, "smaller than the kernel", str((h, w)))
    else:
        _check_valid(layer, shape, (n, o, oh, ow), dtype)


@SETTINGS
@given(conv_cases(), st.integers(1, 3))
def test_conv2d_wrong_channel_count(case, extra):
    c, o, kernel, stride, padding, (n, _, h, w) = case
    layer = Conv2D(c, o, kernel, stride=stride, padding=padding, seed=0)
    _check_invalid(layer, (n, c + extra, h, w), f"expected {c} input channels",
                   f"{c + extra} channels")


@SETTINGS
@given(conv_cases(), st.sampled_from([1, 2, 3, 5]))
def test_conv2d_wrong_ndim(case, ndim):
    c, o, kernel, stride, padding, shape = case
    layer = Conv2D(c, o, kernel, stride=stride, padding=padding, seed=0)
    bad = (shape * 2)[:ndim]
    _check_invalid(layer, bad, "expected a 4-D input", f"({ndim}-D)")


# --------------------------------------------------------------------------
# ConvTranspose2D
# --------------------------------------------------------------------------
@st.composite
def conv_transpose_cases(draw):
    c, o, n = draw(small), draw(small), draw(st.integers(1, 3))
    kernel = (draw(small), draw(small))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.integers(0, 2))
    output_padding = (draw(st.integers(0, stride[0] - 1)), draw(st.integers(0, stride[1] - 1)))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    return c, o, kernel, stride, padding, output_padding, (n, c, h, w)


@SETTINGS
@given(conv_transpose_cases())
def test_conv_transpose2d_shapes(case):
    c, o, kernel, stride, padding, output_padding, shape = case
    layer = ConvTranspose2D(c, o, kernel, stride=stride, padding=padding,
                            output_padding=output_padding, seed=0)
    n, _, h, w = shape
    oh = (h - 1) * stride[0] - 2 * padding + kernel[0] + output_padding[0]
    ow = (w - 1) * stride[1] - 2 * padding + kernel[1] + output_padding[1]
    if oh < 1 or ow < 1:
        _check_invalid(layer, shape, str((h, w)))
    else:
        _check_valid(layer, shape, (n, o, oh, ow))


@SETTINGS
@given(conv_transpose_cases(), st.integers(1, 3), st.sampled_from([2, 3, 5]))
def test_conv_transpose2d_wrong_channels_or_ndim(case, extra, ndim):
    c, o, kernel, stride, padding, output_padding, (n, _, h, w) = case
    layer = ConvTranspose2D(c, o, kernel, stride=stride, padding=padding,
                            output_padding=output_padding, seed=0)
    _check_invalid(layer, (n, c + extra, h, w), f"expected {c} input channels")
    _check_invalid(layer, (n, c, h, w, 1, 1)[:ndim], "expected a 4-D input")


# --------------------------------------------------------------------------
# MaxPool2D
# --------------------------------------------------------------------------
@st.composite
def pool_cases(draw):
    kernel = (draw(small), draw(small))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(st.sampled_from(["valid", "same"]))
    shape = (draw(st.integers(1, 3)), draw(small), draw(side), draw(side))
    return kernel, stride, padding, shape


@SETTINGS
@given(pool_cases(), dtypes)
def test_maxpool2d_shapes(case, dtype):
    kernel, stride, padding, shape = case
    layer = MaxPool2D(kernel, stride=stride, padding=padding)
    stride = stride or kernel
    n, c, h, w = shape
    oh = _conv_size(h, kernel[0], stride[0], padding)
    ow = _conv_size(w, kernel[1], stride[1], padding)
    if oh is None or ow is None:
        _check_invalid(layer, shape, "smaller than the window", str((h, w)))
    else:
        y = _check_valid(layer, shape, (n, c, oh, ow), dtype)
        assert np.isfinite(y).all()  # "same" padding (-inf) never wins a window


@SETTINGS
@given(pool_cases(), st.sampled_from([1, 2, 3, 5]))
def test_maxpool2d_wrong_ndim(case, ndim):
    kernel, stride, padding, shape = case
    _check_invalid(MaxPool2D(kernel, stride=stride, padding=padding), (shape * 2)[:ndim],
                   "expected a 4-D input")


# --------------------------------------------------------------------------
# Upsample2D
# --------------------------------------------------------------------------
@st.composite
def upsample_cases(draw):
    if draw(st.booleans()):
        kwargs = {"size": (draw(st.integers(1, 12)), draw(st.integers(1, 12)))}
    else:
        kwargs = {"scale_factor": (draw(st.integers(1, 3)), draw(st.integers(1, 3)))}
    shape = (draw(st.integers(1, 3)), draw(small), draw(side), draw(side))
    return kwargs, shape


@SETTINGS
@given(upsample_cases(), dtypes)
def test_upsample2d_shapes(case, dtype):
    kwargs, shape = case
    n, c, h, w = shape
    if "size" in kwargs:
        oh, ow = kwargs["size"]
    else:
        oh, ow = h * kwargs["scale_factor"][0], w * kwargs["scale_factor"][1]
    _check_valid(Upsample2D(**kwargs), shape, (n, c, oh, ow), dtype)


@SETTINGS
@given(upsample_cases(), st.sampled_from([1, 2, 3, 5]))
def test_upsample2d_wrong_ndim(case, ndim):
    kwargs, shape = case
    _check_invalid(Upsample2D(**kwargs), (shape * 2)[:ndim], "expected a 4-D input")


# --------------------------------------------------------------------------
# Dense, Flatten, Reshape
# --------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 20), st.integers(1, 10), st.integers(1, 5), dtypes)
def test_dense_shapes(d, m, n, dtype):
    _check_valid(Dense(d, m, dtype=dtype, seed=0), (n, d), (n, m), dtype)


@SETTINGS
@given(st.integers(1, 20), st.integers(1, 10), st.integers(1, 5), st.integers(1, 5))
def test_dense_wrong_features_or_ndim(d, m, n, extra):
    layer = Dense(d, m, seed=0)
    _check_invalid(layer, (n, d + extra), f"expected {d} input features", str((n, d + extra)))
    _check_invalid(layer, (n, d, 1), "expected a 2-D input", "(3-D)")
    _check_invalid(layer, (d,), "expected a 2-D input", "(1-D)")


sample_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@SETTINGS
@given(st.integers(1, 4), sample_shapes, dtypes)
def test_flatten_shapes(n, sample, dtype):
    _check_valid(Flatten(), (n, *sample), (n, math.prod(sample)), dtype)


@SETTINGS
@given(st.integers(1, 5))
def test_flatten_wrong_ndim(size):
    _check_invalid(Flatten(), (size,), "at least 2-D")


@SETTINGS
@given(st.integers(1, 4), sample_shapes, st.data())
def test_reshape_shapes(n, target, data):
    # any input sample shape holding the same number of values
    size = math.prod(target)
    first = data.draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
    source = (first, size // first)
    _check_valid(Reshape(target), (n, *source), (n, *target))


@SETTINGS
@given(st.integers(1, 4), sample_shapes, st.integers(1, 3))
def test_reshape_wrong_size(n, target, extra):
    size = math.prod(target)
    _check_invalid(Reshape(target), (n, size + extra), f"{size} values per sample")
