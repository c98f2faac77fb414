"""The fast path (scratchae.fast) computes what the textbook layers compute.

Every rewrite rule is checked against the textbook model it replaces, in
float64: the output, dL/dx and every parameter gradient agree to a relative
error below 1e-9, on the tutorial's models and on awkward shapes (odd
sizes, several im2col slices, several worker threads, stride 2,
non-square kernels, fewer output than input channels, 7 -> 4 pooling,
4 -> 7 upsampling).
"""
import numpy as np
import pytest

import scratchae.fast.conv as fast_conv
import scratchae.fast.model as fast_model
from scratchae import backend, checkpoint, fast, optim
from scratchae.fast import ops
from scratchae.fast.subpixel import fold_phase_gradient, phase_kernels, window_kernel
from scratchae.layers import (
    Conv2D,
    ConvTranspose2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Upsample2D,
)
from scratchae.losses import SigmoidCrossEntropy
from scratchae.models import Sequential, conv_denoiser, conv_denoiser_transposed, dense_autoencoder

from conftest import to_np, to_xp

TOL = 1e-9
F64 = np.float64


def _rel(a, b):
    a, b = to_np(a), to_np(b)
    scale = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-300)
    return np.abs(a - b).max(initial=0) / scale


def _biased(model, seed=0):
    """Random biases, so that no pre-activation sits exactly on a ReLU kink."""
    rng = np.random.default_rng(seed)
    for key, p in model.params.items():
        if key.endswith(".b"):
            p[...] = to_xp(rng.uniform(-0.1, 0.1, p.shape))
    return model


def assert_same_as_textbook(model, x, workers=1, seed=0, rules=fast_model.RULES):
    """Forward and backward of ``model`` and of its compiled twin agree (output, dx, grads)."""
    x = to_xp(x)
    y = model.forward(x)
    dout = to_xp(np.random.default_rng(seed).standard_normal(y.shape))
    dx = model.backward(dout)
    grads = {k: to_np(g) for k, g in model.grads.items()}
    net = fast.compile(model, input_grad=True, workers=workers, rules=rules)
    dout_before = to_np(dout)
    y_fast = net.forward(x)
    assert y_fast.shape == y.shape and y_fast.dtype == y.dtype
    assert _rel(y_fast, y) < TOL
    dx_fast = net.backward(dout)
    np.testing.assert_array_equal(to_np(dout), dout_before)  # dout never modified
    assert dx_fast.shape == dx.shape
    assert _rel(dx_fast, dx) < TOL
    fast_grads = net.grads
    assert list(fast_grads) == list(model.params)
    for key, g in grads.items():
        assert fast_grads[key].shape == g.shape, key
        assert _rel(fast_grads[key], g) < TOL, key
    return net


def _x(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------
# every rule against the textbook, on awkward shapes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cin, cout, kernel, padding, shape, op", [
    (3, 4, 3, "same", (2, 3, 7, 5), ops.Conv),         # odd sizes
    (4, 2, (3, 2), "same", (2, 4, 6, 7), ops.Conv),    # fewer output channels: multiply first
    (5, 1, 3, "same", (3, 5, 5, 4), ops.Conv),         # the model's 64 -> 1 layer in small
    (3, 1, (2, 3), "same", (2, 3, 5, 6), ops.Conv),    # one output channel, uneven padding
    (4, 1, 3, "valid", (2, 4, 6, 5), ops.Conv),        # one output channel, no padding
    (2, 3, (1, 5), "same", (2, 2, 4, 6), ops.Conv),    # non-square kernel
    (3, 3, 3, "valid", (2, 3, 6, 5), ops.Conv),        # no padding
    (3, 2, 3, 1, (2, 3, 5, 5), ops.Conv),
])  # padding >= kernel and stride 2: tests/test_fast_strided.py
def test_conv_rule(backend, cin, cout, kernel, padding, shape, op):
    model = _biased(Sequential([Conv2D(cin, cout, kernel, padding=padding, dtype=F64, seed=0)]))
    net = assert_same_as_textbook(model, _x(shape))
    assert isinstance(net.ops[0], op)


