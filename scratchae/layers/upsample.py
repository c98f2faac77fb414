"""Nearest-neighbour upsampling (resize), the decoder's alternative to a
transposed convolution.

Notation
--------
N : batch size    C : channels    H, W : input size    OH, OW : output size

Output pixel (i, j) copies input pixel (rows[i], cols[j]) with the index
rule ``src = floor(dst * in / out)``, e.g. 4 -> 7 maps rows to
0, 0, 1, 1, 2, 2, 3. Because one input pixel is copied to several outputs,
its gradient is the *sum* of their gradients.
"""

import numpy as np

from .. import backend
from ..validate import int_pair
from .base import Layer


def nearest_index(size_in, size_out, xp=np):
    """Source index of every output position: ``floor(dst * in / out)``.

    Parameters
    ----------
    size_in, size_out : int
    xp : module, default numpy
        Where to build it: ``xp.arange`` on the GPU makes it there, with
        nothing to upload.

    Returns
    -------
    ndarray of int64, shape (size_out,)
    """
    return (xp.arange(size_out) * size_in) // size_out


class Upsample2D(Layer):
    """Nearest-neighbour resize to a fixed ``size`` or by a ``scale_factor``.

    Parameters
    ----------
    size : (int, int), optional
        Output (OH, OW), whatever the input size.
    scale_factor : int or (int, int), optional
        Output ``(H * s_h, W * s_w)``. Give exactly one of ``size`` and
        ``scale_factor``.
    """

    def __init__(self, size=None, scale_factor=None):
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample2D: give exactly one of size=(H, W) and scale_factor")
        self.size = None if size is None else int_pair(size, "size", "Upsample2D")
        self.scale_factor = (None if scale_factor is None
                             else int_pair(scale_factor, "scale_factor", "Upsample2D"))

    def __repr__(self):
        if self.size is not None:
            return f"Upsample2D(size={self.size})"
        return f"Upsample2D(scale_factor={self.scale_factor})"

    def output_shape(self, input_shape):
        n, c, h, w = input_shape
        if self.size is not None:
            return (n, c) + self.size
        return (n, c, h * self.scale_factor[0], w * self.scale_factor[1])

    def forward(self, x):
        """Resize a batch.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W)

        Returns
        -------
        y : ndarray, shape (N, C, OH, OW)
        """
        self._check_images(x)
        xp = backend.get_array_module(x)
        _, _, oh, ow = self.output_shape(x.shape)
        # built with x's own library: on the GPU the indices are made there
        rows, cols = nearest_index(x.shape[2], oh, xp), nearest_index(x.shape[3], ow, xp)
        self._cache = x.shape
        # y[n, c, i, j] = x[n, c, rows[i], cols[j]]: gather rows, then columns
        return x.take(rows, axis=2).take(cols, axis=3)

    def backward(self, dout):
        """Sum the gradient of every copy back onto its source pixel.

        Parameters
        ----------
        dout : ndarray, shape (N, C, OH, OW)

        Returns
        -------
        dx : ndarray, shape (N, C, H, W)
        """
        x_shape = self._cached()
        self._check_dout(dout, self.output_shape(x_shape))
        xp = backend.get_array_module(dout)
        n, c, h, w = x_shape
        # the loops below index with plain numbers: build the rows and columns on the host
        rows, cols = nearest_index(h, dout.shape[2]), nearest_index(w, dout.shape[3])
        # dL/dx[n, c, a, b] = sum of dout[n, c, i, j] over rows[i] == a and cols[j] == b:
        # first add up the rows that are copies of one input row...
        d_rows = xp.zeros((n, c, h, dout.shape[3]), dtype=dout.dtype)
        for i, a in enumerate(rows):
            d_rows[:, :, a] += dout[:, :, i]
        # ... then the columns that are copies of one input column.
        dx = xp.zeros(x_shape, dtype=dout.dtype)
        for j, b in enumerate(cols):
            dx[:, :, :, b] += d_rows[:, :, :, j]
        return dx
