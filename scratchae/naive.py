"""The loops a student writes first: a convolution and its gradients as explicit sums.

:class:`scratchae.layers.Conv2D` computes a convolution as pad, im2col and
one matrix product. This module computes the same function, and its
gradients, the plainest way there is: one Python loop per free index of
the sums of docs/backprop.md §3, and the sum itself over one window.
It is slow, it runs on NumPy only, and it is the reference the textbook
layer is tested against (``tests/test_naive.py``): when you derive a
convolution's backward by hand, write this first.

Notation (the table at the top of docs/backprop.md)
---------------------------------------------------
N : images in a batch           C, O : input, output channels
IH, IW : input height, width     OH, OW : output height, width
KH, KW : kernel height, width    SH, SW : strides
H', W' : the padded input's height and width, IH + top + bottom and IW + left + right

The sums, with ``x_pad`` the input with ``top`` zero rows above it,
``bottom`` below, ``left`` zero columns before and ``right`` after::

    y[n, o, i, j]  = b[o] + sum_{c, p, q} x_pad[n, c, i*SH + p, j*SW + q] * W[o, c, p, q]

    dW[o, c, p, q] = sum_{n, i, j} dout[n, o, i, j] * x_pad[n, c, i*SH + p, j*SW + q]
    db[o]          = sum_{n, i, j} dout[n, o, i, j]
    dx_pad[n, c, u, v] = sum of dout[n, o, i, j] * W[o, c, p, q]
                         over every (o, i, j, p, q) with i*SH + p = u and j*SW + q = v

and ``dx`` is ``dx_pad`` without its border (the padding is a constant,
not an input).
"""

import numpy as np

from .layers.base import conv_output_size, resolve_padding


def _pad(x, pads):
    """(N, C, IH, IW) -> (N, C, H', W'), zeros around ``x``."""
    (top, bottom), (left, right) = pads
    n, c, ih, iw = x.shape
    x_pad = np.zeros((n, c, top + ih + bottom, left + iw + right), dtype=x.dtype)
    x_pad[:, :, top:top + ih, left:left + iw] = x
    return x_pad


def conv2d_forward(x, W, b, stride=(1, 1), padding="valid"):
    """A convolution (cross-correlation) by four nested loops.

    Parameters
    ----------
    x : ndarray, shape (N, C, IH, IW)
    W : ndarray, shape (O, C, KH, KW)
    b : ndarray, shape (O,)
    stride : (int, int)
        (SH, SW).
    padding : {"same", "valid"} or int
        As :class:`~scratchae.layers.Conv2D` takes it (whose default is "same").

    Returns
    -------
    y : ndarray, shape (N, O, OH, OW)
    """
    n, c, ih, iw = x.shape
    o, _, kh, kw = W.shape
    sh, sw = stride
    pads = resolve_padding(padding, (ih, iw), (kh, kw), stride, "conv2d_forward")
    oh, ow = conv_output_size((ih, iw), (kh, kw), stride, pads)
    x_pad = _pad(x, pads)  # (N, C, H', W')
    y = np.zeros((n, o, oh, ow), dtype=x.dtype)
    for ni in range(n):
        for oi in range(o):
            for i in range(oh):
                for j in range(ow):
                    window = x_pad[ni, :, i * sh:i * sh + kh, j * sw:j * sw + kw]  # (C, KH, KW)
                    # y[n, o, i, j] = b[o] + sum over c, p, q of window * W[o]
                    y[ni, oi, i, j] = b[oi] + np.sum(window * W[oi])
    return y


def conv2d_backward(dout, x, W, stride=(1, 1), padding="valid"):
    """The gradients of :func:`conv2d_forward`, each by the loops of its own sum.

    Parameters
    ----------
    dout : ndarray, shape (N, O, OH, OW)
        dL/dy.
    x : ndarray, shape (N, C, IH, IW)
        The forward input.
    W : ndarray, shape (O, C, KH, KW)
    stride, padding
        As for :func:`conv2d_forward`.

    Returns
    -------
    dx : ndarray, shape (N, C, IH, IW)
    dW : ndarray, shape (O, C, KH, KW)
    db : ndarray, shape (O,)
    """
    n, c, ih, iw = x.shape
    o, _, kh, kw = W.shape
    sh, sw = stride
    pads = resolve_padding(padding, (ih, iw), (kh, kw), stride, "conv2d_backward")
    oh, ow = conv_output_size((ih, iw), (kh, kw), stride, pads)
    x_pad = _pad(x, pads)  # (N, C, H', W')

    # dW[o, c, p, q] = sum over n, i, j of dout[n, o, i, j] * x_pad[n, c, i*SH + p, j*SW + q]:
    # weight (o, c, p, q) met pixel (i*SH + p, j*SW + q) at every output pixel (i, j).
    dW = np.zeros_like(W)  # (O, C, KH, KW)
    for oi in range(o):
        for ci in range(c):
            for p in range(kh):
                for q in range(kw):
                    seen = x_pad[:, ci, p:p + sh * oh:sh, q:q + sw * ow:sw]  # (N, OH, OW)
                    dW[oi, ci, p, q] = np.sum(dout[:, oi] * seen)

    # db[o] = sum over n, i, j of dout[n, o, i, j]: the bias was added to every output pixel.
    db = np.zeros(o, dtype=dout.dtype)  # (O,)
    for oi in range(o):
        db[oi] = np.sum(dout[:, oi])

    # Every output pixel (n, o, i, j) read its window of x_pad through W[o]; so it sends
    # dout[n, o, i, j] * W[o] back onto that window, and a pixel in several windows gets
    # the sum: dx_pad[n, c, i*SH + p, j*SW + q] += dout[n, o, i, j] * W[o, c, p, q].
    dx_pad = np.zeros_like(x_pad)  # (N, C, H', W')
    for ni in range(n):
        for oi in range(o):
            for i in range(oh):
                for j in range(ow):
                    dx_pad[ni, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += (
                        dout[ni, oi, i, j] * W[oi])  # (C, KH, KW) onto the window

    (top, _), (left, _) = pads
    dx = dx_pad[:, :, top:top + ih, left:left + iw].copy()  # the padding gets no gradient
    return dx, dW, db


__all__ = ["conv2d_forward", "conv2d_backward"]
