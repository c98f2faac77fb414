"""The VAE's pieces: sampler, KL, Bernoulli NLL and the whole model, gradient-checked.

Every gradient check is float64, central differences, a random upstream
gradient where the piece has an array output, relative error < 1e-6 (the
convention of :mod:`scratchae.gradcheck`).
"""
import math

import numpy as np
import pytest

from scratchae import fast
from scratchae.gradcheck import numerical_gradient, relative_error
from scratchae.layers.gaussian import GaussianKL, GaussianSampler
from scratchae.losses import BernoulliNLL, SigmoidCrossEntropy
from scratchae.vae import VAE, VAETrainer, evaluate, format_summary, vae

from conftest import to_np, to_xp

TOL = 1e-6


def sampled_error(analytic, loss, array, rng, max_entries=None, eps=1e-6):
    """Relative error of ``analytic`` = dloss/darray against central differences.

    With ``max_entries``, only that many random entries are estimated, and
    the error is scaled by the largest entry of the whole analytic gradient
    (as :func:`scratchae.gradcheck.gradient_errors` does).
    """
    a = to_np(analytic).reshape(-1)
    indices = None
    if max_entries is not None and array.size > max_entries:
        indices = rng.choice(array.size, size=max_entries, replace=False)
    numeric = numerical_gradient(loss, array, eps=eps, indices=indices).reshape(-1)
    if indices is None:
        return relative_error(a, numeric)
    scale = max(float(np.abs(a).max()), float(np.abs(numeric).max()), 1e-12)
    return float(np.abs(a[indices] - numeric[indices]).max() / scale)


def latent_pair(rng, n=4, k=3, dtype=np.float64):
    mu = to_xp(rng.standard_normal((n, k)), dtype=dtype)
    logvar = to_xp(rng.uniform(-1.5, 1.0, (n, k)), dtype=dtype)
    return mu, logvar


def small_vae(seed=0, dtype=np.float64):
    """vae(latent=3, hidden=8), with small positive biases (ReLUs off their kink)."""
    model = vae(latent=3, hidden=8, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for key, p in model.params.items():
        if key.endswith(".b"):
            p[...] = to_xp(rng.uniform(0.01, 0.05, p.shape), dtype=p.dtype)
    return model


def images(rng, n=3, dtype=np.float64):
    return to_xp(rng.uniform(0, 1, (n, 1, 28, 28)), dtype=dtype)


# --------------------------------------------------------------------------
# GaussianSampler
# --------------------------------------------------------------------------
def test_sampler_gradcheck_with_frozen_eps(backend):
    rng = np.random.default_rng(0)
    mu, logvar = latent_pair(rng)
    sampler = GaussianSampler(seed=1)
    z = sampler.forward(mu, logvar)
    sampler.freeze()  # every forward below reuses this eps
    dz = to_xp(rng.standard_normal(z.shape))  # random upstream gradient
    dz_before = to_np(dz)
    dmu, dlogvar = sampler.backward(dz)
    np.testing.assert_array_equal(to_np(dz), dz_before)  # dz untouched

    def loss():
        return float((sampler.forward(mu, logvar) * dz).sum())

    assert sampled_error(dmu, loss, mu, rng) < TOL
    assert sampled_error(dlogvar, loss, logvar, rng) < TOL
    dmu[...] = 0  # dmu is the sampler's own array, not a view of dz
    np.testing.assert_array_equal(to_np(dz), dz_before)


def test_sampler_formula_and_explicit_eps(backend):
    rng = np.random.default_rng(1)
    mu, logvar = latent_pair(rng, 5, 4)
    eps = to_xp(rng.standard_normal((5, 4)))
    z = GaussianSampler(seed=0).forward(mu, logvar, eps)
    expected = to_np(mu) + np.exp(0.5 * to_np(logvar)) * to_np(eps)
    np.testing.assert_allclose(to_np(z), expected, rtol=1e-14)


def test_sampler_mean_and_std_are_mu_and_exp_half_logvar(backend):
    # std = exp(0.5 * logvar): 2 and 0.5 here. The classic bug, exp(logvar),
    # would give 4 and 0.25; the 3% tolerance is ~6 standard errors.
    n = 20000
    mu_row = np.array([0.5, -1.0, 2.0])
    std_row = np.array([2.0, 0.5, 1.0])
    mu = to_xp(np.tile(mu_row, (n, 1)), dtype=np.float32)
    logvar = to_xp(np.tile(np.log(std_row**2), (n, 1)), dtype=np.float32)
    z = to_np(GaussianSampler(seed=3).forward(mu, logvar)).astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), mu_row, atol=4 * std_row.max() / math.sqrt(n))
    np.testing.assert_allclose(z.std(axis=0), std_row, rtol=0.03)


