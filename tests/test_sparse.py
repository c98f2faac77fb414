"""Tests for the sparse autoencoder: its penalties, their gradients, the model, the figures.

Gradient checks follow scratchae.gradcheck: float64, central differences, a
random upstream gradient ``dout``. An activity layer (an identity that adds
a penalty) is checked on ``L = sum(forward(a) * dout) + penalty()``, whose
gradient ``backward(dout)`` must return; the model on
``L = bce(forward(x), t) + penalty()``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from scratchae import plots
from scratchae.gradcheck import numerical_gradient, relative_error
from scratchae.layers import Dense, Flatten, Reshape, Sigmoid
from scratchae.layers.sparsity import KLSparsity, L1Activity, WeightDecay
from scratchae.losses import SigmoidCrossEntropy
from scratchae.optim import Adam
from scratchae.sparse import PIXELS, SparseAutoencoder, SparseTrainer, sparse_autoencoder

from conftest import to_np, to_xp

TOL = 1e-6


def kl(p, q):
    """KL(p || q) of two Bernoulli distributions, the textbook formula (float64)."""
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def activity_gradient_errors(layer, a_host, *, seed=0, eps=1e-6):
    """Relative errors of ``backward(dout)`` for ``L = sum(forward(a) * dout) + penalty()``.

    Two checks: a random ``dout`` (the identity's part and the penalty's
    together) and ``dout = 0`` (the penalty's gradient alone, which the
    random dout could otherwise drown).
    """
    rng = np.random.default_rng(seed)
    errors = []
    for dout_host in (rng.standard_normal(a_host.shape), np.zeros(a_host.shape)):
        a, dout = to_xp(a_host), to_xp(dout_host)
        layer.forward(a)
        da = layer.backward(dout)
        assert np.array_equal(to_np(dout), dout_host), "backward modified dout"

        def loss():
            return float((layer.forward(a) * dout).sum() + layer.penalty())

        errors.append(relative_error(da, numerical_gradient(loss, a, eps=eps)))
    return errors


# --------------------------------------------------------------------------
# KLSparsity
# --------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["middle", "near_0", "near_1"])
def test_kl_sparsity_gradient(backend, where):
    rng = np.random.default_rng(1)
    # rho_hat ~ 0.5, ~ 1e-3 and ~ 1 - 1e-3: the derivative -rho/q + (1-rho)/(1-q)
    # is small, ~ -100 and ~ +900 there
    a = {"middle": rng.uniform(0.05, 0.95, (5, 7)),
         "near_0": rng.uniform(5e-4, 2e-3, (5, 7)),
         "near_1": 1 - rng.uniform(5e-4, 2e-3, (5, 7))}[where]
    errors = activity_gradient_errors(KLSparsity(rho=0.1, beta=3.0), a)
    assert max(errors) < TOL, errors


def test_kl_sparsity_penalty_matches_formula(backend):
    rng = np.random.default_rng(2)
    a = rng.uniform(0.01, 0.99, (6, 4))
    layer = KLSparsity(rho=0.2, beta=2.5)
    out = layer.forward(to_xp(a))
    np.testing.assert_array_equal(to_np(out), a)  # an identity
    rho_hat = a.mean(axis=0)
    np.testing.assert_allclose(float(layer.penalty()), 2.5 * kl(0.2, rho_hat).sum(), rtol=1e-12)
    np.testing.assert_allclose(to_np(layer.rho_hat), rho_hat, rtol=1e-12)
    # the gradient, written out: beta (-rho/q + (1-rho)/(1-q)) / N, the same for every row
    expected = 2.5 * (-0.2 / rho_hat + 0.8 / (1 - rho_hat)) / 6
    da = to_np(layer.backward(to_xp(np.zeros_like(a))))
    np.testing.assert_allclose(da, np.broadcast_to(expected, a.shape), rtol=1e-12)


def test_kl_sparsity_is_zero_at_the_target(backend):
    layer = KLSparsity(rho=0.3, beta=5.0)
    layer.forward(to_xp(np.full((4, 3), 0.3)))
    assert abs(float(layer.penalty())) < 1e-15
    assert np.abs(to_np(layer.backward(to_xp(np.zeros((4, 3)))))).max() < 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_sparsity_finite_for_activations_of_exactly_0_and_1(backend, dtype):
    # unit 0 always 0, unit 1 always 1, unit 2 mixed, unit 3 subnormal: the
    # float mean of unit 0 is 0 and of unit 1 is 1, where log and 1/q blow up
    tiny_sub = np.finfo(dtype).smallest_subnormal
    a = np.array([[0, 1, 0, tiny_sub], [0, 1, 1, tiny_sub], [0, 1, 0.5, 0]], dtype=dtype)
    layer = KLSparsity(rho=0.1, beta=3.0)
    layer.forward(to_xp(a))
    penalty = float(layer.penalty())
    da = to_np(layer.backward(to_xp(np.zeros_like(a))))
    assert np.isfinite(penalty) and np.isfinite(da).all()
    assert da.dtype == dtype
    # and through the Sigmoid that produced them (inf * 0 would be NaN there)
    sig = Sigmoid()
    z = np.array([[-1000.0, 1000.0, 0.0, 50.0]] * 3, dtype=dtype)
    layer.forward(sig.forward(to_xp(z)))
    dz = to_np(sig.backward(layer.backward(to_xp(np.ones_like(z)))))
    assert np.isfinite(float(layer.penalty())) and np.isfinite(dz).all()


def test_kl_sparsity_keeps_dtype_and_checks(backend):
    layer = KLSparsity(0.1, 3.0)
    a = to_xp(np.full((3, 2), 0.25, dtype=np.float32))
    assert layer.forward(a).dtype == np.float32
    assert to_np(layer.penalty()).dtype == np.float32
    assert layer.backward(to_xp(np.ones((3, 2), dtype=np.float32))).dtype == np.float32
    with pytest.raises(ValueError, match=r"backward expected dout of shape \(3, 2\)"):
        layer.backward(to_xp(np.ones((2, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="2-D input"):
        layer.forward(to_xp(np.full((3, 2, 1), 0.5)))
    with pytest.raises(RuntimeError, match="before forward"):
        KLSparsity(0.1, 3.0).penalty()
    with pytest.raises(RuntimeError, match="before forward"):
        KLSparsity(0.1, 3.0).backward(a)


@pytest.mark.parametrize("kwargs, message", [
    ({"rho": 0.0}, r"rho must be a number in \(0, 1\)"),
    ({"rho": 1.0}, r"rho must be a number in \(0, 1\)"),
    ({"beta": -1.0}, "beta must be a finite number >= 0"),
    ({"beta": float("inf")}, "beta must be a finite number >= 0"),
    ({"beta": True}, "beta must be a finite number >= 0"),
])
def test_kl_sparsity_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KLSparsity(**{"rho": 0.1, "beta": 3.0, **kwargs})


def test_kl_sparsity_has_no_default_weight():
    """A default beta = 3 (UFLDL's, per image) taken literally next to a per-pixel mean
    loss was 784 times UFLDL's strength: the weight must be given."""
    with pytest.raises(TypeError, match="beta"):
        KLSparsity()
    with pytest.raises(TypeError, match="beta"):
        KLSparsity(0.1)
    assert KLSparsity(0.1, 3.0 / PIXELS).beta == sparse_autoencoder(beta=3.0).layers[3].beta


def test_kl_sparsity_beta_zero_records_activations_only(backend):
    layer = KLSparsity(rho=0.1, beta=0.0)
    dout = np.random.default_rng(3).standard_normal((4, 3))
    layer.forward(to_xp(np.full((4, 3), 0.7)))
    assert float(layer.penalty()) == 0.0
    np.testing.assert_array_equal(to_np(layer.backward(to_xp(dout))), dout)
    np.testing.assert_allclose(to_np(layer.rho_hat), 0.7)


# --------------------------------------------------------------------------
# L1Activity and WeightDecay
# --------------------------------------------------------------------------

def test_l1_activity_gradient(backend):
    rng = np.random.default_rng(4)
    # |a| has a kink at 0: keep every activation at least 0.1 away from it
    a = rng.uniform(0.1, 2.0, (5, 6)) * rng.choice([-1.0, 1.0], (5, 6))
    errors = activity_gradient_errors(L1Activity(0.3), a)
    assert max(errors) < TOL, errors


def test_l1_activity_penalty_and_subgradient(backend):
    a = np.array([[0.5, -2.0, 0.0], [1.5, 0.0, -0.25]])
    layer = L1Activity(weight=0.1)
    layer.forward(to_xp(a))
    np.testing.assert_allclose(float(layer.penalty()), 0.1 * np.abs(a).sum() / 2, rtol=1e-12)
    da = to_np(layer.backward(to_xp(np.zeros_like(a))))
    np.testing.assert_allclose(da, 0.1 * np.sign(a) / 2)  # sign(0) = 0: subgradient 0
    assert da[0, 2] == 0 and da[1, 1] == 0
    a32 = to_xp(a.astype(np.float32))
    layer.forward(a32)
    assert layer.backward(a32).dtype == np.float32 and to_np(layer.penalty()).dtype == np.float32


def test_weight_decay(backend):
    W_host = np.random.default_rng(5).standard_normal((5, 3))
    W = to_xp(W_host)
    decay = WeightDecay(0.7)
    np.testing.assert_allclose(float(decay.penalty(W)), 0.35 * (W_host**2).sum(), rtol=1e-12)
    numeric = numerical_gradient(lambda: float(decay.penalty(W)), W)
    assert relative_error(decay.gradient(W), numeric) < TOL
    W32 = to_xp(W_host.astype(np.float32))
    assert decay.gradient(W32).dtype == np.float32
    assert to_np(decay.penalty(W32)).dtype == np.float32
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        WeightDecay(-1e-3)


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

def small_model(dtype=np.float64, beta=3.0 * PIXELS, weight_decay=0.1 * PIXELS, hidden=6, seed=0):
    """The builder's model with large penalties, so that their gradients matter in a check."""
    return sparse_autoencoder(hidden=hidden, rho=0.1, beta=beta, weight_decay=weight_decay,
                              seed=seed, dtype=dtype)


def images(n, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 1, 28, 28)).astype(dtype)


