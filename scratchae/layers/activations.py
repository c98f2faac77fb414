"""Element-wise activations: ReLU and Sigmoid."""

from .. import backend
from .base import Layer


def sigmoid(x, e=None):
    """Numerically stable logistic function ``1 / (1 + exp(-x))``.

    ``exp(-x)`` overflows for very negative x, so we only ever exponentiate
    ``-|x|`` (at most 1) and use ``sigmoid(x) = e / (1 + e)`` with
    ``e = exp(x)`` on the negative side::

        e = exp(-|x|)
        sigmoid(x) = 1 / (1 + e)   if x >= 0
                     e / (1 + e)   if x <  0

    Parameters
    ----------
    x : ndarray, any shape
    e : ndarray, shape of ``x``, optional
        ``exp(-|x|)`` if the caller has it already (the loss does).

    Returns
    -------
    ndarray, same shape and dtype as ``x``
    """
    xp = backend.get_array_module(x)
    if e is None:
        e = xp.exp(-xp.abs(x))
    return xp.where(x < 0, e, 1) / (1 + e)


class ReLU(Layer):
    """``y = max(x, 0)``, element-wise, any shape."""

    def forward(self, x):
        """x : ndarray, any shape -> y : ndarray, same shape."""
        xp = backend.get_array_module(x)
        self._cache = x > 0  # a boolean mask: all that backward needs
        return xp.maximum(x, 0)

    def backward(self, dout):
        """dout : ndarray, shape of y -> dx : ndarray, shape of x."""
        mask = self._cached()
        self._check_dout(dout, mask.shape)
        return dout * mask  # dL/dx = dout where x > 0, else 0


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``, element-wise, any shape."""

    def forward(self, x):
        """x : ndarray, any shape -> y : ndarray, same shape."""
        y = sigmoid(x)
        self._cache = y
        return y

    def backward(self, dout):
        """dout : ndarray, shape of y -> dx : ndarray, shape of x."""
        y = self._cached()
        self._check_dout(dout, y.shape)
        return dout * y * (1 - y)  # dL/dx = dout * sigmoid'(x) = dout * y (1 - y)
