"""Fast convolutions: channels-last, stride 1, im2col in reused slices, the flipped kernel.

The same function as :class:`scratchae.layers.Conv2D` (same parameter
arrays), computed differently. Every array here is **channels-last**,
(N, H, W, C), the row-major shape a GEMM produces, so no axis is ever
moved by a copy. Each trick below rests on one identity, derived in
``docs/fast.md``:

* **im2col in reused slices** (CPU only): the batch is convolved a slice
  at a time, into scratch buffers that are reused from call to call, so the
  im2col matrix (231 MB for the tutorial's 28x28x64 layer at batch 128)
  never exists whole and the slice that was just written is still in the
  CPU's cache when the GEMM reads it. On a GPU there is one slice: fewer
  kernel launches, and the memory is there.
* **multiply first when O < C** (the 64 -> 1 output layer): ``Z = x @ W``
  gives each input pixel's contribution through every tap, then KH*KW
  shifted adds; the big intermediate has KH*KW*O numbers per pixel, not
  KH*KW*C.
* **dx as a convolution with the flipped kernel** (stride 1): the input
  gradient is a 'full' convolution of dout with the kernel turned 180
  degrees and in/out channels swapped, so one im2col of dout gives both
  ``dx = dcols @ W_flip`` and ``dW_flip = x.T @ dcols``: no col2im.
* **no dx when it is not needed** (a model's first layer).

Kernels are passed as ``(KH, KW, C, O)`` arrays ("HWIO"): for a
``Conv2D`` that is ``W.transpose(2, 3, 1, 0)``, and the sub-pixel
convolution (:mod:`scratchae.fast.subpixel`) passes its 2x2 phase kernels.
"""

import math
import threading

import numpy as np

from .. import backend
from ..layers.base import conv_output_size
from ..layers.conv import window_view

#: How many numbers of an im2col matrix to build at once on the CPU (2 MB
#: of float32, one core's L2 cache here). Measured: 8 MB no slower than 4 MB,
#: faster than 16 MB; then 2 MB against 8 MB, two workers: the conv VAE's step
#: 65.3-65.4 against 71.2-71.7 ms, the conv denoiser's 141-152 against 150-155 ms
#: (five alternating runs), 1 MB and 1/2 MB no better.
CHUNK_ELEMENTS = 2**19

_WORKSPACES = threading.local()  # one set of scratch buffers per thread


def workspace(name, shape, like):
    """A scratch array of ``shape``, reused from call to call and layer to layer.

    Freshly allocated memory is slow the first time it is touched (the
    operating system maps it in page by page), so im2col matrices are
    written into these buffers instead of new arrays. One flat buffer per
    name grows to the largest size asked for. The contents are valid only
    until the next request for the same name, by any op: temporaries
    inside one call, never a cache or an output. Each thread has its own.

    Parameters
    ----------
    name : str
    shape : tuple of int
    like : ndarray
        The buffer gets its dtype and array library (NumPy or CuPy).
    """
    size = math.prod(shape)
    xp = backend.get_array_module(like)
    key = (name, np.dtype(like.dtype).str, xp.__name__)
    buffers = _WORKSPACES.__dict__.setdefault("buffers", {})
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = xp.empty(size, dtype=like.dtype)
    return buffer[:size].reshape(shape)


