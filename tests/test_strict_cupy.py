"""Tests of tests/strict_cupy.py, the strict NumPy stand-in for CuPy (NOT a GPU).

One or more tests per rule of the stand-in. Each rule raises what real CuPy
raises (checked against the CuPy 14 sources), so that code which passes on
the stand-in does not break on real CuPy for these reasons. Nothing here
needs or tests a GPU.
"""
from __future__ import annotations

import copy
import pickle
import sys

import numpy as np
import pytest

import scratchae.backend as B

import strict_cupy as S

cp, cupyx = S.cupy, S.cupyx

# Public top-level names of ``cupy`` in CuPy 14.2 (the cupy_cuda12x-14.2.0 wheel:
# every name bound in cupy/__init__.py, read with ``ast``, not imported), plus
# ``lib``, a subpackage that cupy/__init__.py imports (and cupy/lib imports stride_tricks).
CUPY14_NAMES = set("""
    AxisError ComplexWarning DataSource ElementwiseKernel Inf Infinity ModuleDeprecationWarning
    NAN NINF NZERO NaN PINF PZERO RankWarning RawKernel RawModule ReductionKernel TooHardError
    VisibleDeprecationWarning abs absolute acos acosh add all allclose alltrue amax amin angle
    annotations any append apply_along_axis apply_over_axes arange arccos arccosh arcsin arcsinh
    arctan arctan2 arctanh argmax argmin argpartition argsort argwhere around array array2string
    array_equal array_equiv array_repr array_split array_str asanyarray asarray
    asarray_chkfinite ascontiguousarray asfarray asfortranarray asin asinh asnumpy astype atan
    atan2 atanh atleast_1d atleast_2d atleast_3d average bartlett base_repr binary_repr bincount
    bitwise_and bitwise_count bitwise_invert bitwise_left_shift bitwise_not bitwise_or
    bitwise_right_shift bitwise_xor blackman bool bool_ broadcast broadcast_arrays
    broadcast_shapes broadcast_to byte byte_bounds c_ can_cast cbrt cdouble ceil cfloat choose
    clear_memo clip column_stack common_type complex128 complex64 complex_ complexfloating
    compress concat concatenate conj conjugate convolve copy copysign copyto corrcoef correlate
    cos cosh count_nonzero cov cross csingle cuda cumprod cumproduct cumsum cumulative_prod
    cumulative_sum deg2rad degrees delete diag diag_indices diag_indices_from diagflat diagonal
    diff digitize disable_experimental_feature_warning disp divide divmod dot double dsplit
    dstack dtype e ediff1d einsum empty empty_like equal euler_gamma exceptions exp exp2
    expand_dims expm1 extract eye fabs fft fill_diagonal find_common_type finfo fix flatiter
    flatnonzero flip fliplr flipud float16 float32 float64 float_ float_power floating floor
    floor_divide fmax fmin fmod format_float_positional format_float_scientific format_parser
    frexp fromDlpack from_dlpack frombuffer fromfile fromfunction fromiter fromstring full
    full_like fuse gcd generic genfromtxt get_array_module get_array_wrap
    get_default_memory_pool get_default_pinned_memory_pool get_printoptions gradient greater
    greater_equal half hamming hanning heaviside histogram histogram2d histogramdd hsplit hstack
    hypot i0 identity iinfo imag in1d index_exp indices inexact inf infty inner int16 int32
    int64 int8 int_ intc integer interp intersect1d intp invert is_available isclose iscomplex
    iscomplexobj isdtype isfinite isfortran isin isinf isnan isneginf isposinf isreal isrealobj
    isscalar issctype issubclass_ issubdtype issubsctype iterable ix_ kaiser kron lcm ldexp
    left_shift less less_equal lexsort linalg linspace load loadtxt log log10 log1p log2
    logaddexp logaddexp2 logical_and logical_not logical_or logical_xor logspace long longlong
    make_aligned_dtype mask_indices matmul matrix_transpose max maximum may_share_memory mean
    median memoize mesg meshgrid mgrid min min_scalar_type minimum mintypecode mod modf moveaxis
    msort multiply nan nan_to_num nanargmax nanargmin nancumprod nancumsum nanmax nanmean
    nanmedian nanmin nanprod nanstd nansum nanvar ndarray ndim ndindex negative newaxis
    nextafter nonzero not_equal number obj2sctype ogrid ones ones_like outer packbits pad
    partition percentile permute_dims pi piecewise place poly poly1d polyadd polyfit polymul
    polynomial polysub polyval positive pow power printoptions prod product promote_types ptp
    put put_along_axis putmask quantile r_ rad2deg radians random ravel ravel_multi_index real
    real_if_close reciprocal remainder repeat require reshape resize result_type right_shift
    rint roll rollaxis roots rot90 round round_ row_stack s_ safe_eval save savetxt savez
    savez_compressed sctype2char searchsorted select set_printoptions set_string_function
    setdiff1d setxor1d shape shares_memory short show_config sign signbit signedinteger sin sinc
    single singlecomplex sinh size sometrue sort sort_complex split sqrt square squeeze stack
    std subtract sum swapaxes take take_along_axis tan tanh tensordot testing tile trace
    transpose trapezoid trapz tri tril tril_indices tril_indices_from trim_zeros triu
    triu_indices triu_indices_from true_divide trunc typename ubyte ufunc uint uint16 uint32
    uint64 uint8 uintc uintp ulong ulonglong union1d unique unique_all unique_counts
    unique_inverse unique_values unpackbits unravel_index unsignedinteger unwrap ushort vander
    var vdot vectorize vsplit vstack where who zeros zeros_like
    lib
""".split())
CUPYX14_NAMES = set("""
    DeviceSynchronized GeneralizedUFunc allow_synchronize empty_like_pinned empty_pinned errstate
    get_runtime_info geterr linalg optimizing rsqrt scatter_add scatter_max scatter_min scipy seterr
    time zeros_like_pinned zeros_pinned""".split())
