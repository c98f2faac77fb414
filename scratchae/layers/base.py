"""What every layer shares: the ``Layer`` base class, initialisation and output sizes.

A layer is a small object with two methods:

* ``forward(x)`` computes the output and keeps (caches) only what the
  backward pass will need;
* ``backward(dout)`` takes ``dL/dout``, the gradient of the loss with
  respect to the layer's output, and returns ``dL/dx``. Layers with
  parameters also fill ``self.grads`` (same keys as ``self.params``) with
  ``dL/dparam``. ``grads`` is overwritten on every call, never accumulated,
  so there is no "zero the gradients" step.
"""

import numpy as np

from .. import backend


class Layer:
    """Base class: parameter-free by default.

    Attributes
    ----------
    params : dict of str to ndarray
        Trainable arrays (empty for parameter-free layers).
    grads : dict of str to ndarray
        ``dL/dparam`` from the last ``backward`` call, same keys as ``params``.
    """

    def __init__(self):
        self.params = {}
        self.grads = {}
        self._cache = None

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def output_shape(self, input_shape):
        """Shape of ``forward``'s output for an input of ``input_shape``.

        Raises the ``ValueError`` that ``forward`` raises for an input of
        that shape (``forward`` checks its input by calling this), so a
        model's :meth:`~scratchae.models.Sequential.summary` refuses a shape
        with the same message a batch of it would get.
        """
        return tuple(input_shape)

    def macs(self, input_shape):
        """Multiply-adds of ``forward`` for an input of ``input_shape`` (N, ...): none here.

        Element-wise and shape layers multiply nothing into a sum; layers
        with weights count one multiply-add per weight per output it reaches.
        """
        self.output_shape(input_shape)
        return 0

    def __repr__(self):
        return f"{type(self).__name__}()"

    # -- helpers for subclasses ------------------------------------------
    def _set_params(self, **params):
        """Store the parameters, with zero gradients under the same keys."""
        self.params = params
        self.grads = {k: backend.get_array_module(v).zeros_like(v) for k, v in params.items()}

    def _check_ndim(self, x, ndim, layout):
        """Raise ``ValueError`` unless ``x`` (an array, or its shape) has ``ndim`` dimensions."""
        shape = tuple(getattr(x, "shape", x))
        if len(shape) != ndim:
            raise ValueError(
                f"{self!r}: expected a {ndim}-D input {layout}, "
                f"got shape {shape} ({len(shape)}-D)"
            )

    def _check_rows(self, x, features):
        """Raise ``ValueError`` unless ``x`` (an array, or its shape) is an (N, features) batch."""
        shape = tuple(getattr(x, "shape", x))
        self._check_ndim(shape, 2, "(N, in_features)")
        if shape[1] != features:
            raise ValueError(f"{self!r}: expected {features} input features, "
                             f"got input of shape {shape}")

    def _check_images(self, x, channels=None):
        """Raise ``ValueError`` unless ``x`` (an array, or its shape) is an (N, C, H, W) batch
        (with C == ``channels``)."""
        shape = tuple(getattr(x, "shape", x))
        self._check_ndim(shape, 4, "(N, C, H, W)")
        if channels is not None and shape[1] != channels:
            raise ValueError(
                f"{self!r}: expected {channels} input channels, "
                f"got input of shape {shape} with {shape[1]} channels"
            )

    def _cached(self):
        """Return the forward cache, or raise if ``forward`` was not called."""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        return self._cache

    def _check_dout(self, dout, expected_shape):
        """Raise ``ValueError`` unless ``dout`` has the forward output's shape."""
        if tuple(dout.shape) != tuple(expected_shape):
            raise ValueError(
                f"{self!r}: backward expected dout of shape {tuple(expected_shape)} "
                f"(the forward output's), got {tuple(dout.shape)}"
            )


def make_rng(seed=None, rng=None):
    """Return a NumPy ``Generator`` from ``rng`` or ``seed`` (fresh if both are None)."""
    if rng is not None:
        return rng
    return np.random.default_rng(seed)


def glorot_uniform(shape, fan_in, fan_out, rng, dtype):
    """Glorot/Xavier uniform init on the host, moved to the current backend.

    Values are drawn from ``U(-limit, limit)`` with
    ``limit = sqrt(6 / (fan_in + fan_out))``, which keeps the variance of
    activations and gradients roughly constant from layer to layer.
    Drawing on the host with NumPy makes the weights identical on both
    backends for the same seed.
    """
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    w = rng.uniform(-limit, limit, size=shape)
    return backend.asarray(w, dtype=dtype)


def conv_output_size(size, kernel, stride=(1, 1), pads=((0, 0), (0, 0))):
    """(OH, OW) of a convolution or pooling window sliding over an (H, W) input.

    Along each axis ``(size + before + after - kernel) // stride + 1``: the
    number of positions a window of ``kernel`` takes, ``stride`` apart,
    inside the padded input.

    Parameters
    ----------
    size, kernel, stride : (int, int)
        (H, W), (KH, KW), (SH, SW).
    pads : ((top, bottom), (left, right)), default no padding
    """
    return tuple((s + before + after - k) // st + 1
                 for s, k, st, (before, after) in zip(size, kernel, stride, pads))


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
    elif isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        return (int(padding),) * 2, (int(padding),) * 2
    raise ValueError(
        f"{owner}: padding must be 'same', 'valid' or a non-negative int, got {padding!r}"
    )
