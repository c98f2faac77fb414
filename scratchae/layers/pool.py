"""Max pooling: keep the largest value of every window.

Notation
--------
N : batch size    C : channels    H, W : input size    OH, OW : output size
KH, KW : window size    SH, SW : strides

Forward: ``y[n, c, i, j] = max over the window at (i, j) of x``.
Backward: only the input that *won* the max influenced the output, so the
whole gradient ``dout[n, c, i, j]`` flows to that one input (the argmax)
and every other input of the window gets zero.
"""

import numpy as np

from .. import backend
from .base import Layer, pair
from .conv import (pad_channels_last, resolve_padding, to_channels_first,
                   to_channels_last, window_view)


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
        self.kernel_size = pair(kernel_size, "kernel_size", "MaxPool2D")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", "MaxPool2D")
        if padding not in ("valid", "same"):
            raise ValueError(f"MaxPool2D: padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding

    def __repr__(self):
        return (f"MaxPool2D(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r})")

    def _pads(self, h, w):
        return resolve_padding(self.padding, (h, w), self.kernel_size, self.stride, repr(self))

    def output_shape(self, input_shape):
        n, c, h, w = input_shape
        (top, bottom), (left, right) = self._pads(h, w)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (n, c, (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1)

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
        n, c, h, w = x.shape
        _, _, oh, ow = self.output_shape(x.shape)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self!r}: input of spatial size {(h, w)} is smaller than the window")
        xp = backend.get_array_module(x)
        x_pad = pad_channels_last(to_channels_last(x), self._pads(h, w), value=-np.inf)
        windows = window_view(x_pad, self.kernel_size, self.stride)  # (N, OH, OW, KH, KW, C)
        kh, kw = self.kernel_size
        # A running max over the KH*KW window offsets (4 steps for 2x2), each
        # step one vectorised comparison over the whole batch. ``arg`` records
        # which offset won; on a tie the first one keeps it (strict ">").
        y = windows[:, :, :, 0, 0, :].copy()
        # the winning offset, 0 .. KH*KW-1: one byte is enough for windows up to 16x16
        arg = xp.zeros(y.shape, dtype=np.uint8 if kh * kw <= 256 else np.int32)
        for k in range(1, kh * kw):
            candidate = windows[:, :, :, k // kw, k % kw, :]
            wins = xp.greater(candidate, y)
            xp.maximum(y, candidate, out=y)
            # arg = k where this offset wins, else unchanged. Written as
            # arithmetic because a masked copy (copyto with where=) is ~10x slower.
            arg += wins * (k - arg).astype(arg.dtype)
        self._cache = (arg, x_pad.shape, x.shape)
        return to_channels_first(y)

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
        d = to_channels_last(dout)  # (N, OH, OW, C)
        _, oh, ow, _ = d.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        _, hp, wp, _ = padded_shape
        # Do the windows tile the padded input exactly (the usual 2x2, stride 2)?
        # Then every input pixel belongs to one window and is written once.
        tiles = (sh, sw) == (kh, kw) and (oh * sh, ow * sw) == (hp, wp)
        dx_pad = xp.empty(padded_shape, dtype=d.dtype) if tiles else xp.zeros(padded_shape, dtype=d.dtype)
        for k in range(kh * kw):
            p, q = divmod(k, kw)
            slab = dx_pad[:, p : p + sh * oh : sh, q : q + sw * ow : sw, :]
            # dL/dx = dout where this offset was the argmax, 0 elsewhere.
            if tiles:
                xp.multiply(d, arg == k, out=slab)
            else:  # "+=": overlapping windows (stride < kernel) can share an input
                slab += d * (arg == k)
        _, _, h, w = x_shape
        (top, _), (left, _) = self._pads(h, w)
        return to_channels_first(dx_pad[:, top : top + h, left : left + w])