def test_sampler_same_stream_on_every_backend(backend):
    # eps is drawn on the host, so NumPy and CuPy see the same numbers
    mu = to_xp(np.zeros((6, 5)), dtype=np.float32)
    z = GaussianSampler(seed=7).forward(mu, mu)  # logvar 0: z = eps
    expected = np.random.default_rng(7).standard_normal((6, 5), dtype=np.float32)
    np.testing.assert_array_equal(to_np(z), expected)


def test_sampler_keeps_dtype(backend):
    rng = np.random.default_rng(2)
    mu, logvar = latent_pair(rng, dtype=np.float32)
    sampler = GaussianSampler(seed=0)
    z = sampler.forward(mu, logvar)
    dmu, dlogvar = sampler.backward(to_xp(np.ones(z.shape), dtype=np.float32))
    assert z.dtype == sampler.eps.dtype == dmu.dtype == dlogvar.dtype == np.float32


def test_sampler_freeze_unfreeze_and_rng_state(backend):
    rng = np.random.default_rng(3)
    mu, logvar = latent_pair(rng)
    sampler = GaussianSampler(seed=0)
    with pytest.raises(RuntimeError, match="GaussianSampler: freeze"):
        sampler.freeze()
    z1 = to_np(sampler.forward(mu, logvar))
    sampler.freeze()
    np.testing.assert_array_equal(to_np(sampler.forward(mu, logvar)), z1)
    sampler.unfreeze()
    state = sampler.rng_state()
    z2 = to_np(sampler.forward(mu, logvar))
    assert not np.array_equal(z1, z2)
    sampler.set_rng_state(state)
    np.testing.assert_array_equal(to_np(sampler.forward(mu, logvar)), z2)


def test_sampler_errors_name_the_piece_and_shapes(backend):
    rng = np.random.default_rng(4)
    mu, logvar = latent_pair(rng, 4, 3)
    sampler = GaussianSampler(seed=0)
    with pytest.raises(RuntimeError, match="GaussianSampler: backward"):
        sampler.backward(mu)
    with pytest.raises(ValueError,
                       match=r"GaussianSampler: mu and logvar .* mu \(4, 3\) and logvar \(4, 2\)"):
        sampler.forward(mu, logvar[:, :2])
    with pytest.raises(ValueError, match=r"GaussianSampler: mu must be 2-D .* got shape \(12,\)"):
        sampler.forward(mu.reshape(-1), logvar.reshape(-1))
    sampler.forward(mu, logvar)
    with pytest.raises(ValueError,
                       match=r"GaussianSampler: backward expected "
                             r"dz of shape \(4, 3\).*got \(4, 2\)"):
        sampler.backward(mu[:, :2])
    sampler.freeze()
    with pytest.raises(ValueError,
                       match=r"GaussianSampler: the frozen eps has shape \(4, 3\).*\(2, 3\)"):
        sampler.forward(mu[:2], logvar[:2])


# --------------------------------------------------------------------------
# GaussianKL
# --------------------------------------------------------------------------
def test_kl_gradcheck(backend):
    rng = np.random.default_rng(5)
    mu, logvar = latent_pair(rng, 5, 4)
    kl = GaussianKL()
    kl.forward(mu, logvar)
    dmu, dlogvar = kl.backward()

    def loss():
        return float(kl.forward(mu, logvar))

    assert sampled_error(dmu, loss, mu, rng) < TOL
    assert sampled_error(dlogvar, loss, logvar, rng) < TOL
    np.testing.assert_allclose(to_np(dmu), to_np(mu) / 5, rtol=1e-15)


def test_kl_is_exactly_zero_at_the_prior(backend):
    zeros = to_xp(np.zeros((3, 7)), dtype=np.float32)
    assert float(GaussianKL().forward(zeros, zeros)) == 0.0


