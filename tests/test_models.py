"""Tests for scratchae.models (Sequential, dense_autoencoder, conv_denoiser)."""
from __future__ import annotations

import numpy as np
import pytest

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
from scratchae.losses import SigmoidCrossEntropy
from scratchae.models import Sequential, conv_denoiser, dense_autoencoder
from scratchae.optim import SGD, Adam

from conftest import sampled_gradient_errors, to_np, to_xp

MODELS = {
    "dense": lambda **kw: dense_autoencoder(hidden=16, **kw),
    "conv": lambda **kw: conv_denoiser(**kw),
}


def _images(n, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, 1, 28, 28)).astype(dtype)


def _expected_keys(model):
    keys = set()
    for i, layer in enumerate(model.layers):
        for name in layer.params:
            keys.add(f"{i}.{name}")
    return keys


# --------------------------------------------------------------------------
# architecture
# --------------------------------------------------------------------------
def test_dense_autoencoder_architecture(backend):
    m = dense_autoencoder(hidden=20, seed=0)
    types = [type(layer) for layer in m.layers]
    assert types == [Flatten, Dense, ReLU, Dense, Reshape]
    assert to_np(m.layers[1].params["W"]).shape == (784, 20)
    assert to_np(m.layers[3].params["W"]).shape == (20, 784)
    assert set(m.params) == {"1.W", "1.b", "3.W", "3.b"}
    assert dense_autoencoder().layers[1].params["W"].shape == (784, 64)  # default hidden


def test_conv_denoiser_architecture(backend):
    m = conv_denoiser(seed=0)
    types = [type(layer) for layer in m.layers]
    assert types == [
        Conv2D, ReLU, MaxPool2D,
        Conv2D, ReLU, MaxPool2D,
        Conv2D, ReLU, MaxPool2D,
        Upsample2D, Conv2D, ReLU,
        Upsample2D, Conv2D, ReLU,
        Upsample2D, Conv2D, ReLU,
        Conv2D,
    ]
    conv_w = [tuple(layer.params["W"].shape) for layer in m.layers if isinstance(layer, Conv2D)]
    assert conv_w == [
        (64, 1, 3, 3), (64, 64, 3, 3), (32, 64, 3, 3),
        (32, 32, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3), (1, 64, 3, 3),
    ]
    assert set(m.params) == _expected_keys(m)
    assert {"0.W", "0.b", "18.W", "18.b"} <= set(m.params)


def test_conv_denoiser_intermediate_shapes(backend):
    m = conv_denoiser(seed=0)
    h = to_xp(_images(2))
    shapes = []
    for layer in m.layers:
        h = layer.forward(h)
        shapes.append(tuple(h.shape)[1:])
    # encoder 28 -> 14 -> 7 -> 4 ('same' pool), decoder 4 -> 7 -> 14 -> 28
    assert shapes[2] == (64, 14, 14)
    assert shapes[5] == (64, 7, 7)
    assert shapes[8] == (32, 4, 4)
    assert shapes[9] == (32, 7, 7)
    assert shapes[12] == (32, 14, 14)
    assert shapes[15] == (64, 28, 28)
    assert shapes[-1] == (1, 28, 28)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_shape_and_dtype(backend, name, dtype):
    m = MODELS[name](seed=0, dtype=dtype)
    x = to_xp(_images(3, dtype=dtype))
    y = m.forward(x)
    assert tuple(y.shape) == (3, 1, 28, 28)
    assert y.dtype == dtype
    assert np.isfinite(to_np(y)).all()
    dx = m.backward(to_xp(np.ones((3, 1, 28, 28), dtype=dtype)))
    assert tuple(dx.shape) == (3, 1, 28, 28)
    assert dx.dtype == dtype
    for k, g in m.grads.items():
        assert g.dtype == dtype, k


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameters_gradients_consistent(backend, name):
    m = MODELS[name](seed=0)
    m.forward(to_xp(_images(2)))
    m.backward(to_xp(np.random.default_rng(0).standard_normal((2, 1, 28, 28)), dtype=np.float32))
    ps, gs = m.parameters(), m.gradients()
    assert len(ps) == len(gs) == len(m.params) == len(m.grads)
    for p, g in zip(ps, gs):
        assert tuple(p.shape) == tuple(g.shape)
    assert set(m.params) == _expected_keys(m)
    assert set(m.grads) == set(m.params)
    # the dict entries are the very arrays returned by parameters()/gradients()
    param_ids = {id(p) for p in ps}
    assert {id(p) for p in m.params.values()} == param_ids
    grad_ids = {id(g) for g in gs}
    assert {id(g) for g in m.grads.values()} == grad_ids
    # and they are the layers' own arrays
    layer_param_ids = {id(p) for layer in m.layers for p in layer.params.values()}
    assert param_ids == layer_param_ids
    for key in m.params:
        i, pname = key.split(".", 1)
        assert m.params[key] is m.layers[int(i)].params[pname]
        assert m.grads[key] is m.layers[int(i)].grads[pname]
    # the total parameter count is what the architecture implies
    n = sum(int(np.prod(p.shape)) for p in ps)
    if name == "dense":
        assert n == 784 * 16 + 16 + 16 * 784 + 784
    else:
        assert n == (640 + 36928 + 18464 + 9248 + 18496 + 36928 + 577)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_grads_available_before_backward(backend, name):
    """params and grads have identical keys from construction on, so
    gradients() on a fresh model lines up with parameters() (no KeyError)."""
    m = MODELS[name](seed=0)
    assert set(m.grads) == set(m.params)
    assert len(m.gradients()) == len(m.parameters())


