"""The fast path's ops: each one replaces one or more textbook layers.

An op has ``forward(x)`` and ``backward(dout)`` like a layer, but works on
**channels-last** images (N, H, W, C) (or (N, D) vectors), and reads and
writes the *textbook layers'* parameter arrays: ``self.params[name]`` is
the very array ``layer.params[name]``, and ``self.keys[name]`` is its key
in the model (``"16.W"``). Its gradients go to ``self.grads`` (same names).

``input_grad=False`` (set on the first op with parameters) skips dL/dx.
"""

import copy

import numpy as np

from .. import backend
from ..layers.base import conv_output_size
from .conv import bias_gradient, conv_backward, conv_forward
from .convpool import conv_pool_backward, conv_pool_forward
from .subpixel import subpixel_backward, subpixel_forward


class Op:
    """Shared bookkeeping: parameters of the replaced layers, caches, replicas."""

    def __init__(self, layers, keys, input_grad=True):
        self.layers = list(layers)  # the textbook layers this op computes (for repr, shapes)
        self.keys = dict(keys)      # local name -> the model's key, e.g. {"W": "16.W"}
        self.params = {name: array for layer in self.layers for name, array in layer.params.items()}
        self.grads = {}
        self.input_grad = input_grad
        self._cache = None

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}({inner})"

    def _relu(self):
        return ", relu" if getattr(self, "relu", False) else ""

    def infer(self, x):
        """The forward pass for inference: the same output, nothing kept for backward."""
        y = self.forward(x)
        self._cache = None
        return y

    def replica(self):
        """A copy sharing the parameter arrays, with its own cache and gradients."""
        twin = copy.copy(self)
        twin._cache, twin.grads = None, {}
        return twin

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return self._cache


def relu_(y):
    """ReLU in place: ``y = max(y, 0)`` (y is the op's own new output)."""
    backend.get_array_module(y).maximum(y, 0, out=y)
    return y


def relu_backward(dout, y):
    """dL/dz of ``y = relu(z)`` from its output: dout where y > 0 (a new array)."""
    return dout * (y > 0)


def sigmoid_(y):
    """Sigmoid in place: ``y = 1/2 + tanh(y/2)/2`` (y is the op's own new output).

    The same function as the textbook ``sigmoid`` (``1/(1+e^-x) = 1/2 +
    tanh(x/2)/2``), in four passes with no temporary, and bounded: nothing
    overflows for inputs of any size.
    """
    xp, half = backend.get_array_module(y), y.dtype.type(0.5)
    y *= half
    xp.tanh(y, out=y)
    y *= half
    y += half
    return y


def sigmoid_backward(dout, y):
    """dL/dz of ``y = sigmoid(z)`` from its output: ``dout * y * (1 - y)`` (a new array)."""
    d = 1 - y
    d *= y
    d *= dout
    return d


class StrideOneConv(Op):
    """A stride-1 convolution by :mod:`scratchae.fast.conv`'s functions, with an optional
    ReLU after it: what ``Conv`` and ``strided.TransposedAsConv`` share.

    A subclass says how its layer's ``W`` reads as a conv kernel W4 (KH, KW, C, O)
    and with which padding (:meth:`_kernel`), and how dL/dW4 goes back to the
    layer's ``W`` (:meth:`_weight_grad`).
    """

    def __init__(self, layer, keys, relu=False, input_grad=True):
        super().__init__([layer], keys, input_grad)
        self.relu = relu

    def _kernel(self, h, w):
        """W4 (KH, KW, C, O), a view of ``W``, and the pads for an H x W input."""
        raise NotImplementedError

    def _weight_grad(self, dW4):
        """dL/dW in the layer's layout from dL/dW4 (KH, KW, C, O)."""
        raise NotImplementedError

    def forward(self, x):
        """x : (N, H, W, C) -> y : (N, OH, OW, O)"""
        W4, pads = self._kernel(*x.shape[1:3])
        y = conv_forward(x, W4, pads)
        y += self.params["b"]
        if self.relu:
            relu_(y)
        self._cache = (x, y if self.relu else None)
        return y

    def backward(self, dout):
        """dout : (N, OH, OW, O) -> dx : (N, H, W, C) or None"""
        x, y = self._cached()
        d = relu_backward(dout, y) if self.relu else dout
        W4, pads = self._kernel(*x.shape[1:3])
        dW4, dx = conv_backward(x, d, W4, pads, self.input_grad)
        self.grads = {"W": backend.get_array_module(d).ascontiguousarray(self._weight_grad(dW4)),
                      "b": bias_gradient(d.reshape(-1, d.shape[-1]))}
        return dx