def test_kl_matches_the_closed_form_and_monte_carlo(backend):
    rng = np.random.default_rng(6)
    mu, logvar = latent_pair(rng, 4, 3)
    got = float(GaussianKL().forward(mu, logvar))
    # Another way of writing the same closed form, per dimension:
    # KL(N(m, s^2) || N(0, 1)) = -log s + (s^2 + m^2) / 2 - 1/2
    m, s = to_np(mu), np.exp(0.5 * to_np(logvar))
    per_image = [sum(-math.log(s[n, k]) + (s[n, k]**2 + m[n, k]**2) / 2 - 0.5 for k in range(3))
                 for n in range(4)]
    assert got == pytest.approx(sum(per_image) / 4, rel=1e-12)
    # Monte Carlo: KL = E_q[log q(z) - log p(z)], 200k samples per image
    draws = np.random.default_rng(0).standard_normal((200_000, 4, 3))
    z = m + s * draws
    log_q = -0.5 * (draws**2 + np.log(2 * np.pi * s**2))
    log_p = -0.5 * (z**2 + np.log(2 * np.pi))
    estimate = (log_q - log_p).sum(axis=2).mean()
    assert got == pytest.approx(estimate, rel=0.01)


def test_kl_keeps_dtype_and_checks_shapes(backend):
    rng = np.random.default_rng(7)
    mu, logvar = latent_pair(rng, dtype=np.float32)
    kl = GaussianKL()
    with pytest.raises(RuntimeError, match="GaussianKL: backward"):
        kl.backward()
    assert kl.forward(mu, logvar).dtype == np.float32
    assert all(g.dtype == np.float32 for g in kl.backward())
    with pytest.raises(ValueError,
                       match=r"GaussianKL: mu and logvar .* mu \(4, 3\) and logvar \(3, 3\)"):
        kl.forward(mu, logvar[:3])


# --------------------------------------------------------------------------
# BernoulliNLL
# --------------------------------------------------------------------------
def test_bernoulli_nll_gradcheck(backend):
    rng = np.random.default_rng(8)
    logits = to_xp(3 * rng.standard_normal((3, 1, 5, 4)))
    targets = to_xp(rng.uniform(0, 1, (3, 1, 5, 4)))
    nll = BernoulliNLL()
    nll.forward(logits, targets)
    analytic = nll.backward()
    assert sampled_error(analytic, lambda: float(nll.forward(logits, targets)), logits, rng) < TOL


def test_bernoulli_nll_sums_over_pixels_and_averages_over_images(backend):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 1, 4, 5))
    t = rng.uniform(0, 1, (3, 1, 4, 5))
    got = float(BernoulliNLL().forward(to_xp(x), to_xp(t)))
    total = 0.0
    for n in range(3):
        for i in np.ndindex(1, 4, 5):
            p = 1 / (1 + math.exp(-x[n][i]))
            total += -(t[n][i] * math.log(p) + (1 - t[n][i]) * math.log(1 - p))
    assert got == pytest.approx(total / 3, rel=1e-12)
    # = pixels * the per-pixel mean of SigmoidCrossEntropy (the factor docs/vae.md is about)
    mean = float(SigmoidCrossEntropy().forward(to_xp(x), to_xp(t)))
    assert got == pytest.approx(20 * mean, rel=1e-12)


def test_bernoulli_nll_is_stable_keeps_dtype_and_checks(backend):
    logits = to_xp(np.array([[-1000.0, 0.0, 1000.0]]), dtype=np.float32)
    targets = to_xp(np.array([[0.0, 0.5, 1.0]]), dtype=np.float32)
    nll = BernoulliNLL()
    with pytest.raises(RuntimeError, match="BernoulliNLL: backward"):
        nll.backward()
    loss = nll.forward(logits, targets)
    assert loss.dtype == np.float32 and float(loss) == pytest.approx(math.log(2), rel=1e-6)
    grad = nll.backward()
    assert grad.dtype == np.float32
    np.testing.assert_allclose(to_np(grad), [[0.0, 0.0, 0.0]], atol=1e-7)
    with pytest.raises(ValueError,
                       match=r"BernoulliNLL: logits and targets .* "
                             r"logits \(1, 3\) and targets \(1, 2\)"):
        nll.forward(logits, targets[:, :2])
    with pytest.raises(ValueError, match="BernoulliNLL: targets must be in"):
        nll.forward(logits, targets * 2)