@pytest.mark.parametrize("kernel, pads, shape", [
    ((3, 3), ((1, 1), (1, 1)), (2, 5, 4, 1)),
    ((2, 3), ((0, 1), (1, 1)), (3, 4, 7, 1)),
    ((3, 1), ((2, 2), (0, 0)), (1, 3, 3, 1)),
])
def test_im2col_one_channel_is_the_transposed_im2col(backend, kernel, pads, shape):
    x = to_xp(_x(shape))
    expected = to_np(fast_conv.im2col(x, kernel, pads)).T.copy()
    np.testing.assert_array_equal(to_np(fast_conv.im2col_one_channel(x, kernel, pads)), expected)


def test_conv_with_relu_is_one_op(backend):
    model = _biased(Sequential([Conv2D(3, 4, 3, dtype=F64, seed=0), ReLU()]))
    net = assert_same_as_textbook(model, _x((2, 3, 6, 5)))
    assert [type(op) for op in net.ops] == [ops.Conv] and net.ops[0].relu


@pytest.mark.parametrize("padding, shape", [
    ("valid", (2, 3, 6, 4)), ("valid", (2, 3, 7, 5)),   # an odd last row/column is dropped
    ("same", (2, 3, 7, 7)), ("same", (2, 3, 5, 8)),     # 7 -> 4: padded at the bottom/right
])
@pytest.mark.parametrize("relu", [False, True])
def test_relu_and_maxpool_commute(backend, padding, shape, relu):
    layers = [Conv2D(3, 3, 3, dtype=F64, seed=0)] + ([ReLU()] if relu else [])
    model = _biased(Sequential(layers + [MaxPool2D(2, padding=padding)]))
    net = assert_same_as_textbook(model, _x(shape))
    assert isinstance(net.ops[-1], ops.MaxPool) and net.ops[-1].relu == relu
    assert not net.ops[0].relu  # the ReLU went to the pool


def test_maxpool_ties_go_to_the_first_corner_as_in_the_textbook(backend):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, :2, :2] = [[1.0, 1.0], [1.0, 0.0]]  # three corners tie
    x[0, 0, 2:, 2:] = [[0.0, 2.0], [2.0, 2.0]]
    model = Sequential([MaxPool2D(2)])
    assert_same_as_textbook(model, x)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 3, 3), (3, 2, 1, 6)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("window", [True, False], ids=["window_grad", "phases"])
def test_subpixel_rule(backend, shape, relu, window):
    layers = [Upsample2D(scale_factor=2), Conv2D(shape[1], 4, 3, dtype=F64, seed=0)]
    model = _biased(Sequential(layers + ([ReLU()] if relu else [])))
    rules = [r for r in fast_model.RULES if window or r != "window_grad"]
    net = assert_same_as_textbook(model, _x(shape), rules=rules)
    assert [type(op) for op in net.ops] == [ops.SubPixelConv]
    assert net.ops[0].window == window


def test_window_kernel_in_one_dimension():
    """dx[i] = W2 dy[2i-1] + (W1 + W2) dy[2i] + (W0 + W1) dy[2i+1] + W0 dy[2i+2]: the four
    outputs that pixel i reached through the upsample and the 3-tap conv."""
    W = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # taps 1..9, row by row
    K4 = window_kernel(W).reshape(4, 4)            # (r, s)
    rows = [[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]]  # which taps reach row 2i - 1 + r
    for r in range(4):
        for s in range(4):
            taps = [W[0, 0, u, v] for u in range(3) for v in range(3) if rows[r][u] and rows[s][v]]
            assert K4[r, s] == sum(taps)


