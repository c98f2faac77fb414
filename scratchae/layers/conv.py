"""2-D convolution as one matrix product: im2col, GEMM, col2im.

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

The price is memory: ``cols`` holds every input pixel about KH*KW times.

Memory layout: arrays are NCHW-shaped, but a convolution's output is a
*view* of an (N, OH, OW, O) block ("channels-last", as PyTorch calls it),
because that is exactly the row-major shape the GEMM produces. Transposing
it back to NCHW is then free (a view), and the next layer's
``to_channels_last`` is free too. Nothing is copied just to move axes.
"""

import numpy as np

from .. import backend
from .base import Layer, check_float_dtype, glorot_uniform, make_rng, pair


def to_channels_last(x):
    """Return ``x`` (N, C, H, W) as a C-contiguous (N, H, W, C) array.

    Free (a view) when ``x`` is already a channels-last view, one copy otherwise.
    """
    xp = backend.get_array_module(x)
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1))


def to_channels_first(x):
    """Return a (N, H, W, C) array as an (N, C, H, W) view (no copy)."""
    return x.transpose(0, 3, 1, 2)


def same_padding(size, kernel, stride):
    """TensorFlow's 'same' rule: output ``ceil(size / stride)``.

    Returns
    -------
    (before, after) : tuple of int
        Padding at the top/left and at the bottom/right; any odd pixel goes
        after, so a 7-wide input pooled by 2 gets ``(0, 1)`` and becomes 4 wide.
    """
    out = -(-size // stride)  # ceil division
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, size, kernel, stride, owner):
    """Turn ``"same"``, ``"valid"`` or an int into ``((top, bottom), (left, right))``."""
    if isinstance(padding, str):
        if padding == "same":
            return tuple(same_padding(s, k, st) for s, k, st in zip(size, kernel, stride))
        if padding == "valid":
            return (0, 0), (0, 0)
    elif isinstance(padding, (int, np.integer)) and padding >= 0:
        return (int(padding),) * 2, (int(padding),) * 2
    raise ValueError(
        f"{owner}: padding must be 'same', 'valid' or a non-negative int, got {padding!r}"
    )


def padded_shape(shape, pads):
    """Shape (N, H, W, C) after adding ``pads = ((top, bottom), (left, right))``."""
    n, h, w, c = shape
    (top, bottom), (left, right) = pads
    return n, top + h + bottom, left + w + right, c


def pad_channels_last(x, pads, value=0.0, out=None):
    """Pad the two spatial axes of ``x`` (N, H, W, C) with ``value``.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    pads : ((top, bottom), (left, right))
    out : ndarray, shape (N, top + H + bottom, left + W + right, C), optional
        Where to write (a reused buffer); a new array by default.

    Returns
    -------
    ndarray, shape (N, top + H + bottom, left + W + right, C)
        ``x`` itself when all pads are zero.
    """
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    if out is None:
        out = xp.empty(padded_shape(x.shape, pads), dtype=x.dtype)
    # Fill only the four borders, then copy x into the middle.
    out[:, :top] = value
    out[:, top + h:] = value
    out[:, top:top + h, :left] = value
    out[:, top:top + h, left + w:] = value
    out[:, top:top + h, left:left + w] = x
    return out


def window_view(x, kernel, stride):
    """All KH x KW windows of ``x`` as a strided view (no copy).

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), C-contiguous
    kernel, stride : (int, int)

    Returns
    -------
    ndarray, shape (N, OH, OW, KH, KW, C)
        ``view[n, i, j, p, q, c] = x[n, i*SH + p, j*SW + q, c]``; moving one
        output step moves SH rows in memory, moving one kernel step moves one.
    """
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s_n, s_h, s_w, s_c = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, oh, ow, kh, kw, c), strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c)
    )


def im2col(x, kernel, stride, out=None):
    """Copy every receptive field of ``x`` into a row of a matrix.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), already padded
    kernel, stride : (int, int)
    out : ndarray, shape (N*OH*OW, KH*KW*C), optional
        Where to write (a reused buffer); a new array by default.

    Returns
    -------
    cols : ndarray, shape (N*OH*OW, KH*KW*C)
        Row ``(n, i, j)`` is the window at output pixel (i, j), in (p, q, c) order.
    """
    xp = backend.get_array_module(x)
    windows = window_view(x, kernel, stride)  # a view: nothing copied yet
    n, oh, ow, kh, kw, c = windows.shape
    if out is None:
        out = xp.empty((n * oh * ow, kh * kw * c), dtype=x.dtype)
    # The one copy. With stride 1 a window row (q, c) is one contiguous run
    # of KW*C numbers in x, so this copies long runs, not single pixels.
    xp.copyto(out.reshape(windows.shape), windows)
    return out