# --------------------------------------------------------------------------
# The whole VAE
# --------------------------------------------------------------------------
@pytest.mark.parametrize("upstream", ["rec", "random"])
def test_vae_gradcheck_whole_loss(backend, upstream):
    """dL/dparam and dL/dx of L = rec + KL, eps frozen, through both paths.

    ``rec``: L = BernoulliNLL(logits, t) + KL, the training loss (targets t
    fixed, apart from x, so that dL/dx is the network's gradient only).
    ``random``: L = sum(logits * dout) + KL with a random dout.

    The step is 1e-5, not 1e-6: L is ~544 nats (784 pixels x 3 images), and
    its float64 rounding (~1e-13), divided by 2 * step, is what the error
    measures at 1e-6 (1.6e-6 for dx; it falls as 1/step: 1.5e-7 at 1e-5).
    """
    rng = np.random.default_rng(10)
    model = small_vae()
    x, t = images(rng), images(rng)
    rec = BernoulliNLL()
    dout = to_xp(rng.standard_normal((3, 1, 28, 28)))
    dout_before = to_np(dout)

    def loss():
        logits = model.forward(x)
        head = rec.forward(logits, t) if upstream == "rec" else (logits * dout).sum()
        return float(head + model.penalty())

    loss()
    model.sampler.freeze()
    dx = model.backward(rec.backward() if upstream == "rec" else dout)
    np.testing.assert_array_equal(to_np(dout), dout_before)
    analytic = {"dx": to_np(dx), **{k: to_np(g) for k, g in model.grads.items()}}
    errors = {name: sampled_error(analytic[name], loss, array, rng, max_entries=60, eps=1e-5)
              for name, array in {"dx": x, **model.params}.items()}
    assert max(errors.values()) < TOL, errors
    assert set(errors) == {"dx", "encoder.1.W", "encoder.1.b", "encoder.3.W", "encoder.3.b",
                           "decoder.0.W", "decoder.0.b", "decoder.2.W", "decoder.2.b"}


def test_vae_backward_adds_the_kl_gradient(backend):
    """The encoder receives dL_rec/dmu + dKL/dmu: the KL path is not lost."""
    rng = np.random.default_rng(11)
    model = small_vae()
    x = images(rng)
    model.forward(x)
    dout = to_xp(np.zeros((3, 1, 28, 28)))  # no reconstruction gradient at all
    model.backward(dout)
    # then dL/d(encoder output) is the KL's alone: [mu | 0.5 (exp(logvar) - 1)] / N
    mu, logvar = to_np(model.mu), to_np(model.logvar)
    dh = np.concatenate([mu / 3, 0.5 * (np.exp(logvar) - 1) / 3], axis=1)
    np.testing.assert_allclose(to_np(model.grads["encoder.3.b"]), dh.sum(axis=0), rtol=1e-12)
    # with beta = 0 there is no KL path, and no penalty
    model.beta = 0.0
    model.forward(x)
    assert float(model.penalty()) == 0.0
    model.backward(dout)
    assert not to_np(model.grads["encoder.3.b"]).any()


def test_mean_instead_of_sum_is_a_beta_vae(backend):
    """mean-over-pixels rec + KL has the gradient of (sum rec + 784 KL) / 784."""
    rng = np.random.default_rng(12)
    x = images(rng, 2)
    grads = {}
    for name, rec, beta in (("mean", SigmoidCrossEntropy(), 1.0), ("sum", BernoulliNLL(), 784.0)):
        model = small_vae()
        model.beta = beta
        model.sampler.set_rng_state(np.random.default_rng(5).bit_generator.state)
        rec.forward(model.forward(x), x)
        model.backward(rec.backward())
        grads[name] = to_np(model.grads["encoder.1.W"])
    np.testing.assert_allclose(grads["mean"], grads["sum"] / 784, rtol=1e-10, atol=1e-18)


def test_vae_interface_shapes_and_dtype(backend):
    model = vae(latent=4, hidden=16, seed=0)
    rng = np.random.default_rng(13)
    x = images(rng, 5, np.float32)
    logits = model.forward(x)
    assert model.input_shape == (1, 28, 28) and model.output_shape((5, 1, 28, 28)) == (5, 1, 28, 28)
    assert logits.shape == (5, 1, 28, 28)
    assert model.mu.shape == model.logvar.shape == model.z.shape == (5, 4)
    assert logits.dtype == model.z.dtype == model.penalty().dtype == model.dtype == np.float32
    dx = model.backward(to_xp(np.ones(logits.shape), dtype=np.float32))
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert list(model.params) == list(model.grads)
    assert [p.shape for p in model.parameters()] == [g.shape for g in model.gradients()]
    assert all(g.dtype == np.float32 for g in model.gradients())
    assert model.params["encoder.3.W"].shape == (16, 8)  # [mu | logvar] columns
    assert "VAE(latent=4)" in model.architecture() and "Dense(784, 16)" in model.architecture()
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    assert model.decode(mu).shape == (5, 1, 28, 28)
    state = model.rng_state()
    np.testing.assert_array_equal(to_np(model.reconstruct(x)), to_np(model.decode(mu)))
    assert model.rng_state() == state  # no eps drawn
    assert float(model.kl) >= 0 and isinstance(model.rng, np.random.Generator)


