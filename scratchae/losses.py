"""Sigmoid cross-entropy from logits, written to be numerically stable.

One formula, two ways of adding it up:

* :class:`SigmoidCrossEntropy`: the **mean over every pixel** (what the
  tutorial's autoencoders minimise; Keras' and PyTorch's default);
* :class:`BernoulliNLL`: **summed over the pixels of each image, averaged
  over the images**, i.e. the negative log-likelihood of a Bernoulli
  decoder in nats per image, the reconstruction term of a VAE
  (:mod:`scratchae.vae`). Next to a KL term the difference matters: a mean
  over pixels divides the reconstruction by 784 and silently weighs the KL
  784 times more (``docs/vae.md``).
"""

from . import backend
from .layers.activations import sigmoid
from .validate import unit_interval


class SigmoidCrossEntropy:
    """Mean binary cross-entropy between ``sigmoid(logits)`` and ``targets``.

    Per element, with ``p = sigmoid(x)``::

        l = -(t log p + (1 - t) log(1 - p))
          = max(x, 0) - x t + log(1 + exp(-|x|))

    The second form never exponentiates a positive number, so it is finite
    for logits of any size (try +-1000), and it needs no ``clip(p, eps)``.
    Its derivative is simply ``dl/dx = sigmoid(x) - t``.

    Parameters
    ----------
    check_targets : bool, default True
        Check on every call that ``targets`` are finite and in [0, 1]
        (a pass over them, and on CuPy a wait for the GPU). A training loop
        that has checked its whole dataset once up front switches this off
        (see :class:`scratchae.train.Trainer`). The logits are never
        checked: NaN/inf logits mean training diverged, which the loop
        detects from the returned loss.
    """

    def __init__(self, check_targets=True):
        self.check_targets = bool(check_targets)
        self._cache = None

    def weight(self, x):
        """The factor the summed loss is multiplied by: 1 / (number of elements), a mean."""
        return x.dtype.type(1.0 / x.size)  # a NumPy scalar of x's dtype: keeps float32

    def __call__(self, logits, targets):
        return self.forward(logits, targets)

    def check(self, logits, targets):
        """Raise ``ValueError`` unless the shapes match and (with ``check_targets``) every
        target is finite and in [0, 1]."""
        name = type(self).__name__
        if tuple(logits.shape) != tuple(targets.shape):
            raise ValueError(
                f"{name}: logits and targets must have the same shape, "
                f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
            )
        if self.check_targets:
            unit_interval(targets, f"{name}: targets")

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        return self._cache

    def forward(self, logits, targets):
        """Return the loss, summed over all elements times :meth:`weight` (a mean here).

        Parameters
        ----------
        logits : ndarray, any shape, e.g. (N, 1, 28, 28)
        targets : ndarray, same shape as ``logits``, values in [0, 1]

        Returns
        -------
        loss : 0-d ndarray
            Stays on the device (call ``float()`` to read it), so a GPU
            training loop need not wait for it.

        Raises
        ------
        ValueError
            If the shapes differ, or (with ``check_targets``) a target is
            NaN, infinite or outside [0, 1]. Nothing is cached then.
        """
        self.check(logits, targets)
        w = self.weight(logits)
        xp = backend.get_array_module(logits)
        x, t = logits, targets
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        loss = xp.maximum(x, 0) - x * t + xp.log1p(e)
        self._cache = (x, t, e)  # backward reuses e for the sigmoid
        return loss.sum() * w

    def backward(self):
        """Return ``dL/dlogits = (sigmoid(logits) - targets) * weight``, shape of ``logits``."""
        x, t, e = self._cached()
        return (sigmoid(x, e) - t) * self.weight(x)  # dL/dx = (sigmoid(x) - t) * weight


class BernoulliNLL(SigmoidCrossEntropy):
    """Bernoulli negative log-likelihood from logits, in nats per image.

    The VAE's reconstruction term ``-log p(x|z)`` with
    ``p(x|z) = prod_i Bernoulli(t_i; sigmoid(x_i))``: the same per-pixel
    cross-entropy as :class:`SigmoidCrossEntropy`, but **summed over the
    pixels** of each image and averaged over the N images::

        L = (1/N) sum_n sum_i l_ni,      dL/dx_ni = (sigmoid(x_ni) - t_ni) / N

    MNIST's pixels are grey levels in [0, 1], not 0/1: for a grey target
    ``t`` the per-pixel minimum is the binary entropy
    ``-t log t - (1 - t) log(1 - t) > 0``, not 0, so this is a
    cross-entropy everyone calls an NLL, not a true log-likelihood.

    Parameters
    ----------
    check_targets : bool, default True
        As for :class:`SigmoidCrossEntropy`.
    """

    def weight(self, x):
        """1 / N, N = ``len(x)``: every pixel counts in full, the images are averaged."""
        if x.ndim < 2:
            raise ValueError(f"BernoulliNLL: expected a batch of images (N, ...), "
                             f"got logits of shape {tuple(x.shape)}")
        return x.dtype.type(1.0 / len(x))
