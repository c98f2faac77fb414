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
from .conv import conv_backward, conv_forward

#: A[a, p, u] = 1 when tap u of the 3x3 kernel lands on row p of the 2x2
#: phase kernel of phase a.
TAPS = np.array([[[1, 0, 0], [0, 1, 1]],
                 [[1, 1, 0], [0, 0, 1]]])

PADS = ((1, 1), (1, 1))  # the 2x2 phase convolution reads the input padded by 1

_TAPS_ON_DEVICE = {}


def _taps(xp, dtype):
    """:data:`TAPS` in ``xp`` (NumPy or CuPy) and ``dtype``, uploaded once per library."""
    key = (id(xp), np.dtype(dtype).str)
    if key not in _TAPS_ON_DEVICE or _TAPS_ON_DEVICE[key][0] is not xp:
        _TAPS_ON_DEVICE[key] = (xp, xp.asarray(TAPS, dtype=dtype))
    return _TAPS_ON_DEVICE[key][1]


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
    A = _taps(xp, W.dtype)
    o, c = W.shape[:2]
    K = xp.einsum("apu,bqv,ocuv->pqcabo", A, A, W)  # (2, 2, C, 2, 2, O)
    return K.reshape(2, 2, c, 4 * o)


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
    A = _taps(xp, dK.dtype)
    c = dK.shape[2]
    return xp.einsum("apu,bqv,pqcabo->ocuv", A, A, dK.reshape(2, 2, c, 2, 2, out_channels))


def subpixel_forward(x, W, bias):
    """Nearest x2 upsample, then 3x3 'same' conv plus bias, as four 2x2 phase convolutions.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), C-contiguous
    W : ndarray, shape (O, C, 3, 3)
    bias : ndarray, shape (O,)

    Returns
    -------
    y : ndarray, shape (N, 2H, 2W, O)
    """
    xp = backend.get_array_module(x)
    n, h, w, _ = x.shape
    o = W.shape[0]
    Z = conv_forward(x, phase_kernels(W), PADS)        # (N, H+1, W+1, 4*O)
    Z = Z.reshape(n, h + 1, w + 1, 2, 2, o)
    y = xp.empty((n, h, 2, w, 2, o), dtype=x.dtype)    # (N, 2H, 2W, O), rows and columns split
    for a in range(2):
        for b in range(2):  # each phase to its pixels, the bias added on the way
            xp.add(Z[:, a:a + h, b:b + w, a, b], bias, out=y[:, :, a, :, b])
    return y.reshape(n, 2 * h, 2 * w, o)


def subpixel_backward(x, d, W, input_grad=True):
    """dL/dW (and dL/dx) of :func:`subpixel_forward`.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    d : ndarray, shape (N, 2H, 2W, O), dL/dy
    W : ndarray, shape (O, C, 3, 3)
    input_grad : bool

    Returns
    -------
    dW : ndarray, shape (O, C, 3, 3)
    dx : ndarray, shape (N, H, W, C), or None
    """
    xp = backend.get_array_module(d)
    n, h, w, _ = x.shape
    o = W.shape[0]
    # the adjoint of the phase shuffle: each output pixel's gradient goes back
    # to the one phase entry it was copied from; the unused entries get 0
    dZ = xp.zeros((n, h + 1, w + 1, 2, 2, o), dtype=d.dtype)
    d6 = d.reshape(n, h, 2, w, 2, o)
    for a in range(2):
        for b in range(2):
            dZ[:, a:a + h, b:b + w, a, b] = d6[:, :, a, :, b]
    dK, dx = conv_backward(x, dZ.reshape(n, h + 1, w + 1, 4 * o), phase_kernels(W), PADS,
                           input_grad)
    return fold_phase_gradient(dK, o), dx