def test_vae_errors_name_the_model_and_shapes(backend):
    model = vae(latent=3, hidden=8)
    x = to_xp(np.zeros((2, 1, 28, 28)), dtype=np.float32)
    with pytest.raises(RuntimeError, match="vae: backward"):
        model.backward(x)
    with pytest.raises(RuntimeError, match="vae: penalty"):
        model.penalty()
    with pytest.raises(ValueError,
                       match=r"vae.encoder: expected input of "
                             r"shape \(N, 1, 28, 28\), got \(2, 784\)"):
        model.forward(x.reshape(2, 784))
    model.forward(x)
    with pytest.raises(ValueError,
                       match=r"vae: backward expected dout of "
                             r"shape \(2, 1, 28, 28\).*got \(2, 784\)"):
        model.backward(x.reshape(2, 784))
    model.decode(to_xp(np.zeros((2, 3)), dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"vae: backward\(\) called before forward\(\)"):
        model.backward(x)  # decode() keeps nothing for backward
    bad = to_np(x)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="vae.encoder: the input holds NaN"):
        model.check_input(to_xp(bad))
    model.check_finite = False
    model.check_input(to_xp(bad))


def test_vae_is_reproducible_and_its_rng_can_be_saved(backend):
    rng = np.random.default_rng(14)
    x = images(rng, 4, np.float32)
    a, b = vae(latent=3, hidden=8, seed=5), vae(latent=3, hidden=8, seed=5)
    np.testing.assert_array_equal(to_np(a.forward(x)), to_np(b.forward(x)))
    state = a.rng_state()
    first = to_np(a.forward(x))
    assert not np.array_equal(first, to_np(a.forward(x)))  # a fresh eps each forward
    a.set_rng_state(state)
    np.testing.assert_array_equal(to_np(a.forward(x)), first)
    # the checkpoint code sets model.rng.bit_generator.state
    a.rng.bit_generator.state = state
    np.testing.assert_array_equal(to_np(a.forward(x)), first)


def test_evaluate_is_fixed_and_leaves_the_training_stream_alone(backend):
    rng = np.random.default_rng(15)
    data = rng.uniform(0, 1, (10, 1, 28, 28)).astype(np.float32)
    model = vae(latent=3, hidden=8)
    state = model.rng_state()
    m1 = evaluate(model, data, batch_size=3)
    m2 = evaluate(model, data, batch_size=10)
    assert model.rng_state() == state and model.check_finite
    assert m1["neg_elbo"] == pytest.approx(m1["rec"] + m1["kl"], rel=1e-12)
    for key in m1:
        assert m1[key] == pytest.approx(m2[key], rel=1e-5)
    assert format_summary(m1).startswith("test neg_elbo=")


def test_vae_constructor_checks():
    with pytest.raises(ValueError, match="vae: latent must be a positive int"):
        vae(latent=0)
    with pytest.raises(ValueError, match="vae: dtype must be float32 or float64"):
        vae(dtype=np.int32)
    model = vae(latent=3, hidden=8)
    with pytest.raises(ValueError, match="VAE: beta must be a number >= 0"):
        VAE(model.encoder, model.decoder, 3, beta=-1)


def test_compiled_vae_is_the_same_function(backend):
    """fast.compile compiles the encoder and decoder: same parameters, same sampler,
    the same loss and gradients (float64), and no dL/dx."""
    model = vae(latent=3, hidden=8, seed=0, dtype=np.float64)
    net = fast.compile(model)
    assert net is not model and net.sampler is model.sampler
    assert all(a is b for a, b in zip(net.parameters(), model.parameters()))
    assert net.architecture() == model.architecture()
    x = images(np.random.default_rng(2), 4, np.float64)
    rec = BernoulliNLL()
    state = model.rng_state()
    loss = float(rec.forward(model.forward(x), x) + model.penalty())
    model.backward(rec.backward())
    grads = {k: to_np(g) for k, g in model.grads.items()}
    model.set_rng_state(state)  # the same eps again
    assert float(rec.forward(net.forward(x), x) + net.penalty()) == pytest.approx(loss, rel=1e-12)
    assert net.backward(rec.backward()) is None
    for key, g in net.grads.items():
        np.testing.assert_allclose(to_np(g), grads[key], rtol=1e-9, atol=1e-12, err_msg=key)


