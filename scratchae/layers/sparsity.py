"""Penalties that make an autoencoder sparse: KL sparsity, L1 activity, L2 weight decay.

The sparse autoencoder of Stanford's UFLDL tutorial minimises, for a batch
of N images x_n with reconstructions x^_n and hidden activations
``a_nj = sigmoid(...)``, j = 1..H::

    J = (1/N) sum_n reconstruction(x^_n, x_n)        what the loss computes
      + beta * sum_j KL(rho || rho_hat_j)             KLSparsity
      + (lambda / 2) * sum over weight matrices W^2   WeightDecay

with ``rho_hat_j = (1/N) sum_n a_nj``, the mean activation of hidden unit j
over the batch. The Keras blog's variant replaces the KL term by
``weight * (1/N) sum_nj |a_nj|`` (L1Activity).

The two activity penalties are *identity layers*, placed right after the
hidden activation (the way Keras' ``activity_regularizer`` works):
``forward(a)`` returns ``a`` unchanged and records the penalty of this
batch; ``backward(dout)`` returns ``dout`` plus the penalty's gradient with
respect to ``a``. So the model's ordinary chain rule carries the penalty's
gradient down to the encoder's weights, and the loss the optimizer
minimises is ``loss + model.penalty()``.

Weight decay is not a layer (it acts on parameters, not on activations):
:class:`WeightDecay` computes the penalty and the gradient of one weight
matrix, and :class:`scratchae.sparse.SparseAutoencoder` adds them to the
loss and to the gradients.

All coefficients are taken literally: ``KLSparsity(rho, beta)`` adds exactly
``beta * sum_j KL``. scratchae's loss is a mean over pixels, UFLDL's
reconstruction term a sum over them; the model builder,
:func:`scratchae.sparse.sparse_autoencoder`, takes ``beta`` and ``lambda``
per image, as UFLDL does, and divides them by the 784 pixels for the layers.
"""

import numpy as np

from .. import backend
from ..validate import non_negative_float, probability
from .base import Layer


def kl_divergence(rho, q):
    """``KL(rho || q) = rho log(rho/q) + (1 - rho) log((1 - rho)/(1 - q))``, element-wise.

    The divergence between two coin flips with heads probabilities rho
    and q (each q strictly between 0 and 1).

    Parameters
    ----------
    rho : float in (0, 1)
    q : ndarray, any shape

    Returns
    -------
    ndarray, shape of ``q``
    """
    xp = backend.get_array_module(q)
    return rho * xp.log(rho / q) + (1 - rho) * xp.log((1 - rho) / (1 - q))


def _check_activations(layer, a):
    """Raise unless ``a`` is a floating-point (N, H) array."""
    layer._check_ndim(a, 2, "(N, H)")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{layer!r}: expected floating-point activations, got dtype {a.dtype}")


