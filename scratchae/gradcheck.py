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

Checking your own layer
-----------------------
``--impl FILE.py:Class`` runs a layer's checks on *your* class instead,
built with the same arguments as the layer it stands in for (a subclass
that overrides ``backward`` is the natural way; any class with ``forward``,
``backward``, ``params`` and ``grads`` works)::

    python -m scratchae.gradcheck --layer dense --impl my_layers.py:MyDense

Each case reports, for the output, ``dx`` and every parameter gradient, the
relative error against central differences of your forward and against
scratchae's own layer on the same input and ``dout``; checks that your
backward leaves ``dout`` alone and overwrites ``grads``; and, for what
fails, the causes that fit the numbers (a factor of the batch size,
transposed, not summed over the batch, ...). Exit status: 0 if every case
passes, 1 if any fails, 2 if the command cannot run (bad ``--layer``, a file
or class that cannot be loaded or built). docs/exercises.md has five
exercises to start from (``exercises/``).

Adding a check
--------------
One row of the table in :func:`_checks`. A layer, loss or other piece is
given by its textbook class and its constructor's arguments; ``--impl``
then works for it with nothing else to write::

    Check("conv2d_stride2", L.Conv2D, args=(3, 4, 3), kwargs=dict(stride=2),
          shape=(2, 3, 7, 5))

* ``dtype=float64`` and ``seed=SEED`` are added for a constructor that takes
  them; an argument that must itself be built from the seed (the encoder
  ``Dense`` whose ``W`` a tied decoder shares) goes in ``args=lambda seed:
  (L.Dense(6, 4, dtype=F64, seed=seed),)``. Parameters the piece shares
  with such an argument are in its ``params`` like its own, and are
  checked like them.
* ``inputs=`` says how the input is drawn (:func:`make_input`: add a kind
  there if none fits, e.g. tie-free for a max).
* A loss (``forward(logits, targets)``, ``backward()``) adds ``targets=``:
  how the targets are drawn (:func:`make_targets`: ``"unit"`` for the
  sigmoid losses, ``"labels"`` for integer class labels of (N, C) logits).
* A piece with another interface (two inputs) adds ``wrap=``, a class
  presenting it as a layer (:class:`_TwoInputs`).
* A whole model gives ``build=lambda seed: model`` instead of a class;
  ``--impl`` does not apply to it.
