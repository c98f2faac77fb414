"""Numerical gradient checks: is my ``backward`` right?

The idea: for a layer with output ``y = f(x)`` and any fixed array ``dout``
of y's shape, the scalar ``L = sum(f(x) * dout)`` has gradient
``dL/dx = backward(dout)``. Central differences estimate the same thing
without any calculus::

    dL/dx[i] ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

with an error of order eps^2. We use a *random* ``dout`` rather than
``L = sum(y)`` (``dout = 1``), because an all-ones ``dout`` hides bugs such
as a transposed or mis-ordered gradient. Run it in float64: in float32 the
rounding error of ``L`` swamps the difference.

Example
-------
>>> import numpy as np
>>> from scratchae.layers import Dense
>>> from scratchae.gradcheck import check_layer
>>> layer = Dense(5, 3, dtype=np.float64, seed=0)
>>> x = np.random.default_rng(0).standard_normal((4, 5))
>>> check_layer(layer, x) < 1e-6
True
"""

import numpy as np

from . import backend


def relative_error(analytic, numeric):
    """Largest entry-wise difference, relative to the largest magnitude.

    ``max|a - n| / max(max|a|, max|n|, 1e-12)``. Normalising by the largest
    entry (rather than entry by entry) keeps gradients that are exactly zero
    (a dead ReLU, a max-pool loser) from turning rounding noise into a huge
    "relative" error.

    Parameters
    ----------
    analytic, numeric : ndarray, same shape

    Returns
    -------
    float
    """
    a = backend.to_numpy(analytic).astype(np.float64)
    n = backend.to_numpy(numeric).astype(np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0), 1e-12)
    return float(np.abs(a - n).max(initial=0.0) / scale)


def numerical_gradient(f, x, eps=1e-6, indices=None):
    """Central-difference gradient of the scalar function ``f()`` w.r.t. ``x``.

    Parameters
    ----------
    f : callable
        Takes no arguments and returns a scalar that depends on ``x``.
    x : ndarray, any shape
        Perturbed in place, one entry at a time, and restored.
    eps : float
        Step size.
    indices : sequence of int, optional
        Flat indices to estimate (default: all). The others are left at 0.

    Returns
    -------
    grad : ndarray of float64, shape of ``x`` (on the host)
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient: x must be C-contiguous so it can be perturbed in place")
    flat = x.reshape(-1)  # a view of x: writes below land in x
    for i in range(x.size) if indices is None else indices:
        old = float(flat[i])
        flat[i] = old + eps
        plus = float(f())
        flat[i] = old - eps
        minus = float(f())
        flat[i] = old
        grad.flat[i] = (plus - minus) / (2 * eps)
    return grad


def _subset(size, max_entries, rng):
    if max_entries is None or size <= max_entries:
        return None
    return rng.choice(size, size=max_entries, replace=False)


def gradient_errors(layer, x, *, seed=0, eps=1e-6, max_entries=None):
    """Relative error of ``dx`` and of every parameter gradient of ``layer``.

    Parameters
    ----------
    layer : Layer or Sequential
        Anything with ``forward``, ``backward`` and ``params``/``grads``
        dicts, built in float64.
    x : ndarray, the layer's input shape
        Input; use float64 (and, for max-pool, values without near-ties).
    seed : int
        Seed of the random upstream gradient ``dout``.
    eps : float
        Central-difference step.
    max_entries : int, optional
        Check at most this many randomly chosen entries of each array (the
        numerical gradient costs two forward passes per entry, so a big
        model needs a sample). Default: every entry.

    Returns
    -------
    dict of str to float
        ``"dx"`` and each key of ``layer.params``, mapped to
        :func:`relative_error` between the analytic and numerical gradients.
    """
    rng = np.random.default_rng(seed)
    x = backend.asarray(x)
    x = x.copy()  # our own contiguous copy, perturbed in place below
    y = layer.forward(x)
    dout = backend.asarray(rng.standard_normal(y.shape), dtype=y.dtype)
    dout_before = dout.copy()

    dx = layer.backward(dout)
    analytic = {"dx": dx.copy(), **{k: g.copy() for k, g in layer.grads.items()}}
    if not bool((dout == dout_before).all()):
        raise AssertionError(f"{layer!r}: backward modified dout in place")

    def loss():
        return float((layer.forward(x) * dout).sum())

    errors = {}
    targets = {"dx": x, **layer.params}
    for name, array in targets.items():
        if name not in analytic:
            raise AssertionError(f"{layer!r}: grads has no entry for parameter {name!r}")
        indices = _subset(array.size, max_entries, rng)
        numeric = numerical_gradient(loss, array, eps=eps, indices=indices).reshape(-1)
        a = backend.to_numpy(analytic[name]).reshape(-1)
        if indices is None:
            errors[name] = relative_error(a, numeric)
        else:
            # Scale by the whole analytic gradient, not just the sampled
            # entries, which might all be zero (dead ReLUs).
            scale = max(float(np.abs(a).max(initial=0.0)), 1e-12)
            errors[name] = float(np.abs(a[indices] - numeric[indices]).max() / scale)
    return errors


def check_layer(layer, x, *, seed=0, eps=1e-6, max_entries=None):
    """Largest of :func:`gradient_errors` (a float; below ~1e-6 is a pass)."""
    return max(gradient_errors(layer, x, seed=seed, eps=eps, max_entries=max_entries).values())


def check_loss(loss, logits, targets, *, eps=1e-6):
    """Relative error of ``loss.backward()`` against central differences.

    Parameters
    ----------
    loss : SigmoidCrossEntropy (or any loss with ``forward(logits, targets)``
        and ``backward()``)
    logits, targets : ndarray, same shape, float64

    Returns
    -------
    float
    """
    logits = backend.asarray(logits).copy()
    targets = backend.asarray(targets)
    loss.forward(logits, targets)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: loss.forward(logits, targets), logits, eps=eps)
    return relative_error(analytic, numeric)
