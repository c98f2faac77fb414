"""Transposed convolution: the backward pass of a convolution, run forward.

Notation
--------
N  : batch size              C  : input channels       O  : output channels
H, W   : input height, width     KH, KW : kernel height, width
SH, SW : strides                 OH, OW : output height, width
P  : padding (cropped from every side of the output)
A  : output_padding (extra rows/columns at the bottom/right)

A transposed convolution ("deconvolution", a learned upsampling) is
exactly the **backward** of a convolution with respect to its input. Each
input pixel scatters a copy of the kernel, scaled by its value, onto the
output; the copies of neighbouring pixels land SH rows apart and overlap
where the kernel is larger than the stride::

    y[n, o, i*SH + p - P, j*SW + q - P] += x[n, c, i, j] * W[c, o, p, q]
    y[n, o, :, :]                       += b[o]

    OH = (H - 1)*SH - 2*P + KH + A        OW = (W - 1)*SW - 2*P + KW + A

(PyTorch's ``ConvTranspose2d`` follows the same formula and the same weight
layout (C, O, KH, KW).) So this file swaps the two halves of ``Conv2D``:

* **forward** is Conv2D's backward: one GEMM makes every input pixel's
  scaled kernel, ``cols = x_rows @ W_mat`` with shape (N*H*W, KH*KW*O),
  and :func:`~scratchae.layers.conv.col2im` adds each row onto its KH x KW
  window of the full output; the padding is then cropped away.
* **backward** is a convolution (Conv2D's forward): an output pixel's
  gradient flows back to every input pixel whose kernel copy touched it,
  so ``dcols = im2col(pad(dout))`` gathers each input pixel's window and
  ``dx = dcols @ W_mat.T``, ``dW = x_rows.T @ dcols``.

Where the kernel size is not a multiple of the stride (3 with stride 2),
some output pixels are covered by more kernel copies than their neighbours
(with a 3x3 kernel and stride 2, 2 x 2, 2 x 1 or 1 x 1 copies, by the
parity of the row and column): the uneven overlap paints a periodic "checkerboard"
pattern, even on a blank input
(Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts",
Distill 2016). :mod:`scratchae.checkerboard` measures it.

"""

import numpy as np

from .. import backend
from ..validate import float_dtype, int_pair, non_negative_int, positive_int
from .base import Layer, glorot_uniform, make_rng
from .conv import col2im, im2col, pad2d