"""

import argparse
import importlib.util
import inspect
import itertools
import os
import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import backend, fast
from . import layers as L
from .layers.gaussian import GaussianKL, GaussianSampler
from .layers.sparsity import KLSparsity, L1Activity
from .layers.tied import TiedDense
from .losses import BernoulliNLL, SigmoidCrossEntropy, SoftmaxCrossEntropy
from .models import Sequential, conv_denoiser, conv_denoiser_transposed, dense_autoencoder
from .sdae import StackedDenoisingAutoencoder
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
        :func:`relative_error` between the analytic and numerical gradients
        (no ``"dx"`` for a model compiled without an input gradient, whose
        ``backward`` returns None).

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
    analytic = {k: g.copy() for k, g in layer.grads.items()}
    if dx is not None:
        analytic["dx"] = dx.copy()
    if not bool((dout == dout_before).all()):
        raise AssertionError(f"{layer!r}: backward modified dout in place")
    missing = [name for name in layer.params if name not in analytic]
    if missing:
        raise AssertionError(f"{layer!r}: grads has no entry for parameter {missing[0]!r}")
    names = (["dx"] if dx is not None else []) + list(layer.params)
    numeric = _numerical(layer, x, dout, names, eps, max_entries, rng)
    return {name: _masked_error(analytic[name], gradient, mask)
            for name, (gradient, mask) in numeric.items()}


def _numerical(layer, x, dout, names, eps, max_entries, rng):
    """Central differences of ``L = sum(layer.forward(x) * dout)`` (+ ``layer.penalty()``).

    A layer or model with a ``penalty()`` (a sparsity penalty, a VAE's KL)
    adds it to L, as training does.

    Returns
    -------
    dict of str to (ndarray, ndarray or None)
        For ``"dx"`` (perturbing ``x``) and each parameter key in ``names``:
        the numerical gradient and the mask of the entries estimated (None:
        all; else ``max_entries`` of them, drawn from ``rng``).
    """
    penalty = getattr(layer, "penalty", None)

    def loss():
        value = (layer.forward(x) * dout).sum()
        return float(value if penalty is None else value + penalty())

    out = {}
    for name in names:
        array = x if name == "dx" else layer.params[name]
        indices = _subset(array.size, max_entries, rng)
        numeric = numerical_gradient(loss, array, eps=eps, indices=indices)
        mask = None
        if indices is not None:
            mask = np.zeros(array.size, dtype=bool)
            mask[indices] = True
            mask = mask.reshape(array.shape)
        out[name] = (numeric, mask)
    return out


def _masked_error(analytic, numeric, mask):
    """:func:`relative_error`, on the entries in ``mask`` (all if None).

    With a mask the error is scaled by the whole analytic gradient, not just
    the sampled entries, which might all be zero (dead ReLUs).
    """
    a = backend.to_numpy(analytic).reshape(-1)
    if mask is None:
        return relative_error(a, numeric.reshape(-1))
    scale = max(float(np.abs(a).max(initial=0.0)), 1e-12)
    return float(np.abs(a - numeric.reshape(-1))[mask.reshape(-1)].max() / scale)


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
    numerical : bool
        False where central differences mean nothing (exact max-pool ties:
        the max has no derivative there). Such a check only compares an
        ``--impl`` class with the textbook one; the table skips it.
    note : str, optional
        What is special about the case, printed with ``--impl``.
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
    numerical: bool = True
    note: str = None
    build: object = None

    def __post_init__(self):
        if (self.layer is None) == (self.build is None) or not self.shape:
            raise ValueError(f"Check {self.name!r}: give shape= and exactly one of layer "
                             f"(a textbook class) and build= (a model builder)")
        if self.layer is not None and not isinstance(self.layer, type):
            raise TypeError(f"Check {self.name!r}: layer must be a class, built with args= and "
                            f"kwargs=; a function building a model goes in build=")

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


def _fast(model, input_grad=True, rules=fast.model.RULES):
    """``model`` compiled by :func:`scratchae.fast.compile`, with dL/dx (for the check)."""
    return fast.compile(model, input_grad=input_grad, workers=1, rules=rules)


class ImplError(Exception):
    """A piece broke the layer interface (what its backward returned): reported as one line."""


class _LossAsLayer:
    """A loss with fixed targets as a layer: ``forward(x)`` is the 0-d loss of logits ``x``.

    ``backward(dout)`` is ``loss.backward() * dout``, the gradient of the
    checker's ``L = loss * dout`` (``dout`` is a random 0-d array).
    """

    takes_dout = False  # backward() has no dout that it could modify
    output_name = "loss"

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
        return _checked_array(dlogits, type(self.piece).__name__, "backward()", "dlogits",
                              self._shape) * dout

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
    output_name, dout_name = "z", "dz"

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
        dmu, dlogvar = (_checked_array(g, type(self.piece).__name__, call, name, self._shape)
                        for g, name in zip(grads, ("dmu", "dlogvar")))
        return backend.get_array_module(dmu).concatenate([dmu, dlogvar], axis=1)

    def backward(self, dout):
        return self._join(self.piece.backward(dout), "backward(dz)")

    @staticmethod
    def inputs_text(shape):
        """The inputs of a check of input ``shape`` (N, 2K), in words."""
        return f"mu, logvar {_shape_text((shape[0], shape[1] // 2))} each"

    @staticmethod
    def split(dx):
        """``dx`` (N, 2K) as ``{"dmu": (N, K), "dlogvar": (N, K)}``."""
        k = dx.shape[1] // 2
        return {"dmu": dx[:, :k], "dlogvar": dx[:, k:]}


class _TwoInputsLoss(_TwoInputs):
    """:class:`_TwoInputs` for a loss of (mu, logvar) (the KL): a 0-d output, ``backward()``."""

    takes_dout = False
    output_name = "KL"

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


def _checked_array(value, owner, call, name, shape):
    """``value`` if it is an array of ``shape`` (or any shape if None), else :class:`ImplError`.

    ``owner`` is the class name, ``call`` the method (``"backward()"``),
    ``name`` what it returns (``"dx"``): the words of the error message.
    """
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise ImplError(f"{owner}.{call} must return {name}, an array"
                        f"{'' if shape is None else f' of shape {tuple(shape)}'}, "
                        f"got {_describe(value)}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ImplError(f"{owner}.{call}: {name} has shape "
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


def _tied_autoencoder(d, m, seed):
    """Dense(d, m), Sigmoid, TiedDense: one W (d, m) used twice, in float64."""
    encoder = L.Dense(d, m, dtype=F64, seed=seed)
    return _biased(Sequential([encoder, L.Sigmoid(), TiedDense(encoder)], (d,)), seed)


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
        # 3x3 windows, stride 2: an input in two windows gets the sum of its shares.
        Check("maxpool2d_overlap", L.MaxPool2D, args=(3,), kwargs=dict(stride=2),
              shape=(2, 3, 7, 7), inputs="tie_free"),
        # Exact ties (as after a ReLU: windows of zeros) have no derivative, so no
        # numerical check: --impl compares with MaxPool2D, which picks the first maximum.
        Check("maxpool2d_ties", L.MaxPool2D, args=(2,), shape=(2, 3, 6, 4), inputs="ties",
              numerical=False,
              note="exact ties, as after a ReLU: the max has no derivative at a tie, so no "
                   "numerical check; compared with MaxPool2D's, which sends each window's dout "
                   "to one input, its first maximum (the argmax)"),
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
    # The stacked denoising autoencoder (scratchae/sdae.py): the tied decoder alone; a
    # tied autoencoder whole, whose W the check perturbs where it lives (in the encoder),
    # so each difference sees both of its uses; the softmax cross-entropy; the classifier
    # on the fast path.
    checks += [
        Check("tieddense", TiedDense,
              args=lambda s: (L.Dense(6, 4, dtype=F64, seed=s),), shape=(3, 4)),
        Check("tieddense_autoencoder", build=lambda s: _tied_autoencoder(7, 5, s),
              shape=(3, 7), inputs="unit"),
        Check("softmax_cross_entropy", SoftmaxCrossEntropy, shape=(4, 10),
              inputs="logits", targets="labels"),
        Check("fast_sdae_classifier",
              build=lambda s: _fast(StackedDenoisingAutoencoder((9, 5), 4, seed=s,
                                                                dtype=F64).classifier),
              shape=(3, 1, 28, 28), inputs="images", max_entries=20),
    ]
    # The fast path (scratchae.fast): each rewrite rule on a small stack, then the models.
    checks += [
        Check("fast_conv_relu_pool", build=lambda s: _fast(_biased(Sequential([
            L.Conv2D(3, 4, 3, dtype=F64, seed=s), L.ReLU(), L.MaxPool2D(2, padding="same"),
        ]), s)), shape=(2, 3, 7, 5), steps=(1e-7, 1e-8)),
        Check("fast_subpixel_relu", build=lambda s: _fast(_biased(Sequential([
            L.Upsample2D(scale_factor=2), L.Conv2D(3, 4, 3, dtype=F64, seed=s), L.ReLU(),
        ]), s)), shape=(2, 3, 4, 5), steps=(1e-7, 1e-8)),
        # the same without window_grad: the phase-by-phase backward it replaces
        Check("fast_subpixel_phases", build=lambda s: _fast(_biased(Sequential([
            L.Upsample2D(scale_factor=2), L.Conv2D(3, 4, 3, dtype=F64, seed=s), L.ReLU(),
        ]), s), rules=[r for r in fast.model.RULES if r != "window_grad"]),
              shape=(2, 3, 4, 5), steps=(1e-7, 1e-8)),
        # conv_pool fires on a first conv that computes no dx, so this one checks no dx
        Check("fast_conv_pool_first_layer", build=lambda s: _fast(_biased(Sequential([
            L.Conv2D(2, 3, 3, dtype=F64, seed=s), L.ReLU(), L.MaxPool2D(2),
            L.Conv2D(3, 2, 3, dtype=F64, seed=s + 1)]), s), input_grad=False),
              shape=(2, 2, 7, 9), steps=(1e-7, 1e-8)),
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
    ``"ties"``: 0, 1 or 2, mostly 0, so most pooling windows tie.
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
    if check.inputs == "ties":
        return np.maximum(rng.integers(-2, 3, check.shape), 0).astype(np.float64)
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


# --------------------------------------------------------------------------
# --impl: check the reader's own class against scratchae's
# --------------------------------------------------------------------------

class UsageError(Exception):
    """A command line that cannot run (bad ``--layer``, ``--impl`` file or class): exit status 2."""


def load_impl(spec):
    """Import ``FILE.py:Class`` and return the class.

    Parameters
    ----------
    spec : str
        ``"path/to/file.py:ClassName"``.

    Returns
    -------
    type

    Raises
    ------
    UsageError
        One line saying what is wrong: the form of ``spec``, a missing
        file, a file that raises on import (with the line), a missing name,
        a name that is not a class, a class without ``forward``/``backward``.
    """
    path_text, colon, name = spec.rpartition(":")
    if not colon or not path_text or not name.isidentifier():
        raise UsageError(f"--impl must be FILE.py:Class, e.g. exercises/ex1_dense.py:MyDense, "
                         f"got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UsageError(f"--impl: the file {path_text} {what}")
    module_name = "_scratchae_impl_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None:
        raise UsageError(f"--impl: cannot import {path_text}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # what an import does (dataclasses in the file need it)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        raise UsageError(f"{path_text}, line {error.lineno}: SyntaxError: {error.msg}") from None
    except (Exception, SystemExit) as error:
        raise UsageError(f"importing {path_text} raised {type(error).__name__}: {error} "
                         f"({_where(error, path) or path_text})") from None
    finally:
        sys.modules.pop(module_name, None)
    cls = getattr(module, name, None)
    if cls is None:
        classes = [k for k, v in vars(module).items()
                   if isinstance(v, type) and v.__module__ == module_name]
        found = f"its classes: {', '.join(classes)}" if classes else "it defines no class"
        raise UsageError(f"{path_text} has no {name} ({found})")
    if not isinstance(cls, type):
        raise UsageError(f"{name} in {path_text} is a {type(cls).__name__}, not a class")
    missing = [m for m in ("forward", "backward") if not callable(getattr(cls, m, None))]
    if missing:
        raise UsageError(f"{name} has no {' and no '.join(missing)} method: --impl needs a class "
                         f"with a layer's interface (forward, backward, params, grads)")
    return cls


def _where(error, path):
    """``"FILE, line N"`` of the deepest frame of ``error``'s traceback in ``path`` (or None)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if _same_file(f.filename, path)]
    return f"{path}, line {frames[-1].lineno}" if frames else None


def _same_file(filename, path):
    try:
        return Path(filename).resolve() == Path(path).resolve()
    except (OSError, ValueError):
        return False


def _own_frames(error, path):
    """The traceback lines of ``error`` that are in the reader's file (else its last frame)."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if path is not None and _same_file(f.filename, path)]
    return traceback.format_list(own or frames[-1:])


def _checked_class(cls):
    """The first class in ``cls``'s ancestry (itself included) that a check is about."""
    checked = {c.layer for c in CHECKS if c.layer is not None}
    return next((k for k in cls.__mro__ if k in checked), None)


def impl_checks(cls, layer=None):
    """The checks that ``--impl`` runs on ``cls`` for ``--layer layer``.

    With a ``layer`` name: the checks whose name starts with it, of one
    textbook class (the one ``cls`` derives from, where the name matches
    several). Without: the checks of the textbook class ``cls`` derives from.

    Raises
    ------
    UsageError
        Unknown name, only model checks, several classes and ``cls`` derives
        from none of them, or ``cls`` derives from another checked class.
    """
    own = _checked_class(cls)
    pieces = [c for c in CHECKS if c.layer is not None]
    usable = ", ".join(_impl_names())
    if layer is None:
        if own is None:
            raise UsageError(f"--impl {cls.__name__} needs --layer NAME ({cls.__name__} does not "
                             f"derive from a scratchae layer); choose from: {usable}")
        return [c for c in pieces if c.layer is own]
    matched = _matching(layer)
    chosen = [c for c in matched if c.layer is not None]
    if not chosen:
        raise UsageError(f"--layer {layer} checks whole models, which --impl cannot stand in for "
                         f"(it takes one layer or loss); choose from: {usable}")
    classes = list(dict.fromkeys(c.layer for c in chosen))
    if len(classes) > 1:
        if own not in classes:
            first = {k: next(c.name for c in chosen if c.layer is k) for k in classes}
            names = "; ".join(f"{k.__name__}: --layer {first[k]}" for k in classes)
            raise UsageError(f"--layer {layer} checks {len(classes)} classes; name the one "
                             f"{cls.__name__} stands in for ({names})")
        classes = [own]
    if own is not None and own is not classes[0]:
        mine = next(c.name for c in pieces if c.layer is own)
        raise UsageError(f"{cls.__name__} is a {own.__name__}, but --layer {layer} checks "
                         f"{classes[0].__name__}: use --layer {mine}")
    return [c for c in chosen if c.layer is classes[0]]


def _impl_names():
    """A ``--layer`` name for each class ``--impl`` can stand in for: its checks' common prefix."""
    names = {}
    for check in CHECKS:
        if check.layer is not None:
            names.setdefault(check.layer, []).append(check.name)
    return [os.path.commonprefix(group).rstrip("_") for group in names.values()]


def _matching(layer):
    """The checks whose name starts with ``layer`` (case-insensitive), or :class:`UsageError`."""
    prefix = layer.lower()
    checks = [c for c in CHECKS if c.name.startswith(prefix)]
    if not checks:
        raise UsageError(f"unknown layer {layer!r}; choose from: {', '.join(_groups())}")
    return checks


def _call_text(name, args, kwargs):
    """``Name(6, 4, dtype=float64, seed=0)``: how a class was built."""
    words = [repr(a) for a in args] + [f"{k}={getattr(v, '__name__', None) or repr(v)}"
                                      for k, v in kwargs.items()]
    return f"{name}({', '.join(words)})"


def _shape_text(shape):
    return str(tuple(shape)).replace(" ", "")


def _host(a):
    return backend.to_numpy(a).astype(np.float64)


def _close(a, b, tol):
    return a.shape == b.shape and relative_error(a, b) < tol


@dataclass
class _Row:
    """One array of a case: its error against central differences and against the reference."""

    name: str
    shape: tuple
    numerical: float = None  # None: not checked (no derivative at ties, or a wrong shape)
    reference: float = None  # None: not comparable (a wrong shape, or missing)
    ok: bool = False


@dataclass
class _Case:
    """What :func:`_run_case` found for one check."""

    check: Check
    call: str = ""
    status: str = "pass"  # "pass", "fail", "not written", "error"
    rows: list = field(default_factory=list)
    contract: list = field(default_factory=list)  # (sentence, ok)
    diagnoses: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    message: str = ""
    frames: list = field(default_factory=list)


def _match_params(ref, mine, name, ref_name):
    """Give ``mine`` the reference's parameter values; return a note if they differed."""
    params = getattr(mine, "params", None)
    if not isinstance(params, dict):
        raise ImplError(f"{name}.params must be a dict of arrays like {ref_name}'s "
                        f"({', '.join(ref.params) or 'empty'}), got {_describe(params)}")
    if set(params) != set(ref.params):
        raise ImplError(f"{name}.params has the keys {sorted(params)}, {ref_name}'s has "
                        f"{sorted(ref.params)}: use the same names")
    differ = []
    for key, r in ref.params.items():
        p = params[key]
        if not hasattr(p, "shape") or tuple(p.shape) != tuple(r.shape):
            raise ImplError(f"{name}.params[{key!r}] is {_describe(p)}, {ref_name}'s has shape "
                            f"{tuple(r.shape)}")
        if p.dtype != r.dtype:
            raise ImplError(f"{name}.params[{key!r}] is {p.dtype}, {ref_name}'s is {r.dtype}: "
                            f"build the parameters with the dtype argument given (the check "
                            f"passes dtype=float64)")
        if not bool((p == r).all()):
            p[...] = r
            differ.append(key)
    if not differ:
        return []
    return [f"note: {name}'s constructor drew other initial values of {', '.join(differ)} than "
            f"{ref_name}'s with the same arguments and seed; the check copied {ref_name}'s into "
            f"yours, so both compute with the same numbers"]


def _split(layer, dx):
    """``dx`` under the names the reader knows: ``{"dx": dx}``, ``{"dmu", "dlogvar"}``, ..."""
    split = getattr(layer, "split", None)
    return {"dx": dx} if split is None else split(dx)


def _run_case(check, cls, seed, tol, path):
    """Run one check on ``cls`` beside the textbook class; return a :class:`_Case`."""
    name, ref_name = cls.__name__, check.layer.__name__
    args, kwargs = check.arguments(seed)
    case = _Case(check, call=_call_text(name, args, kwargs))
    rng = np.random.default_rng(seed)
    x = backend.asarray(make_input(check, rng))
    targets = None if check.targets is None else backend.asarray(make_targets(check, rng))
    ref = check.as_layer(check.make(seed), targets)
    y_ref = ref.forward(x.copy())
    dout = backend.asarray(np.random.default_rng(seed).standard_normal(y_ref.shape),
                           dtype=y_ref.dtype)
    dx_ref = ref.backward(dout.copy())
    grads_ref = {k: g.copy() for k, g in ref.grads.items()}
    stage = "__init__"
    try:
        mine = check.as_layer(check.make(seed, cls), targets)
        case.notes += _match_params(ref, mine, name, ref_name)
        stage = "forward"
        y = _checked_array(mine.forward(x.copy()), name, "forward", "its output", None)
        stage = "backward"
        given = dout.copy()
        dx = _checked_array(mine.backward(given), name, "backward", "dx", None)
        grads = _grads_of(mine, name)
        grads1 = {k: g.copy() for k, g in grads.items()}
        changed = not (given.shape == dout.shape and bool((given == dout).all()))
        stage = "forward"
        mine.forward(x.copy())  # the same call again: grads must come out the same
        stage = "backward"
        mine.backward(dout.copy())
        grads2 = {k: g.copy() for k, g in _grads_of(mine, name).items()}
        stage = "forward"
        numeric_dx, numeric_p = _numerical_errors(check, mine, x, dout, dx, grads1, ref, tol, seed)
    except NotImplementedError as error:
        case.status = "not written"
        where = _where(error, path) if path else None
        case.message = (f"{name}.{stage} raises NotImplementedError"
                        f"{' (' + where + ')' if where else ''}: write it, then run this again")
        return case
    except ImplError as error:
        case.status, case.message = "error", str(error)
        return case
    except Exception as error:  # the reader's code raised: their traceback, short
        case.status = "error"
        case.message = f"{name}.{stage} raised {type(error).__name__}: {error}"
        case.frames = _own_frames(error, path)
        return case

    context = _Context(check, name, x, dout, tol, seed, targets, ref.params)
    rows = [_Row(getattr(mine, "output_name", "y"), tuple(y.shape), None,
                 relative_error(y, y_ref) if tuple(y.shape) == tuple(y_ref.shape) else None)]
    # dx (or its parts, under the names the reader knows), then each parameter's gradient
    ref_parts = _split(ref, dx_ref)
    mine_parts = _split(mine, dx) if tuple(dx.shape) == tuple(dx_ref.shape) else {"dx": dx}
    arrays = [(part, mine_parts[part], r, numeric_dx.get(part)) for part, r in ref_parts.items()]
    arrays += [("d" + k, grads1.get(k), r, numeric_p.get(k)) for k, r in grads_ref.items()]
    for label, a, r, numeric in arrays:
        row = _Row(label, None if a is None else tuple(a.shape), numeric)
        if a is not None and tuple(a.shape) == tuple(r.shape):
            row.reference = relative_error(a, r)
        rows.append(row)
        if a is None:
            context.missing(label, label[1:])
        elif row.reference is None or row.reference >= tol:
            case.diagnoses += _diagnose(label, _host(a), _host(r), context)
        elif row.numerical is not None and row.numerical >= tol:
            case.diagnoses.append(f"{label} equals {ref_name}'s but not the central differences "
                                  f"of your forward: does your forward compute what "
                                  f"{ref_name}'s does?")
    for row in rows:
        row.ok = (row.reference is not None and row.reference < tol and
                  (row.numerical is None or row.numerical < tol))
    if not rows[0].ok:
        case.diagnoses.insert(0, f"your forward's output {rows[0].name} differs from "
                                 f"{ref_name}'s: the gradients can only match once forward "
                                 f"does (keep {ref_name}'s forward)")
    case.rows = rows
    case.diagnoses = context.notes + case.diagnoses
    if getattr(mine, "takes_dout", True):
        dout_name = getattr(mine, "dout_name", "dout")
        case.contract.append((f"backward leaves {dout_name} unchanged", not changed))
        if changed:
            case.diagnoses.append(_dout_sentence(given, dout, dout_name))
    if grads_ref:
        same = all(k in grads2 and _close(_host(grads2[k]), _host(grads1[k]), 1e-9)
                   for k in grads1)
        case.contract.append(("a 2nd backward overwrites grads", same))
        if not same:
            case.diagnoses += _accumulation_sentences(grads1, grads2)
    ok = all(r.ok for r in rows) and all(ok for _, ok in case.contract)
    case.status = "pass" if ok else "fail"
    return case


def _numerical_errors(check, mine, x, dout, dx, grads, ref, tol, seed):
    """Errors of the reader's ``dx`` (by part) and ``grads`` against central differences.

    Returns ``({part: error}, {param key: error})``; empty for a check
    without numerical gradient, and without the arrays of a wrong shape.
    An array that fails is tried again with the next of ``check.steps``.
    """
    by_part, by_key = {}, {}
    if not check.numerical:
        return by_part, by_key
    todo = [k for k in ref.params if k in grads and tuple(grads[k].shape) == ref.params[k].shape]
    if tuple(dx.shape) == tuple(x.shape):
        todo.insert(0, "dx")
    xn = x.copy()  # perturbed in place
    for eps in check.steps:
        subsets = np.random.default_rng(seed + 1)
        for key, (numeric, mask) in _numerical(mine, xn, dout, todo, eps, check.max_entries,
                                               subsets).items():
            if key == "dx":
                masks = dict.fromkeys(_split(mine, dx)) if mask is None else _split(mine, mask)
                for part, a in _split(mine, dx).items():
                    err = _masked_error(a, _split(mine, numeric)[part], masks[part])
                    by_part[part] = min(err, by_part.get(part, np.inf))
            else:
                err = _masked_error(grads[key], numeric, mask)
                by_key[key] = min(err, by_key.get(key, np.inf))
        todo = [k for k in todo if (k == "dx" and any(e >= tol for e in by_part.values()))
                or (k != "dx" and by_key[k] >= tol)]
        if not todo:
            break
    return by_part, by_key


def _grads_of(layer, name):
    grads = getattr(layer, "grads", None)
    if not isinstance(grads, dict):
        raise ImplError(f"{name}.grads must be a dict of arrays, one per key of params, "
                        f"got {_describe(grads)}")
    for key, g in grads.items():
        if not hasattr(g, "shape"):
            raise ImplError(f"{name}.grads[{key!r}] must be an array, got {_describe(g)}")
    return grads


class _Context:
    """What the diagnoses of one case need: the case, the arrays fed, the reference."""

    def __init__(self, check, name, x, dout, tol, seed, targets, param_keys):
        self.check, self.name, self.tol, self.seed, self.targets = check, name, tol, seed, targets
        self.ref, self.param_keys = check.layer.__name__, list(param_keys)
        self.x, self.dout = x, dout
        self.n = int(x.shape[0])
        self.notes = []

    def factor_names(self, f):
        """What the number ``f`` is, in this case: the batch size, an entry count, or 2."""
        per_sample = self.x.size // self.n
        known = [(self.n, "the batch size N"),
                 (self.x.size, "the number of entries of the input"),
                 (per_sample, "the number of entries per sample")]
        names = []
        for value, words in known:
            if value > 1 and abs(f - value) < 1e-6 * value and words not in names:
                names.append(words)
        return names

    def missing(self, label, key):
        keys = ", ".join(self.param_keys) or "none"
        self.notes.append(f"{label} is missing: {self.name}.grads has no {key!r}; fill grads with "
                          f"the same keys as params ({keys})")

    def one_sample(self, label, a):
        """A sentence if the parameter gradient ``a`` is one sample's share only, else None."""
        key = label[1:]
        if self.n < 2:
            return None
        for which, i in (("first", 0), ("last", self.n - 1)):
            try:
                ref = self.check.as_layer(self.check.make(self.seed), self.targets)
                if key not in ref.params:
                    return None
                ref.forward(self.x[i:i + 1].copy())
                ref.backward(self.dout[i:i + 1].copy())
                share = _host(ref.grads[key])
            except Exception:  # a layer whose output is not per sample: no such diagnosis
                return None
            if _close(a, share, self.tol):
                return (f"{label} is only the {which} sample's share: sum it over all N = {self.n} "
                        f"samples of the batch (in a loop over the samples, add each one's share "
                        f"with +=, don't assign it with =)")
        return None


def _diagnose(label, a, r, ctx):
    """Why the reader's array ``a`` differs from the reference's ``r``: a list of sentences."""
    ref = ctx.ref
    if not np.isfinite(a).all():
        return [f"{label} contains NaN or inf (an overflow, or a division by 0?)"]
    if a.shape != r.shape:
        return [_shape_sentence(label, a, r, ctx)]
    if not a.any():
        return [f"{label} is all zeros, {ref}'s is not: is it computed and stored?"]
    rr = float((r * r).sum())
    if rr > 0:
        s = float((a * r).sum()) / rr
        if abs(s - 1) > 1e-3 and _close(a, s * r, ctx.tol):
            return [_factor_sentence(label, s, ctx)]
    if a.ndim == 2 and a.shape[0] == a.shape[1] > 1 and _close(a, r.T, ctx.tol):
        return [f"{label} is transposed: its transpose equals {ref}'s"]
    for order in itertools.permutations(range(a.ndim)) if 2 < a.ndim <= 5 else ():
        if order != tuple(range(a.ndim)) and _close(a.transpose(order), r, ctx.tol):
            return [f"{label} has its axes in the wrong order: transposed by {order} it equals "
                    f"{ref}'s"]
    if label[1:] in ctx.param_keys:
        sentence = ctx.one_sample(label, a)
        if sentence:
            return [sentence]
    if a.size > 1 and _close(np.sort(a, axis=None), np.sort(r, axis=None), ctx.tol):
        return [f"{label} has the right numbers in the wrong places (sorted, yours and {ref}'s "
                f"are equal): a reshape that needed a transpose first, or axes mixed up?"]
    return [_values_sentence(label, a, r, ctx)]


def _factor_sentence(label, s, ctx):
    """``label`` is ``s`` times the reference's: say what the factor may be."""
    ref, m = ctx.ref, abs(s)
    if abs(m - 1) < 1e-3:
        return (f"{label} has the wrong sign: yours is -1 times {ref}'s "
                f"(a subtraction the wrong way round?)")
    f = m if m > 1 else 1 / m
    text, sign = f"{f:.4g}", ("-" if s < 0 else "")
    head = (f"{label} is {sign}{text} times {ref}'s" if m > 1 else
            f"{label} is {sign}1/{text} of {ref}'s")
    wrong_sign = ", and the sign is wrong" if s < 0 else ""
    names = ctx.factor_names(f)
    if names:
        head += f", and {text} is {' and also '.join(names)}"
    elif abs(f - 2) < 2e-6:
        return head + (": a factor 1/2 missing?" if m > 1 else ": an extra 1/2?") + wrong_sign
    if m > 1:
        return head + f": a factor {text} too many, or a division by {text} missing" + wrong_sign
    return (head + f": divided by {text} once too often (a mean where the gradient is a sum?)"
            + wrong_sign)


def _shape_sentence(label, a, r, ctx):
    """``label`` has shape ``a.shape`` instead of ``r.shape``: transposed, not summed, ...?"""
    ref, tol, n = ctx.ref, ctx.tol, ctx.n
    sa, sr = _shape_text(a.shape), _shape_text(r.shape)
    of = f"{label[1:]}'s shape" if len(label) > 1 else "its input's shape"
    if a.ndim == 2 and a.shape == r.shape[::-1]:
        text = (f"{label} is transposed: shape {sa}, it must be {sr}, {of} (a gradient has the "
                f"shape of what it is the gradient of)")
        return text + (f"; its transpose equals {ref}'s" if _close(a.T, r, tol) else "")
    if a.shape == (n,) + r.shape:
        text = (f"{label} is not summed over the batch: shape {sa}, one row per sample, "
                f"it must be {sr}")
        return text + (f"; summed over axis 0 it equals {ref}'s"
                       if _close(a.sum(axis=0), r, tol) else "")
    if a.ndim == r.ndim and sorted(a.shape) == sorted(r.shape):
        for order in itertools.permutations(range(a.ndim)):
            if _close(a.transpose(order), r, tol):
                return (f"{label} has its axes in the wrong order: shape {sa}, it must be {sr}; "
                        f"transposed by {order} it equals {ref}'s")
    if a.ndim > r.ndim:
        for axes in itertools.combinations(range(a.ndim), a.ndim - r.ndim):
            if _close(a.sum(axis=axes), r, tol):
                batch = " (axis 0 is the batch)" if 0 in axes and a.shape[0] == n else ""
                return (f"{label} is not summed over the axes {axes}{batch}: shape {sa}, it must "
                        f"be {sr}; summed over them it equals {ref}'s")
    if a.size == r.size and _close(a.reshape(r.shape), r, tol):
        return f"{label} has the right numbers in the wrong shape {sa}: it must be {sr}"
    extra = [da - dr for da, dr in zip(a.shape, r.shape)]
    if a.ndim == r.ndim and min(extra) >= 0 and int(np.prod([e + 1 for e in extra])) <= 4096:
        for start in itertools.product(*(range(e + 1) for e in extra)):
            inner = a[tuple(slice(s, s + n) for s, n in zip(start, r.shape))]
            if _close(inner, r, tol):
                return (f"{label} has shape {sa}, larger than {sr}, {of}: its part from "
                        f"{_shape_text(start)} on equals {ref}'s. Padding is not an input: "
                        f"crop its gradient off")
    return f"{label} has shape {sa}, it must be {sr}, {of}"


def _values_sentence(label, a, r, ctx):
    """Right shape, wrong values: where, how many, and the telling pattern if there is one."""
    diff = np.abs(a - r)
    wrong = diff > ctx.tol * max(float(np.abs(r).max()), float(np.abs(a).max()), 1e-12)
    k = int(wrong.sum())
    worst = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), a.shape))
    at = f" at {_shape_text(worst)}" if a.ndim else ""
    text = (f"{label} has the right shape but wrong values at {k} of {a.size} entries (the largest "
            f"difference{at}: yours {a[worst]:.4g}, {ctx.ref}'s {r[worst]:.4g})")
    if k and k == int((wrong & (r == 0)).sum()):
        text += f"; wherever it is wrong, {ctx.ref}'s is 0: yours sends gradient where none goes"
    elif k and k == int((wrong & (a == 0)).sum()):
        text += "; wherever it is wrong, yours is 0: some gradient is not sent (or overwritten)"
    return text


