"""Sigmoid cross-entropy from logits, written to be numerically stable."""

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

        Raises
        ------
        ValueError
            If the shapes differ, or (with ``check_targets``) a target is
            NaN, infinite or outside [0, 1]. Nothing is cached then.
        """
        if tuple(logits.shape) != tuple(targets.shape):
            raise ValueError(
                f"SigmoidCrossEntropy: logits and targets must have the same shape, "
                f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
            )
        if self.check_targets:
            unit_interval(targets, "SigmoidCrossEntropy: targets")
        xp = backend.get_array_module(logits)
        x, t = logits, targets
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        loss = xp.maximum(x, 0) - x * t + xp.log1p(e)
        self._cache = (x, t, e)  # backward reuses e for the sigmoid
        return loss.mean()

    def backward(self):
        """Return ``dL/dlogits = (sigmoid(logits) - targets) / size``, shape of ``logits``."""
        if self._cache is None:
            raise RuntimeError("SigmoidCrossEntropy: backward() called before forward()")
        x, t, e = self._cache
        # dL/dx = (sigmoid(x) - t) / size; the scale is a NumPy scalar of x's
        # dtype: it keeps float32 and works on CuPy arrays too
        return (sigmoid(x, e) - t) * x.dtype.type(1.0 / x.size)
