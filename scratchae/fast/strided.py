"""Strided and transposed convolutions, channels-last: the conv VAE's layers.

The same functions as :class:`scratchae.layers.Conv2D` at stride > 1 and
:class:`scratchae.layers.ConvTranspose2D` (same parameter arrays), computed
channels-last with the GEMMs asked in the shape BLAS runs fast. The one
identity (derived in ``docs/fast.md`` section 12) is the transpose of a
product::

    A.T @ B = (B.T @ A).T

A weight gradient is a product ``A.T @ B`` whose inner axis is the long
one (N*OH*OW pixels) and whose result is small (KH*KW*C x O). OpenBLAS
runs that shape one thread at a time in thin panels: for the conv VAE's
``ConvTranspose2D(64, 32)`` at batch 128, ``x_rows.T @ dcols`` (64 x
25,088 x 288) takes ~440 ms where ``(dcols.T @ x_rows).T``, the same
numbers, takes ~10 ms (2-core CPU). The textbook layers write the first
form (it is the derivation); these ops write the second.

Otherwise they follow the textbook layers step for step (im2col and
col2im, :mod:`scratchae.layers.conv`), with what every fast op does
(``docs/fast.md`` sections 2 and 6): the layout stays channels-last between
ops, the bias and a following ReLU are applied in place, and the first op
with parameters skips dL/dx.
"""

from .. import backend
from ..layers.conv import col2im, im2col
from .conv import batch_chunks, bias_gradient, pad, workspace
from .ops import Op, StrideOneConv, relu_, relu_backward
from .subpixel import window_backward


def weight_gradient(a, d):
    """``a.T @ d`` for tall ``a`` (M, K) and ``d`` (M, O), asked for with a tall result.

    ``a.T @ d = (d.T @ a).T``: when K < O, the (O, K) product is computed
    and transposed back (section 12 of ``docs/fast.md``).

    Returns
    -------
    ndarray, shape (K, O), C-contiguous
    """
    if a.shape[1] >= d.shape[1]:
        return a.T @ d
    return backend.get_array_module(d).ascontiguousarray((d.T @ a).T)


class StridedConv(Op):
    """Conv2D at any stride (the ``conv`` rule takes stride 1), with an optional ReLU after it.

    Forward: pad, im2col with the stride, one GEMM (as the textbook layer).
    Backward: ``dW = (dout.T @ cols).T``; ``dx = col2im(dout @ W_mat.T)``.
    """

    def __init__(self, conv, keys, relu=False, input_grad=True, phase_dx=False):
        super().__init__([conv], keys, input_grad)
        self.relu = relu
        self.phase_dx = phase_dx and conv.kernel_size == (3, 3) and conv.stride == (2, 2)

    def __repr__(self):
        conv = self.layers[0]
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        phases = ", phase dx" if self.phase_dx and self.input_grad else ""
        return (f"StridedConv({conv.in_channels}->{conv.out_channels}, {kh}x{kw}, "
                f"stride {sh}x{sw}, padding={conv.padding!r}{self._relu()}{phases})")

    def _W_mat(self):
        """``W`` (O, C, KH, KW) as W_mat (KH*KW*C, O), rows in im2col's (p, q, c) order."""
        conv = self.layers[0]
        return self.params["W"].transpose(2, 3, 1, 0).reshape(-1, conv.out_channels)

    def forward(self, x):
        """x : (N, H, W, C) -> y : (N, OH, OW, O)"""
        conv = self.layers[0]
        n, h, w, c = x.shape
        _, o, oh, ow = conv.output_shape((n, c, h, w))
        x_pad = pad(x, conv.pads(h, w))
        cols = im2col(x_pad, conv.kernel_size, conv.stride)    # (N*OH*OW, KH*KW*C)
        y = cols @ self._W_mat()                               # (N*OH*OW, O)
        y += self.params["b"]
        if self.relu:
            relu_(y)
        self._cache = (cols, y if self.relu else None, x.shape, x_pad.shape)
        return y.reshape(n, oh, ow, o)

    def backward(self, dout):
        """dout : (N, OH, OW, O) -> dx : (N, H, W, C) or None"""
        cols, y, x_shape, padded_shape = self._cached()
        conv = self.layers[0]
        o = conv.out_channels
        d = (relu_backward(dout.reshape(-1, o), y) if self.relu
             else dout.reshape(-1, o))                         # (N*OH*OW, O)
        kh, kw = conv.kernel_size
        c = conv.in_channels
        dW_mat = weight_gradient(cols, d)  # dL/dW_mat = cols.T @ dout   (KH*KW*C, O)
        self.grads = {"W": backend.get_array_module(d).ascontiguousarray(
                          dW_mat.reshape(kh, kw, c, o).transpose(3, 2, 0, 1)),
                      "b": bias_gradient(d)}
        if not self.input_grad:
            return None
        n, h, w, _ = x_shape
        (top, _), (left, _) = conv.pads(h, w)
        if self.phase_dx and top == left == 1:
            # dx is the x2 transposed convolution of dz with the same W (O, C, 3, 3) in
            # its (in, out) layout (phase_forward), 2*OH x 2*OW, of which the H x W
            # inside the padding are dx.
            dx2 = phase_forward(d.reshape(dout.shape), self.params["W"])
            return dx2 if dx2.shape == x_shape else dx2[:, :h, :w].copy()
        dcols = d @ self._W_mat().T  # dL/dcols = dout @ W_mat.T   (N*OH*OW, KH*KW*C)
        dx_pad = col2im(dcols, padded_shape, conv.kernel_size, conv.stride)
        if dx_pad.shape == x_shape:
            return dx_pad
        return dx_pad[:, top:top + h, left:left + w].copy()  # padding gets no gradient