def _dout_sentence(given, dout, name="dout"):
    """The reader's backward changed the ``dout`` (``name``) it was given."""
    if given.shape != dout.shape:
        changed = "its shape"
    else:
        changed = f"{int((_host(given) != _host(dout)).sum())} of {dout.size} entries"
    return (f"backward changed {name} in place ({changed}): {name} belongs to the caller, who "
            f"may still use it. Compute a new array ({name} * mask, not {name} *= mask or "
            f"{name}[...] = ...)")


def _accumulation_sentences(first, second):
    """grads after a second identical backward differ from the first: accumulated?"""
    doubled, changed = [], []
    for key, g in first.items():
        g2 = second.get(key)
        if g2 is None or tuple(g2.shape) != tuple(g.shape):
            changed.append("d" + key)
        elif _close(_host(g2), 2 * _host(g), 1e-9):
            doubled.append("d" + key)
        elif not _close(_host(g2), _host(g), 1e-9):
            changed.append("d" + key)
    sentences = []
    if doubled:
        verb = "is" if len(doubled) == 1 else "are"
        sentences.append(f"{', '.join(doubled)} after a second backward {verb} "
                         f"2x the first: grads are added to (+=) across calls. Assign them "
                         f"(self.grads = {{...}}): scratchae never zeroes gradients")
    if changed:
        sentences.append(f"{', '.join(changed)} changed between two backward calls with the same "
                         f"input and dout: grads must be overwritten, not updated")
    return sentences


