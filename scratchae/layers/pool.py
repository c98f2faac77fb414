"""Max pooling: keep the largest value of every window.

Notation
--------
N : batch size    C : channels    H, W : input size    OH, OW : output size
KH, KW : window size    SH, SW : strides

Forward: ``y[n, c, i, j] = max over the window at (i, j) of x``.
Backward: only the input that *won* the max influenced the output, so the
whole gradient ``dout[n, c, i, j]`` flows to that one input (the argmax)
and every other input of the window gets zero.

Both directions reuse the convolution's im2col and col2im: every channel is
treated as a one-channel image, each window becomes a row of KH*KW values,
and the max and argmax are taken along the row.
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
        self.stride = self.kernel_size if stride is None else int_pair(stride, "stride", "MaxPool2D")
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
        n, c, h, w = input_shape
        pads = self.pads(h, w)
        return (n, c) + tuple(conv_output_size(s, k, st, p) for s, k, st, p
                              in zip((h, w), self.kernel_size, self.stride, pads))

    def forward(self, x):
        """Pool a batch.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W)

        Returns
        -------
        y : ndarray, shape (N, C, OH, OW)
        """
        self._check_images(x)
        n, c, oh, ow = self.output_shape(x.shape)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self!r}: input of spatial size {tuple(x.shape[2:])} "
                             f"is smaller than the window")
        xp = backend.get_array_module(x)
        x_pad = pad2d(x, self.pads(*x.shape[2:]), value=-np.inf)   # -inf never wins
        rows = x_pad.reshape(n * c, 1, *x_pad.shape[2:])           # each channel an image
        cols = im2col(rows, self.kernel_size, self.stride)        # (N*C*OH*OW, KH*KW)
        arg = cols.argmax(axis=1)      # the winner of every window (the first one on a tie)
        y = cols[xp.arange(len(arg)), arg]                          # (N*C*OH*OW,)
        self._cache = (arg, rows.shape, x.shape)
        return y.reshape(n, c, oh, ow)

    def backward(self, dout):
        """Route each ``dout`` entry to its window's argmax.

        Parameters
        ----------
        dout : ndarray, shape (N, C, OH, OW)

        Returns
        -------
        dx : ndarray, shape (N, C, H, W)
        """
        arg, rows_shape, x_shape = self._cached()
        self._check_dout(dout, self.output_shape(x_shape))
        xp = backend.get_array_module(dout)
        # dL/dx = dout at the argmax of each window, 0 at the other KH*KW - 1 inputs
        dcols = xp.zeros((len(arg), self.kernel_size[0] * self.kernel_size[1]), dtype=dout.dtype)
        dcols[xp.arange(len(arg)), arg] = dout.reshape(-1)
        # overlapping windows (stride < kernel) add up their shares, as in a convolution
        dx_pad = col2im(dcols, rows_shape, self.kernel_size, self.stride)
        n, c, h, w = x_shape
        (top, _), (left, _) = self.pads(h, w)
        return dx_pad.reshape(n, c, *rows_shape[2:])[:, :, top:top + h, left:left + w]