CUPY14_CUDA_NAMES = set("""
    BaseMemory CFunctionAllocator Device Event ExternalStream Function Graph ManagedMemory Memory
    MemoryAsync MemoryAsyncPool MemoryHook MemoryPointer MemoryPool Module PinnedMemory
    PinnedMemoryPointer PinnedMemoryPool PythonFunctionAllocator Stream UnownedMemory alloc
    alloc_pinned_memory compiler cub device driver function get_allocator get_cublas_handle
    get_cuda_path get_current_stream get_device_id get_elapsed_time get_local_runtime_version
    get_nvcc_path is_available malloc_async malloc_managed memory memory_hook memory_hooks nvrtc
    nvtx pinned_memory profile profiler runtime set_allocator set_pinned_memory_allocator stream
    texture thrust using_allocator""".split())
# Public attributes of cupy.ndarray in CuPy 14 (cupy/_core/core.pyx and core.pxd).
CUPY14_NDARRAY = set("""
    T all any argmax argmin argpartition argsort astype base byteswap choose clip compress conj
    conjugate copy cstruct cumprod cumsum data device diagonal dot dtype dump dumps fill flags flat
    flatten get imag item itemsize mT max mdspan mean min nbytes ndim nonzero partition prod ptp
    put ravel real reduced_view repeat reshape round scatter_add scatter_max scatter_min
    searchsorted set shape size sort squeeze std strides sum swapaxes take toDlpack tobytes tofile
    tolist trace transpose var view""".split())


def dev(a, dtype=np.float32):
    return cp.asarray(np.asarray(a, dtype=dtype))


# --------------------------------------------------------------------------- rule 1
def test_device_array_is_recognised_as_cupy_by_scratchae():
    x = dev([1, 2, 3])
    assert type(x).__module__ == "cupy" and isinstance(x, cp.ndarray)
    with S.installed():
        assert B.get_array_module(x) is cp
        np.testing.assert_array_equal(B.to_numpy(x), [1, 2, 3])
    assert B.get_array_module(np.ones(2)) is np


def test_installed_puts_the_stand_in_in_sys_modules_and_takes_it_out():
    before = {name: sys.modules.get(name) for name in ("cupy", "cupyx")}
    with S.installed():
        import cupy
        import cupyx as installed_cupyx
        from cupy.lib.stride_tricks import as_strided
        assert S.is_stand_in(cupy) and S.is_stand_in(installed_cupyx)
        assert as_strided is cp.lib.stride_tricks.as_strided
        assert B.cupy_available()  # only because getDeviceCount() pretends: there is no GPU
    assert {name: sys.modules.get(name) for name in ("cupy", "cupyx")} == before


