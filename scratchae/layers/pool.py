"""Max pooling: keep the largest value of every window.

Notation
--------
N : batch size    C : channels    H, W : input size    OH, OW : output size
KH, KW : window size    SH, SW : strides

Forward: ``y[n, c, i, j] = max over the window at (i, j) of x``.
Backward: only the input that *won* the max influenced the output, so the
whole gradient ``dout[n, c, i, j]`` flows to that one input (the argmax)
and every other input of the window gets zero.

Both directions reuse the convolution's im2col and col2im (channels last):
each window becomes a row of KH*KW*C values, seen as KH*KW entries of C
channels, and the max and the argmax are taken over the KH*KW entries.
"""

import numpy as np

from .. import backend
from ..validate import int_pair
from .base import Layer, conv_output_size, resolve_padding
from .conv import col2im, im2col, pad2d


class MaxPool2D(Layer):
    """2-D max pooling.

    Parameters
    ----------
    kernel_size : int or (int, int), default 2
        Window (KH, KW).
    stride : int or (int, int), optional
        (SH, SW); defaults to ``kernel_size`` (non-overlapping windows).
    padding : {"valid", "same"}, default "valid"
        ``"same"`` follows TensorFlow: output ``ceil(H / SH)``, padded with
        ``-inf`` (which never wins the max), any odd row/column at the
        bottom/right. So a 7x7 input pooled 2x2 gives 4x4.
    """

    def __init__(self, kernel_size=2, stride=None, padding="valid"):
        super().__init__()
        self.kernel_size = int_pair(kernel_size, "kernel_size", "MaxPool2D")
        self.stride = (self.kernel_size if stride is None
                       else int_pair(stride, "stride", "MaxPool2D"))
        if padding not in ("valid", "same"):
            raise ValueError(f"MaxPool2D: padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding

    def __repr__(self):
        return (f"MaxPool2D(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r})")

    def pads(self, h, w):
        """((top, bottom), (left, right)) for an H x W input."""
        return resolve_padding(self.padding, (h, w), self.kernel_size, self.stride, repr(self))

    def output_shape(self, input_shape):
        """(N, C, H, W) -> (N, C, OH, OW); raises ``ValueError`` for an input it cannot take."""
        self._check_images(input_shape)
        n, c, h, w = input_shape
        oh, ow = conv_output_size((h, w), self.kernel_size, self.stride, self.pads(h, w))
        if oh < 1 or ow < 1:
            raise ValueError(f"{self!r}: input of spatial size {(h, w)} "
                             f"is smaller than the window")
        return n, c, oh, ow

    def forward(self, x):
        """Pool a batch.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W)

        Returns
        -------
        y : ndarray, shape (N, C, OH, OW)
        """
        n, c, oh, ow = self.output_shape(x.shape)  # raises unless x fits this layer
        kh, kw = self.kernel_size
        x_pad = pad2d(x.transpose(0, 2, 3, 1), self.pads(*x.shape[2:]), value=-np.inf)
        cols = im2col(x_pad, self.kernel_size, self.stride).reshape(-1, kh * kw, c)
        # (N*OH*OW, KH*KW, C): the KH*KW entries of every window, channel by channel;
        # -inf padding never wins
        y = cols.max(axis=1)  # (N*OH*OW, C)
        self._cache = (cols.argmax(axis=1), x_pad.shape, x.shape)  # the winners, first on a tie
        return y.reshape(n, oh, ow, c).transpose(0, 3, 1, 2)  # (N, C, OH, OW), a view

    def backward(self, dout):
        """Route each ``dout`` entry to its window's argmax.

        Parameters
        ----------
        dout : ndarray, shape (N, C, OH, OW)

        Returns
        -------
        dx : ndarray, shape (N, C, H, W)
        """
        arg, padded_shape, x_shape = self._cached()
        self._check_dout(dout, self.output_shape(x_shape))
        xp = backend.get_array_module(dout)
        kh, kw = self.kernel_size
        d = dout.transpose(0, 2, 3, 1).reshape(len(arg), 1, -1)  # (N*OH*OW, 1, C)
        # dL/dx = dout at the argmax of each window, 0 at the other KH*KW - 1 entries
        winner = xp.arange(kh * kw).reshape(1, -1, 1) == arg[:, None, :]  # (N*OH*OW, KH*KW, C)
        dcols = (winner * d).reshape(len(arg), -1)
        # overlapping windows (stride < kernel) add up their shares, as in a convolution
        dx_pad = col2im(dcols, padded_shape, self.kernel_size, self.stride)  # (N, H', W', C)
        _, _, h, w = x_shape
        (top, _), (left, _) = self.pads(h, w)
        return dx_pad[:, top:top + h, left:left + w].transpose(0, 3, 1, 2)  # (N, C, H, W)