def _print_case(case):
    """One case: a header, the table of arrays, the contract, the diagnoses."""
    check = case.check
    _print_wrapped(f"\n{check.name}: {case.call}, {_inputs_text(check)}", "", "  ")
    for note in ([check.note] if check.note else []) + case.notes:
        _print_wrapped(note, "  ", "  ")
    if case.status == "not written":
        _print_wrapped(f"NOT WRITTEN  {case.message}", "  ", "    ")
        return
    if case.status == "error":
        _print_wrapped(f"ERROR  {case.message}", "  ", "    ")
        if case.frames:
            print("  Traceback (your code):")
            for line in "".join(case.frames).rstrip("\n").split("\n"):
                print("  " + line)
        return
    vs = f"vs {check.layer.__name__}"
    width = max(11, len(vs))
    header = f"  {'array':8} {'shape':11} {'numerical':>9}  {vs:>{width}}  result"
    print(header)
    for row in case.rows:
        numerical = "-" if row.numerical is None else f"{row.numerical:.1e}"
        if row.shape is None:
            reference = "missing"
        else:
            reference = "wrong shape" if row.reference is None else f"{row.reference:.1e}"
        shape = "-" if row.shape is None else _shape_text(row.shape)
        print(f"  {row.name:8} {shape:11} {numerical:>9}  {reference:>{width}}  "
              f"{'PASS' if row.ok else 'FAIL'}")
    for sentence, ok in case.contract:
        print(f"  {sentence:{len(header) - len('result') - 2}}{'PASS' if ok else 'FAIL'}")
    for sentence in case.diagnoses:
        _print_wrapped(sentence, "  -> ", "     ")


