"""Tests for scratchae.losses.SigmoidCrossEntropy and scratchae.optim."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from scratchae import fast, gradcheck
from scratchae.losses import SigmoidCrossEntropy
from scratchae.optim import SGD, Adam

from conftest import to_np, to_xp


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------
# SigmoidCrossEntropy
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 1, 5, 3), (3, 7), (10,)])
def test_bce_matches_naive_formula(backend, shape):
    rng = np.random.default_rng(0)
    x = rng.uniform(-6, 6, size=shape)
    t = rng.uniform(0, 1, size=shape)
    loss = SigmoidCrossEntropy()
    val = loss.forward(to_xp(x), to_xp(t))
    assert tuple(np.shape(to_np(val))) == ()
    p = _sigmoid(x)
    naive = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    assert float(val) == pytest.approx(naive, rel=1e-10)


def test_bce_binary_targets_value(backend):
    x = np.array([[0.0, 2.0], [-3.0, 1.0]])
    t = np.array([[1.0, 0.0], [0.0, 1.0]])
    val = float(SigmoidCrossEntropy().forward(to_xp(x), to_xp(t)))
    expected = np.mean([np.log(2), np.log1p(np.exp(2.0)), np.log1p(np.exp(-3.0)),
                        np.log1p(np.exp(-1.0))])
    assert val == pytest.approx(expected, rel=1e-12)


def test_bce_backward_formula(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1, 4, 5)) * 3
    t = rng.uniform(0, 1, size=x.shape)
    loss = SigmoidCrossEntropy()
    loss.forward(to_xp(x), to_xp(t))
    g = loss.backward()
    assert tuple(g.shape) == x.shape
    np.testing.assert_allclose(to_np(g), (_sigmoid(x) - t) / x.size, rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
def test_bce_stable_at_extreme_logits(backend, target):
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0])
    t = np.full_like(x, target)
    loss = SigmoidCrossEntropy()
    val = float(loss.forward(to_xp(x), to_xp(t)))
    g = to_np(loss.backward())
    assert np.isfinite(val)
    assert np.isfinite(g).all()
    # exact stable value: max(x,0) - x t + log1p(exp(-|x|))
    expected = np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))
    assert val == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(g, (np.array([0.0, 0.0, 0.5, 1.0, 1.0]) - target) / x.size,
                               rtol=1e-12, atol=1e-40)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_float32_extremes_finite(backend, dtype):
    x = np.array([[-1000.0, 1000.0, -88.0, 89.0]], dtype=dtype)
    t = np.array([[0.0, 1.0, 1.0, 0.0]], dtype=dtype)
    loss = SigmoidCrossEntropy()
    val = float(loss.forward(to_xp(x), to_xp(t)))
    g = to_np(loss.backward())
    assert np.isfinite(val) and np.isfinite(g).all()
    assert val == pytest.approx((88.0 + 89.0) / 4, rel=1e-5)
    assert g.dtype == dtype


def test_bce_perfect_prediction_near_zero(backend):
    x = np.array([-1000.0, 1000.0, -40.0, 40.0])
    t = np.array([0.0, 1.0, 0.0, 1.0])
    val = float(SigmoidCrossEntropy().forward(to_xp(x), to_xp(t)))
    assert 0.0 <= val < 1e-17


@pytest.mark.parametrize("shape", [(2, 1, 4, 3), (5, 6)])
def test_bce_gradcheck(backend, shape):
    rng = np.random.default_rng(2)
    x = to_xp(rng.standard_normal(shape) * 2)
    t = to_xp(rng.uniform(0.05, 0.95, size=shape))
    err = gradcheck.check_loss(SigmoidCrossEntropy(), x, t)
    assert err < 1e-6


# --------------------------------------------------------------------------
# optimisers
# --------------------------------------------------------------------------
def _textbook_adam(params, grads_seq, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_seq, start=1):
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = m[i] / (1 - b1 ** t)
            v_hat = v[i] / (1 - b2 ** t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def _problem(seed=0, steps=12):
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (3,), (2, 1, 3, 3)]
    params = [rng.standard_normal(s) for s in shapes]
    # gradients bounded away from 0 so that eps-placement variants of Adam
    # ("lr_t" form) agree with the textbook form to ~1e-7 relative
    grads_seq = [
        [rng.uniform(0.5, 2.0, size=s) * rng.choice([-1.0, 1.0], size=s) for s in shapes]
        for _ in range(steps)
    ]
    return params, grads_seq


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6)],
    ids=["defaults", "custom"],
)
def test_adam_matches_textbook(backend, kwargs):
    params0, grads_seq = _problem()
    params = [to_xp(p) for p in params0]
    ids = [id(p) for p in params]
    opt = Adam(params, **kwargs)
    for grads in grads_seq:
        opt.step([to_xp(g) for g in grads])
    ref = _textbook_adam(
        params0, grads_seq,
        lr=kwargs.get("lr", 1e-3), b1=kwargs.get("betas", (0.9, 0.999))[0],
        b2=kwargs.get("betas", (0.9, 0.999))[1], eps=kwargs.get("eps", 1e-8),
    )
    assert [id(p) for p in params] == ids
    for p, r, p0 in zip(params, ref, params0):
        p = to_np(p)
        np.testing.assert_allclose(p, r, rtol=1e-6, atol=1e-12)
        # the displacement itself (far more sensitive than the values)
        np.testing.assert_allclose(p - p0, r - p0, rtol=1e-4, atol=1e-8)
        assert not np.allclose(p, p0)


def test_adam_first_step_is_lr_sign(backend):
    """With bias correction, step 1 moves every entry by ~lr * sign(g)."""
    p0 = np.array([1.0, -2.0, 3.0, 0.5])
    g = np.array([0.3, -5.0, 2.0, -0.01])
    p = to_xp(p0)
    Adam([p], lr=0.1).step([to_xp(g)])
    np.testing.assert_allclose(to_np(p), p0 - 0.1 * np.sign(g), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_adam_moments_of_a_dead_parameter_reach_zero_not_subnormals(dtype):
    """A gradient that turns 0 for good (a dead ReLU unit) makes m shrink by
    b1 per step; without care it sinks into the subnormal floats, which CPUs
    compute slowly, and stays at the smallest one forever. (The fast path's
    Adam on NumPy, which clears them every FLUSH_EVERY steps; GPUs compute
    subnormals at full speed.)"""
    from scratchae.fast.optim import FLUSH_EVERY

    tiny = np.finfo(dtype).tiny
    grad = np.array([1.0, -1.0, 1e-3, 0.0], dtype=dtype)
    p = to_xp(np.zeros(4, dtype=dtype))
    opt = fast.Adam([p], lr=1e-3)
    opt.step([to_xp(grad)])
    zero = to_xp(np.zeros(4, dtype=dtype))
    steps = 8000 if dtype == np.float64 else 1100  # 0.9^t passes tiny after ~830 / ~6700
    subnormal_for = 0  # steps in a row with a subnormal entry
    for _ in range(steps):
        opt.step([zero])
        m = np.abs(to_np(opt.m[0]))
        subnormal_for = subnormal_for + 1 if ((m > 0) & (m < tiny)).any() else 0
        assert subnormal_for < FLUSH_EVERY, f"subnormal first moment {m} at step {opt.t}"
    assert (to_np(opt.m[0]) == 0).all()


def test_adam_updates_in_place(backend):
    p = to_xp(np.ones((3, 2)))
    alias = p
    opt = Adam([p], lr=0.1)
    opt.step([to_xp(np.ones((3, 2)))])
    assert p is alias
    assert (to_np(alias) < 1.0).all()


def test_adam_does_not_modify_grads(backend):
    g_np = np.random.default_rng(0).standard_normal((3, 4))
    g = to_xp(g_np)
    opt = Adam([to_xp(np.zeros((3, 4)))])
    opt.step([g])
    opt.step([g])
    np.testing.assert_array_equal(to_np(g), g_np)


def test_sgd_matches_formula_in_place(backend):
    params0, grads_seq = _problem(seed=1, steps=5)
    params = [to_xp(p) for p in params0]
    aliases = list(params)
    opt = SGD(params, lr=0.05)
    for grads in grads_seq:
        opt.step([to_xp(g) for g in grads])
    for p, a, p0, i in zip(params, aliases, params0, range(3)):
        assert p is a
        expected = p0 - 0.05 * sum(gs[i] for gs in grads_seq)
        np.testing.assert_allclose(to_np(p), expected, rtol=1e-12, atol=1e-12)


def test_sgd_default_lr(backend):
    p = to_xp(np.array([1.0, 2.0]))
    SGD([p]).step([to_xp(np.array([1.0, -1.0]))])
    np.testing.assert_allclose(to_np(p), [0.99, 2.01], rtol=1e-12)


def _continuation(make_opt, seed):
    params0, grads_seq = _problem(seed=seed, steps=8)
    head, tail = grads_seq[:4], grads_seq[4:]

    # uninterrupted run
    pa = [to_xp(p) for p in params0]
    oa = make_opt(pa)
    for g in grads_seq:
        oa.step([to_xp(x) for x in g])

    # interrupted run: 4 steps, save, rebuild a fresh optimiser, load, 4 more
    pb = [to_xp(p) for p in params0]
    ob = make_opt(pb)
    for g in head:
        ob.step([to_xp(x) for x in g])
    state = copy.deepcopy(ob.state_dict())
    pc = [to_xp(to_np(p)) for p in pb]
    oc = make_opt(pc)
    oc.load_state_dict(state)
    for g in tail:
        oc.step([to_xp(x) for x in g])
    return pa, pc


@pytest.mark.parametrize(
    "make_opt",
    [lambda ps: Adam(ps, lr=0.01), lambda ps: SGD(ps, lr=0.02)],
    ids=["adam", "sgd"],
)
def test_state_dict_round_trip(backend, make_opt):
    pa, pc = _continuation(make_opt, seed=3)
    for a, c in zip(pa, pc):
        np.testing.assert_array_equal(to_np(a), to_np(c))


def test_adam_state_dict_actually_carries_state(backend):
    """Without load_state_dict the continuation differs (moments, step count)."""
    params0, grads_seq = _problem(seed=4, steps=6)
    pa = [to_xp(p) for p in params0]
    oa = Adam(pa, lr=0.01)
    for g in grads_seq:
        oa.step([to_xp(x) for x in g])
    pb = [to_xp(p) for p in params0]
    ob = Adam(pb, lr=0.01)
    for g in grads_seq[:3]:
        ob.step([to_xp(x) for x in g])
    pc = [to_xp(to_np(p)) for p in pb]
    oc = Adam(pc, lr=0.01)  # fresh state, nothing loaded
    for g in grads_seq[3:]:
        oc.step([to_xp(x) for x in g])
    assert any(not np.allclose(to_np(a), to_np(c), rtol=1e-9, atol=0) for a, c in zip(pa, pc))
    sd = ob.state_dict()
    assert isinstance(sd, dict) and len(sd) > 0
