"""The first layer: a stride-1 convolution, then a 2x2 max-pool, and no dx.

Training never needs dL/dx for the input images (``docs/fast.md`` section 6),
so a model's first conv needs only dL/dW and dL/db. Through a max-pool,
dL/dy (y the conv's output) is zero except at each window's winner, where it
is dL/dz (z the pooled output, after the ReLU's mask). So, naming by k the
four corners of a 2x2 window::

    dL/dW = sum over pixels  window(x) dL/dy  =  sum_k  cols_k.T @ (dL/dz * [winner = k])
    dL/db = sum over pixels  dL/dy            =  sum    dL/dz

with ``cols_k`` the im2col rows of the pixels at corner k of every window
(an im2col at stride 2). The full-size y, and dL/dy with three zeros in
every four numbers, are never stored: the forward pools each slice of the
batch while its conv output is still in the cache, and keeps the pooled
output and which corner won. For the tutorial's first layer, whose 28x28x64
output is the largest array of the model, that is two passes over it in the
forward and three in the backward that no longer happen.

A ReLU before or after the pool is the same (ReLU and max-pool commute,
section 5): it is applied to the pooled output.
"""

from .. import backend
from ..layers.base import conv_output_size
from ..layers.conv import window_view
from .conv import batch_chunks, bias_gradient, im2col, pad, workspace

#: Conv outputs pooled at a time on the CPU (1 MB of float32: in the cache).
CHUNK_OUTPUTS = 2**18

CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


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
    """
    xp = backend.get_array_module(x)
    kh, kw, c, o = W4.shape
    n = x.shape[0]
    conv_h, conv_w = conv_output_size(x.shape[1:3], (kh, kw), (1, 1), pads)
    oh, ow = conv_h // 2, conv_w // 2  # a 'valid' pool drops an odd last row/column
    W_mat = W4.reshape(kh * kw * c, o)
    z = xp.empty((n, oh, ow, o), dtype=x.dtype)
    right_top, right_bottom, lower = (xp.empty((n, oh, ow, o), dtype=bool) for _ in range(3))
    for part in batch_chunks(x, conv_h * conv_w * o, CHUNK_OUTPUTS):
        cols = im2col(x[part], (kh, kw), pads)                        # (N'*OH*OW, KH*KW*C)
        y = workspace("conv_pool", (part.stop - part.start, conv_h, conv_w, o), x)
        xp.matmul(cols, W_mat, out=y.reshape(-1, o))                  # the conv, a slice
        y += bias
        c0, c1, c2, c3 = (y[:, p:2 * oh:2, q:2 * ow:2] for p, q in CORNERS)
        # the winner in two rounds, first corner on a tie (as MaxPool)
        xp.greater(c1, c0, out=right_top[part])
        xp.greater(c3, c2, out=right_bottom[part])
        top = xp.maximum(c0, c1, out=z[part])
        bottom = xp.maximum(c2, c3)
        xp.greater(bottom, top, out=lower[part])
        xp.maximum(top, bottom, out=top)
    if relu:
        xp.maximum(z, 0, out=z)
    return z, (right_top, right_bottom, lower)


def conv_pool_backward(x, dz, W4, pads, z, winners):
    """dL/dW and dL/db of :func:`conv_pool_forward` (no dx).

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), the forward input
    dz : ndarray, shape (N, OH // 2, OW // 2, O), dL/dz
    W4 : ndarray, shape (KH, KW, C, O)
    pads : the conv's padding
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
    n, oh, ow, _ = dz.shape
    right_top, right_bottom, lower = winners
    d = dz if z is None else dz * (z > 0)
    db = bias_gradient(d.reshape(-1, o))               # dL/db = sum of dL/dz: (O,)
    d_bottom = workspace("pool_bottom", d.shape, d)
    d_top = workspace("pool_top", d.shape, d)
    g = workspace("pool_corner", d.shape, d)
    xp.multiply(d, lower, out=d_bottom)                # dL/dz where a bottom corner won
    xp.subtract(d, d_bottom, out=d_top)                # ... a top corner
    dW = xp.zeros((kh * kw * c, o), dtype=dz.dtype)
    (top, bottom), (left, right) = pads
    h, w = x.shape[1:3]
    x_pad = pad(x, pads, out=workspace("pad", (n, top + h + bottom, left + w + right, c), x))
    windows = window_view(x_pad, (kh, kw), (1, 1))      # (N, OH, OW, KH, KW, C): a view
    for (p, q), half, flags in zip(CORNERS, (d_top, d_top, d_bottom, d_bottom),
                                   (right_top, right_top, right_bottom, right_bottom)):
        if q == 1:  # the right corner of the pair won where the flag is set ...
            xp.multiply(half, flags, out=g)
        else:       # ... and the left one where it is not (half - right, exactly)
            xp.multiply(half, flags, out=g)
            xp.subtract(half, g, out=g)
        for part in batch_chunks(x, oh * ow * kh * kw * c):
            # the windows of the pixels at corner (p, q): an im2col at stride 2
            cols = workspace("cols", (part.stop - part.start, oh, ow, kh, kw, c), x)
            xp.copyto(cols, windows[part, p:2 * oh:2, q:2 * ow:2])
            dW += cols.reshape(-1, kh * kw * c).T @ g[part].reshape(-1, o)  # (KH*KW*C, O)
    return dW.reshape(kh, kw, c, o), db