def _print_wrapped(text, first, rest):
    """Print ``text`` in lines of at most 100 characters (leading newlines kept)."""
    body = text.lstrip("\n")
    print("\n" * (len(text) - len(body)) + textwrap.fill(
        body, width=100, initial_indent=first, subsequent_indent=rest,
        break_long_words=False, break_on_hyphens=False))


def _inputs_text(check):
    """What a case feeds its piece, in words: ``input (3,6)``, ``mu, logvar (3,4) each``."""
    words = getattr(check.wrap, "inputs_text", None)
    if words is not None:
        return words(check.shape)
    if check.targets is not None:
        return f"logits {_shape_text(check.shape)}"
    return f"input {_shape_text(check.shape)}"


def check_impl(cls, checks, *, seed=0, tol=DEFAULT_TOL, backends=("numpy",), path=None):
    """Run ``checks`` on the reader's class ``cls`` beside scratchae's own, and print a report.

    Each case builds ``cls`` with the arguments of the textbook class it
    stands in for (:meth:`Check.arguments`), gives it the textbook
    object's parameter values, feeds both the same input and random
    ``dout``, and compares the output, ``dx`` and every parameter
    gradient, each with central differences of ``cls``'s own forward and
    with the textbook class's; then checks that ``backward`` left ``dout``
    alone and that a second call overwrites ``grads``. A failing array gets
    the causes that fit its numbers (a factor of the batch size, transposed,
    not summed over the batch, ...).

    Parameters
    ----------
    cls : type
        The reader's class (e.g. from :func:`load_impl`).
    checks : list of Check
        Checks of one textbook class (see :func:`impl_checks`).
    seed : int
        Seed of the parameters, the input and ``dout``.
    tol : float
        Largest relative error that passes.
    backends : sequence of str
    path : str or Path, optional
        The file ``cls`` came from: tracebacks are cut to its frames.

    Returns
    -------
    int
        0 if every case passes, else 1.

    Raises
    ------
    UsageError
        ``cls`` cannot be built with the textbook class's arguments, or a
        backend is unavailable.
    """
    name, ref_name = cls.__name__, checks[0].layer.__name__
    for check in checks:  # every constructor call first: one line if it cannot be built
        args, kwargs = check.arguments(seed)
        try:
            check.make(seed, cls)
        except Exception as error:
            raise UsageError(f"{_call_text(name, args, kwargs)} raised {type(error).__name__}: "
                             f"{error} (--impl builds {name} with {ref_name}'s arguments, for "
                             f"the check {check.name})") from None
    source = f" ({path})" if path is not None else ""
    _print_wrapped(f"{name}{source} against scratchae's {ref_name}: float64, seed {seed}, "
                   f"tolerance {tol:g}", "", "  ")
    print("numerical: your gradient against central differences of your forward")
    print(f"vs {ref_name}: your array against {ref_name}'s, on the same input and dout")
    if getattr(cls, "backward", None) is getattr(checks[0].layer, "backward", None):
        print(f"note: {name} does not override backward, so this checks {ref_name}'s own")
    previous = backend.get_backend()
    cases = []
    try:
        for backend_name in backends:
            try:
                backend.set_backend(backend_name)
            except RuntimeError as error:
                raise UsageError(str(error)) from None
            if len(backends) > 1:
                print(f"\non {backend_name}:")
            for check in checks:
                try:
                    case = _run_case(check, cls, seed, tol, path)
                except Exception as error:  # never the checker's traceback: one line
                    case = _Case(check, call=name, status="error",
                                 message=f"the check could not run {name}: "
                                         f"{type(error).__name__}: {error}")
                cases.append(case)
                _print_case(case)
    finally:
        backend.set_backend(previous)
    failed = [c for c in cases if c.status != "pass"]
    summary = f"\n{name}: {len(cases) - len(failed)} of {len(cases)} case" \
              f"{'s' * (len(cases) != 1)} passed"
    if failed:
        unwritten = [c.check.name for c in failed if c.status == "not written"]
        others = [c.check.name for c in failed if c.status != "not written"]
        parts = ([f"failed: {', '.join(others)}"] if others else []) + \
                ([f"not written yet: {', '.join(unwritten)}"] if unwritten else [])
        summary += f" ({'; '.join(parts)})"
    _print_wrapped(summary, "", "  ")
    return 1 if failed else 0