def test_subpixel_needs_the_size_to_double(backend):
    """Upsample2D(size=...) is a x2 upsample only for the input it doubles: known from
    the model's input_shape; 4 -> 7 is not, and stays an upsample and a conv."""
    layers = [Upsample2D(size=(8, 10)), Conv2D(2, 3, 3, dtype=F64, seed=0), ReLU()]
    net = assert_same_as_textbook(_biased(Sequential(layers, input_shape=(2, 4, 5))),
                                  _x((2, 2, 4, 5)))
    assert [type(op) for op in net.ops] == [ops.SubPixelConv]
    layers = [Upsample2D(size=(7, 7)), Conv2D(2, 3, 3, dtype=F64, seed=0), ReLU()]
    net = assert_same_as_textbook(_biased(Sequential(layers, input_shape=(2, 4, 4))),
                                  _x((2, 2, 4, 4)))
    assert [type(op) for op in net.ops] == [ops.Upsample, ops.Conv]


def test_subpixel_is_not_used_for_other_kernels(backend):
    layers = [Upsample2D(scale_factor=2), Conv2D(2, 3, (3, 2), dtype=F64, seed=0)]
    net = assert_same_as_textbook(_biased(Sequential(layers)), _x((2, 2, 3, 4)))
    assert [type(op) for op in net.ops] == [ops.Upsample, ops.Conv]


