"""Nearest x2 upsample + 3x3 'same' conv = a sub-pixel convolution.

The identity (derived in ``docs/fast.md``), in 1-D first: upsampling by 2
copies ``x[i]`` to positions ``2i`` and ``2i + 1``. A 3-tap convolution of
that, with taps ``W0, W1, W2``, gives

* at the even output ``2i``:   ``W0 x[i-1] + (W1 + W2) x[i]``
* at the odd output ``2i+1``:  ``(W0 + W1) x[i] + W2 x[i+1]``

so each output *phase* (even or odd) is a 2-tap convolution of the small
input, whose taps are sums of the 3x3 kernel's taps. In 2-D there are four
phases (a, b) in {0, 1}^2, each a 2x2 convolution of the small input::

    K[p, q, :, (a, b), :] = sum_{u, v} A[a, p, u] A[b, q, v] W[:, :, u, v]
    A[0] = [[1, 0, 0],      A[1] = [[1, 1, 0],
            [0, 1, 1]]              [0, 0, 1]]

Stacking the four phase kernels as 4*O output channels makes it ONE 2x2
convolution of the input padded by 1 (output (H+1) x (W+1)), whose phase
(a, b) at (i + a, j + b) is the output pixel (2i + a, 2j + b)::

    y[n, 2i + a, 2j + b, o] = Z[n, i + a, j + b, (a, b), o]

A 3x3 conv at the 2H x 2W size costs 36*C*O multiply-adds per input
pixel; the four 2x2 phases cost 16*C*O: 2.25x fewer, and the upsampled
tensor is never built. (It also shows why resize + conv cannot paint a
checkerboard: all four phases use the same taps, merely summed.)

The backward pass is the adjoint of each step, in reverse: dout is
scattered back onto the phases (``dZ``), the 2x2 convolution's backward
gives ``dK`` and ``dx`` (:func:`~scratchae.fast.conv.conv_backward`), and
each phase tap's gradient is summed back onto the 3x3 taps it was summed
from (``dW = A^T dK A``).
"""

import numpy as np

from .. import backend
from ..layers.conv import window_view
from .conv import batch_chunks, bias_gradient, conv_backward, im2col, workspace

#: A[a, p, u] = 1 when tap u of the 3x3 kernel lands on row p of the 2x2
#: phase kernel of phase a.
TAPS = np.array([[[1, 0, 0], [0, 1, 1]],
                 [[1, 1, 0], [0, 0, 1]]])

#: B[r, u] = 1 when tap u of the 3x3 kernel carries input pixel i to row
#: 2i - 1 + r of the output (r = 0..3): the 4x4 block that pixel reaches.
WINDOW_TAPS = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]])

#: The same sums as matrices, one row per tap of the new kernel and one
#: column per 3x3 tap (u, v), so that building a kernel from W, and folding
#: a gradient back onto W, are each one small GEMM:
#: PHASE_SUMS[(p, q, a, b), (u, v)] = A[a, p, u] A[b, q, v],
#: WINDOW_SUMS[(r, s), (u, v)] = B[r, u] B[s, v].
PHASE_SUMS = np.einsum("apu,bqv->pqabuv", TAPS, TAPS).reshape(16, 9)
WINDOW_SUMS = np.einsum("ru,sv->rsuv", WINDOW_TAPS, WINDOW_TAPS).reshape(16, 9)

PADS = ((1, 1), (1, 1))  # the 2x2 phase convolution reads the input padded by 1

_ON_DEVICE = {}


def _table(xp, dtype, table):
    """A constant table in ``xp`` (NumPy or CuPy) and ``dtype``, uploaded once per library."""
    key = (id(xp), np.dtype(dtype).str, id(table))
    if key not in _ON_DEVICE or _ON_DEVICE[key][0] is not xp:
        _ON_DEVICE[key] = (xp, xp.asarray(table, dtype=dtype))
    return _ON_DEVICE[key][1]