def col2im(dcols, padded_shape, kernel, stride):
    """The adjoint of :func:`im2col`: add each row back onto its window.

    Every input pixel that appeared in several windows receives the sum of
    their gradients. We loop over the KH*KW kernel offsets (9 for 3x3), not
    over pixels: each step adds one strided slab of the whole batch.

    Parameters
    ----------
    dcols : ndarray, shape (N*OH*OW, KH*KW*C)
    padded_shape : (N, H, W, C)
        Shape of the padded input that :func:`im2col` read.
    kernel, stride : (int, int)

    Returns
    -------
    dx : ndarray, shape (N, H, W, C)
    """
    xp = backend.get_array_module(dcols)
    n, h, w, c = padded_shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    dwin = dcols.reshape(n, oh, ow, kh, kw, c)
    dx = xp.zeros(padded_shape, dtype=dcols.dtype)
    for p in range(kh):
        for q in range(kw):
            dx[:, p : p + sh * oh : sh, q : q + sw * ow : sw, :] += dwin[:, :, :, p, q, :]
    return dx


#: How many numbers of an im2col matrix to build at once (8 MB of float32).
#: A convolution walks through the batch in slices this size: the same
#: GEMMs, split by rows, so the big matrix never exists in full (for the
#: tutorial's 28x28x64 layer at batch 128 it would take 231 MB). A slice
#: that was just written is still in the CPU's cache when the GEMM reads
#: it; 8 MB measured faster than 16 MB and no slower than 4 MB.
CHUNK_ELEMENTS = 2**21


