"""Argument checks, one rule each, shared by the whole package.

Layers, optimizers, noise functions, the trainer, the command-line tools and
the benchmark all check their arguments with these functions, so the same
argument is accepted or refused everywhere with the same words. Each check
returns the value (converted: ``int``, ``float``, a pair...) or raises
``ValueError`` naming the owner, the argument, what was expected and what
was given::

    >>> positive_int(0, "batch_size", "Trainer")
    Traceback (most recent call last):
    ...
    ValueError: Trainer: batch_size must be a positive int, got 0

``bool`` is refused where an int is expected (``True`` is an int to Python,
never a batch size to a user).

The ``arg_*`` functions are the same rules as ``argparse`` types, in
argparse's wording (``argument --lr: expected a positive finite number,
got 'inf'``).

NumPy is imported inside the array checks only, so that the benchmark
can parse its flags before NumPy starts its BLAS threads.
"""

import argparse
import math
import numbers
import sys


def _owner(owner):
    return f"{owner}: " if owner else ""


def positive_int(value, name, owner=None):
    """Return ``int(value)``; raise ``ValueError`` unless it is an int >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{_owner(owner)}{name} must be a positive int, got {value!r}")
    return int(value)


def non_negative_int(value, name, owner=None):
    """Return ``int(value)``; raise ``ValueError`` unless it is an int >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{_owner(owner)}{name} must be an int >= 0, got {value!r}")
    return int(value)


def seed(value, name, owner=None):
    """Return a seed: an int >= 0, or a tuple of them (a key such as ``(seed, stage)``).

    Each random stream of a trainer is ``numpy.random.default_rng([*key, stream])``,
    so a tuple gives each stage of a longer recipe streams of its own.
    """
    if isinstance(value, (tuple, list)) and value:
        return tuple(non_negative_int(v, name, owner) for v in value)
    if isinstance(value, (tuple, list)):
        raise ValueError(f"{_owner(owner)}{name} must be an int >= 0 or a tuple of them, got ()")
    return non_negative_int(value, name, owner)


def positive_float(value, name, owner=None, at_most=None):
    """Return ``float(value)``; raise ``ValueError`` unless it is finite, > 0, <= ``at_most``."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{_owner(owner)}{name} must be a positive finite number, got {value!r}")
    if at_most is not None and value > at_most:
        raise ValueError(f"{_owner(owner)}{name} must be at most {at_most}, got {value!r}")
    return float(value)


def non_negative_float(value, name, owner=None):
    """Return ``float(value)``; raise ``ValueError`` unless it is finite and >= 0 (0 is "off")."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{_owner(owner)}{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def probability(value, name, owner=None):
    """Return ``float(value)``; raise ``ValueError`` unless it is strictly between 0 and 1."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 < value < 1):  # False for NaN
        raise ValueError(f"{_owner(owner)}{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def int_pair(value, name, owner=None):
    """Turn an int or a pair of ints into a tuple ``(a, b)`` of positive ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(
            f"{_owner(owner)}{name} must be an int or a pair of ints, got {value!r}"
        ) from None
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (a, b)):
        raise ValueError(f"{_owner(owner)}{name} must be an int or a pair of ints, got {value!r}")
    if a < 1 or b < 1:
        raise ValueError(f"{_owner(owner)}{name} must be positive, got {value!r}")
    return int(a), int(b)


def float_dtype(dtype, owner):
    """Return ``np.dtype(dtype)``; raise ``ValueError`` unless it is float32 or float64."""
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{owner}: dtype must be float32 or float64, got {dtype}")
    return dtype


# --------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------
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
    from . import backend

    xp = backend.get_array_module(x)
    if bool(xp.isfinite(x).all()):
        return None
    nans = int(xp.isnan(x).sum())
    infs = int(x.size - nans - int(xp.isfinite(x).sum()))
    parts = [f"{nans} NaN" if nans else "", f"{infs} inf" if infs else ""]
    return f"{' and '.join(p for p in parts if p)} among {x.size} values"


def unit_interval(values, what):
    """Raise ``ValueError`` unless every value is finite and in [0, 1].

    Two reductions (min and max; NaN propagates through both), read back
    together: one wait on CuPy.

    Parameters
    ----------
    values : ndarray, any shape
    what : str
        Names the array in the message, e.g. ``"Trainer.fit: train_images"``.
    """
    if values.size == 0:
        return
    from . import backend

    xp = backend.get_array_module(values)
    lo, hi = (float(v) for v in backend.to_numpy(xp.stack([values.min(), values.max()])))
    if 0.0 <= lo and hi <= 1.0:  # False for NaN
        return
    problem = nonfinite_summary(values)
    if problem is not None:
        raise ValueError(f"{what} must be finite, in [0, 1]; found {problem}")
    raise ValueError(f"{what} must be in [0, 1], got values from {lo:g} to {hi:g} "
                     f"(scale images to [0, 1], e.g. divide uint8 pixels by 255)")


