"""Exercise 2: the gradient of the stable sigmoid cross-entropy.

Read docs/backprop.md (the loss: stable sigmoid cross-entropy) first, then
write ``MySigmoidCrossEntropy.backward`` below. ``forward`` is scratchae's
own, unchanged. Check your answer with::

    python -m scratchae.gradcheck --layer loss \
        --impl exercises/ex2_sigmoid_cross_entropy.py:MySigmoidCrossEntropy
"""

from scratchae.losses import SigmoidCrossEntropy


class MySigmoidCrossEntropy(SigmoidCrossEntropy):
    """The mean over all entries of ``l = max(x, 0) - x t + log(1 + exp(-|x|))``.

    ``x`` are the logits, ``t`` the targets (in [0, 1]), both of one shape,
    e.g. (N, 1, 28, 28). ``forward(logits, targets)`` returns
    ``L = l.sum() * self.weight(x)``, where ``self.weight(x)`` is
    ``1 / x.size`` (a mean), and stores ``(x, t, e)`` in ``self._cache``,
    with ``e = exp(-|x|)``, an array of x's shape.
    """

    def backward(self):
        """Return ``dL/dlogits``.

        A loss is where backpropagation starts, so there is no ``dout``.

        Returns
        -------
        dlogits : ndarray, the shape of the logits
            ``dL/dx`` for every entry of ``x``. Compute it without
            exponentiating a large positive number, so that logits of
            +-1000 give no overflow: ``scratchae.layers.sigmoid(x, e)``
            computes ``sigmoid(x)`` that way from the cached ``e``.
        """
        raise NotImplementedError("return dL/dlogits, an array of the logits' shape")