class TransposedConv(Op):
    """ConvTranspose2D (any stride, padding, output_padding), with an optional ReLU after it.

    Forward: ``cols = x_rows @ W_mat``, col2im onto the full output, crop
    (as the textbook layer). Backward: ``dcols = im2col(pad(dout))``;
    ``dW = (dcols.T @ x_rows).T``; ``dx = dcols @ W_mat.T``.
    """

    def __init__(self, layer, keys, relu=False, input_grad=True):
        super().__init__([layer], keys, input_grad)
        self.relu = relu

    def __repr__(self):
        t = self.layers[0]
        (kh, kw), (sh, sw) = t.kernel_size, t.stride
        return (f"TransposedConv({t.in_channels}->{t.out_channels}, {kh}x{kw}, "
                f"stride {sh}x{sw}, padding={t.padding}, "
                f"output_padding={t.output_padding}{self._relu()})")

    def _W_mat(self):
        """``W`` (C, O, KH, KW) as W_mat (C, KH*KW*O), columns in im2col's (p, q, o) order."""
        t = self.layers[0]
        return self.params["W"].transpose(0, 2, 3, 1).reshape(t.in_channels, -1)

    def forward(self, x):
        """x : (N, H, W, C) -> y : (N, OH, OW, O)"""
        t = self.layers[0]
        xp = backend.get_array_module(x)
        n, h, w, c = x.shape
        _, o, oh, ow = t.output_shape((n, c, h, w))
        x_rows = x.reshape(-1, c)                               # one row per input pixel
        cols = x_rows @ self._W_mat()                           # (N*H*W, KH*KW*O)
        (kh, kw), (sh, sw), (ah, aw) = t.kernel_size, t.stride, t.output_padding
        full = (n, (h - 1) * sh + kh + ah, (w - 1) * sw + kw + aw, o)
        y_full = col2im(cols, full, t.kernel_size, t.stride)    # (N, FH, FW, O)
        p = t.padding
        y = xp.add(y_full[:, p:p + oh, p:p + ow], self.params["b"])  # crop; a new array
        if self.relu:
            relu_(y)
        self._cache = (x_rows, y if self.relu else None, x.shape)
        return y

    def backward(self, dout):
        """dout : (N, OH, OW, O) -> dx : (N, H, W, C) or None"""
        x_rows, y, x_shape = self._cached()
        t = self.layers[0]
        d = relu_backward(dout, y) if self.relu else dout       # (N, OH, OW, O)
        p = t.padding
        d_full = pad(d, ((p, p), (p, p)))  # the cropped border got no gradient
        dcols = im2col(d_full, t.kernel_size, t.stride)  # dL/dcols  (N*H*W, KH*KW*O)
        kh, kw = t.kernel_size
        c = t.in_channels
        dW_mat = weight_gradient(x_rows, dcols)  # dL/dW_mat = x_rows.T @ dcols  (C, KH*KW*O)
        xp = backend.get_array_module(d)
        self.grads = {"W": xp.ascontiguousarray(dW_mat.reshape(c, kh, kw, -1)
                                                .transpose(0, 3, 1, 2)),
                      "b": bias_gradient(d.reshape(-1, d.shape[-1]))}
        if not self.input_grad:
            return None
        n, h, w, _ = x_shape
        return (dcols @ self._W_mat().T).reshape(n, h, w, c)  # dL/dx_rows = dcols @ W_mat.T


