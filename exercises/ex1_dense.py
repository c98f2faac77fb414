"""Exercise 1: the backward pass of a Dense layer.

Read docs/backprop.md (Dense) first, then write ``MyDense.backward`` below.
``forward`` is scratchae's own, unchanged. Check your answer with::

    python -m scratchae.gradcheck --layer dense --impl exercises/ex1_dense.py:MyDense

It passes when every row says PASS (docs/exercises.md explains the table).
"""

from scratchae.layers import Dense


class MyDense(Dense):
    """``y = x @ W + b``, with your backward.

    Shapes: ``x`` (N, D), ``W`` (D, M), ``b`` (M,), ``y`` (N, M).
    ``forward`` stored its input ``x`` in ``self._cache``; the weights are
    ``self.params["W"]`` and ``self.params["b"]``.
    """

    def backward(self, dout):
        """Backpropagate ``dout = dL/dy`` through ``y = x @ W + b``.

        Parameters
        ----------
        dout : ndarray, shape (N, M)
            The gradient of the loss with respect to the output ``y``.

        Returns
        -------
        dx : ndarray, shape (N, D)
            ``dL/dx``.

        Also set ``self.grads = {"W": dW, "b": db}``: ``dW = dL/dW`` of shape
        (D, M), ``db = dL/db`` of shape (M,). Assign ``self.grads`` anew on
        every call (never add to the old one), and do not change ``dout``.
        """
        raise NotImplementedError("compute dx, and self.grads = {'W': dW, 'b': db}")