def test_model_loss_gradient(backend):
    """bce(forward(x), t) + penalty(): backward gives dL/dx and every dL/dparam."""
    model = small_model()
    x, t = to_xp(images(3, seed=1)), to_xp(images(3, seed=2))
    bce = SigmoidCrossEntropy()

    def loss():
        return float(bce.forward(model.forward(x), t) + model.penalty())

    loss()
    dout = bce.backward()
    dout_before = to_np(dout)
    dx = model.backward(dout)
    assert np.array_equal(to_np(dout), dout_before), "backward modified dout"
    analytic = {"dx": to_np(dx), **{k: to_np(g) for k, g in model.grads.items()}}
    assert set(model.grads) == set(model.params) == {"1.W", "1.b", "4.W", "4.b"}
    rng = np.random.default_rng(0)
    for name, array in {"dx": x, **model.params}.items():
        # two forward passes per entry: check 40 random entries of each array
        indices = rng.choice(array.size, size=min(40, array.size), replace=False)
        numeric = numerical_gradient(loss, array, indices=indices).reshape(-1)[indices]
        a = analytic[name].reshape(-1)
        error = np.abs(a[indices] - numeric).max() / max(np.abs(a).max(), 1e-12)
        assert error < TOL, (name, error)


def test_model_penalty_parts_match_formulas(backend):
    model = small_model()
    x = images(4, seed=3)
    model.forward(to_xp(x))
    parts = model.penalty_parts()
    W1, b1 = (to_np(model.params[k]) for k in ("1.W", "1.b"))
    W2 = to_np(model.params["4.W"])
    a = 1 / (1 + np.exp(-(x.reshape(4, -1) @ W1 + b1)))
    rho_hat = a.mean(axis=0)
    np.testing.assert_allclose(float(parts["sparsity"]), 3.0 * kl(0.1, rho_hat).sum(), rtol=1e-10)
    np.testing.assert_allclose(float(parts["weight_decay"]),
                               0.1 / 2 * ((W1**2).sum() + (W2**2).sum()), rtol=1e-12)
    np.testing.assert_allclose(float(model.penalty()),
                               float(parts["sparsity"]) + float(parts["weight_decay"]), rtol=1e-12)
    np.testing.assert_allclose(float(model.mean_activation()), rho_hat.mean(), rtol=1e-12)
    np.testing.assert_allclose(to_np(model.hidden(to_xp(x))), a, rtol=1e-12)
    # hidden() does not run the sparsity layer: the recorded penalty is that of forward(x)
    model.hidden(to_xp(x[:2]))
    np.testing.assert_allclose(float(parts["sparsity"]), float(model.penalty_parts()["sparsity"]))