def batch_chunks(n, per_sample):
    """Split a batch of ``n`` into slices of at most ``CHUNK_ELEMENTS // per_sample`` samples.

    Parameters
    ----------
    n : int
        Batch size N.
    per_sample : int
        Numbers of the im2col matrix that one sample needs.

    Returns
    -------
    list of slice
    """
    step = max(1, CHUNK_ELEMENTS // max(per_sample, 1))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


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
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Conv2D: {name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2D")
        self.stride = pair(stride, "stride", "Conv2D")
        resolve_padding(padding, (1, 1), self.kernel_size, self.stride, "Conv2D")  # validate now
        self.padding = padding
        dtype = check_float_dtype(dtype, "Conv2D")
        kh, kw = self.kernel_size
        rng = make_rng(seed, rng)
        self._set_params(
            W=glorot_uniform((out_channels, in_channels, kh, kw),
                             fan_in=in_channels * kh * kw, fan_out=out_channels * kh * kw,
                             rng=rng, dtype=dtype),
            b=backend.asarray(np.zeros(out_channels), dtype=dtype),
        )

    def __repr__(self):
        return (
            f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r})"
        )

    def _pads(self, h, w):
        return resolve_padding(self.padding, (h, w), self.kernel_size, self.stride, repr(self))

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        (top, bottom), (left, right) = self._pads(h, w)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (n, self.out_channels,
                (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1)

    def _weight_matrix(self):
        """``W`` (O, C, KH, KW) as W_mat (KH*KW*C, O), rows in im2col's (p, q, c) order."""
        return self.params["W"].transpose(2, 3, 1, 0).reshape(-1, self.out_channels)

    def _flipped_weight_matrix(self):
        """``W`` rotated by 180 degrees with in/out swapped: (KH*KW*O, C), rows in (p, q, o) order."""
        return self.params["W"][:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(-1, self.in_channels)

    def _im2col(self, x, pads, stride):
        """Pad ``x`` (N', H, W, C) and im2col it, both into shared scratch memory.

        Returns
        -------
        cols : ndarray, shape (N'*OH*OW, KH*KW*C), valid until the next call
        """
        (kh, kw), (sh, sw) = self.kernel_size, stride
        x_pad = pad_channels_last(x, pads, out=self._workspace("pad", padded_shape(x.shape, pads), x))
        n, hp, wp, c = x_pad.shape
        rows = n * ((hp - kh) // sh + 1) * ((wp - kw) // sw + 1)
        return im2col(x_pad, self.kernel_size, stride, out=self._workspace("cols", (rows, kh * kw * c), x))

    def _stride_one(self, pads):
        """Stride 1 and padding smaller than the kernel: dx is then a plain
        convolution of dout (see backward), and the tricks below apply."""
        (top, bottom), (left, right) = pads
        kh, kw = self.kernel_size
        return self.stride == (1, 1) and max(top, bottom) < kh and max(left, right) < kw

    def forward(self, x):
        """Convolve a batch.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W)

        Returns
        -------
        y : ndarray, shape (N, O, OH, OW)
            A view of channels-last memory (see the module docstring).
        """
        self._check_images(x, self.in_channels)
        n, c, h, w = x.shape
        _, o, oh, ow = self.output_shape(x.shape)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{self!r}: input of spatial size {(h, w)} is smaller than the kernel "
                f"{self.kernel_size} after padding"
            )
        xp = backend.get_array_module(x)
        (kh, kw), pads = self.kernel_size, self._pads(h, w)
        x_cl = to_channels_last(x)
        if self._stride_one(pads) and o < c:
            y = self._forward_small_output(x_cl, pads, oh, ow)
        else:
            W_mat = self._weight_matrix()
            y = xp.empty((n, oh, ow, o), dtype=x.dtype)
            for batch in batch_chunks(n, oh * ow * kh * kw * c):
                cols = self._im2col(x_cl[batch], pads, self.stride)  # (N'*OH*OW, K)
                xp.matmul(cols, W_mat, out=y[batch].reshape(-1, o))  # the GEMM
        y += self.params["b"]
        # Keep the input, not the im2col matrix: backward rebuilds what it
        # needs slice by slice, which costs one more copy but saves memory
        # KH*KW times the input's size.
        self._cache = (x_cl, x.shape)
        return to_channels_first(y)

    def _forward_small_output(self, x_cl, pads, oh, ow):
        """Forward for fewer output than input channels (the model's 64 -> 1 layer).

        Multiply first, move pixels second. ``Z = x @ W_all`` gives every
        input pixel's contribution through each kernel tap (p, q), and
        output pixel (i, j) adds up tap (p, q) of input pixel
        (i + p - top, j + q - left)::

            y[n, i, j] = sum_{p, q} Z[n, i + p - top, j + q - left, p, q]

        The same sums as im2col + GEMM, but the big intermediate has
        KH*KW*O numbers per pixel instead of KH*KW*C (9 instead of 576).

        Parameters
        ----------
        x_cl : ndarray, shape (N, H, W, C)

        Returns
        -------
        y : ndarray, shape (N, OH, OW, O), without the bias
        """
        xp = backend.get_array_module(x_cl)
        n, h, w, c = x_cl.shape
        o, (kh, kw) = self.out_channels, self.kernel_size
        (top, _), (left, _) = pads
        W_all = self.params["W"].transpose(1, 2, 3, 0).reshape(c, kh * kw * o)  # (C, KH*KW*O)
        y = xp.zeros((n, oh, ow, o), dtype=x_cl.dtype)
        for batch in batch_chunks(n, h * w * kh * kw * o):
            z = self._workspace("cols", ((batch.stop - batch.start) * h * w, kh * kw * o), x_cl)
            xp.matmul(x_cl[batch].reshape(-1, c), W_all, out=z)
            z = z.reshape(-1, h, w, kh, kw, o)
            for p in range(kh):
                for q in range(kw):
                    # output rows i whose source row i + p - top lies in [0, H), same for columns
                    i0, i1 = max(0, top - p), min(oh, h + top - p)
                    j0, j1 = max(0, left - q), min(ow, w + left - q)
                    y[batch, i0:i1, j0:j1] += z[:, i0 + p - top:i1 + p - top,
                                                j0 + q - left:j1 + q - left, p, q]
        return y

    def backward(self, dout, input_grad=True):
        """Backpropagate through the convolution.

        Parameters
        ----------
        dout : ndarray, shape (N, O, OH, OW)
        input_grad : bool, default True
            Skip ``dx`` (return None) when False: a model's first layer
            needs only its parameter gradients, and dx is half the work.

        Returns
        -------
        dx : ndarray, shape (N, C, H, W)
        """
        x_cl, x_shape = self._cached()
        self._check_dout(dout, self.output_shape(x_shape))
        xp = backend.get_array_module(dout)
        n, c, h, w = x_shape
        o, pads = self.out_channels, self._pads(h, w)
        d_cl = to_channels_last(dout)  # (N, OH, OW, O)
        db = d_cl.reshape(-1, o).sum(axis=0)  # dL/db = dout summed over batch and pixels
        dx = xp.empty((n, h, w, c), dtype=dout.dtype) if input_grad else None
        # At stride 1 one im2col of dout gives dW and dx; without dx to
        # compute, the smaller of dout's and x's im2col matrices is used.
        if self._stride_one(pads) and (input_grad or o < c):
            dW = self._backward_stride_one(x_cl, d_cl, pads, dx)
        else:
            dW = self._backward_general(x_cl, d_cl, pads, dx)
        self.grads = {"W": dW, "b": db}
        return None if dx is None else to_channels_first(dx)

    def _backward_stride_one(self, x_cl, d_cl, pads, dx):
        """dW and (if ``dx`` is given) dx from ONE im2col, that of padded dout.

        dx is itself a convolution: each input pixel collects dout from the
        KH x KW outputs it touched, through the kernel turned by 180 degrees
        with in/out channels swapped. Padding dout by (KH-1-top, KH-1-bottom)
        rows (and likewise columns) gives the result the input's size::

            dcols = im2col(pad(dout))        (N*H*W, KH*KW*O), taps in flipped order
            dL/dx = dcols @ W_flip           (N*H*W, KH*KW*O) @ (KH*KW*O, C)

        The same matrix gives dW: weight W[o, c, p, q] met x[a, b, c] at the
        output pixel (a - p + top, b - q + left), which is exactly column
        (KH-1-p, KW-1-q, o) of dcols in row (a, b)::

            dL/dW_flip = x.T @ dcols         (C, N*H*W) @ (N*H*W, KH*KW*O)

        Parameters
        ----------
        x_cl : ndarray, shape (N, H, W, C)
        d_cl : ndarray, shape (N, OH, OW, O)
        pads : ((top, bottom), (left, right))
        dx : ndarray, shape (N, H, W, C), or None
            Filled in place when given.

        Returns
        -------
        dW : ndarray, shape (O, C, KH, KW)
        """
        xp = backend.get_array_module(d_cl)
        n, h, w, c = x_cl.shape
        o, (kh, kw) = self.out_channels, self.kernel_size
        (top, bottom), (left, right) = pads
        back_pads = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
        W_flip = self._flipped_weight_matrix()
        dW_flip = xp.zeros((c, kh * kw * o), dtype=d_cl.dtype)
        for batch in batch_chunks(n, h * w * kh * kw * o):
            dcols = self._im2col(d_cl[batch], back_pads, (1, 1))
            # = x.T @ dcols, computed transposed: (KH*KW*O, C) is the GEMM
            # shape OpenBLAS runs ~10% faster here than (C, KH*KW*O)
            dW_flip += (dcols.T @ x_cl[batch].reshape(-1, c)).T
            if dx is not None:
                xp.matmul(dcols, W_flip, out=dx[batch].reshape(-1, c))
        # (C, KH, KW, O) with the taps turned back -> (O, C, KH, KW)
        return xp.ascontiguousarray(dW_flip.reshape(c, kh, kw, o)[:, ::-1, ::-1, :].transpose(3, 0, 1, 2))

    def _backward_general(self, x_cl, d_cl, pads, dx):
        """The textbook route, for any stride: im2col of x for dW, col2im for dx.

        Since y = cols @ W_mat + b (a Dense layer on the im2col rows)::

            dL/dW_mat = cols.T @ dout        (K, N*OH*OW) @ (N*OH*OW, O)
            dL/dcols  = dout @ W_mat.T       then col2im adds each row back onto its window

        Parameters and return value as in :meth:`_backward_stride_one`.
        """
        xp = backend.get_array_module(d_cl)
        n, h, w, c = x_cl.shape
        _, oh, ow, o = d_cl.shape
        (kh, kw), ((top, _), (left, _)) = self.kernel_size, pads
        W_mat = self._weight_matrix()
        dW_mat = xp.zeros((kh * kw * c, o), dtype=d_cl.dtype)
        for batch in batch_chunks(n, oh * ow * kh * kw * c):
            d2 = d_cl[batch].reshape(-1, o)  # (N'*OH*OW, O)
            cols = self._im2col(x_cl[batch], pads, self.stride)  # rebuilt, see forward
            dW_mat += cols.T @ d2
            if dx is not None:
                dcols = d2 @ W_mat.T
                dx_pad = col2im(dcols, padded_shape(x_cl[batch].shape, pads),
                                self.kernel_size, self.stride)
                dx[batch] = dx_pad[:, top : top + h, left : left + w]  # padding gets no gradient
        # back from (KH, KW, C, O) rows to the (O, C, KH, KW) layout of W
        return xp.ascontiguousarray(dW_mat.reshape(kh, kw, c, o).transpose(3, 2, 0, 1))