def test_phase_kernels_fold_back_as_their_adjoint(backend):
    """<phase_kernels(W), dK> = <W, fold(dK)> for random W and dK: the backward of the
    tap sums is the fold, as the sub-pixel backward assumes."""
    rng = np.random.default_rng(0)
    W = to_xp(rng.standard_normal((3, 2, 3, 3)))
    dK = to_xp(rng.standard_normal((2, 2, 2, 12)))
    lhs = float((phase_kernels(W) * dK).sum())
    rhs = float((W * fold_phase_gradient(dK, 3)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_phase_kernels_in_one_dimension():
    """The identity of the docstring: even outputs see W0 x[i-1] + (W1 + W2) x[i]."""
    W = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # taps 1..9, row by row
    K = phase_kernels(W).reshape(2, 2, 2, 2)       # (p, q, a, b)
    np.testing.assert_array_equal(K[:, :, 0, 0], [[1, 2 + 3], [4 + 7, 5 + 6 + 8 + 9]])
    np.testing.assert_array_equal(K[:, :, 1, 1], [[1 + 2 + 4 + 5, 3 + 6], [7 + 8, 9]])


def test_upsample_4_to_7_and_dense_and_shapes(backend):
    model = _biased(Sequential([Upsample2D(size=(7, 7)), Conv2D(2, 3, 3, dtype=F64, seed=0),
                                ReLU(), Flatten(), Dense(147, 12, dtype=F64, seed=1), ReLU(),
                                Dense(12, 48, dtype=F64, seed=2), Reshape((3, 4, 4))],
                               input_shape=(2, 4, 4)))
    net = assert_same_as_textbook(model, _x((3, 2, 4, 4)))
    assert [type(op) for op in net.ops] == [ops.Upsample, ops.Conv, ops.Flatten, ops.Dense,
                                            ops.Dense, ops.Reshape]


def test_other_layers_run_as_written(backend):
    model = _biased(Sequential([ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1,
                                                dtype=F64, seed=0), Sigmoid()]))
    net = assert_same_as_textbook(model, _x((2, 3, 4, 5)))
    assert isinstance(net.ops[-1], ops.Textbook)  # the Sigmoid (the other: fast/strided.py)


@pytest.mark.parametrize("build", [
    lambda: conv_denoiser(seed=1, dtype=F64),
    lambda: conv_denoiser_transposed(seed=1, dtype=F64),
    lambda: dense_autoencoder(hidden=16, seed=1, dtype=F64),
], ids=["conv_denoiser", "conv_denoiser_transposed", "dense_autoencoder"])
def test_the_tutorial_models(backend, build):
    images = np.random.default_rng(2).uniform(size=(3, 1, 28, 28))
    assert_same_as_textbook(_biased(build()), images)


def test_the_conv_denoiser_becomes_the_expected_ops():
    net = fast.compile(conv_denoiser())
    assert [type(op).__name__ for op in net.ops] == [
        "ConvPool", "Conv", "MaxPool", "Conv", "MaxPool",  # ReLUs moved after the pools
        "Upsample", "Conv", "SubPixelConv", "SubPixelConv", "Conv"]
    assert [getattr(op, "relu", None) for op in net.ops] == [
        True, False, True, False, True, None, True, True, True, False]
    assert sum(p.size for p in net.parameters()) == 121_281
    assert not net.ops[0].input_grad and all(op.input_grad for op in net.ops[1:])
    with_dx = fast.compile(conv_denoiser(), input_grad=True)  # conv_pool is for no dx only
    assert [type(op).__name__ for op in with_dx.ops][:2] == ["Conv", "MaxPool"]


def test_several_slices_and_workers(backend, monkeypatch):
    """The im2col slices (CPU) and the worker threads change nothing but rounding."""
    monkeypatch.setattr(fast_conv, "CHUNK_ELEMENTS", 500)  # many tiny slices
    monkeypatch.setattr(fast_model, "MIN_WORK_PER_WORKER", 1)
    workers = 3 if backend == "numpy" else 1
    images = np.random.default_rng(2).uniform(size=(5, 1, 28, 28))
    assert_same_as_textbook(_biased(conv_denoiser(seed=3, dtype=F64)), images, workers=workers)


# --------------------------------------------------------------------------
# no dx for the first layer
# --------------------------------------------------------------------------
def assert_same_weight_grads(model, x, rules=fast_model.RULES, workers=1):
    """The compiled model without dx (as training runs it): same output and parameter
    gradients as the textbook model."""
    x = to_xp(x)
    y = model.forward(x)
    dout = to_xp(np.random.default_rng(0).standard_normal(y.shape))
    model.backward(dout)
    grads = {k: to_np(g) for k, g in model.grads.items()}
    net = fast.compile(model, workers=workers, rules=rules)
    assert _rel(net.forward(x), y) < TOL
    assert net.backward(dout) is None
    for key, g in grads.items():
        assert net.grads[key].shape == g.shape and _rel(net.grads[key], g) < TOL, key
    return net


@pytest.mark.parametrize("cin, kernel, pool, shape, relu_at", [
    (1, 3, "valid", (3, 1, 8, 6), "pool"),      # the tutorial's first layer in small
    (2, 3, "valid", (2, 2, 7, 9), "pool"),      # odd sizes: the last row/column dropped
    (3, (3, 2), "valid", (2, 3, 6, 7), "conv"),  # non-square kernel, ReLU kept on the conv
    (2, 3, "same", (2, 2, 6, 4), "pool"),       # 'same' on even sizes pads nothing
    (2, 3, "valid", (2, 2, 6, 6), None),        # no ReLU at all
])
def test_conv_pool_rule(backend, monkeypatch, cin, kernel, pool, shape, relu_at):
    """The first conv and its max-pool as one op: dW from the four corners' im2col."""
    monkeypatch.setattr(fast_model, "MIN_WORK_PER_WORKER", 1)
    monkeypatch.setattr(fast_conv, "CHUNK_ELEMENTS", 200)             # several slices
    monkeypatch.setattr(fast.convpool, "CHUNK_OUTPUTS", 100)
    monkeypatch.setattr(fast.convpool, "CHUNK_BACKWARD", 20)
    layers = [Conv2D(cin, 3, kernel, dtype=F64, seed=0)] + ([ReLU()] if relu_at else [])
    layers += [MaxPool2D(2, padding=pool), Conv2D(3, 2, 3, dtype=F64, seed=1)]
    rules = [r for r in fast_model.RULES if relu_at != "conv" or r != "relu_pool"]
    for workers in ([1, 2] if backend == "numpy" else [1]):
        net = assert_same_weight_grads(_biased(Sequential(layers, input_shape=shape[1:])),
                                       _x(shape), rules=rules, workers=workers)
        assert type(net.ops[0]) is ops.ConvPool and net.ops[0].relu == bool(relu_at)


def test_conv_pool_ties_go_to_the_first_corner(backend):
    conv = Conv2D(1, 1, 1, dtype=F64, seed=0)
    conv.params["W"][...] = 1.0
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, :2, :2] = [[1.0, 1.0], [1.0, 0.0]]  # three corners tie
    x[0, 0, 2:, 2:] = [[0.0, 2.0], [2.0, 2.0]]
    x[0, 0, :2, 2:] = [[0.0, 1.0], [1.0, 0.0]]
    net = assert_same_weight_grads(Sequential([conv, ReLU(), MaxPool2D(2)]), x)
    assert type(net.ops[0]) is ops.ConvPool