def phase_kernels(W):
    """The four 2x2 phase kernels of a 3x3 kernel, stacked as output channels.

    Parameters
    ----------
    W : ndarray, shape (O, C, 3, 3), a ``Conv2D`` weight

    Returns
    -------
    K : ndarray, shape (2, 2, C, 4*O)
        ``K[p, q, c, (a*2 + b)*O + o]``: tap (p, q) of phase (a, b)'s kernel.
    """
    xp = backend.get_array_module(W)
    o, c = W.shape[:2]
    K = W.reshape(o * c, 9) @ _table(xp, W.dtype, PHASE_SUMS).T  # (O*C, 16): the tap sums
    K = K.reshape(o, c, 2, 2, 2, 2).transpose(2, 3, 1, 4, 5, 0)  # (p, q, C, a, b, O)
    return xp.ascontiguousarray(K).reshape(2, 2, c, 4 * o)


def fold_phase_gradient(dK, out_channels):
    """The adjoint of :func:`phase_kernels`: dL/dW from dL/dK.

    Each 3x3 tap was added into several phase taps, so its gradient is the
    sum of theirs::

        dW[o, c, u, v] = sum_{a, b, p, q} A[a, p, u] A[b, q, v] dK[p, q, c, (a, b), o]

    Parameters
    ----------
    dK : ndarray, shape (2, 2, C, 4*O)
    out_channels : int
        O.

    Returns
    -------
    dW : ndarray, shape (O, C, 3, 3)
    """
    xp = backend.get_array_module(dK)
    c, o = dK.shape[2], out_channels
    dK = dK.reshape(2, 2, c, 2, 2, o).transpose(5, 2, 0, 1, 3, 4).reshape(o * c, 16)
    return (dK @ _table(xp, dK.dtype, PHASE_SUMS)).reshape(o, c, 3, 3)


def subpixel_forward(x, W, bias, relu=False):
    """Nearest x2 upsample, 3x3 'same' conv, bias (and ReLU), as four 2x2 phase convolutions.

    A slice of the batch at a time (:func:`~scratchae.fast.conv.batch_chunks`):
    im2col, one GEMM into a reused scratch ``Z``, and the phases put in
    place with the bias (and the ReLU) while that slice is still in the cache.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), C-contiguous
    W : ndarray, shape (O, C, 3, 3)
    bias : ndarray, shape (O,)
    relu : bool
        Apply a ReLU to the result, in place.

    Returns
    -------
    y : ndarray, shape (N, 2H, 2W, O), a new C-contiguous array
    """
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    o = W.shape[0]
    K = phase_kernels(W).reshape(4 * c, 4 * o)             # (2*2*C, 4*O)
    y = xp.empty((n, h, 2, w, 2, o), dtype=x.dtype)    # (N, 2H, 2W, O), rows and columns split
    for part in batch_chunks(x, (h + 1) * (w + 1) * 4 * c):
        cols = im2col(x[part], (2, 2), PADS)               # (N'*(H+1)*(W+1), 4*C)
        Z = workspace("phases", (cols.shape[0], 4 * o), x)
        xp.matmul(cols, K, out=Z)                          # the GEMM: all four phases at once
        y_part = y[part]
        xp.add(phase_view(Z.reshape(-1, h + 1, w + 1, 2, 2, o)), bias, out=y_part)
        if relu:
            xp.maximum(y_part, 0, out=y_part)
    return y.reshape(n, 2 * h, 2 * w, o)