def test_builder_divides_the_weights_by_the_pixels():
    model = sparse_autoencoder()
    kl_layer = model.layers[3]
    assert isinstance(kl_layer, KLSparsity)
    assert (kl_layer.rho, kl_layer.beta) == (0.1, 10.0 / 784)
    assert model.decay.lam == 1e-2 / 784
    assert model.encoder_weights().shape == (784, 196)
    assert [type(layer) for layer in model.layers] == [Flatten, Dense, Sigmoid, KLSparsity,
                                                      Dense, Reshape]


def test_model_interface(backend):
    model = small_model(dtype=np.float32)
    x = to_xp(images(5, dtype=np.float32))
    logits = model.forward(x)
    assert tuple(logits.shape) == (5, 1, 28, 28) and logits.dtype == np.float32
    assert model.output_shape((5, 1, 28, 28)) == (5, 1, 28, 28)
    assert model.input_shape == (1, 28, 28) and model.name == "sparse_autoencoder"
    assert model.dtype == np.float32
    penalty = model.penalty()
    assert to_np(penalty).shape == () and to_np(penalty).dtype == np.float32
    assert all(to_np(v).dtype == np.float32 for v in model.penalty_parts().values())
    dout = to_xp(np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32))
    dx = model.backward(dout)
    assert dx.dtype == np.float32 and tuple(dx.shape) == (5, 1, 28, 28)
    grads = [to_np(g) for g in model.gradients()]
    assert len(grads) == len(model.parameters()) == 4
    assert all(g.dtype == np.float32 and g.shape == to_np(p).shape
               for g, p in zip(grads, model.parameters()))
    # the gradients are overwritten, not accumulated
    model.forward(x)
    model.backward(dout)
    for g, again in zip(grads, model.gradients()):
        np.testing.assert_array_equal(g, to_np(again))
    assert tuple(model.hidden(x).shape) == (5, 6)
    model.check_input(x)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 28, 28\)"):
        model.forward(to_xp(np.zeros((2, 784), dtype=np.float32)))
    with pytest.raises(ValueError, match="backward expected dout of shape"):
        model.backward(to_xp(np.zeros((4, 1, 28, 28), dtype=np.float32)))
    with pytest.raises(RuntimeError, match="before forward"):
        small_model().backward(dout)