def test_corner_cols_are_the_im2col_rows_of_each_corner(backend):
    """cols[:, k].T is the im2col matrix of the conv pixels at corner k of the pool windows."""
    x = to_xp(_x((2, 7, 6, 3)))
    pads, (oh, ow) = ((1, 0), (0, 1)), (3, 3)                # a 2x2 kernel: conv 7x6 -> 3x3
    cols = to_np(fast.convpool.corner_cols(x, (2, 2), pads, oh, ow))
    full = to_np(fast_conv.im2col(x, (2, 2), pads)).reshape(2, 7, 6, 12)
    for k, (a, b) in enumerate(fast.convpool.CORNERS):
        expected = full[:, a:a + 2 * oh:2, b:b + 2 * ow:2].reshape(-1, 12)
        np.testing.assert_array_equal(cols[:, k].T, expected)


def test_conv_pool_needs_the_pool_to_fit(backend):
    """A 'same' pool of an odd size pads with -inf: left as a Conv and a MaxPool."""
    layers = [Conv2D(1, 2, 3, dtype=F64, seed=0), ReLU(), MaxPool2D(2, padding="same")]
    net = assert_same_weight_grads(_biased(Sequential(layers, input_shape=(1, 7, 7))),
                                   _x((2, 1, 7, 7)))
    assert [type(op) for op in net.ops] == [ops.Conv, ops.MaxPool]
    rules = [r for r in fast_model.RULES if r != "conv_pool"]
    net = fast.compile(conv_denoiser(), rules=rules)
    assert [type(op) for op in net.ops][:2] == [ops.Conv, ops.MaxPool]
@pytest.mark.parametrize("layer", [
    lambda: Conv2D(1, 4, 3, dtype=F64, seed=0), lambda: Conv2D(4, 1, 3, dtype=F64, seed=0),
    lambda: Conv2D(3, 3, 3, stride=2, dtype=F64, seed=0),
    lambda: ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1, dtype=F64, seed=0),
], ids=["conv", "conv_o_lt_c", "conv_stride2", "conv_transpose"])
def test_weight_grads_do_not_depend_on_input_grad(backend, layer):
    """Skipping dx (a model's first layer) returns None and changes no parameter gradient."""
    model = Sequential([layer()])
    x = to_xp(_x((2, model.layers[0].in_channels, 7, 6)))
    with_dx = fast.compile(model, input_grad=True)
    without = fast.compile(model)
    dout = to_xp(_x(tuple(with_dx.forward(x).shape), seed=3))
    assert with_dx.backward(dout).shape == x.shape
    without.forward(x)
    assert without.backward(dout) is None
    for key, g in with_dx.grads.items():
        assert _rel(without.grads[key], g) < 1e-12


def test_model_without_parameters(backend):
    net = fast.compile(Sequential([ReLU()]))
    x = to_xp(_x((2, 3)))
    net.forward(x)
    assert net.backward(to_xp(np.ones((2, 3)))) is None
    assert fast.compile(Sequential([ReLU()]), input_grad=True).backward is not None