def _output_padding(value, stride, owner):
    """Turn an int or a pair into ``(AH, AW)`` with ``0 <= A < stride``."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        a = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        a = ()
    if len(a) != 2 or min(a) < 0:
        raise ValueError(
            f"{owner}: output_padding must be a non-negative int or a pair of them, got {value!r}"
        )
    if a[0] >= stride[0] or a[1] >= stride[1]:
        # With A >= SH the full output would hold more than H windows: it would
        # no longer be the padded input of a convolution giving back H x W.
        # (PyTorch has the same rule.)
        raise ValueError(f"{owner}: output_padding {a} must be smaller than the stride {stride}")
    return a


class ConvTranspose2D(Layer):
    """Transposed 2-D convolution with a bias: col2im forward, im2col backward.

    Parameters
    ----------
    in_channels, out_channels : int
        C and O.
    kernel_size : int or (int, int)
        (KH, KW); non-square kernels are fine.
    stride : int or (int, int), default 1
        (SH, SW): the upsampling factor.
    padding : int, default 0
        P, cropped from every side of the full output, as in PyTorch's
        ``ConvTranspose2d``: ``OH = (H - 1)*SH - 2*P + KH + AH``.
    output_padding : int or (int, int), default 0
        (AH, AW), each smaller than the stride: extra rows/columns kept at
        the bottom/right, to pick among the output sizes that a stride-SH
        convolution would map back to the same H (e.g. 13 -> 28, not 27).
    dtype : {numpy.float32, numpy.float64}
    seed : int, optional
        Seed of the Glorot-uniform initialisation (ignored if ``rng`` is given).
    rng : numpy.random.Generator, optional

    Attributes
    ----------
    params : dict
        ``"W"``: ndarray, shape (C, O, KH, KW) (PyTorch's layout: the same
        array as the ``Conv2D(O, C, ...)`` whose backward this is);
        ``"b"``: ndarray, shape (O,).

    Notes
    -----
    Glorot init with ``fan_in = C*KH*KW`` and ``fan_out = O*KH*KW``: the
    fans of the ``Conv2D(O, C, ...)`` whose backward this is, read in the
    direction the signal now flows (C channels in, O out). Glorot's limit
    ``sqrt(6 / (fan_in + fan_out))`` depends only on the sum, so swapping
    the two conventions (PyTorch computes its fans from W's axes the other
    way round) would not change the weights.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, *, dtype=np.float32, seed=None, rng=None):
        super().__init__()
        owner = "ConvTranspose2D"
        self.in_channels = positive_int(in_channels, "in_channels", owner)
        self.out_channels = positive_int(out_channels, "out_channels", owner)
        self.kernel_size = int_pair(kernel_size, "kernel_size", owner)
        self.stride = int_pair(stride, "stride", owner)
        self.padding = non_negative_int(padding, "padding", owner)
        self.output_padding = _output_padding(output_padding, self.stride, owner)
        dtype = float_dtype(dtype, owner)
        kh, kw = self.kernel_size
        rng = make_rng(seed, rng)
        self._set_params(
            W=glorot_uniform((in_channels, out_channels, kh, kw),
                             fan_in=in_channels * kh * kw, fan_out=out_channels * kh * kw,
                             rng=rng, dtype=dtype),
            b=backend.asarray(np.zeros(out_channels), dtype=dtype),
        )

    def __repr__(self):
        return (
            f"ConvTranspose2D({self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"output_padding={self.output_padding})"
        )

    def _full_shape(self, n, h, w):
        """(N, FH, FW, O): the uncropped output, channels last, FH = (H - 1)*SH + KH + AH.

        It is the padded input of the convolution this layer is the backward
        of: exactly H x W windows of KH x KW fit in it with stride SH x SW.
        """
        (kh, kw), (sh, sw), (ah, aw) = self.kernel_size, self.stride, self.output_padding
        return n, (h - 1) * sh + kh + ah, (w - 1) * sw + kw + aw, self.out_channels

    def _weight_matrix(self):
        """``W`` (C, O, KH, KW) as W_mat (C, KH*KW*O), columns in im2col's (p, q, o) order."""
        return self.params["W"].transpose(0, 2, 3, 1).reshape(self.in_channels, -1)

    def output_shape(self, input_shape):
        """(N, C, H, W) -> (N, O, OH, OW); raises ``ValueError`` for an input it cannot take."""
        self._check_images(input_shape, self.in_channels)
        n, _, h, w = input_shape
        _, fh, fw, o = self._full_shape(n, h, w)
        oh, ow = fh - 2 * self.padding, fw - 2 * self.padding
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{self!r}: input of spatial size {(h, w)} gives an empty output {(oh, ow)}: "
                f"the padding {self.padding} crops away everything"
            )
        return n, o, oh, ow

    def macs(self, input_shape):
        """Multiply-adds of ``x_rows @ W_mat``: every input pixel's kernel copy, N*H*W * C*KH*KW*O.

        The copies' parts that land in the cropped border are counted too:
        the layer computes them.
        """
        n, c, h, w = input_shape
        o = self.output_shape(input_shape)[1]
        kh, kw = self.kernel_size
        return n * h * w * c * kh * kw * o

    def forward(self, x):
        """Upsample a batch: scatter every input pixel's scaled kernel.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W)

        Returns
        -------
        y : ndarray, shape (N, O, OH, OW)
        """
        _, o, oh, ow = self.output_shape(x.shape)  # raises unless x fits this layer
        n, c, h, w = x.shape
        x_rows = x.transpose(0, 2, 3, 1).reshape(n * h * w, c)  # one row per input pixel
        # Conv2D's backward, step 1: dcols = dout @ W_mat.T. Here row (n, i, j)
        # of cols is input pixel (i, j)'s kernel copy, scaled channel by channel:
        cols = x_rows @ self._weight_matrix()                   # (N*H*W, KH*KW*O)
        # ... step 2: col2im adds each row onto its KH x KW window (stride SH x SW)
        # of the full output; overlapping windows add up.
        y_full = col2im(cols, self._full_shape(n, h, w), self.kernel_size, self.stride)
        # Crop P from every side (the padding of the convolution we are the
        # backward of), and add the bias to every pixel.
        p = self.padding
        self._cache = (x_rows, x.shape)
        y = y_full[:, p:p + oh, p:p + ow] + self.params["b"]    # (N, OH, OW, O)
        return y.transpose(0, 3, 1, 2)                          # (N, O, OH, OW), a view

    def backward(self, dout):
        """Backpropagate: a convolution of ``dout``, with this layer's kernel.

        Parameters
        ----------
        dout : ndarray, shape (N, O, OH, OW)

        Returns
        -------
        dx : ndarray, shape (N, C, H, W)
        """
        x_rows, x_shape = self._cached()
        self._check_dout(dout, self.output_shape(x_shape))
        n, c, h, w = x_shape
        p = self.padding
        # Undo the crop: the cropped border got no gradient, so pad with zeros
        # back to the full (N, FH, FW, O) output.
        d_full = pad2d(dout.transpose(0, 2, 3, 1), ((p, p), (p, p)))
        # The adjoint of col2im is im2col: row (n, i, j) gathers the KH x KW
        # window of dout that input pixel (i, j)'s kernel copy was added onto.
        dcols = im2col(d_full, self.kernel_size, self.stride)  # dL/dcols  (N*H*W, KH*KW*O)
        # cols = x_rows @ W_mat is a Dense layer on the input pixels, so:
        dW_mat = x_rows.T @ dcols  # dL/dW_mat = x_rows.T @ dcols  (C, KH*KW*O)
        kh, kw = self.kernel_size
        self.grads = {
            "W": dW_mat.reshape(c, kh, kw, -1).transpose(0, 3, 1, 2).copy(),  # (C, O, KH, KW)
            "b": dout.sum(axis=(0, 2, 3)),  # dL/db = dout summed over batch and pixels  (O,)
        }
        dx_rows = dcols @ self._weight_matrix().T  # dL/dx_rows = dcols @ W_mat.T  (N*H*W, C)
        return dx_rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)  # (N, C, H, W), a view