def phase_view(Z):
    """The four phases of ``Z`` at their pixels of y, as one strided view (nothing is copied).

    Phase (a, b) of output pixel (i, j) is ``Z[n, i + a, j + b, a, b]``: in
    memory, one step of a moves one row of Z and one phase block (2*O
    numbers), one step of b one column and one O block. So all four are a
    single view in y's (N, H, 2, W, 2, O) order, and putting the phases in
    place is one pass instead of four (measured: 0.25 against 0.35 ms for 9
    images of 14x14x64).

    Parameters
    ----------
    Z : ndarray, shape (N, H + 1, W + 1, 2, 2, O), C-contiguous

    Returns
    -------
    ndarray, shape (N, H, 2, W, 2, O)
        ``view[n, i, a, j, b, o] = Z[n, i + a, j + b, a, b, o]``
    """
    xp = backend.get_array_module(Z)
    n, h1, w1, _, _, o = Z.shape
    s_n, s_i, s_j, s_a, s_b, s_o = Z.strides
    return xp.lib.stride_tricks.as_strided(
        Z, shape=(n, h1 - 1, 2, w1 - 1, 2, o),
        strides=(s_n, s_i, s_i + s_a, s_j, s_j + s_b, s_o))


def window_kernel(W):
    """The 4x4 kernel through which each input pixel's gradient collects its 4x4 block of dy.

    Parameters
    ----------
    W : ndarray, shape (O, C, 3, 3)

    Returns
    -------
    K4 : ndarray, shape (4*4*O, C)
        ``K4[(r, s, o), c] = sum_{u, v} B[r, u] B[s, v] W[o, c, u, v]``.
    """
    xp = backend.get_array_module(W)
    o, c = W.shape[:2]
    K4 = W.reshape(o * c, 9) @ _table(xp, W.dtype, WINDOW_SUMS).T  # (O*C, 16): the tap sums
    return xp.ascontiguousarray(K4.T.reshape(16, o, c)).reshape(16 * o, c)


def subpixel_backward(x, dout, W, y=None, input_grad=True, window=True):
    """dL/dW, dL/db (and dL/dx) of :func:`subpixel_forward`.

    Input pixel (u, v) became the 2x2 block (2u.., 2v..) of the upsampled
    image, which the 3x3 conv spread over the 4x4 block of rows 2u-1..2u+2
    and columns 2v-1..2v+2 of y. So dx is a 4x4 convolution **with stride 2**
    of dy padded by 1, with the kernel :func:`window_kernel`; the im2col of
    that convolution, one copy of strided windows of dy, gives dx and dW::

        dcols = im2col(pad(dy, 1), 4x4, stride 2)     (N*H*W, 4*4*O)
        dL/dx  = dcols @ K4                           (N*H*W, C)
        dL/dK4 = dcols.T @ x                          (4*4*O, C), folded back to 3x3

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), the forward input
    dout : ndarray, shape (N, 2H, 2W, O), dL/dy
    W : ndarray, shape (O, C, 3, 3)
    y : ndarray, shape (N, 2H, 2W, O), optional
        The forward output when a ReLU was applied: dL/dz = dout * (y > 0).
    input_grad : bool
    window : bool, default True
        False: the step-by-step adjoint instead (:func:`_backward_phases`),
        to measure what the stride-2 window gains (rule ``window_grad``).

    Returns
    -------
    dW : ndarray, shape (O, C, 3, 3)
    db : ndarray, shape (O,)
    dx : ndarray, shape (N, H, W, C), or None
    """
    if not window:
        return _backward_phases(x, dout, W, y, input_grad)
    xp = backend.get_array_module(dout)
    o, c = W.shape[:2]
    dK4, db, dx = window_backward(x, dout, window_kernel(W), 4, y, input_grad)
    # each 3x3 tap was added into several 4x4 taps: its gradient sums theirs,
    # dW[o, c, u, v] = sum_{r, s} B[r, u] B[s, v] dK4[(r, s, o), c]
    dW = _table(xp, dout.dtype, WINDOW_SUMS).T @ dK4.reshape(16, o * c)  # (9, O*C)
    return xp.ascontiguousarray(dW.T).reshape(o, c, 3, 3), db, dx


