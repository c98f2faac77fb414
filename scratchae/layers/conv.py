"""2-D convolution as one matrix product: pad, im2col, GEMM; col2im back.

Notation
--------
N  : batch size              C  : input channels       O  : output channels
H, W   : input height, width     KH, KW : kernel height, width
SH, SW : strides                 OH, OW : output height, width
K  : KH * KW * C, the length of one receptive field ("patch")

Like every deep-learning library, "convolution" here means
cross-correlation (the kernel is not flipped)::

    y[n, o, i, j] = b[o] + sum_{c, p, q} x_pad[n, c, i*SH + p, j*SW + q] * W[o, c, p, q]

im2col copies every receptive field of the padded input into one row of a
matrix ``cols`` of shape (N*OH*OW, K). The whole convolution is then a
single matrix product (GEMM), the operation BLAS and cuBLAS run fastest::

    y = cols @ W_mat + b        W_mat: (K, O)

and, because that is a ``Dense`` layer applied to every row of ``cols``,
its backward is a ``Dense`` backward followed by col2im, which adds each
row of ``dcols`` back onto the window it was copied from.

Memory layout: the layers take and return NCHW arrays, but im2col works on
**channels-last** (N, H, W, C) arrays, the layout a GEMM produces: its
(N*OH*OW, O) result *is* an (N, OH, OW, O) array. So every window row is a
run of C contiguous numbers, and the output is returned as a transposed
view, never copied into NCHW order.

The price of im2col is memory: ``cols`` holds every input pixel about
KH*KW times. This file is the textbook version, written to be read; the
fast path (:mod:`scratchae.fast`) computes the same function with the
same parameters, faster.
"""

import numpy as np

from .. import backend
from ..validate import float_dtype, int_pair, positive_int
from .base import Layer, conv_output_size, glorot_uniform, make_rng, resolve_padding


def pad2d(x, pads, value=0.0):
    """Pad the two spatial axes of ``x`` (N, H, W, C) by ``((top, bottom), (left, right))``.

    Returns a new (N, H', W', C) array, or ``x`` itself when every pad is 0.
    """
    if not any(any(pair) for pair in pads):
        return x
    xp = backend.get_array_module(x)
    return xp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)


def window_view(x, kernel, stride):
    """All KH x KW windows of ``x`` as a strided view (nothing is copied).

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    kernel, stride : (int, int)

    Returns
    -------
    ndarray, shape (N, OH, OW, KH, KW, C)
        ``view[n, i, j, p, q, c] = x[n, i*SH + p, j*SW + q, c]``: moving one
        output step moves SH rows in memory, moving one kernel step moves one.
    """
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = conv_output_size((h, w), kernel, stride)
    s_n, s_h, s_w, s_c = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, oh, ow, kh, kw, c), strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))


def im2col(x, kernel, stride):
    """Copy every receptive field of ``x`` into one row of a matrix.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), channels last, already padded
    kernel, stride : (int, int)

    Returns
    -------
    cols : ndarray, shape (N*OH*OW, KH*KW*C)
        Row ``(n, i, j)`` is the window at output pixel (i, j), in (p, q, c) order.
    """
    xp = backend.get_array_module(x)
    windows = window_view(x, kernel, stride)  # (N, OH, OW, KH, KW, C), a view
    n, oh, ow, kh, kw, c = windows.shape
    # The one copy. A window row (q, c) is KW*C numbers side by side in x
    # (at stride 1), so this copies runs of pixels, not single numbers.
    return xp.ascontiguousarray(windows).reshape(n * oh * ow, kh * kw * c)


def col2im(dcols, x_shape, kernel, stride):
    """The adjoint of :func:`im2col`: add each row back onto its window.

    A pixel that sat in several windows gets the sum of their gradients.

    Parameters
    ----------
    dcols : ndarray, shape (N*OH*OW, KH*KW*C)
    x_shape : (N, H, W, C)
        Shape of the (padded, channels-last) array that :func:`im2col` read.
    kernel, stride : (int, int)

    Returns
    -------
    dx : ndarray, shape (N, H, W, C)
    """
    xp = backend.get_array_module(dcols)
    n, h, w, c = x_shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = conv_output_size((h, w), kernel, stride)
    dwin = dcols.reshape(n, oh, ow, kh, kw, c)
    dx = xp.zeros(x_shape, dtype=dcols.dtype)
    for p in range(kh):
        for q in range(kw):
            dx[:, p:p + sh * oh:sh, q:q + sw * ow:sw, :] += dwin[:, :, :, p, q, :]
    return dx


