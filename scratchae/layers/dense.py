"""Fully connected (dense) layer: ``y = x @ W + b``."""

import numpy as np

from .. import backend
from .base import Layer, check_float_dtype, glorot_uniform, make_rng


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
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Dense: {name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        dtype = check_float_dtype(dtype, "Dense")
        rng = make_rng(seed, rng)
        self._set_params(
            W=glorot_uniform((in_features, out_features), in_features, out_features, rng, dtype),
            b=backend.asarray(np.zeros(out_features), dtype=dtype),
        )

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features})"

    def output_shape(self, input_shape):
        return (input_shape[0], self.out_features)

    def forward(self, x):
        """Compute ``x @ W + b``.

        Parameters
        ----------
        x : ndarray, shape (N, D)

        Returns
        -------
        y : ndarray, shape (N, M)
        """
        self._check_ndim(x, 2, "(N, in_features)")
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"{self!r}: expected {self.in_features} input features, "
                f"got input of shape {tuple(x.shape)}"
            )
        self._cache = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout, input_grad=True):
        """Backpropagate ``dout`` of shape (N, M); return ``dx`` of shape (N, D).

        With ``input_grad=False`` only the parameter gradients are computed
        (and None is returned), as for a model's first layer.
        """
        x = self._cached()
        self._check_dout(dout, (x.shape[0], self.out_features))
        W = self.params["W"]
        # y_nm = sum_d x_nd W_dm + b_m, so by the chain rule:
        self.grads = {
            "W": x.T @ dout,  # dL/dW = x.T @ dout       (D, M)
            "b": dout.sum(axis=0),  # dL/db = sum over the batch of dout  (M,)
        }
        if not input_grad:
            return None
        return dout @ W.T  # dL/dx = dout @ W.T        (N, D)