# --------------------------------------------------------------------------
# The convolutional VAE (Keras's example): conv_vae()
# --------------------------------------------------------------------------
def small_conv_vae(latent=3, seed=0):
    """conv_vae at the real geometry with 2 and 3 channels and 5 hidden units, float64,
    with small positive biases (ReLUs off their kink)."""
    from scratchae.vae import conv_vae

    model = conv_vae(latent=latent, hidden=5, channels=(2, 3), seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 100)
    for key, p in model.params.items():
        if key.endswith(".b"):
            p[...] = to_xp(rng.uniform(0.01, 0.05, p.shape), dtype=p.dtype)
    return model


def test_conv_vae_gradcheck_whole_loss(backend):
    """dL/dx and every dL/dparam of L = BernoulliNLL(conv_vae(x), t) + KL, eps frozen:
    stride-2 convs, transposed convs and both paths into the encoder (20 entries each).

    The step is 1e-5 (see test_vae_gradcheck_whole_loss), and 1e-6 for an array that
    fails at 1e-5: a bias of a transposed conv moves all 1,568 pre-activations of its
    channel at once, and a few lie within 1e-5 of a ReLU's kink (measured: 4e-6), where
    the central difference straddles it. A right gradient agrees at a step small enough
    not to straddle; a wrong one at none (``python -m scratchae.gradcheck`` does the same).

    (The gradcheck table's row: ``Check("vae_conv_loss", lambda s: _VAELoss(_biased(
    conv_vae(latent=3, hidden=5, channels=(2, 3), seed=s, dtype=F64), s), s),
    (2, 1, 28, 28), "images", steps=(1e-5, 1e-6), max_entries=12)``.)
    """
    rng = np.random.default_rng(20)
    model = small_conv_vae()
    x, t = images(rng, 2), images(rng, 2)
    rec = BernoulliNLL()

    def loss():
        return float(rec.forward(model.forward(x), t) + model.penalty())

    loss()
    model.sampler.freeze()
    dx = model.backward(rec.backward())
    analytic = {"dx": to_np(dx), **{k: to_np(g) for k, g in model.grads.items()}}
    errors = {}
    for name, array in {"dx": x, **model.params}.items():
        for eps in (1e-5, 1e-6):
            sample = np.random.default_rng(len(errors))  # the same entries at both steps
            errors[name] = min(errors.get(name, np.inf), sampled_error(
                analytic[name], loss, array, sample, max_entries=20, eps=eps))
            if errors[name] < TOL:
                break
    assert max(errors.values()) < TOL, errors
    assert len(errors) == 1 + 16  # dx and the 8 layers' W and b


def test_conv_vae_is_keras_s_model():
    from scratchae.vae import conv_vae

    model = conv_vae()
    assert model.latent == 2 and model.name == "conv_vae"
    # Keras's summary: 69,076 parameters in the encoder, 65,089 in the decoder
    assert sum(p.size for p in model.encoder.parameters()) == 69_076
    assert sum(p.size for p in model.decoder.parameters()) == 65_089
    assert model.encoder.output_shape((5, 1, 28, 28)) == (5, 4)
    summary = model.summary()
    assert [row.output_shape for row in summary.rows] == [
        (32, 14, 14), (32, 14, 14), (64, 7, 7), (64, 7, 7), (3136,), (16,), (16,), (4,),  # encoder
        (2,),                                                                       # z
        (3136,), (3136,), (64, 7, 7), (64, 14, 14), (64, 14, 14), (32, 28, 28), (32, 28, 28),
        (1, 28, 28)]
    assert conv_vae(latent=20).params["encoder.7.W"].shape == (16, 40)
    with pytest.raises(ValueError, match="conv_vae: latent must be a positive int"):
        conv_vae(latent=0)


def test_conv_vae_transposed_convs_have_pytorch_s_geometry():
    """ConvTranspose2D(stride 2, padding 1, output_padding 1) is the adjoint of
    Conv2D(stride 2, padding 1) from 2H to H (PyTorch's geometry), not of TensorFlow's
    'same' (which pads the bottom/right only): input pixel i paints outputs 2i-1..2i+1."""
    from scratchae.layers import Conv2D, ConvTranspose2D

    up = ConvTranspose2D(1, 1, 3, stride=2, padding=1, output_padding=1, dtype=np.float64,
                         seed=0)
    x = np.zeros((1, 1, 7, 7))
    x[0, 0, 3, 3] = 1.0
    painted = np.argwhere(up.forward(x)[0, 0] != 0)
    assert painted.min(axis=0).tolist() == [5, 5] and painted.max(axis=0).tolist() == [7, 7]
    rng = np.random.default_rng(22)
    for padding, adjoint in ((1, True), ("same", False)):
        down = Conv2D(1, 1, 3, stride=2, padding=padding, dtype=np.float64, seed=0)
        down.params["W"][...] = up.params["W"]  # the same kernel, read the other way
        a, b = rng.standard_normal((1, 1, 7, 7)), rng.standard_normal((1, 1, 14, 14))
        # <up(a), b> = <a, down(b)> holds exactly for the adjoint geometry
        same = np.isclose((up.forward(a) * b).sum(), (a * down.forward(b)).sum(), rtol=1e-12)
        assert same == adjoint, padding


