"""Tied weights: a decoder that reuses an encoder ``Dense``'s ``W``, transposed.

A tied autoencoder (the stacked denoising autoencoder's building block) has
one weight matrix, used twice::

    h = sigmoid(x @ W + b)        encoder: Dense(D, M), W of shape (D, M)
    y = h @ W.T + c               decoder: TiedDense(encoder), its own bias c (D,)

``TiedDense`` holds the *same* array ``W`` in its ``params`` (not a copy),
and its ``grads["W"]`` is the gradient of its own use only. The loss depends
on ``W`` through both uses, so by the chain rule ``dL/dW`` is the sum of the
two gradients; the container that holds both layers adds them
(:class:`scratchae.models.Sequential` finds the shared array and sums its
gradients), so the optimizer updates ``W`` once, with the sum, and a
checkpoint stores it once.
"""

from .. import backend
from .base import Layer
from .dense import Dense


class TiedDense(Layer):
    """``y = x @ W.T + b``, with ``W`` the weight array of an encoder :class:`Dense`.

    Parameters
    ----------
    encoder : Dense
        The layer whose ``W`` (D, M) is shared; this layer maps M -> D.

    Attributes
    ----------
    params : dict
        ``"W"``: the encoder's array itself, shape (D, M) (shared, not
        copied); ``"b"``: this layer's own bias, shape (D,).
    grads : dict
        ``"W"``: this use's part of dL/dW only, (D, M); ``"b"``: dL/db, (D,).
    """

    def __init__(self, encoder):
        super().__init__()
        if not isinstance(encoder, Dense):
            raise TypeError(f"TiedDense: expected the encoder Dense layer whose W it shares, "
                            f"got {encoder!r}")
        self.encoder = encoder
        W = encoder.params["W"]
        xp = backend.get_array_module(W)
        self.in_features, self.out_features = encoder.out_features, encoder.in_features
        self._set_params(W=W, b=xp.zeros(self.out_features, dtype=W.dtype))

    def __repr__(self):
        return f"TiedDense({self.in_features}, {self.out_features}, tied to {self.encoder!r})"

    def output_shape(self, input_shape):
        """(N, M) -> (N, D); raises ``ValueError`` for any other input shape."""
        self._check_rows(input_shape, self.in_features)
        return (input_shape[0], self.out_features)

    def macs(self, input_shape):
        """Multiply-adds of ``x @ W.T``: N * M * D."""
        n, _ = self.output_shape(input_shape)
        return n * self.in_features * self.out_features

    def forward(self, x):
        """Compute ``x @ W.T + b``.

        Parameters
        ----------
        x : ndarray, shape (N, M)

        Returns
        -------
        y : ndarray, shape (N, D)
        """
        self.output_shape(x.shape)  # raises unless x is (N, in_features)
        self._cache = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dout):
        """Backpropagate ``dout`` of shape (N, D); return ``dx`` of shape (N, M)."""
        x = self._cached()
        self._check_dout(dout, (x.shape[0], self.out_features))
        W = self.params["W"]
        # y_nd = sum_m x_nm W_dm + b_d, so by the chain rule (Dense's rules, with W.T for W):
        self.grads = {
            "W": dout.T @ x,  # dL/dW (this use) = dout.T @ x   (D, M)
            "b": dout.sum(axis=0),  # dL/db = sum over the batch of dout  (D,)
        }
        return dout @ W  # dL/dx = dout @ W       (N, M)