def batch_chunks(x, per_sample, limit=None):
    """Slices of the batch of ``x`` with at most ``limit`` (``CHUNK_ELEMENTS``) numbers each.

    One slice holding the whole batch on the GPU.

    Parameters
    ----------
    x : ndarray, shape (N, ...)
    per_sample : int
        Numbers of the im2col matrix (or other scratch) that one sample needs.
    limit : int, optional
        Default :data:`CHUNK_ELEMENTS`.
    """
    n = x.shape[0]
    if backend.get_array_module(x) is not np:
        return [slice(0, n)]
    step = max(1, (limit or CHUNK_ELEMENTS) // max(per_sample, 1))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def bias_gradient(d):
    """dL/db = the sum of the rows of ``d``, as one GEMV: ``ones @ d``.

    The same sum as ``d.sum(axis=0)``, but BLAS adds up a (N*H*W, O)
    matrix's rows 2.5-10x faster than NumPy's reduction over its first
    axis on this project's shapes (measured: 0.45 against 1.22 ms for
    50,176 x 64, 13 against 125 us for a 8,100 x 32 slice), and no less
    accurately (BLAS accumulates in blocks; NumPy adds row after row).

    Parameters
    ----------
    d : ndarray, shape (M, O), dL/dz with one row per output pixel (or sample)

    Returns
    -------
    db : ndarray, shape (O,)
    """
    xp = backend.get_array_module(d)
    return xp.ones(d.shape[0], dtype=d.dtype) @ d


def pad(x, pads, value=0.0, out=None):
    """Pad the two spatial axes of ``x`` (N, H, W, C) with ``value``.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    pads : ((top, bottom), (left, right))
    out : ndarray, shape (N, top + H + bottom, left + W + right, C), optional
        Where to write (a reused buffer); a new array by default.

    Returns
    -------
    ndarray, shape (N, top + H + bottom, left + W + right, C); ``x`` itself
    when every pad is zero.
    """
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    if out is None:
        out = xp.empty((n, top + h + bottom, left + w + right, c), dtype=x.dtype)
    out[:, :top] = value  # fill the four borders, then copy x into the middle
    out[:, top + h:] = value
    out[:, top:top + h, :left] = value
    out[:, top:top + h, left + w:] = value
    out[:, top:top + h, left:left + w] = x
    return out


def padded(x, pads):
    """:func:`pad` of ``x`` (N, H, W, C) into the thread's ``"pad"`` scratch buffer
    (valid until the next request for it); ``x`` itself when every pad is zero."""
    n, h, w, c = x.shape
    (top, bottom), (left, right) = pads
    return pad(x, pads, out=workspace("pad", (n, top + h + bottom, left + w + right, c), x))


def im2col(x, kernel, pads):
    """Pad ``x`` (N, H, W, C) and copy every KH x KW window into a row, in scratch memory.

    Returns
    -------
    cols : ndarray, shape (N*OH*OW, KH*KW*C), rows in (n, i, j) order and
        columns in (p, q, c) order; valid until the next call in this thread.
    """
    xp = backend.get_array_module(x)
    windows = window_view(padded(x, pads), kernel, (1, 1))  # (N, OH, OW, KH, KW, C): a view
    n, oh, ow, kh, kw, c = windows.shape
    cols = workspace("cols", (n * oh * ow, kh * kw * c), x)
    # The one copy: a window row (q, c) is one contiguous run of KW*C numbers.
    xp.copyto(cols.reshape(windows.shape), windows)
    return cols


def im2col_one_channel(x, kernel, pads):
    """The transpose of :func:`im2col` for a one-channel ``x``, one tap at a time.

    With one channel a window row is only KW numbers long, so :func:`im2col`
    would copy N*OH*OW*KH runs of KW numbers; here row (p, q) of the result
    is the padded image shifted by (p, q), KH*KW copies of runs of OW
    numbers (the 64 -> 1 output layer's dout: 2.2 -> 1.5 ms for its
    backward at 64 images, 32 input channels).

    Parameters
    ----------
    x : ndarray, shape (N, H, W, 1)

    Returns
    -------
    cols_t : ndarray, shape (KH*KW, N*OH*OW), ``im2col(x, kernel, pads).T``;
    valid until the next call in this thread.
    """
    n = x.shape[0]
    kh, kw = kernel
    x_pad = padded(x, pads)
    oh, ow = conv_output_size(x.shape[1:3], kernel, (1, 1), pads)
    cols_t = workspace("cols", (kh, kw, n, oh, ow), x)
    for p in range(kh):
        for q in range(kw):
            cols_t[p, q] = x_pad[:, p:p + oh, q:q + ow, 0]
    return cols_t.reshape(kh * kw, n * oh * ow)


def conv_forward(x, W4, pads):
    """``y = conv(x, W)`` at stride 1, without the bias.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), C-contiguous
    W4 : ndarray, shape (KH, KW, C, O)
    pads : ((top, bottom), (left, right)), each smaller than the kernel

    Returns
    -------
    y : ndarray, shape (N, OH, OW, O), a new C-contiguous array
    """
    xp = backend.get_array_module(x)
    kh, kw, c, o = W4.shape
    n = x.shape[0]
    oh, ow = conv_output_size(x.shape[1:3], (kh, kw), (1, 1), pads)
    if o < c:
        return _forward_multiply_first(x, W4, pads, oh, ow)
    W_mat = W4.reshape(kh * kw * c, o)
    y = xp.empty((n, oh, ow, o), dtype=x.dtype)
    for part in batch_chunks(x, oh * ow * kh * kw * c):
        cols = im2col(x[part], (kh, kw), pads)                   # (N'*OH*OW, KH*KW*C)
        xp.matmul(cols, W_mat, out=y[part].reshape(-1, o))       # the GEMM
    return y


def _forward_multiply_first(x, W4, pads, oh, ow):
    """Forward for fewer output than input channels: multiply first, move pixels second.

    ``Z = x @ W_all`` gives every input pixel's contribution through each
    tap (p, q), and output pixel (i, j) adds up tap (p, q) of input pixel
    (i + p - top, j + q - left)::

        y[n, i, j] = sum_{p, q} Z[n, i + p - top, j + q - left, p, q]
    """
    xp = backend.get_array_module(x)
    kh, kw, c, o = W4.shape
    n, h, w, _ = x.shape
    (top, _), (left, _) = pads
    W_all = W4.transpose(2, 0, 1, 3).reshape(c, kh * kw * o)    # (C, KH*KW*O)
    y = xp.zeros((n, oh, ow, o), dtype=x.dtype)
    for part in batch_chunks(x, h * w * kh * kw * o):
        z = workspace("cols", ((part.stop - part.start) * h * w, kh * kw * o), x)
        xp.matmul(x[part].reshape(-1, c), W_all, out=z)
        z = z.reshape(-1, h, w, kh, kw, o)
        for p in range(kh):
            for q in range(kw):
                # output rows i whose source row i + p - top lies in [0, H); same for columns
                i0, i1 = max(0, top - p), min(oh, h + top - p)
                j0, j1 = max(0, left - q), min(ow, w + left - q)
                y[part, i0:i1, j0:j1] += z[:, i0 + p - top:i1 + p - top,
                                           j0 + q - left:j1 + q - left, p, q]
    return y


def conv_backward(x, d, W4, pads, input_grad=True):
    """dL/dW (and dL/dx) of :func:`conv_forward`.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), the forward input
    d : ndarray, shape (N, OH, OW, O), dL/dy
    W4 : ndarray, shape (KH, KW, C, O)
    pads : ((top, bottom), (left, right)), each smaller than the kernel
    input_grad : bool
        Compute dx too.

    Returns
    -------
    dW4 : ndarray, shape (KH, KW, C, O)
    dx : ndarray, shape (N, H, W, C), or None without ``input_grad``
    """
    kh, kw, c, o = W4.shape
    if input_grad or o < c:  # one im2col of dout is the smaller or the needed one
        return _backward_flipped(x, d, W4, pads, input_grad)
    xp = backend.get_array_module(d)
    oh, ow = d.shape[1:3]
    dW_mat = xp.zeros((kh * kw * c, o), dtype=d.dtype)
    for part in batch_chunks(x, oh * ow * kh * kw * c):
        cols = im2col(x[part], (kh, kw), pads)
        dW_mat += cols.T @ d[part].reshape(-1, o)  # dL/dW_mat = cols.T @ dout
    return dW_mat.reshape(kh, kw, c, o), None


def _backward_flipped(x, d, W4, pads, input_grad):
    """dW and dx from ONE im2col, that of padded dout.

    dx is itself a convolution: each input pixel collects dout from the
    KH x KW outputs it touched, through the kernel turned by 180 degrees
    with in/out channels swapped. Padding dout by (KH-1-top, KH-1-bottom)
    rows (and likewise columns) gives it the input's size::

        dcols = im2col(pad(dout))        (N*H*W, KH*KW*O), taps in flipped order
        dL/dx = dcols @ W_flip           W_flip: (KH*KW*O, C)
        dL/dW_flip = x.T @ dcols         (C, KH*KW*O): weight W[p, q, c, o] met
                                         x[a, b, c] where dcols row (a, b) holds
                                         column (KH-1-p, KW-1-q, o)
    """
    xp = backend.get_array_module(d)
    kh, kw, c, o = W4.shape
    n, h, w, _ = x.shape
    (top, bottom), (left, right) = pads
    back_pads = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
    W_flip = W4[::-1, ::-1].transpose(0, 1, 3, 2).reshape(kh * kw * o, c)
    dW_flip = xp.zeros((kh * kw * o, c), dtype=d.dtype)
    dx = xp.empty((n, h, w, c), dtype=d.dtype) if input_grad else None
    for part in batch_chunks(x, h * w * kh * kw * o):
        if o == 1:  # the same matrix, built tap by tap (see im2col_one_channel)
            dcols = im2col_one_channel(d[part], (kh, kw), back_pads).T
        else:
            dcols = im2col(d[part], (kh, kw), back_pads)
        # = (x.T @ dcols).T, computed as the (KH*KW*O, C) product: the long
        # N*H*W axis summed over for a tall result is the faster GEMM shape
        dW_flip += dcols.T @ x[part].reshape(-1, c)
        if input_grad:
            xp.matmul(dcols, W_flip, out=dx[part].reshape(-1, c))
    # (KH, KW, O, C) with the taps turned back -> (KH, KW, C, O)
    return dW_flip.reshape(kh, kw, o, c)[::-1, ::-1].transpose(0, 1, 3, 2), dx