class KLSparsity(Layer):
    """KL-divergence sparsity penalty on sigmoid activations (UFLDL), as an identity layer.

    For activations ``a`` of shape (N, H), each in (0, 1)::

        rho_hat_j = (1/N) sum_n a_nj                 mean activation of unit j
        penalty   = beta * sum_j KL(rho || rho_hat_j)
        KL(p || q) = p log(p / q) + (1 - p) log((1 - p) / (1 - q))

    KL(rho || q) is the divergence between two coin flips with heads
    probabilities rho and q: 0 when q = rho, growing without bound as q
    goes to 0 or 1. It pushes every unit to be active (near 1) on only a
    fraction rho of the inputs.

    **The gradient.** The penalty depends on ``a_nj`` only through
    ``rho_hat_j``, and ``d rho_hat_j / d a_nj = 1/N``. With
    ``d/dq KL(p || q) = -p/q + (1 - p)/(1 - q)``, the chain rule gives::

        d penalty / d a_nj = beta * d KL(rho || rho_hat_j) / d rho_hat_j * d rho_hat_j / d a_nj
                           = beta * (-rho / rho_hat_j + (1 - rho) / (1 - rho_hat_j)) / N

    the same for every sample n of the batch. The layer's output is its
    input, so ``backward(dout) = dout + d penalty / d a``.

    **Stability: why rho_hat is clipped, and why that is not a hack.**
    ``rho_hat_j`` is a mean of sigmoids, each strictly between 0 and 1 in
    exact arithmetic, so ``rho_hat_j`` is too and the KL is finite. Only
    in floating point can it be 0 or 1: a float32 sigmoid rounds to exactly
    1 once its input is above ~17 (float64: ~37) and to 0 below ~-104
    (float64: ~-745), so a unit saturated on a whole batch has
    ``rho_hat_j == 1`` (or 0). There ``log(1 - rho_hat)`` is -inf, the
    derivative is inf, and the Sigmoid's backward computes
    ``inf * y (1 - y) = inf * 0 = NaN``. So ``forward`` clips ``rho_hat``
    into ``[tiny, 1 - epsneg]``, the smallest normal float and the largest
    float below 1. That changes only a mean that rounded to exactly 0 or 1
    (or into the subnormals): it replaces the float nearest to the true
    mean by the nearest float that is not 0 or 1. The penalty stays finite
    (at most ~15 per unit in float32), and so does its derivative (at most
    ``beta / N * rho / tiny``, which overflows only for ``beta / N > 4``,
    far beyond any useful weight), which the Sigmoid then multiplies by
    ``y (1 - y)``, 0 or nearly 0 there.

    The loss (:class:`~scratchae.losses.SigmoidCrossEntropy`) needs no
    ``clip(p, eps)`` because it has the logits and never forms ``log p``.
    This layer sits after the sigmoid, whose outputs have already been
    rounded, so there is nothing better to compute from; and the clip is at
    the ends of the float range, not at an ``eps`` (say 1e-7) that would
    change the penalty and flatten its gradient for every unit whose mean
    activation is merely small.

    Parameters
    ----------
    rho : float
        Target mean activation, in (0, 1) (UFLDL: 0.1).
    beta : float
        Weight of the penalty, >= 0, taken literally (0 switches it off;
        the mean activations are still recorded). No default, because
        its scale depends on the loss it is added to: UFLDL's beta = 3
        is per image (a loss summed over the pixels), so next to
        scratchae's per-pixel mean loss it is 3 / 784 (the builder
        :func:`scratchae.sparse.sparse_autoencoder` takes it per image
        and divides it).

    Attributes
    ----------
    rho_hat : ndarray, shape (H,)
        Mean activation of each unit over the last forward's batch (as
        clipped, see above).
    """

    def __init__(self, rho, beta):
        super().__init__()
        self.rho = probability(rho, "rho", "KLSparsity")
        self.beta = non_negative_float(beta, "beta", "KLSparsity")
        self.rho_hat = None
        self._penalty = None

    def __repr__(self):
        return f"KLSparsity(rho={self.rho:g}, beta={self.beta:g})"

    def forward(self, a):
        """Return ``a`` unchanged; record the penalty of this batch.

        Parameters
        ----------
        a : ndarray, shape (N, H)
            Sigmoid activations, in [0, 1].

        Returns
        -------
        a : ndarray, shape (N, H), the same array
        """
        _check_activations(self, a)
        rho_hat = self.clip_mean(a.mean(axis=0))  # (H,)
        self._penalty = self.beta * kl_divergence(self.rho, rho_hat).sum()
        self.rho_hat = rho_hat
        self._cache = (rho_hat, a.shape)
        return a

    @staticmethod
    def clip_mean(rho_hat):
        """Mean activations (H,) with any that rounded to exactly 0 or 1 moved inside (0, 1).

        A mean of sigmoids is never exactly 0 or 1 in exact arithmetic, only
        in floating point (saturated units): such a mean goes to the nearest
        float that is not 0 or 1, so log and 1/q stay finite (class docstring).
        """
        info = np.finfo(rho_hat.dtype)
        return backend.get_array_module(rho_hat).clip(rho_hat, info.tiny, 1 - info.epsneg)

    def backward(self, dout):
        """dout : ndarray, shape (N, H) -> dout + d penalty / d a, shape (N, H)."""
        rho_hat, shape = self._cached()
        self._check_dout(dout, shape)
        rho, n = self.rho, shape[0]
        scale = dout.dtype.type(self.beta / n)  # keeps float32 float32
        # d penalty / d a_nj = beta * dKL/d rho_hat_j * d rho_hat_j / d a_nj
        #                    = beta * (-rho / rho_hat_j + (1 - rho) / (1 - rho_hat_j)) / N
        dpenalty = scale * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))  # (H,), same for every n
        return dout + dpenalty  # dL/da = dout + d penalty / d a   (N, H), broadcast over n

    def penalty(self):
        """The penalty of the last forward, ``beta * sum_j KL(rho || rho_hat_j)``: a 0-d array."""
        if self._penalty is None:
            raise RuntimeError(f"{self!r}: penalty() called before forward()")
        return self._penalty