def test_model_finite_when_the_hidden_units_saturate(backend):
    model = small_model(dtype=np.float32)
    W1 = model.params["1.W"]
    W1[...] = 0
    model.params["1.b"][...] = to_xp(np.array([-1000, 1000, 60, -200, 0, 30], dtype=np.float32))
    x = to_xp(images(4, dtype=np.float32))
    bce = SigmoidCrossEntropy()
    loss = bce.forward(model.forward(x), x) + model.penalty()
    model.backward(bce.backward())
    assert np.isfinite(float(loss))
    assert all(np.isfinite(to_np(g)).all() for g in model.gradients())


def test_architecture_records_the_penalties():
    base = sparse_autoencoder().architecture()
    assert base.splitlines()[-1] == f"WeightDecay(lam={1e-2 / 784:g})"
    for kwargs in ({"rho": 0.05}, {"beta": 0.0}, {"weight_decay": 0.0}, {"hidden": 100}):
        assert sparse_autoencoder(**kwargs).architecture() != base, kwargs
    assert sparse_autoencoder(seed=3).architecture() == base


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": -1}, "beta must be a finite number >= 0"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0"),
    ({"rho": 1.5}, r"rho must be a number in \(0, 1\)"),
    ({"hidden": 0}, "hidden must be a positive int"),
    ({"dtype": np.int32}, "dtype must be float32 or float64"),
])
def test_builder_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sparse_autoencoder(**kwargs)