class Conv2D(Layer):
    """2-D convolution (cross-correlation) with a bias, computed by im2col + GEMM.

    Parameters
    ----------
    in_channels, out_channels : int
        C and O.
    kernel_size : int or (int, int)
        (KH, KW); non-square kernels are fine.
    stride : int or (int, int), default 1
        (SH, SW).
    padding : {"same", "valid"} or int, default "same"
        ``"same"`` follows TensorFlow (output ``ceil(H / SH)``, any odd
        padding pixel at the bottom/right); an int pads every side by that.
    dtype : {numpy.float32, numpy.float64}
    seed : int, optional
    rng : numpy.random.Generator, optional

    Attributes
    ----------
    params : dict
        ``"W"``: ndarray, shape (O, C, KH, KW); ``"b"``: ndarray, shape (O,).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="same",
                 *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels", "Conv2D")
        self.out_channels = positive_int(out_channels, "out_channels", "Conv2D")
        self.kernel_size = int_pair(kernel_size, "kernel_size", "Conv2D")
        self.stride = int_pair(stride, "stride", "Conv2D")
        resolve_padding(padding, (1, 1), self.kernel_size, self.stride, "Conv2D")  # validate now
        self.padding = padding
        dtype = float_dtype(dtype, "Conv2D")
        (kh, kw), c, o = self.kernel_size, self.in_channels, self.out_channels
        self._set_params(
            W=glorot_uniform((o, c, kh, kw), fan_in=c * kh * kw, fan_out=o * kh * kw,
                             rng=make_rng(seed, rng), dtype=dtype),
            b=backend.asarray(np.zeros(o), dtype=dtype),
        )

    def __repr__(self):
        return (
            f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r})"
        )

    def pads(self, h, w):
        """((top, bottom), (left, right)) for an H x W input."""
        return resolve_padding(self.padding, (h, w), self.kernel_size, self.stride, repr(self))

    def output_shape(self, input_shape):
        """(N, C, H, W) -> (N, O, OH, OW); raises ``ValueError`` for an input it cannot take."""
        self._check_images(input_shape, self.in_channels)
        n, _, h, w = input_shape
        oh, ow = conv_output_size((h, w), self.kernel_size, self.stride, self.pads(h, w))
        if oh < 1 or ow < 1:
            raise ValueError(f"{self!r}: input of spatial size {(h, w)} is smaller "
                             f"than the kernel {self.kernel_size} after padding")
        return n, self.out_channels, oh, ow

    def macs(self, input_shape):
        """Multiply-adds of ``cols @ W_mat``: one per weight per output pixel, N*OH*OW * K*O."""
        n, o, oh, ow = self.output_shape(input_shape)
        (kh, kw), c = self.kernel_size, self.in_channels
        return n * oh * ow * kh * kw * c * o

    def forward(self, x):
        """Convolve a batch.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W)

        Returns
        -------
        y : ndarray, shape (N, O, OH, OW)
        """
        n, o, oh, ow = self.output_shape(x.shape)  # raises unless x fits this layer
        x_pad = pad2d(x.transpose(0, 2, 3, 1), self.pads(*x.shape[2:]))  # (N, H', W', C)
        cols = im2col(x_pad, self.kernel_size, self.stride)         # (N*OH*OW, K)
        W_mat = self.params["W"].transpose(2, 3, 1, 0).reshape(-1, o)   # (K, O), rows (p, q, c)
        y = cols @ W_mat + self.params["b"]                         # (N*OH*OW, O)
        self._cache = (cols, x.shape, x_pad.shape)
        return y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)        # (N, O, OH, OW), a view

    def backward(self, dout):
        """Backpropagate through the convolution.

        Parameters
        ----------
        dout : ndarray, shape (N, O, OH, OW)

        Returns
        -------
        dx : ndarray, shape (N, C, H, W)
        """
        cols, x_shape, padded_shape = self._cached()
        self._check_dout(dout, self.output_shape(x_shape))
        (kh, kw), c, o = self.kernel_size, self.in_channels, self.out_channels
        W_mat = self.params["W"].transpose(2, 3, 1, 0).reshape(-1, o)   # (K, O), as in forward
        d = dout.transpose(0, 2, 3, 1).reshape(-1, o)                   # (N*OH*OW, O)
        # y = cols @ W_mat + b is a Dense layer on the rows of cols, so:
        dW_mat = cols.T @ d  # dL/dW_mat = cols.T @ dout   (K, O)
        self.grads = {
            "W": dW_mat.reshape(kh, kw, c, o).transpose(3, 2, 0, 1).copy(),  # as W: (O, C, KH, KW)
            "b": d.sum(axis=0),  # dL/db = dout summed over batch and pixels   (O,)
        }
        dcols = d @ W_mat.T  # dL/dcols = dout @ W_mat.T   (N*OH*OW, K)
        dx_pad = col2im(dcols, padded_shape, self.kernel_size, self.stride)  # (N, H', W', C)
        (top, _), (left, _) = self.pads(*x_shape[2:])
        dx = dx_pad[:, top:top + x_shape[2], left:left + x_shape[3]]  # padding gets no gradient
        return dx.transpose(0, 3, 1, 2)  # (N, C, H, W), a view
