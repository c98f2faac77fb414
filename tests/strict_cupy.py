"""A strict stand-in for CuPy, for the tests. It is NOT a GPU.

This module fakes the ``cupy`` and ``cupyx`` modules with NumPy so that the
CuPy-parametrized tests run on machines without a GPU, and so that they catch
the host/device mistakes that break real CuPy code. Everything runs on the
CPU, in NumPy; nothing here touches CUDA, and a test that passes on it proves
nothing about CUDA kernels, GPU numerics, speed or memory. It only proves that
the code keeps host (NumPy) and device (CuPy) arrays apart the way real CuPy
demands. ``cupy.cuda.runtime.getDeviceCount()`` answers 1 only so that
``scratchae.backend.set_backend("cupy")`` accepts it; there is no device.

What it checks (each rule raises what real CuPy raises, checked against the
CuPy 14 sources):

1. ``cupy.ndarray`` wraps a private NumPy array; ``type(a).__module__`` is
   ``"cupy"``, so ``scratchae.backend.get_array_module`` treats it as CuPy's.
2. No implicit conversion to NumPy: ``np.asarray(dev)``, ``np.array(dev)``
   and ``dev.__array__()`` raise ``TypeError``; ``dev.get()`` and
   ``cupy.asnumpy(dev)`` are the explicit downloads. NumPy ufuncs and
   functions applied to a device array raise ``TypeError`` too. (Stricter
   than CuPy, which dispatches ``np.exp(dev)`` to ``cupy.exp``; set
   ``DISPATCH_NUMPY = True`` to dispatch as CuPy does. The reflected operator
   of a NumPy scalar, ``np.float32(2) * dev``, is always allowed.)
3. CuPy operations reject NumPy arrays, 0-d ones included, with CuPy's
   ``TypeError: Unsupported type <class 'numpy.ndarray'>``. Python scalars
   and NumPy scalars (``np.float32(2)``) are fine. ``cupy.asarray`` and
   ``cupy.array`` are the explicit uploads.
4. ``dev[basic index] = np_array`` raises CuPy's ``ValueError: non-scalar
   numpy.ndarray cannot be used for fill`` (so does ``cupy.copyto(dev,
   np_array)``). With an advanced (array) index CuPy uploads the NumPy value
   silently, and so does the stand-in, counting the upload. NumPy or list
   index arrays are uploaded silently by CuPy too (counted as uploads).
   Boolean-mask indexing and mask assignment synchronize (CuPy reads the
   number of True values back to the host): counted as a sync.
5. ``bool``, ``int``, ``float``, ``.item()``, ``.tolist()``, ``repr`` of a
   device array work, and count as a download plus a synchronization.
6. ufuncs return C-contiguous arrays (CuPy allocates outputs in C order);
   ``*_like`` keep the layout (order ``'K'``); ``out=`` must be a
   ``cupy.ndarray`` and is written in place.
7. Counters of kernel launches, uploads, downloads and synchronizations:
   ``with strict_cupy.counting() as c: ...; c.launches``; ``c.by_op`` says
   which operations launched. ``cupyx.allow_synchronize(False)`` raises
   ``cupyx.DeviceSynchronized`` at the first synchronization, as in CuPy.
8. Only names that exist in real CuPy exist here (see ``_UFUNCS``,
   ``_FUNCTIONS``, ``_ALIASES``, ``_NUMPY_NAMES`` and the ``ndarray``
   class); anything else raises ``AttributeError``.
9. ``cupy.ElementwiseKernel`` checks its arguments like CuPy, counts one
   launch and runs a NumPy twin registered with :func:`register_kernel_twin`
   (it cannot run CUDA C: without a twin it raises ``NotImplementedError``).
   Its types are decided as in CuPy: every array argument typed with one
   placeholder (``T x, T y``) must have one dtype, an argument of a named
   type (``float32 x``) that dtype, else ``TypeError: Type is mismatched``;
   scalars (Python or NumPy) take the placeholder's type.
   ``cupy.fuse`` runs the Python function on the stand-in, counted as one
   launch.
10. dtypes follow NumPy 2 (NEP 50), as CuPy 13+ does.
11. ``cupy.concatenate`` and ``cupy.stack`` join device arrays only: a scalar
    (Python or NumPy) raises ``TypeError`` as in CuPy, whose ``concatenate``
    refuses anything but ``cupy.ndarray`` (``concatenate_method`` in
    ``cupy/_core/_routines_manipulation.pyx``) and whose ``stack`` passes each
    item to the typed ``_expand_dims`` (``cupy/_manipulation/join.py``); so
    does a 0-d array in ``concatenate``.

Use: ``with strict_cupy.installed(): ...`` puts the stand-in into
``sys.modules["cupy"]`` / ``["cupyx"]`` and removes it afterwards.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import threading
import types
from collections import Counter

import numpy as np

DISPATCH_NUMPY = False  # True: np.<ufunc or function>(dev) dispatches to CuPy, as real CuPy does

_SCALARS = (bool, int, float, complex, np.generic)
_lock = threading.Lock()
_local = threading.local()  # .fusing (int), .sync_allowed (bool)


# --------------------------------------------------------------------------- counters

@dataclasses.dataclass
class Counts:
    """What a GPU would have done: kernel launches, transfers, synchronizations."""

    launches: int = 0
    uploads: int = 0      # host -> device copies
    downloads: int = 0    # device -> host copies
    syncs: int = 0        # the host waited for the device
    by_op: Counter = dataclasses.field(default_factory=Counter)  # launches per operation

    @property
    def transfers(self):
        return self.uploads + self.downloads


_totals = Counts()
_active = []


def _record(op, launches=0, uploads=0, downloads=0, syncs=0):
    if syncs and not getattr(_local, "sync_allowed", True):
        raise DeviceSynchronized(
            f"Device synchronization was detected while disallowed ({op}).")
    if getattr(_local, "fusing", 0):
        launches = 0  # inside cupy.fuse: the whole call is one launch
    with _lock:
        for c in (_totals, *_active):
            c.launches += launches
            c.uploads += uploads
            c.downloads += downloads
            c.syncs += syncs
            if launches:
                c.by_op[op] += launches


@contextlib.contextmanager
def counting():
    """Count what happens inside the block: ``with counting() as c: ...``."""
    c = Counts()
    with _lock:
        _active.append(c)
    try:
        yield c
    finally:
        with _lock:
            _active.remove(c)


def totals():
    """The counts since the last :func:`reset` (a copy)."""
    with _lock:
        return dataclasses.replace(_totals, by_op=Counter(_totals.by_op))


def reset():
    global _totals
    with _lock:
        _totals = Counts()


class DeviceSynchronized(RuntimeError):
    """Raised by a synchronization inside ``cupyx.allow_synchronize(False)``."""


@contextlib.contextmanager
def allow_synchronize(allow):
    old = getattr(_local, "sync_allowed", True)
    _local.sync_allowed = allow
    try:
        yield
    finally:
        _local.sync_allowed = old


# --------------------------------------------------------------------------- checks

def _unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def _check_operand(x):
    """A kernel operand: a device array or a scalar, as in CuPy's _preprocess_arg."""
    if isinstance(x, ndarray) or (isinstance(x, _SCALARS) and not isinstance(x, str)):
        return
    raise _unsupported(x)