class Conv(StrideOneConv):
    """Conv2D at stride 1 with padding smaller than the kernel, with an optional ReLU after it.

    Rules: multiply-first / flipped-kernel dx / im2col slices
    (:mod:`scratchae.fast.conv`), bias and ReLU applied in place.
    """

    def __repr__(self):
        conv = self.layers[0]
        (kh, kw) = conv.kernel_size
        return (f"Conv({conv.in_channels}->{conv.out_channels}, {kh}x{kw}, "
                f"padding={conv.padding!r}{self._relu()})")

    def _kernel(self, h, w):
        return self.params["W"].transpose(2, 3, 1, 0), self.layers[0].pads(h, w)  # (O, C, KH, KW)

    def _weight_grad(self, dW4):
        return dW4.transpose(3, 2, 0, 1)


class SubPixelConv(Op):
    """Nearest x2 upsample + 3x3 'same' conv (+ ReLU) as a sub-pixel convolution.

    ``window``: the backward as one stride-2 4x4 im2col of dy (rule ``window_grad``).
    """

    def __init__(self, upsample, conv, keys, relu=False, input_grad=True, window=True):
        super().__init__([upsample, conv], keys, input_grad)
        self.relu = relu
        self.window = window

    def __repr__(self):
        conv = self.layers[1]
        window = ", window_grad" if self.window else ""
        return (f"SubPixelConv(x2, {conv.in_channels}->{conv.out_channels}, "
                f"3x3{self._relu()}{window})")

    def forward(self, x):
        """x : (N, H, W, C) -> y : (N, 2H, 2W, O)"""
        y = subpixel_forward(x, self.params["W"], self.params["b"], relu=self.relu)
        self._cache = (x, y if self.relu else None)
        return y

    def backward(self, dout):
        """dout : (N, 2H, 2W, O) -> dx : (N, H, W, C) or None"""
        x, y = self._cached()
        dW, db, dx = subpixel_backward(x, dout, self.params["W"], y, self.input_grad,
                                       window=self.window)
        self.grads = {"W": dW, "b": db}
        return dx


class ConvPool(Op):
    """A model's first conv and the 2x2 max-pool after it, with no dx (rule ``conv_pool``).

    Made by :func:`~scratchae.fast.compile` from a ``Conv`` and a ``MaxPool``
    op; see :mod:`scratchae.fast.convpool` for the identity.
    """

    def __init__(self, conv_op, pool_op):
        super().__init__([conv_op.layers[0], pool_op.layers[0]], conv_op.keys, input_grad=False)
        self.relu = conv_op.relu or pool_op.relu  # relu(pool(y)) = pool(relu(y))

    def __repr__(self):
        conv = self.layers[0]
        (kh, kw) = conv.kernel_size
        return (f"ConvPool({conv.in_channels}->{conv.out_channels}, {kh}x{kw}, "
                f"padding={conv.padding!r}, pool 2x2{self._relu()})")

    def forward(self, x):
        """x : (N, H, W, C) -> z : (N, OH // 2, OW // 2, O)"""
        pads = self.layers[0].pads(*x.shape[1:3])
        W4 = self.params["W"].transpose(2, 3, 1, 0)
        z, winners, cols = conv_pool_forward(x, W4, self.params["b"], pads, self.relu)
        self._cache = (cols, z if self.relu else None, winners)
        return z

    def backward(self, dout):
        """dout : (N, OH // 2, OW // 2, O) -> None (a first layer computes no dx)"""
        cols, z, winners = self._cached()
        xp = backend.get_array_module(dout)
        W = self.params["W"]
        dW4, db = conv_pool_backward(cols, dout, W.transpose(2, 3, 1, 0), z, winners)
        self.grads = {"W": xp.ascontiguousarray(dW4.transpose(3, 2, 0, 1)), "b": db}
        return None


