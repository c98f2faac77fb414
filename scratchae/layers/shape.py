"""Layers that only change an array's shape: Flatten and Reshape."""

import math

from .base import Layer


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def output_shape(self, input_shape):
        """(N, d1, d2, ...) -> (N, d1 * d2 * ...); raises ``ValueError`` for a 0-D or 1-D input."""
        if len(input_shape) < 2:
            raise ValueError(f"Flatten: expected an input of at least 2-D (N, ...), "
                             f"got shape {tuple(input_shape)}")
        return (input_shape[0], math.prod(input_shape[1:]))

    def forward(self, x):
        """x : ndarray, shape (N, ...) -> y : ndarray, shape (N, prod(...))."""
        self.output_shape(x.shape)  # raises unless x has a batch axis and more
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        """dout : ndarray, shape (N, D) -> dx : ndarray, the input's shape."""
        shape = self._cached()
        self._check_dout(dout, self.output_shape(shape))
        return dout.reshape(shape)


class Reshape(Layer):
    """(N, ...) -> (N, *shape), keeping the batch axis.

    Parameters
    ----------
    shape : tuple of int
        Target shape of one sample, e.g. ``(1, 28, 28)``.
    """

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if any(s < 1 for s in self.shape):
            raise ValueError(f"Reshape: shape must hold positive ints, got {shape!r}")

    def __repr__(self):
        return f"Reshape({self.shape})"

    def output_shape(self, input_shape):
        """(N, ...) -> (N, *shape); raises ``ValueError`` unless a sample has prod(shape) values."""
        if len(input_shape) < 1 or math.prod(input_shape[1:]) != math.prod(self.shape):
            raise ValueError(
                f"{self!r}: expected an input with {math.prod(self.shape)} values per sample, "
                f"got shape {tuple(input_shape)}"
            )
        return (input_shape[0],) + self.shape

    def forward(self, x):
        """x : ndarray, shape (N, ...) -> y : ndarray, shape (N, *shape)."""
        shape = self.output_shape(x.shape)  # raises unless a sample holds prod(shape) values
        self._cache = x.shape
        return x.reshape(shape)

    def backward(self, dout):
        """dout : ndarray, shape (N, *shape) -> dx : ndarray, the input's shape."""
        shape = self._cached()
        self._check_dout(dout, self.output_shape(shape))
        return dout.reshape(shape)
