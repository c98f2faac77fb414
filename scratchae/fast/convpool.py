"""The first layer: a stride-1 convolution, then a 2x2 max-pool, and no dx.

Training never needs dL/dx for the input images (``docs/fast.md`` section 6),
so a model's first conv needs only dL/dW and dL/db. Through a max-pool,
dL/dy (y the conv's output) is zero except at each window's winner, where it
is dL/dz (z the pooled output, after the ReLU's mask). So, naming by k the
four corners of a 2x2 window::

    dL/dW = sum over pixels  window(x) dL/dy  =  sum_k  cols_k.T @ (dL/dz * [winner = k])
    dL/db = sum over pixels  dL/dy            =  sum    dL/dz

with ``cols_k`` the im2col rows of the pixels at corner k of every window
(an im2col at stride 2). The forward uses the same matrices: the conv at
corner k of every window is ``y_k = cols_k @ W``, four contiguous
(N*OH*OW, O) matrices, so the pool compares y_0..y_3 element by element
instead of reading a 28x28 image at stride 2. The full-size y, and dL/dy
with three zeros in every four numbers, are never stored: the forward
pools each slice of the batch while its four corners are still in the
cache, and keeps the pooled output, which corner won, and the four
``cols_k`` (9 numbers per conv pixel for one input channel, 1/7 of the
conv output) for the backward. For the tutorial's first layer, whose
28x28x64 output is the largest array of the model, that is two passes
over it in the forward and three in the backward that no longer happen.

A ReLU before or after the pool is the same (ReLU and max-pool commute,
section 5): it is applied to the pooled output.
"""

from .. import backend
from ..layers.base import conv_output_size
from .conv import batch_chunks, bias_gradient, padded, workspace

#: Conv outputs pooled at a time on the CPU (1 MB of float32: in the cache).
CHUNK_OUTPUTS = 2**18

#: Pooled outputs per slice of the backward (four scratch arrays of this
#: size, 2 MB in all: one core's L2 cache here).
CHUNK_BACKWARD = 2**17

CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def corner_cols(x, kernel, pads, oh, ow):
    """The im2col rows of the conv pixels at each corner of the 2x2 pool windows, transposed.

    Conv pixel (2i + a, 2j + b), corner k = (a, b) of pool window (i, j),
    reads the padded input at rows 2i + a + p and columns 2j + b + q
    through tap (p, q): for each tap and corner that is the padded input
    at stride 2 from (a + p, b + q), one strided copy of OW-long rows
    (KH*KW*4 copies in all), instead of im2col's runs of KW*C numbers
    (3, for one input channel).

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    kernel : (KH, KW)
    pads : ((top, bottom), (left, right))
    oh, ow : int
        The pooled output's size.

    Returns
    -------
    cols : ndarray, shape (KH*KW*C, 4, N*OH*OW), a new array
        ``cols[(p, q, c), k, (n, i, j)]``; ``cols[:, k].T`` is corner k's im2col matrix.
    """
    xp = backend.get_array_module(x)
    n, c = x.shape[0], x.shape[3]
    kh, kw = kernel
    x_pad = padded(x, pads)
    cols = xp.empty((kh, kw, c, 4, n, oh, ow), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            for k, (a, b) in enumerate(CORNERS):
                rows = x_pad[:, a + p:a + p + 2 * oh:2, b + q:b + q + 2 * ow:2]  # (N, OH, OW, C)
                xp.copyto(cols[p, q, :, k], rows.transpose(3, 0, 1, 2))
    return cols.reshape(kh * kw * c, 4, n * oh * ow)


def conv_pool_forward(x, W4, bias, pads, relu):
    """``z = pool(conv(x) + b)`` (then ReLU), the conv output never stored whole.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    W4 : ndarray, shape (KH, KW, C, O)
    bias : ndarray, shape (O,)
    pads : the conv's ((top, bottom), (left, right)), each smaller than the kernel
    relu : bool

    Returns
    -------
    z : ndarray, shape (N, OH // 2, OW // 2, O)
    winners : (right_top, right_bottom, lower), bool arrays of z's shape: which
        corner won, as in :class:`~scratchae.fast.ops.MaxPool`
    cols : what :func:`corner_cols` returned, for the backward
    """
    xp = backend.get_array_module(x)
    kh, kw, c, o = W4.shape
    n = x.shape[0]
    conv_h, conv_w = conv_output_size(x.shape[1:3], (kh, kw), (1, 1), pads)
    oh, ow = conv_h // 2, conv_w // 2  # a 'valid' pool drops an odd last row/column
    cols = corner_cols(x, (kh, kw), pads, oh, ow)                     # (KH*KW*C, 4, N*OH*OW)
    W_mat = W4.reshape(kh * kw * c, o)
    z = xp.empty((n * oh * ow, o), dtype=x.dtype)
    right_top, right_bottom, lower = (xp.empty((n * oh * ow, o), dtype=bool) for _ in range(3))
    for part in batch_chunks(x, 4 * oh * ow * o, CHUNK_OUTPUTS):
        rows = slice(part.start * oh * ow, part.stop * oh * ow)
        y = workspace("conv_pool", (4, rows.stop - rows.start, o), x)
        # the conv at the four corners, a slice: y[k] = cols[:, k].T @ W_mat
        xp.matmul(cols[:, :, rows].transpose(1, 2, 0), W_mat, out=y)
        y += bias
        c0, c1, c2, c3 = y
        # the winner in two rounds, first corner on a tie (as MaxPool)
        xp.greater(c1, c0, out=right_top[rows])
        xp.greater(c3, c2, out=right_bottom[rows])
        top = xp.maximum(c0, c1, out=z[rows])
        bottom = xp.maximum(c2, c3, out=c2)
        xp.greater(bottom, top, out=lower[rows])
        xp.maximum(top, bottom, out=top)
    if relu:
        xp.maximum(z, 0, out=z)
    shape = (n, oh, ow, o)
    return z.reshape(shape), tuple(a.reshape(shape) for a in (right_top, right_bottom, lower)), cols


def conv_pool_backward(cols, dz, W4, z, winners):
    """dL/dW and dL/db of :func:`conv_pool_forward` (no dx).

    Parameters
    ----------
    cols : what :func:`conv_pool_forward` returned, shape (KH*KW*C, 4, N*OH*OW)
    dz : ndarray, shape (N, OH // 2, OW // 2, O), dL/dz
    W4 : ndarray, shape (KH, KW, C, O)
    z : ndarray, z's shape, or None
        The pooled output when a ReLU was applied (dL/dz is masked by z > 0).
    winners : what :func:`conv_pool_forward` returned

    Returns
    -------
    dW4 : ndarray, shape (KH, KW, C, O)
    db : ndarray, shape (O,)
    """
    xp = backend.get_array_module(dz)
    kh, kw, c, o = W4.shape
    parts = batch_chunks(dz, dz[0].size, CHUNK_BACKWARD)
    pixels = dz.shape[1] * dz.shape[2]  # rows of the (N*OH*OW, O) matrices per image
    right_top, right_bottom, lower = (a.reshape(-1, o) for a in winners)
    dz, z = dz.reshape(-1, o), None if z is None else z.reshape(-1, o)
    dW = xp.zeros((kh * kw * c, o), dtype=dz.dtype)
    db = xp.zeros(o, dtype=dz.dtype)
    # a slice of the batch at a time, so that its four scratch arrays stay in the cache
    for part in parts:
        rows = slice(part.start * pixels, part.stop * pixels)
        shape = (rows.stop - rows.start, o)
        d = workspace("pool_d", shape, dz)
        if z is None:
            xp.copyto(d, dz[rows])
        else:
            xp.multiply(dz[rows], z[rows] > 0, out=d)      # dL/dz through the ReLU
        db += bias_gradient(d)                             # dL/db = sum of dL/dz: (O,)
        d_bottom = workspace("pool_bottom", shape, dz)
        d_top = workspace("pool_top", shape, dz)
        g = workspace("pool_corner", shape, dz)
        xp.multiply(d, lower[rows], out=d_bottom)          # dL/dz where a bottom corner won
        xp.subtract(d, d_bottom, out=d_top)                # ... a top corner
        for k, (half, flags) in enumerate(((d_top, right_top), (d_top, right_top),
                                           (d_bottom, right_bottom), (d_bottom, right_bottom))):
            xp.multiply(half, flags[rows], out=g)  # the right corner of the pair won where set
            if CORNERS[k][1] == 0:                 # ... and the left one where not (half - right)
                xp.subtract(half, g, out=g)
            dW += cols[:, k, rows] @ g             # corner k's cols.T @ dL/dy_k: (KH*KW*C, O)
    return dW.reshape(kh, kw, c, o), db