class MaxPool(Op):
    """2x2 max-pool with stride 2 ('valid' or 'same'), optionally followed by a ReLU.

    Rule "ReLU and max-pool commute": ``pool(relu(z)) = relu(pool(z))``
    because ReLU is monotone (it never changes which value is largest), so
    the ReLU runs on the 4x smaller pooled output. In backward, dout is
    masked by ``y > 0`` and routed to the argmax, which is the argmax of
    ``relu(z)`` too whenever ``y > 0`` (and where ``y <= 0`` the gradient is
    0 either way).
    """

    def __init__(self, pool, relu=False):
        super().__init__([pool], {}, input_grad=True)
        self.relu = relu

    def __repr__(self):
        return f"MaxPool(2x2, padding={self.layers[0].padding!r}{self._relu()})"

    def _corners(self, x):
        """The four corners of every 2x2 window, as strided views (N, OH, OW, C)."""
        xp = backend.get_array_module(x)
        n, h, w, c = x.shape
        pads = self.layers[0].pads(h, w)
        (top_pad, bottom), (left_pad, right) = pads
        oh, ow = conv_output_size((h, w), (2, 2), (2, 2), pads)
        if top_pad or bottom or left_pad or right:  # 'same' with an odd size: pad with -inf
            x_pad = xp.full((n, 2 * oh, 2 * ow, c), -np.inf, dtype=x.dtype)
            x_pad[:, top_pad:top_pad + h, left_pad:left_pad + w] = x
        else:  # 'valid': an odd last row/column belongs to no window
            x_pad = x[:, :2 * oh, :2 * ow]
        return [x_pad[:, p::2, q::2] for p in range(2) for q in range(2)]

    def forward(self, x):
        """x : (N, H, W, C) -> y : (N, OH, OW, C)"""
        xp = backend.get_array_module(x)
        (top_pad, _), (left_pad, _) = self.layers[0].pads(*x.shape[1:3])
        c0, c1, c2, c3 = self._corners(x)
        # the winner, in two rounds: the max of each row pair, then of the two;
        # strict ">" keeps the first corner on a tie, as the textbook argmax does
        right_top, right_bottom = c1 > c0, c3 > c2  # (N, OH, OW, C) each
        top = xp.maximum(c0, c1)
        bottom = xp.maximum(c2, c3)
        lower = bottom > top
        y = xp.maximum(top, bottom, out=top)
        if self.relu:
            relu_(y)
        self._cache = ((right_top, right_bottom, lower), y if self.relu else None, x.shape,
                       (top_pad, left_pad))
        return y

    def infer(self, x):
        """The pooled maximum (and ReLU) only: no winners recorded for a backward pass."""
        xp = backend.get_array_module(x)
        c0, c1, c2, c3 = self._corners(x)
        y = xp.maximum(c0, c1)
        xp.maximum(y, c2, out=y)
        xp.maximum(y, c3, out=y)
        return relu_(y) if self.relu else y

    def backward(self, dout):
        """dout : (N, OH, OW, C) -> dx : (N, H, W, C)"""
        (right_top, right_bottom, lower), y, x_shape, (top, left) = self._cached()
        d = relu_backward(dout, y) if self.relu else dout
        xp = backend.get_array_module(d)
        n, oh, ow, c = d.shape
        dx_pad = xp.empty((n, oh, 2, ow, 2, c), dtype=d.dtype)  # (N, 2*OH, 2*OW, C)
        # dL/dx = dout at the winning corner, 0 at the three others
        d_top = d * ~lower
        d_bottom = d - d_top  # d where the bottom pair won (d * lower, exactly)
        xp.multiply(d_top, ~right_top, out=dx_pad[:, :, 0, :, 0])
        xp.multiply(d_top, right_top, out=dx_pad[:, :, 0, :, 1])
        xp.multiply(d_bottom, ~right_bottom, out=dx_pad[:, :, 1, :, 0])
        xp.multiply(d_bottom, right_bottom, out=dx_pad[:, :, 1, :, 1])
        dx_pad = dx_pad.reshape(n, 2 * oh, 2 * ow, c)
        _, h, w, _ = x_shape
        if (h, w) == (2 * oh, 2 * ow):
            return dx_pad
        dx = xp.zeros(x_shape, dtype=d.dtype)  # padding cropped, or a dropped odd row kept at 0
        rows, cols = min(h, 2 * oh - top), min(w, 2 * ow - left)
        dx[:, :rows, :cols] = dx_pad[:, top:top + rows, left:left + cols]
        return dx


