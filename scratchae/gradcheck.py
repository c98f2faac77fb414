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

From the command line, check every layer, the loss and every model, on
the textbook layers and on the fast path (:mod:`scratchae.fast`), on every
available backend (after editing a ``backward``, run this)::

    python -m scratchae.gradcheck                 # everything: a table, PASS/FAIL
    python -m scratchae.gradcheck --layer conv2d  # only the Conv2D checks
    python -m scratchae.gradcheck --list          # the check names
"""

import argparse
import inspect
import sys
import traceback
from dataclasses import dataclass, field

import numpy as np

from . import backend, fast
from . import layers as L
from .layers.gaussian import GaussianKL, GaussianSampler
from .layers.sparsity import KLSparsity, L1Activity
from .losses import BernoulliNLL, SigmoidCrossEntropy
from .models import Sequential, conv_denoiser, conv_denoiser_transposed, dense_autoencoder
from .sparse import sparse_autoencoder
from .vae import vae


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
        raise ValueError("numerical_gradient: x must be C-contiguous so it can be perturbed "
                         "in place")
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

    Notes
    -----
    A layer or model with a ``penalty()`` (a sparsity penalty, a VAE's KL
    divergence) adds it to the loss, ``L = sum(y * dout) + penalty``, as
    training does; its ``backward`` must include the penalty's gradient.
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
    penalty = getattr(layer, "penalty", None)  # a sparsity penalty, a VAE's KL: part of L

    def loss():
        value = (layer.forward(x) * dout).sum()
        return float(value if penalty is None else value + penalty())

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


# --------------------------------------------------------------------------
# The command-line tool: every check, defined once in a table
# --------------------------------------------------------------------------

F64 = np.float64
DEFAULT_TOL = 1e-6


@dataclass(frozen=True)
class Check:
    """One gradient check: what to build and what to feed it.

    A row is either a **piece** (a layer, a loss, a VAE piece), given by its
    textbook class and that class's arguments, which ``--impl`` can replace
    by the reader's class; or a **model** (``build``), which it cannot.

    Attributes
    ----------
    name : str
        ``GROUP_VARIANT``, e.g. ``"conv2d_stride2"``; ``--layer`` matches its start.
    layer : type, optional
        The textbook class, built as ``layer(*args, **kwargs, dtype=float64,
        seed=SEED)`` (``dtype`` and ``seed`` only where its constructor takes
        them). ``--impl FILE.py:Class`` builds ``Class`` the same way.
    args : tuple, or callable
        Positional arguments of ``layer``; or ``args(seed)`` returning them,
        for an argument that is itself built from the seed (another layer).
    kwargs : dict
        Keyword arguments of ``layer``.
    shape : tuple of int
        Input shape (for a loss, the logits' shape).
    inputs : str
        How the input is drawn (see :func:`make_input`).
    targets : str, optional
        Set for a loss (``forward(logits, targets)``, then ``backward()``):
        how its targets are drawn (see :func:`make_targets`).
    wrap : callable, optional
        ``wrap(piece)`` presents a piece with another interface as a layer
        (the VAE's two-input pieces: :class:`_TwoInputs`).
    steps : tuple of float
        Central-difference steps: the first, then (for the arrays that
        failed) the next ones. See :func:`run_check`.
    max_entries : int, optional
        Check only this many random entries of each array (big models).
    build : callable, optional
        For a model: ``build(seed)`` returns it, in float64.
    """

    name: str
    layer: type = None
    args: object = ()
    kwargs: dict = field(default_factory=dict)
    shape: tuple = ()
    inputs: str = "normal"
    targets: str = None
    wrap: object = None
    steps: tuple = (1e-6,)
    max_entries: int = None
    build: object = None

    def __post_init__(self):
        if (self.layer is None) == (self.build is None) or not self.shape:
            raise ValueError(f"Check {self.name!r}: give a shape and exactly one of layer "
                             f"(a textbook class) and build (a model builder)")

    def arguments(self, seed):
        """``(args, kwargs)`` building this check's piece (and an ``--impl`` class) for ``seed``."""
        args = tuple(self.args(seed) if callable(self.args) else self.args)
        accepted = inspect.signature(self.layer).parameters
        extra = {k: v for k, v in (("dtype", F64), ("seed", seed)) if k in accepted}
        return args, {**self.kwargs, **extra}

    def make(self, seed, cls=None):
        """Build the piece (or ``cls`` in its place, with the same arguments), or the model."""
        if self.build is not None:
            return self.build(seed)
        args, kwargs = self.arguments(seed)
        return (self.layer if cls is None else cls)(*args, **kwargs)

    def as_layer(self, piece, targets=None):
        """``piece`` as the checker sees it: itself, a loss with fixed targets, or wrapped."""
        if self.targets is not None:
            return _LossAsLayer(piece, targets)
        return piece if self.wrap is None else self.wrap(piece)


def _biased(model, seed):
    """Give every bias of ``model`` a small positive value, in [0.01, 0.05].

    Biases start at 0, so a unit whose inputs are all 0 (dead ReLUs
    upstream; with a stride-2 transposed convolution, a quarter of the
    outputs see a single input pixel) has a pre-activation of *exactly* 0:
    right on the next ReLU's kink, where a bias perturbed by +-eps always
    straddles it. Positive biases move those units off the kink (and keep
    most ReLUs alive, so the gradients are not mostly zero).
    """
    rng = np.random.default_rng(seed)
    for key, p in model.params.items():
        if key.endswith(".b"):  # written with the parameter's own array library
            p[...] = backend.get_array_module(p).asarray(rng.uniform(0.01, 0.05, p.shape),
                                                         dtype=p.dtype)
    return model


def _fast(model):
    """``model`` compiled by :func:`scratchae.fast.compile`, with dL/dx (for the check)."""
    return fast.compile(model, input_grad=True, workers=1)


class ImplError(Exception):
    """A piece broke the layer interface (what its backward returned): reported as one line."""


class _LossAsLayer:
    """A loss with fixed targets as a layer: ``forward(x)`` is the 0-d loss of logits ``x``.

    ``backward(dout)`` is ``loss.backward() * dout``, the gradient of the
    checker's ``L = loss * dout`` (``dout`` is a random 0-d array).
    """

    takes_dout = False  # backward() has no dout that it could modify

    def __init__(self, piece, targets):
        self.piece, self.targets, self.params, self.grads = piece, targets, {}, {}
        self._shape = None

    def __repr__(self):
        return repr(self.piece)

    def forward(self, x):
        self._shape = x.shape
        return self.piece.forward(x, self.targets)

    def backward(self, dout):
        dlogits = self.piece.backward()
        return _checked_array(dlogits, self.piece, "backward()", "dlogits", self._shape) * dout

    @staticmethod
    def split(dx):
        """``dx`` under its name."""
        return {"dlogits": dx}


class _TwoInputs:
    """A piece with inputs (mu, logvar) seen by the checker as one input ``x = [mu | logvar]``.

    ``x`` is (N, 2K), ``dx`` is ``[dmu | dlogvar]``. A piece with noise it
    can ``freeze`` (the sampler's eps) draws it on the first forward and
    keeps it: the sampler is a deterministic function of mu and logvar only
    with eps held fixed.
    """

    takes_dout = True

    def __init__(self, piece):
        self.piece, self.params, self.grads = piece, {}, {}
        self._shape = None

    def __repr__(self):
        return repr(self.piece)

    def forward(self, x):
        k = x.shape[1] // 2
        self._shape = (x.shape[0], k)
        y = self.piece.forward(x[:, :k], x[:, k:])
        if getattr(self.piece, "frozen", True) is False:
            self.piece.freeze()
        return y

    def _join(self, grads, call):
        """``[dmu | dlogvar]`` from the pair a piece's backward returned."""
        if not (isinstance(grads, (tuple, list)) and len(grads) == 2):
            raise ImplError(f"{type(self.piece).__name__}.{call} must return the pair "
                            f"(dmu, dlogvar), got {_describe(grads)}")
        dmu, dlogvar = (_checked_array(g, self.piece, call, name, self._shape)
                        for g, name in zip(grads, ("dmu", "dlogvar")))
        return backend.get_array_module(dmu).concatenate([dmu, dlogvar], axis=1)

    def backward(self, dout):
        return self._join(self.piece.backward(dout), "backward(dz)")

    @staticmethod
    def split(dx):
        """``dx`` (N, 2K) as ``{"dmu": (N, K), "dlogvar": (N, K)}``."""
        k = dx.shape[1] // 2
        return {"dmu": dx[:, :k], "dlogvar": dx[:, k:]}


class _TwoInputsLoss(_TwoInputs):
    """:class:`_TwoInputs` for a loss of (mu, logvar) (the KL): a 0-d output, ``backward()``."""

    takes_dout = False

    def backward(self, dout):
        return self._join(self.piece.backward(), "backward()") * dout


def _describe(value):
    """``value`` in a few words, for an error message: ``None``, ``a tuple of 3``, ..."""
    if value is None:
        return "None"
    if hasattr(value, "shape"):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _checked_array(value, piece, call, name, shape):
    """``value`` if it is an array of ``shape`` (or any shape if None), else :class:`ImplError`."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise ImplError(f"{type(piece).__name__}.{call} must return {name}, an array"
                        f"{'' if shape is None else f' of shape {tuple(shape)}'}, "
                        f"got {_describe(value)}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ImplError(f"{type(piece).__name__}.{call}: {name} has shape "
                        f"{tuple(value.shape)}, expected {tuple(shape)} (the input's)")
    return value
class _VAELoss:
    """The whole VAE loss, ``L = BernoulliNLL(vae(x), targets) + KL``, as a layer with a 0-d output.

    The targets are fixed images (not x), so dL/dx is the network's own
    gradient; eps is frozen after the first forward. Both gradient paths
    into the encoder (through the sampler and from the KL) are checked.
    """

    def __init__(self, model, seed):
        self.model, self.rec = model, BernoulliNLL()
        rng = np.random.default_rng(seed + 1)
        self.targets = backend.asarray(rng.uniform(0.0, 1.0, (2,) + model.input_shape))
        self.params, self._scale = model.params, None

    def __repr__(self):
        return "BernoulliNLL(vae(x)) + KL"

    def forward(self, x):
        loss = self.rec.forward(self.model.forward(x), self.targets) + self.model.penalty()
        self.model.sampler.freeze()
        return loss

    def backward(self, dout):
        dx = self.model.backward(self.rec.backward())  # dL/dx for L itself; the check's L is dout*L
        self._scale = dout
        return dx * dout

    @property
    def grads(self):
        return {k: g * self._scale for k, g in self.model.grads.items()}


def _checks():
    # A layer: Check(name, TextbookClass, args=..., kwargs=..., shape=input shape, inputs=...);
    # float64 and the seed are passed to the constructors that take dtype and seed.
    conv = dict(layer=L.Conv2D, shape=(2, 3, 7, 5))
    checks = [
        Check("dense", L.Dense, args=(6, 4), shape=(3, 6)),
        Check("conv2d_same", args=(3, 4, 3), **conv),
        Check("conv2d_stride2", args=(3, 4, 3), kwargs=dict(stride=2), **conv),
        Check("conv2d_pad1", args=(3, 2, 3), kwargs=dict(padding=1), **conv),
        Check("conv2d_kernel3x2", args=(3, 2, (3, 2)), kwargs=dict(padding="valid"), **conv),
        # Max-pool routes the gradient to the argmax; near-ties would let a
        # perturbation of eps change the winner, so the inputs are tie-free.
        Check("maxpool2d_valid", L.MaxPool2D, args=(2,), shape=(2, 3, 6, 4), inputs="tie_free"),
        Check("maxpool2d_same", L.MaxPool2D, args=(2,), kwargs=dict(padding="same"),
              shape=(2, 3, 7, 7), inputs="tie_free"),
        Check("upsample2d_4to7", L.Upsample2D, kwargs=dict(size=(7, 7)), shape=(2, 3, 4, 4)),
        Check("upsample2d_x2", L.Upsample2D, kwargs=dict(scale_factor=2), shape=(2, 3, 3, 5)),
        # ReLU has a kink at 0: keep every input at least 0.1 away from it.
        Check("relu", L.ReLU, shape=(2, 3, 4, 5), inputs="away_from_zero"),
        Check("sigmoid", L.Sigmoid, shape=(2, 3, 4, 5)),
        Check("flatten", L.Flatten, shape=(2, 3, 4, 5)),
        Check("reshape", L.Reshape, args=((3, 20),), shape=(2, 60)),
    ]
    up = dict(layer=L.ConvTranspose2D, args=(3, 2, 3), shape=(2, 3, 4, 5))
    checks += [
        Check("convtranspose2d_stride2", kwargs=dict(stride=2), **up),
        Check("convtranspose2d_pad1_outpad1",
              kwargs=dict(stride=2, padding=1, output_padding=1), **up),
    ]
    # A loss: forward(logits, targets), backward(); `targets` says how the targets are drawn.
    checks += [
        Check("loss_bce", SigmoidCrossEntropy, shape=(2, 1, 4, 3), inputs="logits",
              targets="unit"),
    ]
    # A model: Check(name, build=lambda seed: model, ...). --impl cannot stand in for these.
    checks += [
        # The models are full of ReLUs (and max-pools): a pre-activation
        # within about eps of 0 makes the central difference straddle the
        # kink and disagree with the (correct) one-sided analytic gradient.
        # With ~100k units, one of them is often within 1e-6 of 0, so the
        # step is 1e-7, and 1e-8 where that still failed (float64 keeps the
        # rounding error of the difference, ~1e-16 * |L| / eps, below the
        # tolerance). Units sitting *exactly* at 0: see _biased.
        Check("models_dense_autoencoder",
              build=lambda s: _biased(dense_autoencoder(hidden=8, seed=s, dtype=F64), s),
              shape=(2, 1, 28, 28), inputs="images", steps=(1e-7, 1e-8)),
        # ~120k parameters at two forward passes each is too slow: sample 8 entries per array.
        Check("models_conv_denoiser",
              build=lambda s: _biased(conv_denoiser(seed=s, dtype=F64), s),
              shape=(2, 1, 28, 28), inputs="images", steps=(1e-7, 1e-8), max_entries=8),
        Check("models_conv_denoiser_transposed",
              build=lambda s: _biased(conv_denoiser_transposed(seed=s, dtype=F64), s),
              shape=(2, 1, 28, 28), inputs="images", steps=(1e-7, 1e-8), max_entries=8),
    ]
    # The VAE's pieces (scratchae/layers/gaussian.py, scratchae/vae.py) and its whole loss.
    # The sampler and the KL take two inputs (mu, logvar): wrapped as one, [mu | logvar].
    checks += [
        Check("vae_sampler", GaussianSampler, shape=(3, 8), wrap=_TwoInputs),
        Check("vae_kl", GaussianKL, shape=(3, 8), wrap=_TwoInputsLoss),
        Check("vae_bernoulli_nll", BernoulliNLL, shape=(2, 1, 4, 3), inputs="logits",
              targets="unit"),
        # L is ~360 nats: its float64 rounding over a step of 1e-6 is ~1e-6 of
        # the gradient, hence 1e-5 (a wrong gradient fails at every step).
        Check("vae_loss", build=lambda s: _VAELoss(_biased(vae(latent=3, hidden=8, seed=s,
                                                                dtype=F64), s), s),
              shape=(2, 1, 28, 28), inputs="images", steps=(1e-5, 1e-6), max_entries=12),
    ]
    # The sparse autoencoder's penalties (scratchae/layers/sparsity.py) and its whole loss:
    # identity layers whose penalty is part of L (see gradient_errors).
    checks += [
        Check("klsparsity", KLSparsity, args=(0.1, 3.0), shape=(5, 4), inputs="unit"),
        Check("klsparsity_near_0_and_1", KLSparsity, args=(0.1, 3.0), shape=(5, 4),
              inputs="edges"),
        Check("l1activity", L1Activity, args=(0.5,), shape=(5, 4), inputs="away_from_zero"),
        Check("models_sparse_autoencoder",
              build=lambda s: sparse_autoencoder(hidden=6, beta=3.0, weight_decay=3e-3, seed=s,
                                                 dtype=F64),
              shape=(2, 1, 28, 28), inputs="images", max_entries=20),
    ]
    # The fast path (scratchae.fast): each rewrite rule on a small stack, then the models.
    checks += [
        Check("fast_conv_relu_pool", build=lambda s: _fast(_biased(Sequential([
            L.Conv2D(3, 4, 3, dtype=F64, seed=s), L.ReLU(), L.MaxPool2D(2, padding="same"),
        ]), s)), shape=(2, 3, 7, 5), steps=(1e-7, 1e-8)),
        Check("fast_subpixel_relu", build=lambda s: _fast(_biased(Sequential([
            L.Upsample2D(scale_factor=2), L.Conv2D(3, 4, 3, dtype=F64, seed=s), L.ReLU(),
        ]), s)), shape=(2, 3, 4, 5), steps=(1e-7, 1e-8)),
        Check("fast_conv_multiply_first", build=lambda s: _fast(Sequential([
            L.Conv2D(5, 2, (3, 2), dtype=F64, seed=s),
        ])), shape=(2, 5, 6, 7)),
        Check("fast_dense_autoencoder",
              build=lambda s: _fast(_biased(dense_autoencoder(hidden=8, seed=s, dtype=F64), s)),
              shape=(2, 1, 28, 28), inputs="images", steps=(1e-7, 1e-8)),
        Check("fast_conv_denoiser",
              build=lambda s: _fast(_biased(conv_denoiser(seed=s, dtype=F64), s)),
              shape=(2, 1, 28, 28), inputs="images", steps=(1e-7, 1e-8), max_entries=8),
    ]
    return checks


CHECKS = _checks()


def make_input(check, rng):
    """Draw the (host, float64) input of ``check``.

    ``"normal"``: standard normal. ``"tie_free"``: a scaled random
    permutation, so all values differ by at least 0.01 (for max-pool).
    ``"away_from_zero"``: magnitudes in [0.1, 2] with random signs (for
    ReLU). ``"logits"``: 2 x standard normal (for the loss). ``"images"``:
    uniform in [0, 1], like pixels. ``"unit"``: uniform in [0.05, 0.95],
    like sigmoid activations. ``"edges"``: sigmoid activations whose mean
    per column is near 0 (first half) or near 1 (second half), where a
    sparsity penalty's gradient is steepest.
    """
    n = int(np.prod(check.shape))
    if check.inputs == "tie_free":
        return (rng.permutation(n).reshape(check.shape) - n / 2) * 0.01
    if check.inputs == "away_from_zero":
        return rng.uniform(0.1, 2.0, check.shape) * rng.choice([-1.0, 1.0], check.shape)
    if check.inputs == "logits":
        return 2.0 * rng.standard_normal(check.shape)
    if check.inputs == "images":
        return rng.uniform(0.0, 1.0, check.shape)
    if check.inputs == "unit":
        return rng.uniform(0.05, 0.95, check.shape)
    if check.inputs == "edges":
        a = rng.uniform(1e-3, 3e-3, check.shape)
        a[:, check.shape[1] // 2:] = 1 - a[:, check.shape[1] // 2:]
        return a
    return rng.standard_normal(check.shape)


def make_targets(check, rng):
    """Draw the (host) targets of a loss ``check``, after its input.

    ``"unit"``: uniform in [0.05, 0.95], the logits' shape (grey levels,
    for the sigmoid losses). ``"labels"``: integer class labels in
    ``[0, C)``, shape (N,), for logits of shape (N, C).
    """
    if check.targets == "unit":
        return rng.uniform(0.05, 0.95, check.shape)
    if check.targets == "labels":
        return rng.integers(0, check.shape[1], check.shape[0])
    raise ValueError(f"Check {check.name!r}: unknown targets {check.targets!r}")


def run_check(check, seed=0, tol=DEFAULT_TOL):
    """Run one :class:`Check` on the current backend.

    The arrays whose error is ``tol`` or more are checked again with the
    next of ``check.steps`` (same ``dout``, same sampled entries). That is
    sound: a right gradient agrees with central differences for a step
    small enough not to straddle a kink; a wrong one agrees with none.

    Returns
    -------
    dict of str to (float, float)
        Per array (``"dx"`` and each parameter for a layer or model,
        ``"dlogits"`` for the loss): the relative error and the step that gave it.
    """
    rng = np.random.default_rng(seed)
    x = backend.asarray(make_input(check, rng))
    piece = check.make(seed)
    if check.targets is not None:
        targets = backend.asarray(make_targets(check, rng))
        eps = check.steps[0]
        return {"dlogits": (check_loss(piece, x, targets, eps=eps), eps)}
    target = check.as_layer(piece)
    results = {}
    for eps in check.steps:
        errors = gradient_errors(target, x, seed=seed, eps=eps, max_entries=check.max_entries)
        for name, err in errors.items():
            if name not in results or (results[name][0] >= tol and err < results[name][0]):
                results[name] = (err, eps)
        if all(err < tol for err, _ in results.values()):
            break
    return results


def _groups():
    """The layer names ``--layer`` accepts: each check name's part before ``_``."""
    return list(dict.fromkeys(c.name.split("_")[0] for c in CHECKS))


def _backends(choice):
    if choice == "all":
        return ["numpy"] + (["cupy"] if backend.cupy_available() else [])
    return [choice]


def main(argv=None):
    """Run the gradient checks and print a PASS/FAIL table.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 if every check passes, 1 if any fails (or raises), 2 for a bad
        ``--layer`` or an unavailable ``--backend``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m scratchae.gradcheck",
        description="Numerical gradient check (float64, central differences, random "
                    "upstream gradient) of every layer, the loss and every model, on the "
                    "textbook layers and on the fast path.")
    parser.add_argument("--layer", metavar="NAME",
                        help="run only the checks whose name starts with NAME "
                             "(case-insensitive), e.g. conv2d, relu, loss, models, fast")
    parser.add_argument("--list", action="store_true", help="print the check names and exit")
    parser.add_argument("--backend", choices=("numpy", "cupy", "all"), default="all",
                        help="all = numpy, plus cupy when a GPU is usable")
    parser.add_argument("--tol", type=float, default=DEFAULT_TOL,
                        help="largest relative error that passes")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and dout")
    args = parser.parse_args(argv)

    if args.list:
        for check in CHECKS:
            print(f"{check.name:32} input {check.shape}")
        return 0
    checks = CHECKS
    if args.layer is not None:
        prefix = args.layer.lower()
        checks = [c for c in CHECKS if c.name.startswith(prefix)]
        if not checks:
            print(f"error: unknown layer {args.layer!r}; choose from: {', '.join(_groups())}",
                  file=sys.stderr)
            return 2

    previous = backend.get_backend()
    width = max(len("check"), *(len(c.name) for c in checks))
    header = (f"{'backend':8} {'check':{width}} {'input shape':12} {'array':12} "
              f"{'max rel error':>13}  result")
    print(header)
    print("-" * len(header))
    failed, total, crashed = 0, 0, []
    try:
        for name in _backends(args.backend):
            try:
                backend.set_backend(name)
            except RuntimeError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            for check in checks:
                shape = str(check.shape).replace(" ", "")
                try:
                    errors = run_check(check, seed=args.seed, tol=args.tol)
                except Exception as error:  # a broken backward often raises: report it, go on
                    crashed.append((name, check.name, traceback.format_exc()))
                    print(f"{name:8} {check.name:{width}} {shape:12} {'-':12} {'-':>13}  "
                          f"ERROR ({type(error).__name__}: {error})")
                    failed, total = failed + 1, total + 1
                    continue
                for array, (err, eps) in errors.items():
                    ok = err < args.tol  # a NaN error fails too
                    failed, total = failed + (not ok), total + 1
                    retried = f" (eps {eps:g})" if eps != check.steps[0] else ""
                    print(f"{name:8} {check.name:{width}} {shape:12} {array:12} {err:13.1e}  "
                          f"{'PASS' if ok else 'FAIL'}{retried}")
    finally:
        backend.set_backend(previous)
    for name, check_name, text in crashed:
        print(f"\n{check_name} on {name} raised:\n{text}", file=sys.stderr)
    verdict = "all passed" if failed == 0 else f"{failed} FAILED"
    print(f"\n{total} gradient{'s' * (total != 1)} checked, {verdict} (tolerance {args.tol:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