def images(values, what, sample_shape=None):
    """Raise unless ``values`` is a non-empty batch of finite floats in [0, 1].

    One pass for the range and finiteness, done once per dataset (not per
    step). Changes nothing.

    Parameters
    ----------
    values : ndarray, shape (N, *sample_shape)
    what : str
        Names the array in the message, e.g. ``"Trainer.fit: train_images"``.
    sample_shape : tuple of int, optional
        The expected shape of one image, e.g. ``(1, 28, 28)``.

    Raises
    ------
    TypeError
        If ``values`` is not a floating-point array.
    ValueError
        If it is empty, has the wrong shape, or holds NaN, inf or values
        outside [0, 1].
    """
    import numpy as np

    if not (hasattr(values, "shape") and hasattr(values, "dtype")):
        raise TypeError(f"{what}: expected an array, got {type(values).__name__}")
    if sample_shape is not None and tuple(values.shape[1:]) != tuple(sample_shape):
        expected = ", ".join(["N", *map(str, sample_shape)])
        raise ValueError(f"{what}: expected images of shape ({expected}), "
                         f"got {tuple(values.shape)}")
    if values.ndim < 2:
        raise ValueError(f"{what}: expected a batch of images (N, ...), "
                         f"got shape {tuple(values.shape)}")
    if len(values) == 0:
        raise ValueError(f"{what}: got no images (shape {tuple(values.shape)})")
    if not np.issubdtype(values.dtype, np.floating):
        raise TypeError(f"{what}: expected floating-point images in [0, 1], "
                        f"got dtype {values.dtype}")
    unit_interval(values, what)


def labels(values, what, count=None, classes=None):
    """Raise unless ``values`` are integer class labels: 1-D, ``count`` of them, in [0, classes).

    Parameters
    ----------
    values : ndarray, shape (N,)
    what : str
        Names the array in the message, e.g. ``"Trainer.fit: train_images targets"``.
    count : int, optional
        The expected N (the number of inputs they label).
    classes : int, optional
        K: every label must be in [0, K).
    """
    import numpy as np

    if not (hasattr(values, "shape") and hasattr(values, "dtype")):
        raise TypeError(f"{what}: expected an array of labels, got {type(values).__name__}")
    if values.ndim != 1:
        raise ValueError(f"{what}: expected labels of shape (N,), got {tuple(values.shape)}")
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{what}: expected integer class labels, got dtype {values.dtype}")
    if count is not None and len(values) != count:
        raise ValueError(f"{what}: expected {count} labels (one per input), got {len(values)}")
    if classes is not None and len(values):
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= classes:
            raise ValueError(f"{what}: labels must be in [0, {classes}) for {classes} classes, "
                             f"got values from {lo} to {hi}")


def in_model_dtype(values, dtype, what, note=None):
    """Return the dataset ``values`` in the model's ``dtype``: cast once, with one note.

    The entry points that take a whole dataset (``Trainer.fit``,
    ``evaluate`` and ``predict``, :func:`scratchae.train.predict`,
    :func:`scratchae.vae.evaluate`) accept images of any floating dtype:
    ``uint8_images / 255.0``, the usual way to make them, is float64. They
    compute in the model's dtype, so they cast here, once per dataset (one
    copy; never per batch), and say so. The layer-level API
    (``model.forward``) refuses another dtype instead (``check_input``).

    Parameters
    ----------
    values : ndarray, shape (N, ...)
        Already checked (:func:`images`), or left to the model's check if
        not floating point (then returned unchanged).
    dtype : numpy.dtype
        The model's (its parameters').
    what : str
        Names the data in the note, e.g. ``"train_images"``.
    note : callable, optional
        Prints the note (a trainer's ``log``); by default to stderr.

    Returns
    -------
    ndarray
        ``values`` itself if its dtype is ``dtype``, else a cast copy.
    """
    import numpy as np

    dtype = np.dtype(dtype)
    if values.dtype == dtype or not np.issubdtype(values.dtype, np.floating):
        return values
    message = f"note: {what} are {values.dtype}; cast once to the model's {dtype}"
    if note is None:
        print(message, file=sys.stderr)
    else:
        note(message)
    return values.astype(dtype)


# --------------------------------------------------------------------------
# the same rules as argparse types
# --------------------------------------------------------------------------
def _arg_type(parse, check, expected):
    def convert(text):
        try:
            return check(parse(text), "value")
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    convert.__name__ = check.__name__  # argparse names the type in some messages
    return convert


arg_positive_int = _arg_type(int, positive_int, "a positive integer")
arg_non_negative_int = _arg_type(int, non_negative_int, "an integer >= 0")
arg_positive_float = _arg_type(float, positive_float, "a positive finite number")
arg_probability = _arg_type(float, probability, "a number in (0, 1)")
arg_non_negative_float = _arg_type(float, non_negative_float, "a finite number >= 0")