class Upsample(Op):
    """Nearest-neighbour resize (any size), channels-last, index arrays kept on the device."""

    def __init__(self, upsample):
        super().__init__([upsample], {}, input_grad=True)
        self._index = {}

    def replica(self):
        twin = super().replica()
        twin._index = {}
        return twin

    def _device_index(self, size_in, size_out, xp):
        """The source rows (or columns) on the input's device, uploaded once per size."""
        key = (size_in, size_out, xp.__name__)
        if key not in self._index:
            from ..layers.upsample import nearest_index

            host = nearest_index(size_in, size_out)
            self._index[key] = (host, xp.asarray(host))
        return self._index[key]

    def forward(self, x):
        """x : (N, H, W, C) -> y : (N, OH, OW, C)"""
        xp = backend.get_array_module(x)
        n, h, w, c = x.shape
        _, _, oh, ow = self.layers[0].output_shape((n, c, h, w))
        (rows, rows_dev), (cols, cols_dev) = (self._device_index(h, oh, xp),
                                              self._device_index(w, ow, xp))
        self._cache = (rows, cols, x.shape)
        return x.take(rows_dev, axis=1).take(cols_dev, axis=2)

    def backward(self, dout):
        """dout : (N, OH, OW, C) -> dx : (N, H, W, C): the copies' gradients summed."""
        rows, cols, x_shape = self._cached()
        xp = backend.get_array_module(dout)
        n, h, w, c = x_shape
        d_rows = xp.zeros((n, h, dout.shape[2], c), dtype=dout.dtype)
        for i, a in enumerate(rows):
            d_rows[:, a] += dout[:, i]
        dx = xp.zeros(x_shape, dtype=dout.dtype)
        for j, b in enumerate(cols):
            dx[:, :, b] += d_rows[:, :, j]
        return dx


class Dense(Op):
    """Dense layer with an optional ReLU or sigmoid after it (bias and activation in place)."""

    def __init__(self, dense, keys, relu=False, input_grad=True, sigmoid=False):
        super().__init__([dense], keys, input_grad)
        self.relu, self.sigmoid = relu, sigmoid

    def __repr__(self):
        dense = self.layers[0]
        after = ", sigmoid" if self.sigmoid else self._relu()
        return f"Dense({dense.in_features}->{dense.out_features}{after})"

    def forward(self, x):
        """x : (N, D) -> y : (N, M)"""
        y = x @ self.params["W"]
        y += self.params["b"]
        if self.relu:
            relu_(y)
        if self.sigmoid:
            sigmoid_(y)
        self._cache = (x, y if self.relu or self.sigmoid else None)
        return y

    def backward(self, dout):
        """dout : (N, M) -> dx : (N, D) or None"""
        x, y = self._cached()
        d = (relu_backward(dout, y) if self.relu else sigmoid_backward(dout, y) if self.sigmoid
             else dout)
        self.grads = {"W": x.T @ d, "b": bias_gradient(d)}
        return d @ self.params["W"].T if self.input_grad else None


class Flatten(Op):
    """Channels-last images -> vectors in the textbook (C, H, W) order."""

    def __init__(self, layer):
        super().__init__([layer], {})

    def forward(self, x):
        """x : (N, H, W, C) -> y : (N, C*H*W)"""
        self._cache = x.shape
        return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # a view when C == 1

    def backward(self, dout):
        n, h, w, c = self._cached()
        return dout.reshape(n, c, h, w).transpose(0, 2, 3, 1)


class Reshape(Op):
    """Vectors -> channels-last images, for a ``Reshape((C, H, W))``."""

    def __init__(self, layer):
        super().__init__([layer], {})

    def forward(self, x):
        """x : (N, C*H*W) -> y : (N, H, W, C)"""
        self._cache = x.shape
        c, h, w = self.layers[0].shape
        return backend.get_array_module(x).ascontiguousarray(
            x.reshape(x.shape[0], c, h, w).transpose(0, 2, 3, 1))

    def backward(self, dout):
        return dout.transpose(0, 3, 1, 2).reshape(self._cached())


class Textbook(Op):
    """Any other layer, run as written, with the layout converted around it.

    Images go in and out channels-last, as NCHW *views* for the layer (no
    copy), so an unmatched layer costs nothing but its own speed.
    """

    def __init__(self, layer, keys, input_grad=True):
        super().__init__([layer], keys, input_grad)

    def replica(self):
        twin = super().replica()
        twin.layers = [copy.copy(self.layers[0])]
        twin.layers[0]._cache, twin.layers[0].grads = None, {}
        return twin

    def forward(self, x):
        images = x.ndim == 4
        y = self.layers[0].forward(x.transpose(0, 3, 1, 2) if images else x)
        self._cache = y.ndim == 4
        if y.ndim == 4:
            return backend.get_array_module(y).ascontiguousarray(y.transpose(0, 2, 3, 1))
        return y

    def backward(self, dout):
        image_out = self._cached()
        dx = self.layers[0].backward(dout.transpose(0, 3, 1, 2) if image_out else dout)
        self.grads = self.layers[0].grads
        if dx.ndim == 4:
            return backend.get_array_module(dx).ascontiguousarray(dx.transpose(0, 2, 3, 1))
        return dx
