"""One switch between NumPy (CPU) and CuPy (GPU).

Every layer asks ``xp = get_array_module(x)`` and then writes ``xp.dot``,
``xp.maximum``... so the same lines of math run on either library. This is
the pattern of Chainer's and DeZero's ``get_array_module``.

The few operations whose best implementation differs between the two
libraries (a scatter-add, for instance) live here and nowhere else.

Examples
--------
>>> from scratchae import backend
>>> backend.set_backend("numpy")
>>> backend.get_backend()
'numpy'
"""

import numpy as np

BACKENDS = ("numpy", "cupy")
CUPY_INSTALL_HINT = (
    "pip install cupy-cuda12x  (CUDA 12; for CUDA 13 use: pip install cupy-cuda13x)"
)

_current = "numpy"


def _import_cupy():
    """Return the ``cupy`` module, or ``None`` when it is not installed."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _cupy_problem():
    """Return why CuPy cannot be used here (a string), or ``None`` if it can."""
    cupy = _import_cupy()
    if cupy is None:
        return "CuPy is not installed"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # the CUDA driver raises its own error types
        return f"CuPy is installed but no CUDA GPU is usable ({error})"
    if count < 1:
        return "CuPy is installed but no CUDA GPU was found"
    return None


def cupy_available():
    """Return True when CuPy is installed and a CUDA GPU is usable."""
    return _cupy_problem() is None


def set_backend(name):
    """Choose where new arrays (parameters, batches) live: ``"numpy"`` or ``"cupy"``.

    Parameters
    ----------
    name : str
        ``"numpy"`` (CPU) or ``"cupy"`` (NVIDIA GPU).

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`BACKENDS`.
    RuntimeError
        If ``"cupy"`` is asked for but CuPy is missing or no GPU is usable;
        the message says how to install it.
    """
    global _current
    if name not in BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}"
        )
    if name == "cupy":
        problem = _cupy_problem()
        if problem is not None:
            raise RuntimeError(
                f"backend 'cupy' is not available: {problem}. "
                f"Install it with: {CUPY_INSTALL_HINT}, or use --backend numpy."
            )
    _current = name


def get_backend():
    """Return the name of the current backend, ``"numpy"`` or ``"cupy"``."""
    return _current


def get_xp():
    """Return the array module of the current backend (``numpy`` or ``cupy``)."""
    if _current == "cupy":
        return _import_cupy()
    return np


def get_array_module(*arrays):
    """Return ``numpy`` or ``cupy``, whichever library owns ``arrays``.

    Parameters
    ----------
    *arrays : array_like
        Arrays to inspect; any CuPy array makes the answer ``cupy``.
    """
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            return _import_cupy()
    return np


def to_numpy(a):
    """Copy an array (NumPy or CuPy) to a NumPy array on the host.

    Parameters
    ----------
    a : array_like, any shape
    """
    if get_array_module(a) is not np:
        return a.get()
    return np.asarray(a)


def asarray(a, dtype=None):
    """Move or convert ``a`` to an array of the current backend.

    Parameters
    ----------
    a : array_like, any shape
    dtype : data-type, optional
        Convert to this dtype as well (no copy when it already matches).
    """
    return get_xp().asarray(a, dtype=dtype)


def synchronize(a=None):
    """Wait until the GPU has finished its queued work (no-op on NumPy).

    Only timing code needs this: GPU calls return before the work is done.
    """
    if _current == "cupy" or (a is not None and get_array_module(a) is not np):
        _import_cupy().cuda.get_current_stream().synchronize()


def sum_into_index(values, index, size, axis):
    """Sum slices of ``values`` that share a target index: a scatter-add.

    ``out.take(k, axis) = sum of values.take(j, axis) for all j with index[j] == k``.
    Nearest-neighbour upsampling copies each source row to several output
    rows, so its backward pass sums those rows' gradients back this way.

    Parameters
    ----------
    values : ndarray, shape (..., M, ...)
        Upstream values; ``M = len(index)`` along ``axis``.
    index : array_like of int, shape (M,)
        Target position in ``[0, size)`` of each slice along ``axis``.
    size : int
        Length of the output along ``axis``.
    axis : int
        The axis to reduce.

    Returns
    -------
    out : ndarray, shape like ``values`` but ``size`` along ``axis``
    """
    xp = get_array_module(values)
    index = to_numpy(index)
    targets, starts, counts = np.unique(index, return_index=True, return_counts=True)
    sorted_runs = (np.array_equal(targets, np.arange(size))
                   and np.array_equal(starts, np.r_[0, np.cumsum(counts)[:-1]]))
    if sorted_runs and (counts == counts[0]).all():
        # An integer scale factor s: target k gets slices k*s .. k*s + s-1,
        # so add s strided views (every s-th slice), no index arrays at all.
        s = int(counts[0])
        every = [slice(None)] * values.ndim
        views = []
        for j in range(s):
            every[axis] = slice(j, None, s)
            views.append(values[tuple(every)])
        out = views[0].copy()
        for view in views[1:]:
            out += view
        return out
    if sorted_runs:
        # Every target is one run of consecutive slices (as with upsampling):
        # add the first copy of every run, then the second... A loop over
        # the copy number (2 for a 2x upsample), never over pixels.
        out = xp.take(values, xp.asarray(starts), axis=axis)
        for j in range(1, int(counts.max())):
            has = np.flatnonzero(counts > j)
            extra = xp.take(values, xp.asarray(starts[has] + j), axis=axis)
            if len(has) == size:
                out += extra
            else:
                target = [slice(None)] * values.ndim
                target[axis] = xp.asarray(has)
                out[tuple(target)] += extra  # has: distinct targets, so no lost updates
        return out
    # Any other index: a true scatter-add, which each library spells its own way.
    shape = list(values.shape)
    shape[axis] = size
    out = xp.zeros(shape, dtype=values.dtype)
    moved_out = xp.moveaxis(out, axis, 0)  # a view: writes land in ``out``
    moved_values = xp.moveaxis(values, axis, 0)
    if xp is np:
        np.add.at(moved_out, index, moved_values)
    else:
        import cupyx

        cupyx.scatter_add(moved_out, xp.asarray(index), moved_values)
    return out