def test_parameters_order_matches_gradients(backend):
    m = dense_autoencoder(hidden=5, seed=0)
    m.forward(to_xp(_images(2)))
    m.backward(to_xp(np.ones((2, 1, 28, 28), dtype=np.float32)))
    for p, g, key in zip(m.parameters(), m.gradients(), m.params):
        assert p is m.params[key]
        assert g is m.grads[key]


# --------------------------------------------------------------------------
# gradient checks (float64)
# --------------------------------------------------------------------------
def test_dense_autoencoder_full_gradcheck(backend):
    m = dense_autoencoder(hidden=4, seed=1, dtype=np.float64)
    for k in ("1.b", "3.b"):
        m.params[k][...] = to_xp(np.random.default_rng(2).uniform(0.2, 0.5, size=m.params[k].shape))
    x = to_xp(_images(2, seed=3, dtype=np.float64))
    errs = gradcheck.gradient_errors(m, x, seed=0)
    assert set(errs) == {"dx"} | set(m.params)
    assert max(errs.values()) < 1e-6, errs
    assert gradcheck.check_layer(m, x, seed=0) < 1e-6


def test_small_sequential_full_gradcheck(backend):
    """Every layer type chained in one small model, all entries checked."""
    rng = np.random.default_rng(0)
    m = Sequential([
        Conv2D(2, 3, 3, dtype=np.float64, seed=0),
        Sigmoid(),
        MaxPool2D(2, padding="same"),
        Conv2D(3, 4, (3, 2), stride=(1, 2), padding=1, dtype=np.float64, seed=1),
        Upsample2D(size=(5, 4)),
        Flatten(),
        Dense(4 * 5 * 4, 6, dtype=np.float64, seed=2),
        Sigmoid(),
        Dense(6, 2 * 7 * 5, dtype=np.float64, seed=3),
        Reshape((2, 7, 5)),
    ])
    x = to_xp(rng.standard_normal((2, 2, 7, 5)))
    errs = gradcheck.gradient_errors(m, x, seed=1)
    assert set(errs) == {"dx"} | _expected_keys(m)
    assert max(errs.values()) < 1e-6, errs