def phase_forward(x, W, bias=None, relu=False):
    """ConvTranspose2D 3x3, stride 2, padding 1, output_padding 1, phase by phase.

    Input pixel i reaches output rows 2i - 1 + u through tap u, so the even
    row 2i takes tap 1 of x[i], and the odd row 2i + 1 takes tap 2 of x[i]
    and tap 0 of x[i + 1] (in 2-D, the four phases (a, b) of the output take
    1, 2, 2 and 4 taps). A slice of the batch at a time: three GEMMs, one
    per kernel row u, give every input pixel's nine taps,
    ``Z[u] = x_rows @ W[u]`` (the layer's own multiply-adds); the taps a
    pixel of y takes from the next input row and column are added in Z, the
    row's as whole contiguous rows (the reason for one GEMM per u), and all
    four phases then move to their pixels of y in one pass, with the bias,
    while the slice is in the cache. No zeroed full-size output, no
    scatter, no crop. (Measured, 64 -> 32 channels at 14x14, 64 images:
    6.5 -> 5.6 ms against adding each phase's taps into y one by one.)

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C), C-contiguous
    W : ndarray, shape (C, O, 3, 3), a ``ConvTranspose2D`` weight
    bias : ndarray, shape (O,), optional
    relu : bool
        Apply a ReLU to the result, in place.

    Returns
    -------
    y : ndarray, shape (N, 2H, 2W, O), a new C-contiguous array
    """
    xp = backend.get_array_module(x)
    n, h, w, c = x.shape
    o = W.shape[1]
    W_rows = xp.ascontiguousarray(W.transpose(2, 0, 3, 1)).reshape(3, c, 3 * o)  # (u, C, (v, O))
    y = xp.empty((n, h, 2, w, 2, o), dtype=x.dtype)  # (N, 2H, 2W, O), rows and columns split
    for part in batch_chunks(x, h * w * 9 * o):
        m = (part.stop - part.start) * h * w
        # every pixel's nine taps, one kernel row u at a time: Z[u] = x_rows @ W[u]
        Z = workspace("taps", (3, m, 3 * o), x)
        xp.matmul(x[part].reshape(1, m, c), W_rows, out=Z)
        Z = Z.reshape(3, -1, h, w, 3, o)                  # (u, N', H, W, v, O)
        # y[2i + a, 2j + b] takes tap (1, .) of row i when a = 0, taps (2, .) of
        # row i and (0, .) of row i + 1 when a = 1; in each, tap (., 1 + b) of
        # column j, and when b = 1 also tap (., 0) of column j + 1. Added up in
        # Z first, where a row's taps are one contiguous run, then moved once:
        Z[2, :, :-1] += Z[0, :, 1:]                       # row i + 1's taps (0, v) -> (2, v)
        rows = Z[1:]                                      # (a, N', H, W, v, O): a = u - 1
        rows[:, :, :, :-1, 2] += rows[:, :, :, 1:, 0]     # column j + 1's tap (u, 0) -> (u, 2)
        phases = rows[:, :, :, :, 1:].transpose(1, 2, 0, 3, 4, 5)  # (N', H, a, W, b, O)
        y_part = y[part]
        if bias is None:
            xp.copyto(y_part, phases)
        else:
            xp.add(phases, bias, out=y_part)
        if relu:
            xp.maximum(y_part, 0, out=y_part)
    return y.reshape(n, 2 * h, 2 * w, o)


def is_subpixel_transposed(layer):
    """True for the x2 transposed convolution that :class:`SubPixelTransposed` computes:
    3x3 kernel, stride 2, padding 1, output_padding 1 (output 2H x 2W)."""
    return (layer.kernel_size == (3, 3) and layer.stride == (2, 2) and layer.padding == 1
            and layer.output_padding == (1, 1))


