"""What every layer shares: the ``Layer`` base class and input checks.

A layer is a small object with two methods:

* ``forward(x)`` computes the output and keeps (caches) only what the
  backward pass will need;
* ``backward(dout)`` takes ``dL/dout``, the gradient of the loss with
  respect to the layer's output, and returns ``dL/dx``. Layers with
  parameters also fill ``self.grads`` (same keys as ``self.params``) with
  ``dL/dparam``. ``grads`` is overwritten on every call, never accumulated,
  so there is no "zero the gradients" step.
"""

import math
import threading

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
        """Shape of ``forward``'s output for an input of ``input_shape``."""
        return tuple(input_shape)

    def __repr__(self):
        return f"{type(self).__name__}()"

    # -- helpers for subclasses ------------------------------------------
    def _set_params(self, **params):
        """Store the parameters, with zero gradients under the same keys."""
        self.params = params
        self.grads = {k: backend.get_array_module(v).zeros_like(v) for k, v in params.items()}

    def _check_ndim(self, x, ndim, layout):
        """Raise ``ValueError`` unless ``x`` has ``ndim`` dimensions."""
        if x.ndim != ndim:
            raise ValueError(
                f"{self!r}: expected a {ndim}-D input {layout}, "
                f"got shape {tuple(x.shape)} ({x.ndim}-D)"
            )

    def _check_images(self, x, channels=None):
        """Raise ``ValueError`` unless ``x`` is an (N, C, H, W) batch, with ``C == channels`` if given."""
        self._check_ndim(x, 4, "(N, C, H, W)")
        if channels is not None and x.shape[1] != channels:
            raise ValueError(
                f"{self!r}: expected {channels} input channels, "
                f"got input of shape {tuple(x.shape)} with {x.shape[1]} channels"
            )

    def _check_float(self, x):
        """Raise ``TypeError`` unless ``x`` is a floating-point array."""
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(
                f"{self!r}: expected a floating-point input, got dtype {x.dtype}"
            )

    def _workspace(self, name, shape, like):
        """Scratch memory for temporaries, shared by all layers (see :func:`workspace`)."""
        return workspace(name, shape, like)

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


_WORKSPACES = threading.local()  # one set of buffers per thread


def workspace(name, shape, like):
    """A scratch array of ``shape``, reused from call to call and layer to layer.

    Freshly allocated memory is slow the first time it is touched (the
    operating system maps it in page by page), and im2col matrices are
    big, so convolutions write them into these buffers instead of
    allocating new ones on every step. One flat buffer per name grows to
    the largest size asked for; smaller requests use its beginning.

    The contents are only valid until the next request for the same name,
    by any layer: use it for temporaries inside one call, never for a
    forward cache or a layer's output. Every thread has its own buffers,
    so the worker threads of :mod:`scratchae.parallel`, each running its
    own slice of the batch, never write into each other's scratch memory.

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
    buffers = getattr(_WORKSPACES, "buffers", None)
    if buffers is None:
        buffers = _WORKSPACES.buffers = {}
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = xp.empty(size, dtype=like.dtype)
    return buffer[:size].reshape(shape)


def nonfinite_summary(x):
    """Return ``None`` if every value of ``x`` is finite, else a short description.

    One pass over ``x`` (and, on CuPy, one wait for the GPU), plus a second
    pass only when something is wrong, to count what. Used at the model and
    loss boundaries, never inside a layer.

    Parameters
    ----------
    x : ndarray, any shape, floating point

    Returns
    -------
    None or str
        e.g. ``"3 NaN and 1 inf among 6272 values"``.
    """
    xp = backend.get_array_module(x)
    if bool(xp.isfinite(x).all()):
        return None
    nans = int(xp.isnan(x).sum())
    infs = int(x.size - nans - int(xp.isfinite(x).sum()))
    parts = [f"{nans} NaN" if nans else "", f"{infs} inf" if infs else ""]
    return f"{' and '.join(p for p in parts if p)} among {x.size} values"


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


def check_float_dtype(dtype, owner):
    """Return ``np.dtype(dtype)``, raising ``ValueError`` if it is not float32/float64."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{owner}: dtype must be float32 or float64, got {dtype}")
    return dtype


def pair(value, name, owner):
    """Turn an int or a pair of ints into a tuple ``(a, b)`` of positive ints."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{owner}: {name} must be an int or a pair of ints, got {value!r}"
        ) from None
    if a < 1 or b < 1:
        raise ValueError(f"{owner}: {name} must be positive, got {value!r}")
    return a, b
