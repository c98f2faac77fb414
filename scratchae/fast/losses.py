"""The losses in fewer passes over memory: the same values as :mod:`scratchae.losses`.

The textbook loss makes 15 passes over its (N, 784) arrays per step (9
forward, 6 backward), almost each into a new array: for the dense
autoencoder, whose layers are small, that was a third of the step. Here
14 passes write into four arrays (``h``, kept for backward, two scratch
arrays and the gradient), thanks to two identities:

* ``max(x, 0) = (x + |x|) / 2``, so with ``h = 1 - 2t`` the per-pixel loss
  ``max(x, 0) - x t + log1p(e)`` (``e = exp(-|x|)``) is::

      (|x| + x h) / 2 + log1p(e)

  Both parts are >= 0 for every pixel (``|x| + x h`` is ``2x(1 - t)`` or
  ``-2xt``), so each is summed on its own without cancellation. (Summing
  ``|x|/2`` and ``x (1/2 - t)`` separately, two large numbers of opposite
  signs, lost 4 significant digits in float32 when the logits are
  confident: a relative error around 5e-4 on |logits| in [5, 15].) For a 0/1
  target and a logit of the right sign, ``|x| + x h`` is exactly 0, as
  ``max(x, 0) - x t`` is in the textbook;
* ``sigmoid(x) = 1/2 + tanh(x / 2) / 2``, so the gradient is::

      dL/dx = w (sigmoid(x) - t) = (w/2) (tanh(x/2) + h)

  four passes, and ``h`` is already there from the forward. ``tanh`` is
  bounded: nothing overflows for logits of any size.

``w`` is the loss's weight: 1/size for the mean, 1/N for the per-image sum.
"""

from .. import backend, losses


class _FewerPasses:
    """Forward and backward of a sigmoid cross-entropy, rewritten (see the module docstring)."""

    def forward(self, logits, targets):
        """The loss of the textbook class it is mixed into (same checks, same value)."""
        self.check(logits, targets)
        xp = backend.get_array_module(logits)
        x, one = logits, logits.dtype.type(1)
        h = xp.multiply(targets, x.dtype.type(-2))
        h += one  # h = 1 - 2t, kept for backward
        self._cache = (x, h)
        a = xp.abs(x)
        b = xp.multiply(x, h)
        b += a  # |x| + x h = 2 (max(x, 0) - x t) >= 0: summed without cancellation
        total = b.sum() * x.dtype.type(0.5)
        xp.negative(a, out=a)  # a, reused: log1p(exp(-|x|)) >= 0, summed
        xp.log1p(xp.exp(a, out=a), out=a)
        # sum of max(x, 0) - x t + log1p(exp(-|x|)), times w
        return (total + a.sum()) * self.weight(x)

    def backward(self):
        """``dL/dlogits = (w/2) (tanh(x/2) + 1 - 2t)``, shape of the logits."""
        x, h = self._cached()
        xp, half = backend.get_array_module(x), x.dtype.type(0.5)
        g = xp.multiply(x, half)
        xp.tanh(g, out=g)
        g += h
        g *= self.weight(x) * half
        return g


class SigmoidCrossEntropy(_FewerPasses, losses.SigmoidCrossEntropy):
    """:class:`scratchae.losses.SigmoidCrossEntropy` (the mean), in fewer passes."""


class BernoulliNLL(_FewerPasses, losses.BernoulliNLL):
    """:class:`scratchae.losses.BernoulliNLL` (summed per image), in fewer passes."""


def faster(loss_fn):
    """The fast version of a textbook loss (the same value and gradient), else ``loss_fn``."""
    kinds = {losses.SigmoidCrossEntropy: SigmoidCrossEntropy, losses.BernoulliNLL: BernoulliNLL}
    kind = kinds.get(type(loss_fn))
    return loss_fn if kind is None else kind(check_targets=loss_fn.check_targets)