class SubPixelTransposed(Op):
    """ConvTranspose2D 3x3, stride 2, padding 1, output_padding 1 (+ ReLU), phase by
    phase (rule ``subpixel_transposed``).

    The layer's output pixel (2i + a, 2j + b) takes taps of W from at most
    the 2x2 input pixels (i..i+1, j..j+1): each phase (a, b) is a 2x2
    convolution of the small input, with single taps where
    :mod:`scratchae.fast.subpixel` has sums (section 12 of ``docs/fast.md``).
    The forward (:func:`phase_forward`) puts each phase's taps straight into
    place, a cache-sized slice of the batch at a time. Its backward is the
    convolution the transposed one is the adjoint of: a stride-2 3x3
    im2col of dy gives dx and dW
    (:func:`~scratchae.fast.subpixel.window_backward`). No full-size
    9-tap matrix, no col2im scatter onto a zeroed output, no crop.
    """

    def __init__(self, layer, keys, relu=False, input_grad=True):
        super().__init__([layer], keys, input_grad)
        self.relu = relu

    def __repr__(self):
        t = self.layers[0]
        return f"SubPixelTransposed(x2, {t.in_channels}->{t.out_channels}, 3x3{self._relu()})"

    def forward(self, x):
        """x : (N, H, W, C) -> y : (N, 2H, 2W, O)"""
        y = phase_forward(x, self.params["W"], self.params["b"], relu=self.relu)
        self._cache = (x, y if self.relu else None)
        return y

    def backward(self, dout):
        """dout : (N, 2H, 2W, O) -> dx : (N, H, W, C) or None"""
        x, y = self._cached()
        xp = backend.get_array_module(dout)
        W = self.params["W"]                                   # (C, O, 3, 3)
        c, o = W.shape[:2]
        # dx[i, j] = sum_{u, v} dz[2i - 1 + u, 2j - 1 + v] @ W[:, :, u, v].T: K[(u, v, o), c]
        K = xp.ascontiguousarray(W.transpose(2, 3, 1, 0)).reshape(9 * o, c)
        dK, db, dx = window_backward(x, dout, K, 3, y, self.input_grad)
        self.grads = {"W": xp.ascontiguousarray(dK.reshape(3, 3, o, c).transpose(3, 2, 0, 1)),
                      "b": db}
        return dx


def is_stride1_transposed(layer):
    """True for a ConvTranspose2D at stride 1 that crops less than its kernel
    (padding p < KH, KW): :class:`TransposedAsConv` computes it."""
    kh, kw = layer.kernel_size
    return layer.stride == (1, 1) and layer.padding < min(kh, kw)


class TransposedAsConv(StrideOneConv):
    """ConvTranspose2D at stride 1 (+ ReLU) as the stride-1 convolution it equals
    (rule ``transposed_stride1``), computed by section 3's ``conv`` op functions.

    At stride 1 the transposed convolution reads input pixel i + p - u
    through tap u; a convolution padded by P = K - 1 - p reads i + r - P.
    With r = K - 1 - u they are the same sum, so::

        ConvTranspose2D(x; W, padding p) = Conv2D(x; W', padding K - 1 - p)
        W'[o, c, r, s] = W[c, o, K - 1 - r, K - 1 - s]

    the kernel turned by 180 degrees and its two channel axes swapped (a
    view of the layer's own ``W``); dL/dW is dL/dW' turned back.
    """

    def __repr__(self):
        t = self.layers[0]
        (kh, kw) = t.kernel_size
        return (f"TransposedAsConv({t.in_channels}->{t.out_channels}, {kh}x{kw}, "
                f"padding={t.padding}{self._relu()})")

    def _kernel(self, h, w):
        """W' as (KH, KW, C, O) (a view of ``W`` (C, O, KH, KW)), and the conv's padding."""
        t = self.layers[0]
        (kh, kw), p = t.kernel_size, t.padding
        W4 = self.params["W"][:, :, ::-1, ::-1].transpose(2, 3, 0, 1)
        return W4, ((kh - 1 - p, kh - 1 - p), (kw - 1 - p, kw - 1 - p))

    def _weight_grad(self, dW4):
        # dL/dW[c, o, u, v] = dL/dW'[o, c, K-1-u, K-1-v] = dW4[K-1-u, K-1-v, c, o]
        return dW4.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]
