"""The strided and transposed convolutions of the fast path (scratchae/fast/strided.py).

Each op against the textbook layer it replaces, in float64: the output,
dL/dx and every parameter gradient agree to a relative error below 1e-9,
on awkward shapes (odd sizes, non-square kernels and strides, padding at
least the kernel, output_padding, a fused ReLU, worker threads).
"""
import numpy as np
import pytest
from test_fast import _biased, _rel, _x, assert_same_as_textbook

import scratchae.fast.model as fast_model
from scratchae import fast
from scratchae.fast import ops
from scratchae.fast.strided import (
    StridedConv,
    SubPixelTransposed,
    TransposedAsConv,
    TransposedConv,
    is_stride1_transposed,
    is_subpixel_transposed,
    weight_gradient,
)
from scratchae.layers import Conv2D, ConvTranspose2D, ReLU, Sigmoid
from scratchae.models import Sequential
from scratchae.vae import conv_vae

from conftest import to_np, to_xp

F64 = np.float64


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, shape", [
    (3, 4, 3, 2, 1, (2, 3, 7, 6)),               # the conv VAE's layers, odd sizes
    (3, 4, 3, 2, "same", (2, 3, 7, 5)),          # TensorFlow's 'same': padded bottom/right
    (2, 3, (3, 2), (2, 3), "valid", (2, 2, 9, 8)),  # non-square kernel and stride
    (4, 2, 3, 2, 0, (3, 4, 8, 8)),               # O < C
    (2, 3, (1, 5), 1, 2, (2, 2, 4, 6)),          # stride 1, padding 2 >= kernel height 1
])
@pytest.mark.parametrize("relu", [False, True])
def test_strided_conv(backend, cin, cout, kernel, stride, padding, shape, relu):
    layers = [Conv2D(cin, cout, kernel, stride=stride, padding=padding, dtype=F64, seed=0)]
    net = assert_same_as_textbook(_biased(Sequential(layers + [ReLU()] * relu)), _x(shape))
    assert [type(op) for op in net.ops] == [StridedConv] and net.ops[0].relu == relu
    # 3x3 stride 2: dx as the x2 transposed convolution's four phases
    assert net.ops[0].phase_dx == (kernel == 3 and stride == 2)
    rules = tuple(r for r in fast_model.RULES if r != "subpixel_transposed")
    assert not assert_same_as_textbook(layers and _biased(Sequential(layers + [ReLU()] * relu)),
                                       _x(shape), rules=rules).ops[0].phase_dx


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, output_padding, shape", [
    (3, 4, 3, 2, 1, 1, (2, 3, 4, 5)),            # the conv VAE's x2 layers (without the rule
    (3, 1, 3, 1, 1, 0, (2, 3, 5, 4)),            # subpixel_transposed); its last layer: stride 1
    (3, 2, 3, 2, 1, 0, (2, 3, 4, 5)),            # stride 2 with no output_padding: 2H - 1
    (2, 3, (3, 2), (3, 2), 2, (1, 0), (2, 2, 3, 4)),  # non-square, cropping 2
    (4, 2, 3, 2, 0, 0, (2, 4, 3, 3)),            # no crop, O < C
    (2, 5, 2, 2, 0, 1, (1, 2, 3, 2)),            # kernel = stride: no overlap
])
@pytest.mark.parametrize("relu", [False, True])
def test_transposed_conv(backend, cin, cout, kernel, stride, padding, output_padding, shape,
                         relu):
    layers = [ConvTranspose2D(cin, cout, kernel, stride=stride, padding=padding,
                              output_padding=output_padding, dtype=F64, seed=0)]
    rules = tuple(r for r in fast_model.RULES
                  if r not in ("subpixel_transposed", "transposed_stride1"))
    net = assert_same_as_textbook(_biased(Sequential(layers + [ReLU()] * relu)), _x(shape),
                                  rules=rules)
    assert [type(op) for op in net.ops] == [TransposedConv] and net.ops[0].relu == relu


@pytest.mark.parametrize("cin, cout, shape", [
    (3, 4, (2, 3, 4, 5)),    # odd width
    (5, 2, (3, 5, 7, 3)),    # O < C, odd sizes, height > width
    (2, 3, (2, 2, 1, 1)),    # one input pixel: only its own 2x2 block
    (1, 6, (1, 1, 2, 6)),    # one channel in
])
@pytest.mark.parametrize("relu", [False, True])
def test_subpixel_transposed(backend, cin, cout, shape, relu):
    """ConvTranspose2D 3x3, stride 2, padding 1, output_padding 1 as four 2x2 phase convolutions."""
    layer = ConvTranspose2D(cin, cout, 3, stride=2, padding=1, output_padding=1, dtype=F64,
                            seed=0)
    net = assert_same_as_textbook(_biased(Sequential([layer] + [ReLU()] * relu)), _x(shape))
    assert [type(op) for op in net.ops] == [SubPixelTransposed] and net.ops[0].relu == relu
    assert "SubPixelTransposed(x2" in repr(net)