def test_the_stand_in_says_it_is_no_gpu():
    assert "It is NOT a GPU" in S.__doc__
    for module in S.MODULES.values():
        assert "NOT a GPU" in module.__doc__


# --------------------------------------------------------------------------- rule 2
@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda x: x.__array__()],
                         ids=["np.asarray", "np.array", "__array__"])
def test_no_implicit_conversion_to_numpy(convert):
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        convert(dev([1, 2]))


@pytest.mark.parametrize("call", [lambda x: np.exp(x), lambda x: np.maximum(x, 0),
                                  lambda x: np.sum(x), lambda x: np.concatenate([x, x]),
                                  lambda x: np.clip(x, 0, 1), lambda x: np.ascontiguousarray(x)],
                         ids=["exp", "maximum", "sum", "concatenate", "clip", "ascontiguousarray"])
def test_numpy_functions_on_a_device_array_raise(call):
    with pytest.raises(TypeError):
        call(dev([1, 2]))


def test_get_and_asnumpy_are_explicit_copies():
    x = dev([1, 2])
    for host in (x.get(), cp.asnumpy(x)):
        assert isinstance(host, np.ndarray)
        host[0] = 9  # a copy: the device array does not change
    np.testing.assert_array_equal(x.get(), [1, 2])
    np.testing.assert_array_equal(cp.asnumpy(np.ones(2)), [1, 1])  # NumPy passes, as in CuPy


def test_asarray_upload_is_a_copy():
    h = np.ones(3, np.float32)
    x = cp.asarray(h)
    h[0] = 5
    assert x.get()[0] == 1


# --------------------------------------------------------------------------- rule 3
@pytest.mark.parametrize("call", [
    lambda x, h: x + h, lambda x, h: h + x, lambda x, h: x * h, lambda x, h: h < x,
    lambda x, h: cp.maximum(x, h), lambda x, h: cp.matmul(h, x), lambda x, h: x @ h,
    lambda x, h: cp.concatenate([x, h]), lambda x, h: cp.where(x > 0, x, h),
    lambda x, h: cp.maximum(x, np.array(1.0, np.float32)),  # 0-d NumPy arrays too, as in CuPy
], ids=["add", "radd", "mul", "less", "maximum", "matmul", "@", "concatenate", "where", "0-d"])
def test_cupy_operations_reject_numpy_arrays(call):
    x, h = dev(np.ones((2, 2))), np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match="Unsupported type"):
        call(x, h)


@pytest.mark.parametrize("call", [
    lambda x: cp.stack([x.sum(), 1.0]), lambda x: cp.stack([x.sum(), np.float32(1)]),
    lambda x: cp.stack([1.0, 2.0]), lambda x: cp.concatenate([x, 1.0]),
    lambda x: cp.concatenate([x, np.float32(1)]), lambda x: cp.concatenate([x.sum(), x.sum()]),
], ids=["stack-float", "stack-np-scalar", "stack-only-scalars", "concatenate-float",
        "concatenate-np-scalar", "concatenate-0d"])
def test_stack_and_concatenate_join_device_arrays_only(call):
    """CuPy's concatenate refuses anything but cupy.ndarray (0-d ones too) and its stack
    hands every item to the typed _expand_dims: a scalar is a TypeError, not an upload."""
    with pytest.raises(TypeError):
        call(dev([1, 2]))


def test_stack_and_concatenate_of_device_arrays():
    x = dev([1, 2])
    with S.counting() as c:
        s, j = cp.stack([x.sum(), x.max()]), cp.concatenate([x, x], axis=0)
    assert s.get().tolist() == [3, 2] and j.get().tolist() == [1, 2, 1, 2]
    assert c.uploads == 0 and c.by_op["concatenate"] == 2


def test_cupy_operations_accept_scalars():
    x = dev([1, 2])
    for s in (2, 2.0, True, np.float32(2), np.int64(2)):
        assert isinstance(x * s, cp.ndarray) and isinstance(s * x, cp.ndarray)
        assert isinstance(cp.maximum(x, s), cp.ndarray)


