"""Fully connected (dense) layer: ``y = x @ W + b``."""

import numpy as np

from .. import backend
from ..validate import float_dtype, positive_int
from .base import Layer, glorot_uniform, make_rng


class Dense(Layer):
    """Affine layer ``y = x @ W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes D and M of the input and output vectors.
    dtype : {numpy.float32, numpy.float64}
        Parameter dtype (float64 for gradient checks).
    seed : int, optional
        Seed of the Glorot-uniform initialisation (ignored if ``rng`` is given).
    rng : numpy.random.Generator, optional
        Generator to draw the initial weights from.

    Attributes
    ----------
    params : dict
        ``"W"``: ndarray, shape (D, M); ``"b"``: ndarray, shape (M,).
    """

    def __init__(self, in_features, out_features, *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "Dense")
        self.out_features = positive_int(out_features, "out_features", "Dense")
        dtype = float_dtype(dtype, "Dense")
        rng = make_rng(seed, rng)
        self._set_params(
            W=glorot_uniform((in_features, out_features), in_features, out_features, rng, dtype),
            b=backend.asarray(np.zeros(out_features), dtype=dtype),
        )

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features})"

    def output_shape(self, input_shape):
        """(N, D) -> (N, M); raises ``ValueError`` for any other input shape."""
        self._check_rows(input_shape, self.in_features)
        return (input_shape[0], self.out_features)

    def macs(self, input_shape):
        """Multiply-adds of ``x @ W``: N * D * M."""
        n, _ = self.output_shape(input_shape)
        return n * self.in_features * self.out_features

    def forward(self, x):
        """Compute ``x @ W + b``.

        Parameters
        ----------
        x : ndarray, shape (N, D)

        Returns
        -------
        y : ndarray, shape (N, M)
        """
        self.output_shape(x.shape)  # raises unless x is (N, in_features)
        self._cache = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        """Backpropagate ``dout`` of shape (N, M); return ``dx`` of shape (N, D)."""
        x = self._cached()
        self._check_dout(dout, (x.shape[0], self.out_features))
        W = self.params["W"]
        # y_nm = sum_d x_nd W_dm + b_m, so by the chain rule:
        self.grads = {
            "W": x.T @ dout,  # dL/dW = x.T @ dout       (D, M)
            "b": dout.sum(axis=0),  # dL/db = sum over the batch of dout  (M,)
        }
        return dout @ W.T  # dL/dx = dout @ W.T        (N, D)