# --------------------------------------------------------------------------
# training on either path
# --------------------------------------------------------------------------
def test_compile_leaves_other_models_alone():
    class WithPenalty(Sequential):
        pass

    model = WithPenalty([Dense(3, 2)])
    assert fast.compile(model) is model


def test_the_same_parameters_and_checkpoints(tmp_path):
    model = conv_denoiser(seed=0)
    net = fast.compile(model)
    assert all(a is b for a, b in zip(net.parameters(), model.parameters()))
    assert net.architecture() == model.architecture()
    net_path, model_path = tmp_path / "fast.npz", tmp_path / "textbook.npz"
    checkpoint.save_weights(net, net_path)
    model.save(model_path)
    a, b = checkpoint.load_npz(net_path), checkpoint.load_npz(model_path)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def _train(path, steps=4, seed=0):
    """A few float64 Adam steps on the textbook or the fast path; the final parameters."""
    model = conv_denoiser(seed=seed, dtype=F64)
    net = fast.compile(model, workers=2 if backend.get_backend() == "numpy" else 1) \
        if path == "fast" else model
    optimizer = (fast.Adam if path == "fast" else optim.Adam)(model.parameters(), lr=1e-3)
    loss_fn = SigmoidCrossEntropy()
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        clean = to_xp(rng.uniform(size=(6, 1, 28, 28)))
        noisy = clean * to_xp(rng.uniform(size=clean.shape) > 0.3)
        logits = net.forward(noisy)
        losses.append(float(loss_fn.forward(logits, clean)))
        net.backward(loss_fn.backward())
        optimizer.step(net.gradients())
    return losses, {k: to_np(v) for k, v in model.params.items()}


def test_training_on_either_path_gives_the_same_model(backend, monkeypatch):
    monkeypatch.setattr(fast_model, "MIN_WORK_PER_WORKER", 1)
    textbook_losses, textbook = _train("textbook")
    fast_losses, fast_params = _train("fast")
    np.testing.assert_allclose(fast_losses, textbook_losses, rtol=1e-9)
    for key, value in textbook.items():
        assert _rel(fast_params[key], value) < 1e-7, key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_adam_is_the_textbook_update(backend, dtype):
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    a, b = [to_xp(p) for p in start], [to_xp(p) for p in start]
    slow, quick = optim.Adam(a, lr=0.01), fast.Adam(b, lr=0.01)
    for _ in range(30):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in start]
        slow.step([to_xp(g) for g in grads])
        quick.step([to_xp(g) for g in grads])
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for p, q in zip(a, b):
        assert q.dtype == dtype
        np.testing.assert_allclose(to_np(q), to_np(p), rtol=rtol, atol=rtol)
    for m, n in zip(slow.m + slow.v, quick.m + quick.v):
        np.testing.assert_allclose(to_np(n), to_np(m), rtol=rtol, atol=1e-30)


