"""Exercise 4: the backward pass of Conv2D, through col2im.

Read docs/backprop.md (Conv2D, im2col, and col2im) first, then write
``MyConv2D.backward`` below. ``forward`` is scratchae's own, unchanged.
Check your answer with::

    python -m scratchae.gradcheck --layer conv2d --impl exercises/ex4_conv2d.py:MyConv2D

The checks try "same" padding, stride 2, padding 1, and a 3x2 kernel
without padding.
"""

from scratchae.layers import Conv2D


class MyConv2D(Conv2D):
    """2-D convolution by im2col and one matrix product, with your backward.

    Shapes: ``x`` (N, C, H, W), ``W`` (O, C, KH, KW), ``b`` (O,),
    ``y`` and ``dout`` (N, O, OH, OW); K = KH*KW*C.

    ``forward`` computed, channels last::

        x_pad = pad2d(x.transpose(0, 2, 3, 1), self.pads(H, W))     # (N, H', W', C)
        cols = im2col(x_pad, self.kernel_size, self.stride)          # (N*OH*OW, K)
        W_mat = W.transpose(2, 3, 1, 0).reshape(K, O)                # rows in (p, q, c) order
        y = cols @ W_mat + b                                         # (N*OH*OW, O)

    and returned ``y`` reshaped to (N, OH, OW, O) and transposed to
    (N, O, OH, OW). It stored in ``self._cache`` the tuple
    ``(cols, x_shape, padded_shape)``: ``cols`` as above, ``x_shape`` =
    (N, C, H, W), ``padded_shape`` = (N, H', W', C).

    Also useful: ``self.kernel_size`` (KH, KW), ``self.stride``,
    ``self.pads(H, W)`` = ``((top, bottom), (left, right))``, and
    ``scratchae.layers.col2im(dcols, padded_shape, kernel_size, stride)``,
    which adds each row of ``dcols`` (N*OH*OW, K) back onto its window of
    an (N, H', W', C) array.
    """

    def backward(self, dout):
        """Backpropagate ``dout`` through the convolution.

        Parameters
        ----------
        dout : ndarray, shape (N, O, OH, OW)

        Returns
        -------
        dx : ndarray, shape (N, C, H, W)

        Also set ``self.grads = {"W": dW, "b": db}``, with dW of W's shape
        (O, C, KH, KW) and db of b's shape (O,). Assign ``self.grads`` anew
        on every call, and do not change ``dout``.
        """
        raise NotImplementedError("compute dx, and self.grads = {'W': dW, 'b': db}")