def window_backward(x, dout, K, size, y=None, input_grad=True):
    """The backward of an op whose input pixel (u, v) reaches the ``size`` x ``size``
    block of rows and columns from 2u-1 and 2v-1 of its output, through ``K``.

    The op's dx is then a ``size`` x ``size`` convolution with stride 2 of
    dy padded by 1, and the im2col of that convolution (one copy of
    strided windows of dy, a slice of the batch at a time) gives both
    gradients::

        dcols = im2col(pad(dy, 1), size x size, stride 2)   (N*H*W, size*size*O)
        dL/dx = dcols @ K                                   (N*H*W, C)
        dL/dK = dcols.T @ x                                 (size*size*O, C)

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), the forward input
    dout : ndarray, shape (N, 2H, 2W, O), dL/dy
    K : ndarray, shape (size*size*O, C)
    size : int
        4 for the sub-pixel convolution, 3 for the stride-2 transposed one.
    y : ndarray, shape (N, 2H, 2W, O), optional
        The forward output when a ReLU was applied: dL/dz = dout * (y > 0).
    input_grad : bool

    Returns
    -------
    dK : ndarray, shape (size*size*O, C)
    db : ndarray, shape (O,)
    dx : ndarray, shape (N, H, W, C), or None
    """
    xp = backend.get_array_module(dout)
    n, h, w, c = x.shape
    o = dout.shape[-1]
    taps = size * size
    dK = xp.zeros((taps * o, c), dtype=dout.dtype)
    db = xp.zeros(o, dtype=dout.dtype)
    dx = xp.empty((n, h, w, c), dtype=dout.dtype) if input_grad else None
    for part in batch_chunks(x, h * w * taps * o):
        d_pad = workspace("pad", (part.stop - part.start, 2 * h + 2, 2 * w + 2, o), dout)
        d_pad[:, 0] = 0  # a border of zeros, then dL/dz (dout, masked by the ReLU) inside
        d_pad[:, -1] = 0
        d_pad[:, 1:-1, 0] = 0
        d_pad[:, 1:-1, -1] = 0
        d = d_pad[:, 1:-1, 1:-1]
        if y is None:
            xp.copyto(d, dout[part])
        else:
            xp.multiply(dout[part], y[part] > 0, out=d)  # dL/dz = dout where relu passed z
        # dL/db: (O,), the sum of d's pixels; the padded buffer's rows (its border is
        # zeros) are one contiguous matrix, which a GEMV sums
        db += bias_gradient(d_pad.reshape(-1, o))
        windows = window_view(d_pad, (size, size), (2, 2))  # (N', H, W, size, size, O): a view
        dcols = workspace("cols", (windows.shape[0] * h * w, taps * o), dout)
        xp.copyto(dcols.reshape(windows.shape), windows)  # runs of size*O numbers
        dK += dcols.T @ x[part].reshape(-1, c)            # dL/dK = dcols.T @ x: (size*size*O, C)
        if input_grad:
            xp.matmul(dcols, K, out=dx[part].reshape(-1, c))  # dL/dx = dcols @ K: (N'*H*W, C)
    return dK, db, dx


def _backward_phases(x, dout, W, y, input_grad):
    """The adjoint of :func:`subpixel_forward` step by step: dy scattered back onto
    the phases (``dZ``, the unused border entries 0), the 2x2 convolution's
    backward, then each phase tap's gradient summed onto the 3x3 taps
    (``dW = A^T dK A``)."""
    xp = backend.get_array_module(dout)
    n, h, w, _ = x.shape
    o = W.shape[0]
    d = dout if y is None else dout * (y > 0)
    dZ = xp.zeros((n, h + 1, w + 1, 2, 2, o), dtype=d.dtype)
    d6 = d.reshape(n, h, 2, w, 2, o)
    for a in range(2):
        for b in range(2):
            dZ[:, a:a + h, b:b + w, a, b] = d6[:, :, a, :, b]
    dK, dx = conv_backward(x, dZ.reshape(n, h + 1, w + 1, 4 * o), phase_kernels(W), PADS,
                           input_grad)
    return fold_phase_gradient(dK, o), bias_gradient(d.reshape(-1, o)), dx