def _check_out(out):
    if out is not None and not isinstance(out, ndarray):
        raise TypeError("Output arguments type must be cupy.ndarray")


def _reject_host(obj):
    """Raise if a NumPy array hides in obj (also inside lists, tuples, dicts)."""
    if isinstance(obj, np.ndarray):
        raise _unsupported(obj)
    if isinstance(obj, (list, tuple)):
        for x in obj:
            _reject_host(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            _reject_host(x)


def _unwrap(obj):
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, list):
        return [_unwrap(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_unwrap(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(r, inputs=()):
    """NumPy result -> device array; a NumPy scalar becomes a 0-d array, as in CuPy."""
    if isinstance(r, np.ndarray):
        for x in inputs:
            if isinstance(x, ndarray) and x._a is r:
                return x  # the same array came back (asarray, astype(copy=False)...)
        return ndarray._of(r)
    if isinstance(r, np.generic):
        return ndarray._of(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(x, inputs) for x in r)
    if isinstance(r, list):
        return [_wrap(x, inputs) for x in r]
    return r


def _arrays_in(obj):
    if isinstance(obj, ndarray):
        yield obj._a
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _arrays_in(x)


def _copied(result, args):
    """True when a view-like operation had to copy (CuPy then launches a kernel)."""
    sources = list(_arrays_in(args))
    return not any(np.may_share_memory(r, s) for r in _arrays_in_np(result) for s in sources)


def _arrays_in_np(r):
    if isinstance(r, np.ndarray):
        yield r
    elif isinstance(r, (list, tuple)):
        for x in r:
            yield from _arrays_in_np(x)


# --------------------------------------------------------------------------- ndarray

class _Flags:
    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


def _address(a):
    return a.__array_interface__["data"][0]


class _MemoryPointer:
    def __init__(self, a):
        self.ptr = _address(a)  # a host address: there is no device


class ndarray:
    """A device array: a private NumPy array behind CuPy's rules (no GPU)."""

    __slots__ = ("_a", "_base")
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("strict_cupy: ndarray(memptr=/strides=) is not supported")
        self._a = np.empty(shape, dtype=dtype, order=order)
        self._base = None

    @classmethod
    def _of(cls, a, base=None):
        self = object.__new__(cls)
        self._a = a
        self._base = base
        return self

    # -- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: _Flags(self._a))
    base = property(lambda self: self._base)
    data = property(lambda self: _MemoryPointer(self._a))
    device = property(lambda self: _cuda.Device(0))
    T = property(lambda self: self.transpose())
    mT = property(lambda self: self.swapaxes(-1, -2))

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # -- rule 2: no implicit conversion to NumPy
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__
        scalar_reflection = (method == "__call__" and "out" not in kwargs
                             and any(isinstance(x, np.generic) for x in inputs))
        if (DISPATCH_NUMPY or scalar_reflection) and name in _UFUNCS:
            out = kwargs.pop("out", None)
            if out is not None:
                kwargs["out"] = out[0] if len(out) == 1 else out
            target = getattr(cupy, name)
            if method != "__call__":
                target = getattr(target, method)
            return target(*inputs, **kwargs)
        for x in inputs + tuple(kwargs.get("out", ())):
            if isinstance(x, np.ndarray):
                raise _unsupported(x)  # what cupy.<ufunc> says about a NumPy operand
        raise TypeError(
            f"strict_cupy: NumPy ufunc numpy.{name}.{method} applied to a cupy.ndarray; "
            f"use xp.{name} with xp = get_array_module(...) (real CuPy would dispatch it)")

    def __array_function__(self, func, types, args, kwargs):
        if DISPATCH_NUMPY and hasattr(cupy, func.__name__):
            return getattr(cupy, func.__name__)(*args, **kwargs)
        raise TypeError(
            f"strict_cupy: NumPy function numpy.{func.__name__} applied to a cupy.ndarray; "
            f"use xp.{func.__name__} or move the array with .get() explicitly")

    # -- rule 5: explicit transfers and synchronizing conversions
    def get(self, stream=None, order="C", out=None, blocking=True):
        _record("get", downloads=1, syncs=1 if blocking else 0)
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        if arr.shape != self._a.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if arr.dtype != self._a.dtype:
            raise TypeError("{} array cannot be set to {} array".format(arr.dtype, self.dtype))
        _record("set", uploads=1)
        self._a[...] = arr

    def _host_scalar(self, op):
        _record(op, downloads=1, syncs=1)
        return self._a

    def __bool__(self):
        return bool(self._host_scalar("__bool__"))

    def __int__(self):
        return int(self._host_scalar("__int__"))

    def __float__(self):
        return float(self._host_scalar("__float__"))

    def __complex__(self):
        return complex(self._host_scalar("__complex__"))

    def item(self):
        return self._host_scalar("item").item()

    def tolist(self):
        return self._host_scalar("tolist").tolist()

    def __repr__(self):
        return repr(self._host_scalar("__repr__"))

    def __str__(self):
        return str(self._host_scalar("__str__"))

    def __format__(self, spec):
        return format(self._host_scalar("__format__"), spec)

    def __reduce__(self):  # pickling downloads the array, as in CuPy
        return array, (self.get(),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # -- rule 4: indexing
    def _key(self, key):
        """Unwrap an index; returns (key, advanced, mask). Host index arrays are uploaded."""
        items = key if isinstance(key, tuple) else (key,)
        out, advanced, mask = [], False, False
        for k in items:
            if isinstance(k, ndarray):
                k, advanced = k._a, True
            elif isinstance(k, (np.ndarray, list, bool, np.bool_)):
                _record("index upload", uploads=1)  # CuPy: core.array(index), silently
                k, advanced = np.array(k), True
            if isinstance(k, np.ndarray) and k.dtype == np.bool_:
                mask = True
            out.append(k)
        if not advanced and not any(k is Ellipsis for k in out):
            out.append(Ellipsis)  # basic indexing then always gives a (0-d) view
        return tuple(out), advanced, mask

    def __getitem__(self, key):
        key, advanced, mask = self._key(key)
        if mask:
            _record("mask indexing: number of True values", downloads=1, syncs=1)
        r = self._a[key]
        if advanced:
            _record("getitem", launches=1)
            return _wrap(r)
        return ndarray._of(r, self._base if self._base is not None else self)

    def __setitem__(self, key, value):
        key, advanced, mask = self._key(key)
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, (np.ndarray, list, tuple)):
            host = np.asarray(value)
            if advanced:
                _record("setitem value upload", uploads=1)  # CuPy: core.array(value), silently
                value = np.array(host)
            elif host.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            else:
                value = host[()]
        elif not isinstance(value, _SCALARS):
            raise _unsupported(value)
        if mask:
            _record("mask assignment: number of True values", downloads=1, syncs=1)
        if not advanced and isinstance(value, np.ndarray):
            target = self._a[key]
            if (value.shape == target.shape and value.strides == target.strides
                    and _address(value) == _address(target)):
                return  # x[k] += y writes back the view itself: CuPy skips the copy
        _record("setitem", launches=1)
        self._a[key] = value

    # -- methods
    def _method(self, op, kind, *args, **kwargs):
        _reject_host((args, kwargs))
        _check_out(kwargs.get("out"))
        r = getattr(self._a, op)(*_unwrap(args), **_unwrap(kwargs))
        if kind == "view" and not _copied(r, (self,)):
            return ndarray._of(r, self._base if self._base is not None else self)
        _record(op, launches=1)
        if kind == "sync":
            _record(op, downloads=1, syncs=1)
        if kwargs.get("out") is not None:
            return kwargs["out"]
        return _wrap(r, (self,))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        _record("astype", launches=1)
        return ndarray._of(self._a.astype(dtype, order=order, casting=casting or "unsafe"))

    def fill(self, value):
        if isinstance(value, np.ndarray) and value.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        if isinstance(value, ndarray):
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            value = value._a
        _record("fill", launches=1)
        self._a.fill(value)

    def take(self, indices, axis=None, out=None):
        if isinstance(indices, (np.ndarray, list)):
            _record("take index upload", uploads=1)  # CuPy uploads the indices
            indices = ndarray._of(np.array(indices))
        return self._method("take", "launch", indices, axis=axis, out=out)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self._method("reshape", "view", shape, order=order)

    def transpose(self, *axes):
        return self._method("transpose", "view", *axes)


    def __neg__(self):
        return cupy.negative(self)

    def __pos__(self):
        return cupy.positive(self)

    def __abs__(self):
        return cupy.absolute(self)

    def __invert__(self):
        return cupy.invert(self)


# Python operators -> the CuPy ufunc (which checks the operands): x + y, y + x, x += y.
_ARITHMETIC = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
               "floordiv": "floor_divide", "mod": "remainder", "pow": "power",
               "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor", "matmul": "matmul"}
_COMPARISONS = {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
                "eq": "equal", "ne": "not_equal"}
for _short, _name in _ARITHMETIC.items():
    setattr(ndarray, f"__{_short}__", lambda self, other, f=_name: getattr(cupy, f)(self, other))
    setattr(ndarray, f"__r{_short}__", lambda self, other, f=_name: getattr(cupy, f)(other, self))
    if _short != "matmul":  # cupy.ndarray has no __imatmul__
        setattr(ndarray, f"__i{_short}__",
                lambda self, other, f=_name: getattr(cupy, f)(self, other, out=self))
for _short, _name in _COMPARISONS.items():
    setattr(ndarray, f"__{_short}__", lambda self, other, f=_name: getattr(cupy, f)(self, other))

# Methods of cupy.ndarray that forward to NumPy: name -> "launch" (a kernel) or
# "view" (a kernel only when NumPy had to copy). Each exists on cupy.ndarray (CuPy 14).
_METHODS = {
    **dict.fromkeys("all any argmax argmin clip conj conjugate copy cumprod cumsum diagonal dot "
                    "flatten max mean min prod ptp repeat round sort argsort std sum "
                    "trace var".split(), "launch"),
    **dict.fromkeys("ravel squeeze swapaxes view".split(), "view"),
    "nonzero": "sync",
}


def _make_method(op, kind):
    def method(self, *args, **kwargs):
        return self._method(op, kind, *args, **kwargs)
    method.__name__ = op
    return method


for _op, _kind in _METHODS.items():
    setattr(ndarray, _op, _make_method(_op, _kind))
ndarray.__module__ = "cupy"


# --------------------------------------------------------------------------- ufuncs

class ufunc:
    """An element-wise CuPy function: device arrays and scalars in, C-ordered arrays out."""

    def __init__(self, np_ufunc):
        self._np = np_ufunc
        self.__name__ = self.name = np_ufunc.__name__
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs

    def __repr__(self):
        return f"<ufunc 'cupy.{self.name}' (strict_cupy stand-in)>"

    def __call__(self, *args, out=None, dtype=None, casting="same_kind", **kwargs):
        if kwargs:
            raise TypeError(f"Wrong arguments {kwargs}")
        args, outs = args[:self.nin], args[self.nin:]
        if outs:
            if out is not None:
                raise ValueError("Cannot specify 'out' as both a positional and keyword argument")
            out = outs[0] if len(outs) == 1 else outs
        for x in args:
            _check_operand(x)
        out_tuple = out if isinstance(out, tuple) else (out,) if out is not None else ()
        for o in out_tuple:
            _check_out(o)
        if len(args) != self.nin:
            raise TypeError(f"Wrong number of arguments for {self.name!r}")
        np_args = _unwrap(args)
        if out_tuple:
            self._np(*np_args, out=_unwrap(out_tuple), dtype=dtype, casting=casting)
            _record(self.name, launches=1)
            return out
        r = self._np(*np_args, dtype=dtype, casting=casting, order="C")
        _record(self.name, launches=1)
        return _wrap(r)

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError("cupy.ufunc.at only supports cupy.ndarray")
        if isinstance(indices, (np.ndarray, list)):
            _record("at index upload", uploads=1)
            indices = np.array(indices)
        if b is not None:
            _check_operand(b)
        _record(f"{self.name}.at", launches=1)
        self._np.at(a._a, _unwrap(indices), *(() if b is None else (_unwrap(b),)))

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        if not isinstance(array, ndarray):
            raise _unsupported(array)
        _check_out(out)
        r = self._np.reduce(array._a, axis=axis, dtype=dtype, out=_unwrap(out), keepdims=keepdims)
        _record(f"{self.name}.reduce", launches=1)
        return out if out is not None else _wrap(r)

    def outer(self, A, B, **kwargs):
        for x in (A, B):
            if not isinstance(x, ndarray):
                raise _unsupported(x)
        _record(f"{self.name}.outer", launches=1)
        return _wrap(self._np.outer(A._a, B._a, **kwargs))


# Element-wise functions that are ufuncs in both NumPy and CuPy 14.
_UFUNCS = """
    absolute add arccos arccosh arcsin arcsinh arctan arctan2 arctanh bitwise_and bitwise_or
    bitwise_xor cbrt ceil copysign cos cosh deg2rad degrees divide equal exp exp2 expm1 fabs
    floor floor_divide fmax fmin fmod greater greater_equal hypot invert isfinite isinf isnan
    ldexp left_shift less less_equal log log10 log1p log2 logaddexp logaddexp2 logical_and
    logical_not logical_or logical_xor maximum minimum multiply negative nextafter not_equal
    positive power rad2deg radians reciprocal remainder right_shift rint sign signbit sin sinh
    sqrt square subtract tan tanh true_divide trunc
""".split()


# --------------------------------------------------------------------------- functions

def _function(name, np_func, kind, check=True):
    """A cupy.<name> that forwards to NumPy after checking its operands.

    kind: "launch" (always a kernel), "elementwise" (a kernel with a C-ordered
    result), "view" (a kernel only if NumPy had to copy), "empty" (allocates,
    no kernel), "sync" (the output size depends on the data: a kernel and a
    synchronization).
    """
    def f(*args, **kwargs):
        if check:
            _reject_host((args, kwargs))
        _check_out(kwargs.get("out"))
        r = np_func(*_unwrap(args), **_unwrap(kwargs))
        if kind == "view" and not _copied(r, args):
            base = next((a for a in _arrays_in_wrappers(args)), None)
            return _wrap_view(r, base)
        if kind == "elementwise" and kwargs.get("out") is None and isinstance(r, np.ndarray):
            r = np.ascontiguousarray(r)
        if isinstance(r, (bool, int, float)):
            r = np.asarray(r)  # allclose, count_nonzero...: a 0-d device array in CuPy
        if kind != "empty":
            _record(name, launches=1)
        if kind == "sync":
            _record(name, downloads=1, syncs=1)
        if kwargs.get("out") is not None:
            return kwargs["out"]
        return _wrap(r, args)
    f.__name__ = f.__qualname__ = name
    f.__module__ = "cupy"
    return f


def _arrays_in_wrappers(obj):
    if isinstance(obj, ndarray):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _arrays_in_wrappers(x)


def _wrap_view(r, base):
    if isinstance(r, (list, tuple)):
        return type(r)(_wrap_view(x, base) for x in r)
    root = base._base if base is not None and base._base is not None else base
    if base is not None and r is base._a:
        return base
    return ndarray._of(np.asarray(r), root)


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        return a.astype(dtype)
    if isinstance(a, (list, tuple)) and any(True for _ in _arrays_in(a)):
        _reject_host(a)  # a sequence of device arrays is assembled on the device
        _record("asarray", launches=1)
        return ndarray._of(np.array(_unwrap(a), dtype=dtype, order=order or "K"))
    _record("asarray", uploads=1)
    return ndarray._of(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    on_device = isinstance(obj, (list, tuple)) and any(True for _ in _arrays_in(obj))
    if isinstance(obj, ndarray) or on_device:
        if copy is False or copy is None or not isinstance(obj, ndarray):
            return asarray(obj, dtype)
        _record("array", launches=1)
        return ndarray._of(np.array(obj._a, dtype=dtype, order=order, copy=True, ndmin=ndmin))
    _record("array", uploads=1)
    return ndarray._of(np.array(obj, dtype=dtype, order=order, copy=True, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return np.asarray(a, order=order)


def get_array_module(*args):
    return cupy if any(isinstance(a, ndarray) for a in args) else np


def copyto(dst, src, casting="same_kind", where=None):
    if not isinstance(dst, ndarray):
        raise TypeError("copyto: dst must be a cupy.ndarray")
    if isinstance(src, np.ndarray):
        if src.size != 1:
            raise ValueError("non-scalar numpy.ndarray cannot be used for copyto")
        src = src.squeeze()[()]
    elif not isinstance(src, _SCALARS):
        _check_operand(src)
    if where is not None:
        _check_operand(where)
    _record("copyto", launches=1)
    np.copyto(dst._a, _unwrap(src), casting=casting,
              where=True if where is None else _unwrap(where))


def concatenate(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    """CuPy's rules: device arrays of ndim >= 1 only (``concatenate_method`` in CuPy)."""
    if axis is None:
        tup = [m.ravel() for m in tup]
        axis = 0
    for a in tup:
        if isinstance(a, np.ndarray):
            raise _unsupported(a)  # CuPy's _preprocess_args
        if not isinstance(a, ndarray):
            raise TypeError("Only cupy arrays can be concatenated")
        if a.ndim == 0:
            raise TypeError("zero-dimensional arrays cannot be concatenated")
    _check_out(out)
    _record("concatenate", launches=1)
    r = np.concatenate(_unwrap(list(tup)), axis=axis, out=_unwrap(out), dtype=dtype,
                       casting=casting)
    return out if out is not None else ndarray._of(r)


def stack(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    """CuPy's ``stack``: ``concatenate([expand_dims(x, axis) for x in tup])``, whose
    ``_expand_dims`` is typed: anything but a ``cupy.ndarray`` raises ``TypeError``."""
    for a in tup:
        if not isinstance(a, ndarray):
            raise TypeError(f"Argument 'a' has incorrect type (expected "
                            f"cupy._core.core._ndarray_base, got {type(a).__name__})")
    return concatenate([cupy.expand_dims(x, axis) for x in tup], axis, out, dtype=dtype,
                       casting=casting)


def take(a, indices, axis=None, out=None):
    if not isinstance(a, ndarray):
        raise _unsupported(a)
    return a.take(indices, axis=axis, out=out)


def as_strided(x, shape=None, strides=None):
    if not isinstance(x, ndarray):
        raise _unsupported(x)
    return ndarray._of(np.lib.stride_tricks.as_strided(x._a, shape, strides),
                       x._base if x._base is not None else x)


# name -> kind; each name exists in cupy/__init__.py of CuPy 14 (see test_strict_cupy.py).
_FUNCTIONS = {
    **dict.fromkeys("""zeros ones full zeros_like ones_like full_like arange linspace eye identity
        vstack hstack tile repeat pad einsum matmul dot tensordot outer inner
        sum mean max min amax amin prod all any argmax argmin std var cumsum cumprod sort argsort
        copy diff isclose allclose array_equal tril triu count_nonzero average roll""".split(),
        "launch"),
    **dict.fromkeys("clip where around round nan_to_num".split(), "elementwise"),
    **dict.fromkeys("""reshape ravel transpose moveaxis swapaxes expand_dims squeeze broadcast_to
        atleast_1d atleast_2d atleast_3d flip fliplr flipud split array_split ascontiguousarray
        asfortranarray diagonal real imag""".split(), "view"),
    **dict.fromkeys("empty empty_like".split(), "empty"),
    **dict.fromkeys("nonzero flatnonzero argwhere unique".split(), "sync"),
}
_ALIASES = {"abs": "absolute", "concat": "concatenate", "permute_dims": "transpose", "pow": "power"}
# Plain NumPy objects that CuPy re-exports (dtypes, dtype helpers, constants).
_NUMPY_NAMES = """
    dtype finfo iinfo float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64
    intp uintp bool_ complex64 complex128 floating integer number generic signedinteger
    unsignedinteger inexact complexfloating issubdtype promote_types result_type can_cast
    min_scalar_type e inf nan pi newaxis euler_gamma ndindex s_ index_exp
""".split()


# --------------------------------------------------------------------------- kernels

_TWINS = {}


def register_kernel_twin(name, function=None, operation=None):
    """Register the NumPy twin of ``cupy.ElementwiseKernel(..., name)`` (usable as a decorator).

    The twin is called with the kernel's arguments, device arrays replaced by
    their NumPy storage (writes land in the device arrays). When the caller
    passed the outputs, the twin writes them and its return value is ignored;
    otherwise it returns the output array(s). If ``operation`` (the CUDA C
    body the twin was written from) is given, calling a kernel whose body
    differs (whitespace aside) raises, so that a twin cannot silently drift
    from the kernel it stands for.
    """
    if function is None:
        return lambda fn: register_kernel_twin(name, fn, operation)
    _TWINS[name] = (function, None if operation is None else " ".join(operation.split()))
    return function


def unregister_kernel_twin(name):
    _TWINS.pop(name, None)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _parse_params(text):
    params = []
    for p in (s.strip() for s in text.split(",")):
        if not p:
            continue
        tokens = p.split()
        if len(tokens) < 2 or not _IDENT.match(tokens[-1]):
            raise ValueError(f"Invalid parameter: {p!r}")
        ctype = tokens[-2]
        # as CuPy's ParameterInfo: one letter is a type placeholder, a longer word a dtype
        dtype = None if len(ctype) == 1 or ctype == "CIndexer" else np.dtype(ctype)
        params.append(types.SimpleNamespace(name=tokens[-1], ctype=ctype, dtype=dtype,
                                            raw="raw" in tokens[:-2]))
    return tuple(params)


def _decide_types(in_params, out_params, in_args, out_args):
    """The dtype of every argument, decided as CuPy's ``_decide_params_type_core``:
    the outputs first, then the inputs; the arrays typed with one placeholder must agree,
    scalars take their placeholder's type."""
    placeholders = {}
    for params, args in ((out_params, out_args), (in_params, in_args)):
        for p, a in zip(params, args):
            if not isinstance(a, ndarray):
                continue  # a scalar: typed below
            if p.dtype is not None:
                if a.dtype != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {p.dtype}")
            elif p.ctype in placeholders:
                if a.dtype != placeholders[p.ctype]:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} "
                                    f"{placeholders[p.ctype]} {p.ctype}")
            else:
                placeholders[p.ctype] = a.dtype
    try:
        return ([placeholders[p.ctype] if p.dtype is None else p.dtype for p in in_params],
                [placeholders[p.ctype] if p.dtype is None else p.dtype for p in out_params])
    except KeyError as error:  # CuPy fails the same way: no array decides the type
        raise TypeError(f"strict_cupy: no array argument decides the type {error}") from None


class ElementwiseKernel:
    """Checks its arguments as CuPy does and runs a registered NumPy twin (no CUDA)."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):
        if not _IDENT.match(name):
            raise ValueError(f'Invalid kernel name: "{name}"')
        self.in_params, self.out_params = _parse_params(in_params), _parse_params(out_params)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        if "i" in [p.name for p in self.in_params + self.out_params]:
            raise ValueError("Can not use 'i' as a parameter name")
        self.operation, self.name, self.__name__ = operation, name, name
        self.preamble, self.no_return, self.return_tuple = preamble, no_return, return_tuple

    def __call__(self, *args, size=-1, stream=None, block_size=128):
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(
                f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} or "
                f"{self.nargs} (with outputs), but given {len(args)}.")
        for x in args:
            _check_operand(x)
        outs = args[self.nin:]
        for o in outs:
            _check_out(o)
        shapes = [a.shape for a, p in zip(args, self.in_params + self.out_params)
                  if isinstance(a, ndarray) and not p.raw]
        if not shapes and size == -1:
            raise ValueError("Loop size is undecided.")
        np.broadcast_shapes(*shapes)  # ValueError when they do not broadcast, as in CuPy
        in_types, out_types = _decide_types(self.in_params, self.out_params,
                                            args[:self.nin], outs)
        # a scalar is passed in its parameter's type (CuPy's CScalar.apply_dtype)
        args = tuple(a if isinstance(a, ndarray) else np.dtype(t).type(a)
                     for a, t in zip(args, in_types + out_types))
        twin, operation = _TWINS.get(self.name, (None, None))
        if twin is None:
            raise NotImplementedError(
                f"strict_cupy cannot run CUDA C: register a NumPy twin for ElementwiseKernel "
                f"{self.name!r} with strict_cupy.register_kernel_twin({self.name!r}, function)")
        if operation is not None and operation != " ".join(self.operation.split()):
            raise RuntimeError(
                f"the CUDA body of ElementwiseKernel {self.name!r} changed since its NumPy twin "
                f"was written: update the twin and its operation= text")
        _record(f"ElementwiseKernel {self.name}", launches=1)
        r = twin(*_unwrap(args))
        if outs:
            r = outs
        else:
            r = (r,) if self.nout == 1 and not isinstance(r, tuple) else tuple(r)
            if len(r) != self.nout or not all(isinstance(x, np.ndarray) for x in r):
                raise TypeError(f"the twin of {self.name!r} must return {self.nout} NumPy array(s)")
            r = tuple(ndarray._of(np.ascontiguousarray(x, dtype=t))
                      for x, t in zip(r, out_types))
        if self.no_return:
            return None
        return r if self.return_tuple or self.nout != 1 else r[0]


class _Fused:
    def __init__(self, func, name):
        self.func, self.name, self.__name__ = func, name, name

    def __call__(self, *args):
        if getattr(_local, "fusing", 0) or not any(isinstance(a, ndarray) for a in args):
            return self.func(*args)  # nested fusion, or all-NumPy arguments: plain Python
        for a in args:
            if a is not None and not isinstance(a, (ndarray, *_SCALARS)):
                raise TypeError("Invalid argument type for '{}': ({})".format(
                    self.name, ", ".join(repr(type(x)) for x in args)))
        _record(f"fuse {self.name}", launches=1)
        _local.fusing = getattr(_local, "fusing", 0) + 1
        try:
            return self.func(*args)
        finally:
            _local.fusing -= 1


def fuse(*args, **kwargs):
    def decorate(f):
        return _Fused(f, kwargs.get("kernel_name") or f.__name__)
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


# --------------------------------------------------------------------------- cupy.cuda

class _Stream:
    def synchronize(self):
        _record("Stream.synchronize", syncs=1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise ValueError("strict_cupy has one pretend device, 0 (and no GPU)")

    def synchronize(self):
        _record("Device.synchronize", syncs=1)

    def use(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _MemoryPool:
    """Answers 0: the stand-in keeps no device memory."""

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def n_free_blocks(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


def _module(name, doc, **attrs):
    m = types.ModuleType(name, doc)
    m.__dict__.update(attrs)

    def __getattr__(attr):
        raise AttributeError(
            f"module '{name}' has no attribute '{attr}' (strict_cupy stand-in: real CuPy lacks it, "
            f"or the stand-in does not implement it; see tests/strict_cupy.py)")
    m.__getattr__ = __getattr__
    return m


_STANDIN_DOC = ("strict_cupy: a NumPy stand-in for {} used by the tests. NOT a GPU; "
                "see tests/strict_cupy.py.")
_stream = _Stream()
_runtime = _module("cupy.cuda.runtime", _STANDIN_DOC.format("cupy.cuda.runtime"),
                   getDeviceCount=lambda: 1)  # a pretend device, so that set_backend("cupy") works
_cuda = _module("cupy.cuda", _STANDIN_DOC.format("cupy.cuda"), runtime=_runtime, Device=_Device,
                Stream=lambda *a, **k: _Stream(), get_current_stream=lambda device=None: _stream,
                MemoryPool=_MemoryPool)
_stride_tricks = _module("cupy.lib.stride_tricks", _STANDIN_DOC.format("cupy.lib.stride_tricks"),
                         as_strided=as_strided)
_lib = _module("cupy.lib", _STANDIN_DOC.format("cupy.lib"), stride_tricks=_stride_tricks)
_memory_pool, _pinned_pool = _MemoryPool(), _MemoryPool()

cupy = _module(
    "cupy", _STANDIN_DOC.format("cupy"),
    ndarray=ndarray, ufunc=ufunc, cuda=_cuda, lib=_lib,
    asarray=asarray, array=array, asnumpy=asnumpy, get_array_module=get_array_module,
    copyto=copyto, take=take, concatenate=concatenate, stack=stack,
    ElementwiseKernel=ElementwiseKernel, fuse=fuse,
    get_default_memory_pool=lambda: _memory_pool,
    get_default_pinned_memory_pool=lambda: _pinned_pool,
    **{n: ufunc(getattr(np, n)) for n in _UFUNCS},
    **{n: _function(n, getattr(np, n), kind) for n, kind in _FUNCTIONS.items()},
    **{n: getattr(np, n) for n in _NUMPY_NAMES},
)
for _alias, _target in _ALIASES.items():
    setattr(cupy, _alias, getattr(cupy, _target))


def _scatter(np_ufunc, name):
    def scatter(a, slices, value):
        if not isinstance(a, ndarray):
            raise _unsupported(a)
        key, _, _ = a._key(slices)
        if isinstance(value, np.ndarray):
            _record(f"{name} value upload", uploads=1)  # CuPy: core.array(value), silently
        else:
            _check_operand(value)
        _record(name, launches=1)
        np_ufunc.at(a._a, key[:-1] if key[-1] is Ellipsis else key, _unwrap(value))
    scatter.__name__ = name
    return scatter


cupyx = _module(
    "cupyx", _STANDIN_DOC.format("cupyx"),
    scatter_add=_scatter(np.add, "scatter_add"), scatter_max=_scatter(np.maximum, "scatter_max"),
    scatter_min=_scatter(np.minimum, "scatter_min"),
    allow_synchronize=allow_synchronize, DeviceSynchronized=DeviceSynchronized,
)

MODULES = {"cupy": cupy, "cupy.cuda": _cuda, "cupy.cuda.runtime": _runtime, "cupy.lib": _lib,
           "cupy.lib.stride_tricks": _stride_tricks, "cupyx": cupyx}


@contextlib.contextmanager
def installed():
    """Put the stand-in into ``sys.modules`` for the block, then restore what was there."""
    saved = {name: sys.modules.get(name) for name in MODULES}
    sys.modules.update(MODULES)
    try:
        yield cupy
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def is_stand_in(module):
    """True when ``module`` is this stand-in (not real CuPy)."""
    return module is cupy or module is cupyx