def test_compiled_conv_vae_is_the_same_function(backend):
    """fast.compile of the conv VAE: its strided convs and transposed convs become
    StridedConv / TransposedConv ops; output, loss, dx and every gradient as the textbook's."""
    model = small_conv_vae(latent=2, seed=3)
    net = model.compiled(lambda part, input_grad: fast.compile(part, input_grad=True, workers=1))
    assert "StridedConv" in repr(net.encoder) and "SubPixelTransposed" in repr(net.decoder)
    assert "TransposedAsConv" in repr(net.decoder)
    assert "Textbook" not in repr(net.encoder) + repr(net.decoder)
    x = images(np.random.default_rng(23), 3)
    rec = BernoulliNLL()
    state = model.rng_state()
    logits = model.forward(x)
    loss = float(rec.forward(logits, x) + model.penalty())
    dx = to_np(model.backward(rec.backward()))
    logits = to_np(logits)
    grads = {k: to_np(g) for k, g in model.grads.items()}
    model.set_rng_state(state)  # the same eps again
    fast_logits = net.forward(x)
    np.testing.assert_allclose(to_np(fast_logits), logits, rtol=1e-9, atol=1e-12)
    assert float(rec.forward(fast_logits, x) + net.penalty()) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(to_np(net.backward(rec.backward())), dx, rtol=1e-9, atol=1e-12)
    assert list(net.grads) == list(grads)
    for key, g in net.grads.items():
        np.testing.assert_allclose(to_np(g), grads[key], rtol=1e-9, atol=1e-12, err_msg=key)


