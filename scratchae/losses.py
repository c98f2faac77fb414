"""Sigmoid cross-entropy from logits, written to be numerically stable."""

import numpy as np

from . import backend
from .layers.activations import sigmoid


class SigmoidCrossEntropy:
    """Mean binary cross-entropy between ``sigmoid(logits)`` and ``targets``.

    Per element, with ``p = sigmoid(x)``::

        l = -(t log p + (1 - t) log(1 - p))
          = max(x, 0) - x t + log(1 + exp(-|x|))

    The second form never exponentiates a positive number, so it is finite
    for logits of any size (try +-1000), and it needs no ``clip(p, eps)``.
    Its derivative is simply ``dl/dx = sigmoid(x) - t``.
    """

    def __init__(self):
        self._cache = None

    def __call__(self, logits, targets):
        return self.forward(logits, targets)

    def forward(self, logits, targets):
        """Return the mean loss over all elements.

        Parameters
        ----------
        logits : ndarray, any shape, e.g. (N, 1, 28, 28)
        targets : ndarray, same shape as ``logits``, values in [0, 1]

        Returns
        -------
        loss : 0-d ndarray
            Stays on the device (call ``float()`` to read it), so a GPU
            training loop need not wait for it.
        """
        if tuple(logits.shape) != tuple(targets.shape):
            raise ValueError(
                f"SigmoidCrossEntropy: logits and targets must have the same shape, "
                f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
            )
        xp = backend.get_array_module(logits)
        x, t = logits, targets
        loss = xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
        self._cache = (x, t)
        return loss.mean()

    def backward(self):
        """Return ``dL/dlogits = (sigmoid(logits) - targets) / size``, shape of ``logits``."""
        if self._cache is None:
            raise RuntimeError("SigmoidCrossEntropy: backward() called before forward()")
        x, t = self._cache
        # a NumPy scalar of x's dtype: keeps float32 and works on CuPy arrays too
        return (sigmoid(x) - t) * x.dtype.type(1.0 / x.size)