def test_l1_activity_in_a_model(backend):
    """Any layer with penalty() counts: the Keras blog's L1 variant, gradient-checked."""
    rng = np.random.default_rng(6)
    model = SparseAutoencoder([Flatten(), Dense(784, 5, dtype=np.float64, rng=rng), Sigmoid(),
                               L1Activity(0.5), Dense(5, 784, dtype=np.float64, rng=rng),
                               Reshape((1, 28, 28))], (1, 28, 28), weight_decay=0.2)
    x = to_xp(images(2, seed=4))
    bce = SigmoidCrossEntropy()

    def loss():
        return float(bce.forward(model.forward(x), x) + model.penalty())

    loss()
    model.backward(bce.backward())
    W1 = model.params["1.W"]
    analytic = to_np(model.grads["1.W"]).reshape(-1)
    indices = rng.choice(W1.size, size=30, replace=False)
    numeric = numerical_gradient(loss, W1, indices=indices).reshape(-1)[indices]
    assert np.abs(analytic[indices] - numeric).max() / np.abs(analytic).max() < TOL


def test_four_line_step_trains_toward_rho(backend):
    """The training loop's four lines, unchanged, lower the penalised loss."""
    model = sparse_autoencoder(hidden=16, beta=3.0 * PIXELS, weight_decay=1e-3 * PIXELS)
    x = to_xp(images(32, dtype=np.float32))
    bce = SigmoidCrossEntropy()
    optimizer = Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        logits = model.forward(x)
        losses.append(float(bce.forward(logits, x) + model.penalty()))
        model.backward(bce.backward())
        optimizer.step(model.gradients())
    assert losses[-1] < losses[0]
    model.forward(x)
    assert abs(float(model.mean_activation()) - 0.1) < abs(0.5 - 0.1)


# --------------------------------------------------------------------------
# SparseTrainer's test metrics
# --------------------------------------------------------------------------
def _small_sparse(activity):
    rng = np.random.default_rng(8)
    return SparseAutoencoder([Flatten(), Dense(784, 6, rng=rng), Sigmoid(), activity,
                              Dense(6, 784, rng=rng), Reshape((1, 28, 28))], (1, 28, 28),
                             weight_decay=1e-3)


@pytest.mark.parametrize("activity", [lambda: L1Activity(3.0), lambda: KLSparsity(0.1, 0.5)],
                         ids=["l1", "kl"])
def test_sparse_trainer_metrics_do_not_depend_on_eval_batch_size(activity):
    """Every metric is summed batch by batch (the L1 penalty was the last eval batch's:
    4.000 with eval_batch_size 10, 4.103 with 100 in issue #20)."""
    data = images(100, seed=9, dtype=np.float32)
    metrics = [SparseTrainer(_small_sparse(activity()), batch_size=32, eval_batch_size=size,
                             progress=False, log=lambda s: None).evaluate(data)
               for size in (10, 100)]
    for key in metrics[0]:
        assert metrics[0][key] == pytest.approx(metrics[1][key], rel=1e-6), key