def test_adam_in_blocks_is_bit_for_bit_the_whole_update(monkeypatch):
    """Each entry's update reads that entry only: cutting the arrays into blocks (the last
    one short) changes no bit of p, m or v."""
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((37, 11)).astype(np.float32), rng.standard_normal(5)]
    runs = []
    for block in (10**9, 64, 7):
        monkeypatch.setattr(backend, "ADAM_BLOCK", block)
        params = [p.astype(np.float32) for p in start]
        opt = fast.Adam(params, lr=0.01)
        grads = np.random.default_rng(1)
        for step in range(20):  # step 16 flushes the subnormal moments, block by block too
            opt.step([grads.standard_normal(p.shape).astype(np.float32) for p in params])
        runs.append([a.copy() for a in params + opt.m + opt.v])
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["SigmoidCrossEntropy", "BernoulliNLL"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_losses_are_the_textbook_losses(backend, kind, dtype):
    """sum max(x,0) - xt + log1p(e) as two sums and a dot; the gradient through tanh."""
    from scratchae import losses
    from scratchae.fast import losses as fast_losses

    rng = np.random.default_rng(0)
    x = to_xp((20 * rng.standard_normal((3, 1, 5, 4))).astype(dtype))  # large logits too
    t = to_xp(rng.uniform(size=(3, 1, 5, 4)).astype(dtype))
    slow, quick = getattr(losses, kind)(), fast_losses.faster(getattr(losses, kind)())
    assert type(quick).__name__ == kind and type(quick) is not type(slow)
    value, fast_value = slow.forward(x, t), quick.forward(x, t)
    assert fast_value.dtype == dtype and fast_value.shape == ()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert float(fast_value) == pytest.approx(float(value), rel=rtol)
    g, fast_g = slow.backward(), quick.backward()
    assert fast_g.dtype == dtype and fast_g.shape == g.shape
    np.testing.assert_allclose(to_np(fast_g), to_np(g), rtol=rtol,
                               atol=rtol * np.abs(to_np(g)).max())
    with pytest.raises(ValueError, match=f"{kind}: logits and targets must have the same shape"):
        quick.forward(x, t[:2])
    with pytest.raises(ValueError, match=f"{kind}: targets must be"):
        quick.forward(x, t * 3)


def test_compiled_model_prints_which_rules_fired():
    text = repr(fast.compile(conv_denoiser(seed=0), workers=1))
    for line in ("ConvPool(1->64, 3x3, padding='same', pool 2x2, relu)",
                 "MaxPool(2x2, padding='same', relu)",
                 "Conv(32->32, 3x3, padding='same', relu)",
                 "SubPixelConv(x2, 32->64, 3x3, relu, window_grad)",
                 "Conv(64->1, 3x3, padding='same')"):
        assert line in text, text
    assert "Dense(784->64, relu)" in repr(fast.compile(dense_autoencoder(seed=0), workers=1))


# --------------------------------------------------------------------------
# inference: the same output, nothing kept for backward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("build, shape", [
    (lambda: conv_denoiser(seed=1, dtype=F64), (5, 1, 28, 28)),
    (lambda: dense_autoencoder(hidden=16, seed=1, dtype=F64), (3, 1, 28, 28)),
    (lambda: Sequential([Conv2D(2, 3, 3, dtype=F64, seed=0), ReLU(), MaxPool2D(2, padding="same"),
                         MaxPool2D(2), ConvTranspose2D(3, 2, 3, stride=2, dtype=F64, seed=1)]),
     (2, 2, 7, 9)),
], ids=["conv_denoiser", "dense_autoencoder", "pools_and_a_textbook_layer"])
def test_infer_is_forward_without_caches(backend, monkeypatch, build, shape):
    monkeypatch.setattr(fast_model, "MIN_WORK_PER_WORKER", 1)
    model = _biased(build())
    x = to_xp(np.random.default_rng(2).uniform(size=shape))
    expected = to_np(model.forward(x))
    for workers in ([1, 3] if backend == "numpy" else [1]):
        net = fast.compile(model, workers=workers)
        assert _rel(net.infer(x), expected) < TOL
        ops_lists = [net.ops] + (net._pool.local_ops() if net._pool else [])
        assert all(op._cache is None for ops_list in ops_lists for op in ops_list)
        with pytest.raises(RuntimeError, match="before forward"):
            net.backward(to_xp(np.ones(expected.shape)))


def test_infer_keeps_the_max_pool_ties_and_nans():
    pool = ops.MaxPool(MaxPool2D(2), relu=True)
    x = np.array([[[[1.0], [1.0]], [[-2.0], [np.nan]]]])  # (1, 2, 2, 1): a NaN in the window
    assert np.isnan(pool.infer(x)).all() and np.isnan(pool.forward(x)).all()