def test_conv_vae_demo_runs_a_few_batches(tmp_path):
    """demos/vae.py --model conv on 256 digits of the bundled sample: every figure, the summary."""
    import subprocess
    import sys
    from pathlib import Path

    from test_train import VAE_SUMMARY, _sample_idx_dir

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "demos" / "vae.py"), "--model", "conv", "--epochs", "1",
         "--train-size", "256", "--summary", "--out", str(tmp_path), "--no-progress",
         "--data-dir", str(_sample_idx_dir(tmp_path, n_train=256, n_test=50))],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert VAE_SUMMARY.match(lines[-1]), result.stdout
    assert lines[0] == "conv_vae: input (1, 28, 28), float32"  # --summary comes first
    assert "134,165" in result.stdout and "subpixel_transposed" in result.stdout
    for name in ("conv_vae", "conv_vae_samples", "conv_vae_interpolations", "conv_vae_latent",
                 "conv_vae_manifold", "conv_vae_loss"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert (tmp_path / "conv_vae.npz").exists() and not (tmp_path / "vae.npz").exists()


@pytest.mark.parametrize("model", ["conv", "dense"])
def test_the_pytorch_twin_is_the_same_function(model):
    """benchmarks/vae_torch.py's model, from scratchae's initial weights (--init scratchae),
    computes scratchae's function: same layers, padding geometry and flatten order."""
    torch = pytest.importorskip("torch")
    import argparse
    import importlib.util
    from pathlib import Path

    from scratchae.vae import conv_vae

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vae_torch.py"
    spec = importlib.util.spec_from_file_location("vae_torch", path)
    twin_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(twin_module)
    args = argparse.Namespace(model=model, latent=3, hidden=None, seed=4)
    if model == "conv":
        ours, twin = conv_vae(latent=3, seed=4), twin_module.build_conv_model(torch, 3)
    else:
        ours, twin = vae(latent=3, seed=4), twin_module.build_model(torch, 3, 400)
    twin_module.copy_scratchae_init(torch, twin, args)
    rng = np.random.default_rng(24)
    x = rng.uniform(0, 1, (4, 1, 28, 28)).astype(np.float32)
    eps = rng.standard_normal((4, 3), dtype=np.float32)
    mu, logvar = ours.encode(x)
    logits = ours.decode(ours.sampler.forward(mu, logvar, eps))
    with torch.no_grad():
        t_logits, t_mu, t_logvar = twin(torch.from_numpy(x), torch.from_numpy(eps))
    np.testing.assert_allclose(t_mu.numpy(), mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(t_logvar.numpy(), logvar, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(t_logits.numpy(), logits, rtol=1e-4, atol=1e-4)


def test_a_compiled_vae_splits_both_parts_as_its_decoder():
    """The decoder has the work to split; the encoder follows it (one split per step)."""
    from scratchae.vae import conv_vae

    model = conv_vae()
    assert model.workers_for((128, 1, 28, 28)) == 1  # textbook parts: one thread
    net = fast.compile(model, workers=2)
    # the decoder has ~85,000 layer outputs per image, the encoder ~22,000
    assert net.decoder.workers_for((128, 2)) == 2 and net.encoder.own_split((128, 1, 28, 28)) == 1
    assert net.encoder.workers_for((128, 1, 28, 28)) == 2  # as the decoder
    assert net.encoder.workers_for((1, 1, 28, 28)) == 1    # never more than the batch
    assert net.workers_for((128, 1, 28, 28)) == 2
    small = fast.compile(model, workers=2)  # batch 16: too little work for the decoder
    assert small.decoder.workers_for((16, 2)) == 1
    assert small.encoder.workers_for((16, 1, 28, 28)) == 1
    assert fast.compile(model, workers=1).workers_for((128, 1, 28, 28)) == 1
    assert fast.compile(vae(), workers=2).workers_for((128, 1, 28, 28)) == 1  # too little work


# --------------------------------------------------------------------------
# VAETrainer
# --------------------------------------------------------------------------
def _digits(n, dtype=np.float32):
    return np.random.default_rng(5).uniform(0, 1, (n, 1, 28, 28)).astype(dtype)


def test_vae_trainer_metrics_do_not_depend_on_eval_batch_size():
    """One eps per test image, in the images' order, and means per image: the test
    metrics are the same whatever eval_batch_size (up to float rounding)."""
    data = _digits(30)
    metrics = [VAETrainer(vae(latent=2, hidden=8, seed=0), eval_batch_size=size,
                          progress=False, log=lambda s: None).evaluate(data)
               for size in (7, 30)]
    assert metrics[0].keys() == metrics[1].keys() == {"neg_elbo", "rec", "kl"}
    for key in metrics[0]:
        assert metrics[0][key] == pytest.approx(metrics[1][key], rel=1e-6), key


def test_vae_trainer_names_rec_plus_beta_kl_for_what_it_is():
    """rec + beta KL is the negative ELBO only at beta = 1: otherwise the log and the
    history call it rec+<beta>*kl, and evaluate's (true) neg_elbo is reported beside it."""
    lines = []
    base = vae(latent=2, hidden=8, seed=0)
    model = VAE(base.encoder, base.decoder, 2, sampler=base.sampler, beta=4.0)
    trainer = VAETrainer(model, batch_size=16, progress=False, log=lines.append)
    trainer.fit(_digits(32), _digits(16), epochs=1)
    assert lines[0].startswith("epoch 1/1  train rec+4*kl=") and "train neg_elbo" not in lines[0]
    assert " test rec+4*kl=" in lines[0] and " neg_elbo=" in lines[0]
    h = trainer.history
    assert h["test_loss"][0] == pytest.approx(h["rec"][0] + 4 * h["kl"][0], rel=1e-9)
    assert h["neg_elbo"][0] == pytest.approx(h["rec"][0] + h["kl"][0], rel=1e-9)
    plain = VAETrainer(vae(latent=2, hidden=8, seed=0), batch_size=16, progress=False,
                       log=lines.append)
    assert plain.loss_name == "neg_elbo" and set(plain.history) == {
        "train_loss", "test_loss", "epoch_time", "rec", "kl"}


def test_vae_evaluate_and_predict_cast_float64_images_once_with_a_note(capsys):
    data = _digits(6)
    model = vae(latent=2, hidden=8, seed=0)
    m64 = evaluate(model, data.astype(np.float64), batch_size=4)
    assert capsys.readouterr().err == "note: images are float64; cast once to the model's float32\n"
    assert m64 == evaluate(model, data, batch_size=4)
    lines = []
    trainer = VAETrainer(model, progress=False, log=lines.append)
    np.testing.assert_array_equal(trainer.predict(data.astype(np.float64)), trainer.predict(data))
    assert lines == ["note: images are float64; cast once to the model's float32"]