@pytest.mark.parametrize("activity", [lambda: L1Activity(3.0), lambda: KLSparsity(0.1, 0.5)],
                         ids=["l1", "kl"])
def test_sparse_trainer_test_loss_is_the_training_loss_on_the_test_set(activity):
    """The training loss averages each batch's bce + penalty; the test loss is the same
    quantity on the test set, in batches of the training size (the KL at a batch's mean
    activations, not at the whole set's, which is smaller), weighted by their sizes."""
    data = images(70, seed=9, dtype=np.float32)
    model = _small_sparse(activity())
    metrics = SparseTrainer(model, batch_size=32, progress=False,
                            log=lambda s: None).evaluate(data)
    bce, loss = SigmoidCrossEntropy(), 0.0
    for i in range(0, 70, 32):
        x = data[i:i + 32]
        loss += float(bce.forward(model.forward(x), x) + model.penalty()) * len(x)
    assert metrics["loss"] == pytest.approx(loss / 70, rel=1e-6)


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------

def png_size(path):
    """(height, width) of a PNG, after checking it is a real, non-blank one."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.std() > 0.01, "figure is blank"
    return img.shape[:2]


def test_grid_shape():
    assert plots.grid_shape(196) == (14, 14)
    assert plots.grid_shape(64) == (8, 8)
    assert plots.grid_shape(200) == (14, 15)
    assert plots.grid_shape(10) == (3, 4)
    assert plots.grid_shape(1) == (1, 1)


def test_filter_mosaic_tiles_and_normalises():
    W = np.random.default_rng(7).standard_normal((784, 10)) * np.arange(1, 11)  # unequal scales
    mosaic = plots.filter_mosaic(W)
    assert mosaic.shape == (3 * 29 + 1, 4 * 29 + 1) and mosaic.dtype == np.float32
    centred = W - W.mean()
    for j in range(10):
        r, c = divmod(j, 4)
        tile = mosaic[1 + 29 * r:29 + 29 * r, 1 + 29 * c:29 + 29 * c]
        np.testing.assert_allclose(tile, (centred[:, j] / np.abs(centred[:, j]).max())
                                   .reshape(28, 28), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(mosaic[-29:, -29 * 2:], -1)  # the two empty cells
    with pytest.raises(ValueError, match=r"expected shape \(784, H\)"):
        plots.filter_mosaic(np.zeros((100, 3)))


def test_filter_grid_writes_a_png_of_the_right_size(tmp_path):
    W = np.random.default_rng(8).standard_normal((784, 196)).astype(np.float32)
    path = tmp_path / "new" / "filters.png"
    got = plots.filter_grid(W, str(path), title="196 filters")
    assert got == path and sorted(p.name for p in path.parent.iterdir()) == ["filters.png"]
    cell, margin, title = plots.FILTER_CELL, plots.MARGIN, plots.TITLE_HEIGHT
    assert png_size(path) == (round(100 * (14 * cell + margin + title)),
                              round(100 * (14 * cell + margin)))  # 920 x 880
    odd = plots.filter_grid(W[:, :10], tmp_path / "odd.png")
    assert png_size(odd) == (round(100 * (3 * cell + margin)), round(100 * (4 * cell + margin)))


def test_activation_histogram(tmp_path):
    values = np.clip(np.random.default_rng(9).normal(0.1, 0.01, 196), 0, 1)
    path = plots.activation_histogram(values, 0.1, tmp_path / "hist.png", title="t")
    assert png_size(path) == (420, 640)
    with pytest.raises(ValueError, match="non-empty 1-D array"):
        plots.activation_histogram(np.zeros((2, 3)), 0.1, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