def _groups():
    """The layer names ``--layer`` accepts: each check name's part before ``_``."""
    return list(dict.fromkeys(c.name.split("_")[0] for c in CHECKS))


def _backends(choice):
    if choice == "all":
        return ["numpy"] + (["cupy"] if backend.cupy_available() else [])
    return [choice]


def _list_line(check):
    """One line of ``--list``: the name, the input shape, what ``--impl`` can stand in for."""
    if check.layer is None:
        what = "a model (no --impl)"
    else:
        what = f"--impl for {check.layer.__name__}"
        what += "" if check.numerical else " (--impl only: exact ties)"
    return f"{check.name:32} input {_shape_text(check.shape):14} {what}"


def main(argv=None):
    """Run the gradient checks and print a PASS/FAIL table (or, with ``--impl``, a report).

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 if every check passes, 1 if any fails (or raises), 2 when the
        command cannot run: an unknown ``--layer``, an unavailable
        ``--backend``, an ``--impl`` file or class that cannot be loaded, or
        built with the textbook class's arguments (one line on stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m scratchae.gradcheck",
        description="Numerical gradient check (float64, central differences, random "
                    "upstream gradient) of every layer, the loss and every model, on the "
                    "textbook layers and on the fast path; or of your own layer (--impl), "
                    "compared with scratchae's.")
    parser.add_argument("--layer", metavar="NAME",
                        help="run only the checks whose name starts with NAME "
                             "(case-insensitive), e.g. conv2d, relu, loss, models, fast")
    parser.add_argument("--impl", metavar="FILE.py:CLASS",
                        help="check your own class in place of scratchae's (built with the same "
                             "arguments), e.g. exercises/ex1_dense.py:MyDense; "
                             "see docs/exercises.md")
    parser.add_argument("--list", action="store_true", help="print the check names and exit")
    parser.add_argument("--backend", choices=("numpy", "cupy", "all"), default=None,
                        help="all = numpy, plus cupy when a GPU is usable (the default; "
                             "with --impl the default is numpy)")
    parser.add_argument("--tol", type=float, default=DEFAULT_TOL,
                        help="largest relative error that passes")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and dout")
    args = parser.parse_args(argv)

    if args.list:
        for check in CHECKS:
            print(_list_line(check))
        return 0
    try:
        if args.impl is not None:
            cls = load_impl(args.impl)
            checks = impl_checks(cls, args.layer)
            return check_impl(cls, checks, seed=args.seed, tol=args.tol,
                              backends=_backends(args.backend or "numpy"),
                              path=args.impl.rpartition(":")[0])
        checks = CHECKS if args.layer is None else _matching(args.layer)
        table = [c for c in checks if c.numerical]
        if not table:
            verb = "compares" if len(checks) == 1 else "compare"
            raise UsageError(f"{', '.join(c.name for c in checks)} only {verb} an --impl class "
                             f"with scratchae's (no numerical gradient at exact ties): add --impl")
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _table(table, _backends(args.backend or "all"), args.seed, args.tol)


def _table(checks, backends, seed, tol):
    """The PASS/FAIL table of ``checks`` on each backend; the exit status."""
    previous = backend.get_backend()
    width = max(len("check"), *(len(c.name) for c in checks))
    header = (f"{'backend':8} {'check':{width}} {'input shape':12} {'array':12} "
              f"{'max rel error':>13}  result")
    print(header)
    print("-" * len(header))
    failed, total, crashed = 0, 0, []
    try:
        for name in backends:
            try:
                backend.set_backend(name)
            except RuntimeError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            for check in checks:
                shape = str(check.shape).replace(" ", "")
                try:
                    errors = run_check(check, seed=seed, tol=tol)
                except Exception as error:  # a broken backward often raises: report it, go on
                    crashed.append((name, check.name, traceback.format_exc()))
                    print(f"{name:8} {check.name:{width}} {shape:12} {'-':12} {'-':>13}  "
                          f"ERROR ({type(error).__name__}: {error})")
                    failed, total = failed + 1, total + 1
                    continue
                for array, (err, eps) in errors.items():
                    ok = err < tol  # a NaN error fails too
                    failed, total = failed + (not ok), total + 1
                    retried = f" (eps {eps:g})" if eps != check.steps[0] else ""
                    print(f"{name:8} {check.name:{width}} {shape:12} {array:12} {err:13.1e}  "
                          f"{'PASS' if ok else 'FAIL'}{retried}")
    finally:
        backend.set_backend(previous)
    for name, check_name, text in crashed:
        print(f"\n{check_name} on {name} raised:\n{text}", file=sys.stderr)
    verdict = "all passed" if failed == 0 else f"{failed} FAILED"
    print(f"\n{total} gradient{'s' * (total != 1)} checked, {verdict} (tolerance {tol:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