def _conv_model_for_gradcheck():
    m = conv_denoiser(seed=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    # small positive biases keep most ReLUs active so gradients flow
    for k, p in m.params.items():
        if k.endswith(".b"):
            p[...] = to_xp(rng.uniform(0.01, 0.05, size=p.shape))
    x = to_xp(_images(2, seed=5, dtype=np.float64))
    return m, x


def test_conv_denoiser_sampled_gradcheck(backend):
    """float64 gradient check of the whole conv model (N=2).

    Checking every entry (~121k parameters, two forward passes each) is far
    too slow for a unit test, so ``max_entries`` samples a few random
    entries of ``x`` and of every parameter.
    """
    m, x = _conv_model_for_gradcheck()
    errs = gradcheck.gradient_errors(m, x, seed=0, max_entries=8)
    assert set(errs) == {"dx"} | set(m.params)
    assert max(errs.values()) < 1e-6, errs


def test_conv_denoiser_sampled_gradcheck_independent(backend):
    """Same check with the suite's own sampler (other entries, and the error
    normalised by the full analytic gradient rather than by the sample)."""
    m, x = _conv_model_for_gradcheck()
    errs = sampled_gradient_errors(m, x, n_samples=4, seed=1)
    assert set(errs) == {"dx"} | set(m.params)
    assert max(errs.values()) < 1e-6, errs


# --------------------------------------------------------------------------
# seeding / save / load
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_seeding(backend, name):
    a, b, c = MODELS[name](seed=3), MODELS[name](seed=3), MODELS[name](seed=4)
    assert set(a.params) == set(b.params) == set(c.params)
    for k in a.params:
        np.testing.assert_array_equal(to_np(a.params[k]), to_np(b.params[k]))
    assert all(
        not np.array_equal(to_np(a.params[k]), to_np(c.params[k]))
        for k in a.params if k.endswith(".W")
    )
    # layers inside one model are not initialised identically
    ws = [to_np(p) for k, p in a.params.items() if k.endswith(".W")]
    same_shape = [(i, j) for i in range(len(ws)) for j in range(i + 1, len(ws))
                  if ws[i].shape == ws[j].shape]
    for i, j in same_shape:
        assert not np.array_equal(ws[i], ws[j])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_round_trip(backend, name, tmp_path):
    a = MODELS[name](seed=0)
    b = MODELS[name](seed=1)
    x = to_xp(_images(2, seed=7))
    ya = to_np(a.forward(x))
    assert not np.allclose(ya, to_np(b.forward(x)))

    path = tmp_path / "model.npz"
    a.save(path)
    assert path.exists()
    saved = np.load(path)
    assert set(saved.files) >= set(a.params)

    before_ids = {k: id(p) for k, p in b.params.items()}
    b_param_objects = b.parameters()
    opt = SGD(b_param_objects, lr=0.1)
    b.load(path)
    # loaded in place: same array objects, now holding a's values
    assert {k: id(p) for k, p in b.params.items()} == before_ids
    for k in a.params:
        np.testing.assert_array_equal(to_np(b.params[k]), to_np(a.params[k]))
    np.testing.assert_array_equal(to_np(b.forward(x)), ya)

    # an optimiser built before load() still drives the model's arrays
    b.backward(to_xp(np.ones((2, 1, 28, 28), dtype=np.float32)))
    opt.step(b.gradients())
    changed = [k for k in a.params
               if not np.array_equal(to_np(b.params[k]), to_np(a.params[k]))]
    assert changed, "optimizer step after load() did not touch the model"
    assert not np.array_equal(to_np(b.forward(x)), ya)


def test_save_load_str_path(backend, tmp_path):
    a = dense_autoencoder(hidden=8, seed=0)
    b = dense_autoencoder(hidden=8, seed=5)
    path = str(tmp_path / "weights.npz")
    a.save(path)
    b.load(path)
    x = to_xp(_images(1))
    np.testing.assert_array_equal(to_np(a.forward(x)), to_np(b.forward(x)))


# --------------------------------------------------------------------------
# training sanity
# --------------------------------------------------------------------------
def test_dense_autoencoder_learns(backend):
    rng = np.random.default_rng(0)
    # sparse binary "images" so that the loss can go far below log(2)
    imgs = (rng.uniform(size=(8, 1, 28, 28)) > 0.8).astype(np.float32)
    x = to_xp(imgs)
    model = dense_autoencoder(hidden=32, seed=0)
    loss = SigmoidCrossEntropy()
    opt = Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        logits = model.forward(x)
        losses.append(float(loss.forward(logits, x)))
        model.backward(loss.backward())
        opt.step(model.gradients())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