def test_out_must_be_a_device_array():
    x = dev([1, 2])
    with pytest.raises(TypeError, match="Output arguments type must be cupy.ndarray"):
        cp.exp(x, out=np.empty(2, np.float32))
    with pytest.raises(TypeError):
        cp.clip(x, 0, 1, out=np.empty(2, np.float32))


def test_explicit_uploads_are_allowed():
    for x in (cp.asarray(np.ones(2)), cp.array([1, 2]), cp.asarray(3.0), cp.array(np.ones(2))):
        assert isinstance(x, cp.ndarray)


# --------------------------------------------------------------------------- rule 4
@pytest.mark.parametrize("key", [Ellipsis, slice(None), 0, (0, slice(1, None))],
                         ids=["ellipsis", "slice", "int", "tuple"])
def test_assigning_a_numpy_array_into_a_device_array_raises(key):
    x = dev(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[key] = np.ones((2, 3), np.float32)[key]


def test_copyto_from_numpy_raises():
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for copyto"):
        cp.copyto(dev(np.zeros((2, 3))), np.ones((2, 3), np.float32))


def test_assigning_scalars_and_device_arrays_is_fine():
    x = dev(np.zeros((2, 3)))
    x[...] = 1
    x[0] = np.float32(2)
    x[1, :] = dev([3, 4, 5])
    x[0, 0] = np.array(7.0)  # a 0-d NumPy array fills, as in CuPy
    np.testing.assert_array_equal(x.get(), [[7, 2, 2], [3, 4, 5]])


def test_host_index_arrays_and_advanced_assignment_upload_silently_like_cupy():
    x = dev(np.arange(6))
    with S.counting() as c:
        y = x[np.array([0, 2])]
        z = x[[1, 3]]
        x[dev([4, 5], np.int64)] = np.array([40, 50], np.float32)
    assert c.uploads == 4  # the two host indices, the device index made above, the host value
    assert c.syncs == 0
    np.testing.assert_array_equal(y.get(), [0, 2])
    np.testing.assert_array_equal(z.get(), [1, 3])
    np.testing.assert_array_equal(x.get(), [0, 1, 2, 3, 40, 50])


def test_boolean_masks_synchronize():
    x = dev(np.arange(6))
    mask = x > 2
    with S.counting() as c:
        x[mask] = 0
    assert c.syncs == 1 and c.downloads == 1  # CuPy reads the number of True values back
    with S.counting() as c:
        y = x[mask]
    assert c.syncs == 1 and y.shape == (3,)


def test_basic_indexing_gives_views_even_0d():
    x = dev(np.arange(6).reshape(2, 3))
    with S.counting() as c:
        v = x[1, 2]
        row = x[0]
    assert c.launches == 0
    assert isinstance(v, cp.ndarray) and v.shape == ()
    row[...] = 9
    v[...] = 7
    np.testing.assert_array_equal(x.get(), [[9, 9, 9], [3, 4, 7]])


# --------------------------------------------------------------------------- rule 5
def test_scalar_conversions_work_and_synchronize():
    x = dev([2.5])  # float()/int() of a 1-element 1-d array: as the host's NumPy decides (2.4: no)
    with S.counting() as c:
        assert float(x[0]) == 2.5 and int(x[0]) == 2 and bool(x) is True
        assert float(x.sum()) == 2.5 and x[0].item() == 2.5 and x.tolist() == [2.5]
    assert c.syncs == 6 and c.downloads == 6


def test_no_index_protocol():  # cupy.ndarray has no __index__
    with pytest.raises(TypeError):
        range(cp.asarray(np.int64(3)))


# --------------------------------------------------------------------------- rule 6
def test_ufunc_outputs_are_c_contiguous():
    xt = dev(np.arange(12).reshape(3, 4)).T
    assert not xt.flags.c_contiguous
    for y in (cp.maximum(xt, 0), xt * 2, cp.exp(xt), -xt, cp.clip(xt, 0, 1),
              cp.where(xt > 1, xt, 0)):
        assert y.flags.c_contiguous


def test_like_functions_keep_the_layout():
    f = dev(np.ones((3, 4))).T
    assert f.flags.f_contiguous
    for y in (cp.empty_like(f), cp.zeros_like(f), cp.ones_like(f), cp.full_like(f, 2),
              f.astype(np.float64)):
        assert y.flags.f_contiguous


def test_out_writes_in_place():
    x, out = dev([1, -2]), dev([0, 0])
    assert cp.maximum(x, 0, out=out) is out
    assert cp.multiply(x, 2, out) is out  # positional out, as CuPy allows
    np.testing.assert_array_equal(out.get(), [2, -4])
    x += 1
    np.testing.assert_array_equal(x.get(), [2, -1])


# --------------------------------------------------------------------------- rule 7
@pytest.mark.parametrize("make, launches", [
    (lambda x, xt: cp.zeros((3, 3)), 1),
    (lambda x, xt: cp.full((3,), 2.0), 1),
    (lambda x, xt: cp.arange(5), 1),
    (lambda x, xt: cp.empty((3, 3)), 0),
    (lambda x, xt: cp.empty_like(x), 0),
    (lambda x, xt: x.reshape(4, 3), 0),
    (lambda x, xt: x.T, 0),
    (lambda x, xt: x[1:, ::2], 0),
    (lambda x, xt: cp.moveaxis(x, 0, 1), 0),
    (lambda x, xt: xt.reshape(-1), 1),  # not contiguous: a copy
    (lambda x, xt: cp.ascontiguousarray(xt), 1),
    (lambda x, xt: cp.ascontiguousarray(x), 0),
    (lambda x, xt: cp.take(x, dev([0, 2], np.int64), axis=1), 1),
    (lambda x, xt: x[dev([0, 2], np.int64)], 1),
    (lambda x, xt: x.astype(np.float64), 1),
    (lambda x, xt: x.astype(np.float32, copy=False), 0),
    (lambda x, xt: x + 1, 1),
    (lambda x, xt: x.sum(axis=0), 1),
    (lambda x, xt: x @ xt, 1),
    (lambda x, xt: x.copy(), 1),
], ids=["zeros", "full", "arange", "empty", "empty_like", "reshape", "T", "slice", "moveaxis",
        "reshape-copy", "ascontiguousarray-copy", "ascontiguousarray-view", "take", "fancy",
        "astype", "astype-nocopy", "add", "sum", "matmul", "copy"])
def test_launch_counts(make, launches):
    x = dev(np.arange(12).reshape(3, 4))
    xt = x.T
    with S.counting() as c:
        make(x, xt)
    assert c.launches == launches, c.by_op


def test_setitem_counts_one_launch_and_no_transfer():
    x = dev(np.zeros(4))
    with S.counting() as c:
        x[1:] = 3
    assert (c.launches, c.transfers, c.syncs) == (1, 0, 0)


def test_augmented_assignment_into_a_slice_is_one_launch():
    x = dev(np.zeros((3, 4)))
    with S.counting() as c:
        x[1:, ::2] += 1  # CuPy skips the write-back of the view into itself
    assert c.launches == 1 and c.by_op == {"add": 1}
    assert float(x.sum()) == 4


def test_pickling_downloads_and_a_list_of_device_arrays_stays_on_the_device():
    x = dev([1, 2])
    with S.counting() as c:
        y = pickle.loads(pickle.dumps(x))
    assert isinstance(y, cp.ndarray) and (c.downloads, c.uploads) == (1, 1)
    with S.counting() as c:
        z = cp.asarray([x, x])
    assert z.shape == (2, 2) and c.transfers == 0
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.asarray([x, np.ones(2)])


def test_ascontiguousarray_of_a_contiguous_array_is_the_same_array():
    x = dev(np.ones(3))
    assert cp.ascontiguousarray(x) is x and cp.asarray(x) is x


def test_counting_nests_and_totals_reset():
    S.reset()
    with S.counting() as outer:
        dev([1])
        with S.counting() as inner:
            float(dev([1]).sum())
    assert (outer.uploads, outer.launches, outer.syncs) == (2, 1, 1)
    assert (inner.uploads, inner.launches, inner.syncs) == (1, 1, 1)
    assert inner.by_op == {"sum": 1}
    assert S.totals().uploads == 2
    S.reset()
    assert S.totals().uploads == 0


def test_allow_synchronize_false_raises_at_the_sync():
    x = dev([1, 2])
    with cupyx.allow_synchronize(False):
        y = x * 2  # no sync: fine
        with pytest.raises(cupyx.DeviceSynchronized):
            float(y.sum())
        with pytest.raises(cupyx.DeviceSynchronized):
            y.get()
    assert float(y.sum()) == 6


def test_stream_and_device_synchronize_count():
    with S.counting() as c:
        cp.cuda.get_current_stream().synchronize()
        cp.cuda.Device(0).synchronize()
    assert c.syncs == 2


# --------------------------------------------------------------------------- rule 8
def test_every_name_of_the_stand_in_exists_in_real_cupy():
    ours = {n for n in vars(cp) if not n.startswith("_")}
    assert ours <= CUPY14_NAMES, sorted(ours - CUPY14_NAMES)
    ours_x = {n for n in vars(cupyx) if not n.startswith("_")}
    assert ours_x <= CUPYX14_NAMES, sorted(ours_x - CUPYX14_NAMES)
    ours_cuda = {n for n in vars(cp.cuda) if not n.startswith("_")}
    assert ours_cuda <= CUPY14_CUDA_NAMES, sorted(ours_cuda - CUPY14_CUDA_NAMES)
    assert {n for n in vars(cp.lib.stride_tricks) if not n.startswith("_")} == {"as_strided"}
    ours_nd = {n for n in dir(cp.ndarray) if not n.startswith("_")}
    assert ours_nd <= CUPY14_NDARRAY, sorted(ours_nd - CUPY14_NDARRAY)


@pytest.mark.parametrize("name", ["asmatrix", "nditer", "frompyfunc", "float128", "random"])
def test_names_missing_from_the_stand_in_raise_attribute_error(name):
    with pytest.raises(AttributeError, match="strict_cupy"):
        getattr(cp, name)


def test_numpy_only_ndarray_attributes_are_missing():
    x = dev([1, 2])
    for name in ("__array_interface__", "ctypes", "tofile", "itemset", "newbyteorder", "setflags"):
        assert not hasattr(x, name), name


def test_what_scratchae_uses_exists():
    for name in ("maximum", "multiply", "sqrt", "divide", "greater_equal", "abs", "exp", "log1p",
                 "clip", "take", "zeros", "empty", "full", "pad", "einsum", "matmul", "copyto",
                 "ascontiguousarray", "moveaxis", "stack", "concatenate", "isfinite", "isnan",
                 "sign", "log", "log10", "ElementwiseKernel", "fuse", "get_default_memory_pool"):
        assert hasattr(cp, name), name
    assert callable(cp.lib.stride_tricks.as_strided) and callable(cupyx.scatter_add)
    assert cp.cuda.runtime.getDeviceCount() == 1  # pretend, so that set_backend("cupy") works


def test_ufunc_methods():
    a = dev(np.zeros(3))
    cp.add.at(a, dev([0, 0, 2], np.int64), 1)
    np.testing.assert_array_equal(a.get(), [2, 0, 1])
    assert float(cp.add.reduce(dev([1, 2, 3]))) == 6


def test_scatter_add():
    a = dev(np.zeros((3, 2)))
    cupyx.scatter_add(a, dev([0, 2, 0], np.int64), dev(np.ones((3, 2))))
    np.testing.assert_array_equal(a.get(), [[2, 2], [0, 0], [1, 1]])


def test_as_strided_is_a_view_and_copyto_writes():
    x = dev(np.arange(6))
    w = cp.lib.stride_tricks.as_strided(x, shape=(4, 3), strides=(4, 4))
    out = cp.empty((4, 3), dtype=np.float32)
    with S.counting() as c:
        cp.copyto(out, w)
    assert c.launches == 1
    np.testing.assert_array_equal(out.get()[:, 0], [0, 1, 2, 3])


def test_deepcopy_copies_on_the_device():
    x = dev([1, 2])
    y = copy.deepcopy(x)
    y[0] = 5
    assert x.get()[0] == 1 and isinstance(y, cp.ndarray)


# --------------------------------------------------------------------------- rule 9
def _kernel(name="strict_test_axpy"):
    return cp.ElementwiseKernel("T x, T a", "T y", "y = a * x + y", name)


@pytest.fixture
def axpy_twin():
    def twin(x, a, y=None):
        if y is None:
            return (a * x).astype(x.dtype)
        y += a * x
    S.register_kernel_twin("strict_test_axpy", twin, operation="y = a * x + y")
    yield twin
    S.unregister_kernel_twin("strict_test_axpy")


def test_elementwise_kernel_without_a_twin_cannot_run():
    k = _kernel("strict_test_no_twin")
    with pytest.raises(NotImplementedError, match="cannot run CUDA C"):
        k(dev([1]), 2.0, dev([0]))


def test_elementwise_kernel_runs_its_twin_as_one_launch(axpy_twin):
    x, y = dev([1, 2]), dev([10, 20])
    with S.counting() as c:
        r = _kernel()(x, np.float32(2), y)
    assert r is y and c.launches == 1 and c.by_op == {"ElementwiseKernel strict_test_axpy": 1}
    np.testing.assert_array_equal(y.get(), [12, 24])
    r = _kernel()(x, 3)  # outputs omitted: the twin returns them
    assert isinstance(r, cp.ndarray) and r.get().tolist() == [3, 6]


@pytest.mark.parametrize("args, error", [
    (lambda: (dev([1]),), TypeError),                                   # wrong count
    (lambda: (np.ones(1, np.float32), 2.0, dev([0])), TypeError),       # a NumPy input
    (lambda: (dev([1]), 2.0, np.zeros(1, np.float32)), TypeError),      # a NumPy output
    (lambda: (dev([1, 2]), 2.0, dev([0, 0, 0])), ValueError),           # shapes do not broadcast
])
def test_elementwise_kernel_checks_its_arguments(axpy_twin, args, error):
    with pytest.raises(error):
        _kernel()(*args())


@pytest.mark.parametrize("args", [
    lambda: (dev([1], np.float64), 2.0, dev([0])),                     # x float64, y float32
    lambda: (dev([1]), dev([2], np.float64)),                           # x float32, a float64
    lambda: (dev([1]), 2.0, dev([0], np.float64)),                      # y float64, x float32
], ids=["input", "two-inputs", "output"])
def test_elementwise_kernel_refuses_one_placeholder_with_two_dtypes(axpy_twin, args):
    """``T x, T a -> T y``: every array typed T has one dtype, as in CuPy (a float64
    gradient for a float32 parameter fails on a GPU, so it must fail here)."""
    with pytest.raises(TypeError, match="Type is mismatched"):
        _kernel()(*args())


def test_elementwise_kernel_named_types_and_scalars():
    """A named type (``float32 x``) fixes that argument's dtype; a scalar takes its
    placeholder's type, whatever its own (CuPy's ``CScalar.apply_dtype``)."""
    received = []
    S.register_kernel_twin("strict_test_scale", lambda x, a, y: received.append(type(a)))
    try:
        k = cp.ElementwiseKernel("float32 x, T a", "T y", "y = a * x", "strict_test_scale")
        with pytest.raises(TypeError, match="Type is mismatched. x float64 float32"):
            k(dev([1], np.float64), 2.0, dev([0]))
        k(dev([1]), np.float64(2), dev([0]))  # T is float32, decided by y
        k(dev([1]), 2, dev([0], np.float64))  # T is float64
        assert received == [np.float32, np.float64]
        with pytest.raises(ValueError, match="Loop size is undecided"):
            cp.ElementwiseKernel("T x", "T y", "y = x", "strict_test_scale")(1.0)
    finally:
        S.unregister_kernel_twin("strict_test_scale")


def test_the_fused_adam_refuses_a_float64_gradient_for_a_float32_parameter():
    """What item 1 of issue #20 would have hit on a GPU: backend.adam_update's kernel
    with ``T g`` float64 and ``T p`` float32."""
    import conftest

    with conftest.stand_in():
        p, m, v = dev([1.0]), dev([0.0]), dev([0.0])
        with pytest.raises(TypeError, match="Type is mismatched. g float64 float32 T"):
            B.adam_update(p, dev([0.5], np.float64), m, v, 1e-3, 0.9, 0.999, 1e-8)
        B.adam_update(p, dev([0.5]), m, v, 1e-3, 0.9, 0.999, 1e-8)
        assert p.get()[0] < 1.0


def test_a_twin_must_follow_its_kernel(axpy_twin):
    k = cp.ElementwiseKernel("T x, T a", "T y", "y = a * x - y", "strict_test_axpy")
    with pytest.raises(RuntimeError, match="changed"):
        k(dev([1]), 2.0, dev([0]))


def test_elementwise_kernel_rejects_bad_names():
    with pytest.raises(ValueError):
        cp.ElementwiseKernel("T x", "T y", "y = x", "not a name")
    with pytest.raises(ValueError):
        cp.ElementwiseKernel("T i", "T y", "y = i", "k")


def test_fuse_counts_one_launch_for_the_whole_call():
    @cp.fuse(kernel_name="strict_test_fused")
    def f(x, y):
        return cp.maximum(x * y + 1, 0) * 2

    x, y = dev([1, -2]), dev([3, 4])
    with S.counting() as c:
        r = f(x, y)
    assert c.launches == 1 and c.by_op == {"fuse strict_test_fused": 1}
    np.testing.assert_array_equal(r.get(), [8, 0])
    with pytest.raises(TypeError, match="Invalid argument type"):
        f(x, np.ones(2, np.float32))


def test_fuse_with_only_numpy_arguments_runs_plain_python():
    @cp.fuse()
    def f(x, y):
        return x * y + 1

    with S.counting() as c:
        r = f(np.ones(2), np.ones(2))
    assert isinstance(r, np.ndarray) and c.launches == 0


# --------------------------------------------------------------------------- rule 10
def test_dtypes_follow_numpy_2():
    x = dev([1, 2])
    assert (x * 2.0).dtype == np.float32            # a Python scalar is weak
    assert (x * np.float32(2)).dtype == np.float32
    assert (x * np.float64(2)).dtype == np.float64  # a NumPy scalar is not (NEP 50)
    assert (x + dev([1, 2], np.float64)).dtype == np.float64
    assert (dev([1, 2], np.int32) + 1.5).dtype == np.float64
    assert x.sum().dtype == np.float32 and x.sum().shape == ()


# --------------------------------------------------------------------------- the fixture
def test_backend_fixture_installs_the_stand_in_only_for_the_cupy_runs(backend):
    import conftest

    if backend == "numpy" or conftest.REAL_CUPY:
        assert not S.is_stand_in(sys.modules.get("cupy"))
    else:
        assert S.is_stand_in(sys.modules["cupy"]) and B.get_xp() is cp


def test_the_stand_in_is_gone_after_the_fixture():
    assert not S.is_stand_in(sys.modules.get("cupy"))
    assert not S.is_stand_in(sys.modules.get("cupyx"))


def test_the_counting_tests_run_where_real_cupy_is_in_use_too(monkeypatch, request):
    """strict_cupy_backend used to skip on a machine with a usable GPU, where host/device
    mistakes cost the most: it must give the stand-in there too."""
    import conftest

    monkeypatch.setattr(conftest, "REAL_CUPY", True)
    try:
        module = request.getfixturevalue("strict_cupy_backend")
    except pytest.skip.Exception:
        pytest.fail("strict_cupy_backend skips where real CuPy is in use")
    assert module is S and S.is_stand_in(B.get_xp())


def test_the_stand_in_never_gets_real_cupys_device_objects_nor_leaves_its_own():
    """scratchae keeps the fused Adam kernel and the conv workspaces under the library's
    name, "cupy" for real CuPy and the stand-in alike: each switch empties them."""
    from scratchae import fast
    from scratchae.fast import conv
    from scratchae.models import conv_denoiser

    import conftest

    real = object()  # what real CuPy would have left: a compiled kernel, a workspace
    B._ADAM_KERNEL, conv._WORKSPACES.buffers = real, {("im2col", "<f4", "cupy"): real}
    with conftest.stand_in():
        assert B._ADAM_KERNEL is None and not getattr(conv._WORKSPACES, "buffers", None)
        B.set_backend("cupy")
        try:
            model = conv_denoiser(seed=0)
            net, optimizer = fast.compile(model), fast.Adam(model.parameters())
            x = B.asarray(np.full((2, 1, 28, 28), 0.5, np.float32))
            net.forward(x)
            net.backward(B.get_xp().ones((2, 1, 28, 28), np.float32))
            optimizer.step(net.gradients())
            assert isinstance(B._ADAM_KERNEL, S.ElementwiseKernel)
            buffers = conv._WORKSPACES.buffers.values()
            assert buffers and all(S.is_stand_in(B.get_array_module(b)) for b in buffers)
        finally:
            B.set_backend("numpy")
    assert B._ADAM_KERNEL is None and not getattr(conv._WORKSPACES, "buffers", None)