class L1Activity(Layer):
    """L1 penalty on activations (the Keras blog's sparse autoencoder), as an identity layer.

    For activations ``a`` of shape (N, H)::

        penalty = weight * (1/N) sum_nj |a_nj|
        d penalty / d a_nj = weight * sign(a_nj) / N     (0 at a_nj = 0)

    At ``a = 0`` ``|a|`` has no derivative; we use the subgradient 0
    (``sign(0) = 0``), as NumPy and every framework do.

    **Averaged over the batch.** The penalty is a sum over units and a
    *mean* over samples, like the loss, so its weight does not depend on
    the batch size. That is the convention of tf.keras 2 and of Keras 3
    (whose docs say an activity regularizer's value is divided by the
    batch size). The Keras blog's ``activity_regularizer=regularizers.l1(10e-5)``
    (note: 10e-5 is 1e-4) ran on standalone Keras 2, which *summed* over the
    batch, next to a per-pixel mean cross-entropy like scratchae's; so the
    blog's setting at its batch size of 256 is ``L1Activity(256 * 1e-4)``,
    i.e. ``weight=0.0256``, here.

    Parameters
    ----------
    weight : float
        Weight of the penalty, >= 0.

    Attributes
    ----------
    rho_hat : ndarray, shape (H,)
        Mean activation of each unit over the last forward's batch.
    """

    def __init__(self, weight):
        super().__init__()
        self.weight = non_negative_float(weight, "weight", "L1Activity")
        self.rho_hat = None
        self._penalty = None

    def __repr__(self):
        return f"L1Activity(weight={self.weight:g})"

    def forward(self, a):
        """Return ``a`` unchanged; record the penalty of this batch.

        Parameters
        ----------
        a : ndarray, shape (N, H)

        Returns
        -------
        a : ndarray, shape (N, H), the same array
        """
        _check_activations(self, a)
        xp = backend.get_array_module(a)
        n = a.shape[0]
        self._penalty = self.weight * xp.abs(a).sum() / n
        self.rho_hat = a.mean(axis=0)
        self._cache = a
        return a

    def backward(self, dout):
        """dout : ndarray, shape (N, H) -> dout + d penalty / d a, shape (N, H)."""
        a = self._cached()
        self._check_dout(dout, a.shape)
        xp = backend.get_array_module(a)
        scale = dout.dtype.type(self.weight / a.shape[0])  # keeps float32 float32
        return dout + scale * xp.sign(a)  # dL/da = dout + weight * sign(a) / N   (N, H)

    def penalty(self):
        """The penalty of the last forward, ``weight * sum |a| / N``: a 0-d array."""
        if self._penalty is None:
            raise RuntimeError(f"{self!r}: penalty() called before forward()")
        return self._penalty


class WeightDecay:
    """L2 weight decay ``(lam / 2) * sum W^2`` on one weight matrix.

    ``d/dW (lam/2) sum W^2 = lam * W``: gradient descent on it shrinks every
    weight by the factor ``(1 - lr * lam)``, hence the name. Only weight
    matrices are decayed, never biases (a bias shifts a unit, it does not
    scale its input, and UFLDL leaves it free).

    Parameters
    ----------
    lam : float
        lambda, >= 0.
    """

    def __init__(self, lam):
        self.lam = non_negative_float(lam, "lam", "WeightDecay")

    def __repr__(self):
        return f"WeightDecay(lam={self.lam:g})"

    def penalty(self, W):
        """W : ndarray, any shape -> ``(lam / 2) * sum W^2``, a 0-d array of W's dtype."""
        return W.dtype.type(self.lam / 2) * (W * W).sum()

    def gradient(self, W):
        """W : ndarray, any shape -> ``d penalty / dW``, shape of W."""
        return W.dtype.type(self.lam) * W  # d/dW (lam/2) W^2 = lam * W
