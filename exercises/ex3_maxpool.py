"""Exercise 3: the backward pass of max pooling, ties included.

Read docs/backprop.md (MaxPool2D, and col2im) first, then write
``MyMaxPool2D.backward`` below. ``forward`` is scratchae's own,
unchanged. Check your answer with::

    python -m scratchae.gradcheck --layer maxpool --impl exercises/ex3_maxpool.py:MyMaxPool2D

The checks include windows that overlap (3x3 windows, stride 2) and
windows whose maximum is tied (``maxpool2d_ties``).
"""

from scratchae.layers import MaxPool2D


class MyMaxPool2D(MaxPool2D):
    """Max pooling over KH x KW windows, SH x SW apart, with your backward.

    Shapes: ``x`` (N, C, H, W), ``y`` and ``dout`` (N, C, OH, OW).
    ``forward`` padded x (with -inf, for ``padding="same"``), moved the
    channels last, and took the max of every window. It stored in
    ``self._cache`` the tuple ``(arg, padded_shape, x_shape)``:

    * ``arg``: int array, shape (N*OH*OW, C). Row ``(n, i, j)`` (in that
      order), column ``c``: which of the window's KH*KW entries won, the
      entries counted row by row (``p * KW + q`` for the entry at row p,
      column q of the window). Where several entries tie for the max,
      ``arg`` holds the first of them.
    * ``padded_shape``: (N, H', W', C), the padded, channels-last input.
    * ``x_shape``: (N, C, H, W).

    Also useful: ``self.kernel_size`` (KH, KW), ``self.stride`` (SH, SW),
    ``self.pads(H, W)`` = ``((top, bottom), (left, right))``, and
    ``scratchae.layers.col2im``, which adds window rows back onto an image.
    """

    def backward(self, dout):
        """Backpropagate ``dout`` through the max of every window.

        Parameters
        ----------
        dout : ndarray, shape (N, C, OH, OW)

        Returns
        -------
        dx : ndarray, shape (N, C, H, W)
            Each window sends its ``dout`` entry to exactly one input: the
            one ``arg`` names, also when the maximum is tied. An input that
            is the winner of several (overlapping) windows gets the sum of
            their ``dout`` entries; padding gets nothing. Do not change
            ``dout``.
        """
        raise NotImplementedError("return dx of shape (N, C, H, W)")