@pytest.mark.parametrize("cin, cout, kernel, padding, shape", [
    (3, 1, 3, 1, (2, 3, 5, 4)),          # the conv VAE's last layer: O < C, odd sizes
    (2, 4, (3, 2), 0, (2, 2, 4, 3)),     # non-square, no crop: the full output, larger
    (4, 3, (2, 3), 1, (3, 4, 3, 5)),     # crop 1 of a 2-tall kernel
    (3, 2, 5, 4, (1, 3, 6, 7)),          # crop K - 1: the convolution has no padding
])
@pytest.mark.parametrize("relu", [False, True])
def test_stride1_transposed_as_conv(backend, cin, cout, kernel, padding, shape, relu):
    """A stride-1 ConvTranspose2D as the Conv2D it equals (kernel turned, channels swapped)."""
    layer = ConvTranspose2D(cin, cout, kernel, padding=padding, dtype=F64, seed=0)
    net = assert_same_as_textbook(_biased(Sequential([layer] + [ReLU()] * relu)), _x(shape))
    assert [type(op) for op in net.ops] == [TransposedAsConv] and net.ops[0].relu == relu


@pytest.mark.parametrize("kernel, padding, fits", [
    (3, 1, True), (3, 2, True), (3, 3, False), ((3, 2), 1, True), ((3, 2), 2, False),
])
def test_which_stride1_transposed_convs_are_convs(kernel, padding, fits):
    assert is_stride1_transposed(ConvTranspose2D(2, 3, kernel, padding=padding, seed=0)) == fits
    assert not is_stride1_transposed(ConvTranspose2D(2, 3, kernel, stride=2, padding=1, seed=0))


@pytest.mark.parametrize("kernel, stride, padding, output_padding, fits", [
    (3, 2, 1, 1, True),
    (3, 2, 1, 0, False), (3, 2, 0, 1, False), (3, 1, 1, 0, False), (2, 2, 0, 1, False),
    ((3, 3), (2, 2), 1, (1, 1), True), (3, (2, 1), 1, (1, 0), False),
])
def test_which_transposed_convs_are_subpixel(kernel, stride, padding, output_padding, fits):
    layer = ConvTranspose2D(2, 3, kernel, stride=stride, padding=padding,
                            output_padding=output_padding, seed=0)
    assert is_subpixel_transposed(layer) == fits


def test_the_layers_after_them_still_run_as_written(backend):
    model = _biased(Sequential([ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1,
                                                dtype=F64, seed=0), Sigmoid()]))
    net = assert_same_as_textbook(model, _x((2, 3, 4, 5)))
    assert [type(op) for op in net.ops] == [SubPixelTransposed, ops.Textbook]


def test_the_conv_vae_parts_with_workers(backend, monkeypatch):
    """Encoder and decoder of the conv VAE, split over worker threads: only rounding differs."""
    monkeypatch.setattr(fast_model, "MIN_WORK_PER_WORKER", 1)
    model = conv_vae(latent=3, seed=1, dtype=F64)
    workers = 2 if backend == "numpy" else 1
    rng = np.random.default_rng(4)
    assert_same_as_textbook(_biased(model.encoder), rng.uniform(size=(5, 1, 28, 28)), workers)
    net = assert_same_as_textbook(_biased(model.decoder), rng.standard_normal((5, 3)), workers)
    assert [type(op).__name__ for op in net.ops] == [
        "Dense", "Reshape", "SubPixelTransposed", "SubPixelTransposed", "TransposedAsConv"]


def test_no_dx_for_a_first_strided_layer(backend):
    for layer in (Conv2D(3, 4, 3, stride=2, padding=1, dtype=F64, seed=0),
                  ConvTranspose2D(3, 4, 3, stride=2, padding=1, output_padding=1, dtype=F64,
                                  seed=0)):
        model = Sequential([layer])
        x = to_xp(_x((2, 3, 5, 6)))
        with_dx, without = fast.compile(model, input_grad=True), fast.compile(model)
        dout = to_xp(_x(tuple(with_dx.forward(x).shape), seed=3))
        assert with_dx.backward(dout).shape == x.shape
        without.forward(x)
        assert without.backward(dout) is None
        for key, g in with_dx.grads.items():
            assert _rel(without.grads[key], g) < 1e-12


@pytest.mark.parametrize("k, o", [(9, 32), (288, 64), (64, 288)])
def test_weight_gradient_is_the_product_either_way(backend, k, o):
    rng = np.random.default_rng(5)
    a, d = to_xp(rng.standard_normal((50, k))), to_xp(rng.standard_normal((50, o)))
    g = weight_gradient(a, d)
    assert g.shape == (k, o) and g.flags.c_contiguous
    np.testing.assert_allclose(to_np(g), to_np(a).T @ to_np(d), rtol=1e-12, atol=1e-12)
