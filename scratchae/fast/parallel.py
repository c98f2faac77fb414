"""Batch slices on workers: one batch, several CPU cores.

BLAS runs the GEMMs on every core, but the rest of a step (ReLU, pooling,
the im2col copies, the phase shuffles) is NumPy element-wise work, which
runs on one core. So the compiled model splits the *batch* instead, the way
multi-GPU training does::

    batch of N  ->  slices of N_1, N_2, ... samples, one per worker
    worker i:       forward pass of its slice, on a replica of the ops
                    (the same parameter values, its own caches and
                    gradients), with a one-thread BLAS
    caller:         the loss of the whole batch and dL/dlogits (cheap)
    worker i:       backward pass of its slice of dL/dlogits
    combine:        dL/dtheta = sum_i dL/dtheta from slice i

The sum is exact: the loss adds up one term per sample (divided by N), so
its gradient adds up the slices' gradients; only the rounding differs
from one worker.

Two kinds of workers, one interface (``run``, ``gradients``, ``close``):
:class:`ForkedWorkers`, processes, where the system can fork (Linux), and
:class:`Workers`, threads, elsewhere. Threads are simpler (NumPy releases
Python's global interpreter lock inside its loops and BLAS calls, so they
do run at the same time) but pay for the lock between those calls;
processes do not (``docs/fast.md`` section 7).

Each worker's BLAS is limited to one thread (threadpoolctl) so that two
workers on two cores do not each start a two-thread GEMM: four busy
threads on two cores slow OpenBLAS down badly. On the GPU there is
nothing to gain: the CuPy backend always uses one worker.
"""

import contextlib
import contextvars
import math
import mmap
import multiprocessing
import os
import signal
import sys
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import backend
from ..validate import positive_int

#: Fewest layer-output values a worker must compute for a split to pay.
#: Measured on 2 cores: the conv denoiser at batch 16 (2.7 million per
#: worker) ran faster on 2 workers than on 1, at batch 8 (1.3 million) no
#: faster; the dense autoencoder at batch 1024 (1.3 million) ran 40% slower.
MIN_WORK_PER_WORKER = 2_000_000


def blas_threads():
    """How many threads NumPy's BLAS uses; None if threadpoolctl cannot tell."""
    from threadpoolctl import ThreadpoolController

    pools = ThreadpoolController().select(user_api="blas").info()
    return max((pool["num_threads"] for pool in pools), default=None)


def default_workers():
    """Worker threads by default: one per BLAS thread (core) on NumPy, 1 on CuPy."""
    if backend.get_backend() != "numpy":
        return 1
    return blas_threads() or 1


def check_workers(workers, owner):
    """Return ``workers`` as an int, or :func:`default_workers` for None."""
    if workers is None:
        return default_workers()
    try:
        workers = positive_int(workers, "workers", owner)
    except ValueError:
        raise ValueError(f"{owner}: workers must be a positive int or None (automatic), "
                         f"got {workers!r}") from None
    if workers > 1 and backend.get_backend() != "numpy":
        raise ValueError(f"{owner}: workers={workers} splits the batch over CPU cores, "
                         f"which only the NumPy backend uses; the "
                         f"{backend.get_backend()} backend needs workers=1")
    return workers


def batch_slices(n, workers):
    """Cut ``range(n)`` into at most ``workers`` slices whose sizes differ by at most 1."""
    bounds = np.linspace(0, n, min(workers, n) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def activations_per_sample(model, sample_shape):
    """How many numbers all layer outputs of one sample hold: the work outside the GEMMs."""
    shape, total = (1, *sample_shape), 0
    for layer in model.layers:
        shape = layer.output_shape(shape)
        total += math.prod(shape)
    return total


class Workers:
    """Replicas of the ops on threads: slice i of a batch runs on replica i, one thread each.

    Parameters
    ----------
    count : int
        At most this many slices per call.
    ops_list : list of Op
        The compiled model's ops; each replica shares their parameter arrays.
    step : callable
        ``step(ops_list, kind, piece, input_grad)``: one forward ("forward",
        "infer") or backward ("backward") pass of ``piece`` through ``ops_list``.
    """

    def __init__(self, count, ops_list, step):
        self.count = count
        self.replicas = [[op.replica() for op in ops_list] for _ in range(count)]
        self._step = step
        self._pool = None
        self._blas = None
        self._pieces = 0

    def run(self, kind, pieces, input_grad=False):
        """``[step(replicas[i], kind, piece, input_grad) for i, piece in enumerate(pieces)]``."""
        if self._pool is None:
            from threadpoolctl import ThreadpoolController

            self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="scratchae")
            self._blas = ThreadpoolController()
        # Each task runs in a copy of the caller's context, so settings such
        # as ``np.errstate`` (kept in a context variable) hold in the workers too.
        contexts = [contextvars.copy_context() for _ in pieces]

        def task(i, piece):
            return contexts[i].run(self._step, self.replicas[i], kind, piece, input_grad)

        self._pieces = len(pieces)
        with self._blas.limit(limits=1, user_api="blas"):
            return list(self._pool.map(task, range(len(pieces)), pieces))

    def gradients(self, k, name):
        """Op ``k``'s gradient of parameter ``name``, one array per slice of the last backward."""
        return [replica[k].grads[name] for replica in self.replicas[:self._pieces]]

    def local_ops(self):
        """The replicas whose caches live in this process."""
        return self.replicas

    def close(self):
        """Nothing to release: the threads end with the process."""


def _aligned(nbytes, to=64):
    return -(-nbytes // to) * to


def _layout(arrays):
    """Byte offsets of ``arrays`` packed one after the other (64-byte aligned), and the total."""
    offsets, total = [], 0
    for a in arrays:
        offsets.append(total)
        total += _aligned(a.nbytes)
    return offsets, total


def _view(buffer, offset, shape, dtype):
    """The array of ``shape`` and ``dtype`` stored at byte ``offset`` of ``buffer``."""
    return np.frombuffer(buffer, dtype, math.prod(shape), offset).reshape(shape)


class _Exchange:
    """What the caller and one worker process share: the parameters (one block for
    every worker), and the worker's own block: its gradients, then its data
    (the slice in, the output or dx back)."""

    def __init__(self, params, grads, data_bytes, param_block=None):
        self.param_offsets, param_bytes = _layout(params)
        self.grad_offsets, self.data_offset = _layout(grads)
        self.data_bytes = data_bytes
        self.params = params  # the arrays this process reads and writes
        # anonymous mmaps are MAP_SHARED: a forked child writes into the same pages
        self.param_block = param_block or mmap.mmap(-1, max(param_bytes, 1))
        self.block = mmap.mmap(-1, self.data_offset + data_bytes)

    def data(self, shape, dtype):
        return _view(self.block, self.data_offset, shape, dtype)

    def write_params(self):
        for p, offset in zip(self.params, self.param_offsets):
            _view(self.param_block, offset, p.shape, p.dtype)[...] = p

    def read_params(self):
        for p, offset in zip(self.params, self.param_offsets):
            p[...] = _view(self.param_block, offset, p.shape, p.dtype)

    def grad(self, i, like):
        return _view(self.block, self.grad_offsets[i], like.shape, like.dtype)


def _serve(connection, ops_list, step, exchange, grad_keys):
    """A worker process's loop: one command per call, until None or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    parent = os.getppid()
    while True:
        try:
            while not connection.poll(1.0):
                if os.getppid() != parent:  # the caller is gone (killed): so is this worker
                    return
            command = connection.recv()
        except EOFError:
            return
        if command is None:
            return
        kind, shape, dtype, input_grad, errors = command
        try:
            with np.errstate(**errors):
                if kind != "backward":
                    exchange.read_params()
                piece = exchange.data(shape, dtype).copy()  # the block is rewritten below
                out = step(ops_list, kind, piece, input_grad)
            if kind == "backward":
                for i, (k, name) in enumerate(grad_keys):
                    g = ops_list[k].grads[name]
                    exchange.grad(i, g)[...] = g
            if out is None:
                connection.send(("ok", None, None))
            elif out.nbytes > exchange.data_bytes:
                connection.send(("grow", out.nbytes, None))
            else:
                exchange.data(out.shape, out.dtype)[...] = out
                connection.send(("ok", out.shape, out.dtype.str))
        except Exception as error:  # noqa: BLE001 (sent to the caller, raised there)
            try:
                connection.send(("error", error, None))
            except Exception:  # noqa: BLE001 (an exception that cannot be pickled)
                connection.send(("error", RuntimeError(f"{type(error).__name__}: {error}"), None))


def fork_available():
    """Whether worker processes can be forked here (Linux: yes; Windows: no fork;
    macOS: fork is unsafe with its system libraries, so threads)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class ForkedWorkers:
    """Slices of a batch on worker *processes*: slice 0 in the caller, slice i in process i.

    Why processes. Two worker threads share one Python interpreter, whose
    global lock (the GIL) lets one thread at a time run Python code between
    NumPy calls; a step of many small NumPy calls makes each thread wait
    for the other (``benchmarks/gil_tax.py``: 9 % of the conv denoiser's
    step, 18 % of the conv VAE's). A forked process has an interpreter of
    its own. What the threads shared for free is now copied through shared
    memory (an anonymous ``mmap``, which a forked child shares): the
    parameters before each forward (the child's copies of the parameter
    arrays are then the caller's values), the slice in, the output or dx
    and the gradients back; and a small message per call through a pipe.

    Same interface as :class:`Workers`. The processes are forked on first
    use, with a fork of the model as it is then (its ops, its parameter
    arrays), and again when a slice outgrows the shared block; they end with
    :meth:`close`, when the pool is garbage collected, or at exit.

    Parameters
    ----------
    count : int
    ops_list : list of Op
    step : callable
        As for :class:`Workers`.
    params : list of ndarray
        The arrays the ops share with the model: what the worker processes
        must see updated before each forward.
    """

    def __init__(self, count, ops_list, step, params):
        self.count = count
        self.local = [op.replica() for op in ops_list]
        self._ops = ops_list
        self._step = step
        self._params = list(params)
        self._grad_keys = [(k, name) for k, op in enumerate(ops_list) for name in op.params]
        self._grad_index = {key: i for i, key in enumerate(self._grad_keys)}
        self._children = []  # (process, connection, exchange); shared with the finalizer
        self._data_bytes = 0
        self._pieces = 0
        self._blas = None
        weakref.finalize(self, _stop, self._children)

    # -- the processes ----------------------------------------------------------------
    def _start(self, count, data_bytes):
        self.close()
        grads = [self._ops[k].params[name] for k, name in self._grad_keys]
        context = multiprocessing.get_context("fork")
        param_block = None
        for _ in range(count):
            exchange = _Exchange(self._params, grads, data_bytes, param_block)
            param_block = exchange.param_block
            mine, theirs = context.Pipe()
            process = context.Process(target=_serve, daemon=True, name="scratchae-worker",
                                      args=(theirs, self._ops, self._step, exchange,
                                            self._grad_keys))
            with warnings.catch_warnings():  # Python >= 3.12 warns about any fork of a
                # process with threads (BLAS's); the child runs only NumPy and this loop
                warnings.simplefilter("ignore", DeprecationWarning)
                process.start()
            theirs.close()
            self._children.append((process, mine, exchange))
        self._data_bytes = data_bytes

    def close(self):
        """Stop the worker processes (the next call forks new ones)."""
        _stop(self._children)

    # -- one call -----------------------------------------------------------------------
    def run(self, kind, pieces, input_grad=False):
        """``[step(replica_i, kind, piece, input_grad) for i, piece in enumerate(pieces)]``,
        slice 0 here and the others in the worker processes."""
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        remote = pieces[1:]
        need = max((piece.nbytes for piece in remote), default=0)
        if len(self._children) < len(remote) or need > self._data_bytes:
            if kind == "backward":  # new processes would have no forward caches (and a
                # dout fits where the forward's output did)
                raise RuntimeError("ForkedWorkers: backward() without the forward() of this batch")
            self._start(self.count - 1, max(need, 2 * self._data_bytes, 1 << 20))
        for _ in range(2):  # a second time only if an output outgrew the shared block
            replies = self._exchange(kind, pieces, input_grad)
            grow = [size for status, size, _ in replies[1:] if status == "grow"]
            if not grow:
                break
            self._start(self.count - 1, 2 * max(grow))
        self._pieces = len(pieces)
        outs = [replies[0]]
        for (status, shape, dtype), (_, _, exchange) in zip(replies[1:], self._children):
            outs.append(None if shape is None else exchange.data(shape, np.dtype(dtype)))
        return outs

    def _exchange(self, kind, pieces, input_grad):
        errors = np.geterr()
        children = self._children[:len(pieces) - 1]
        try:
            if kind != "backward" and children:
                children[0][2].write_params()  # one block that every worker reads
            for (process, connection, exchange), piece in zip(children, pieces[1:]):
                exchange.data(piece.shape, piece.dtype)[...] = piece
                with _ended(process):
                    connection.send((kind, piece.shape, piece.dtype.str, input_grad, errors))
            with self._blas.limit(limits=1, user_api="blas"):
                mine = self._step(self.local, kind, pieces[0], input_grad)
            replies = []
            for process, connection, _ in children:
                with _ended(process):
                    replies.append(connection.recv())
        except BaseException:
            self.close()  # a worker may be mid-command: start afresh next time
            raise
        for status, error, _ in replies:
            if status == "error":
                raise error
        return [mine] + replies

    def gradients(self, k, name):
        """Op ``k``'s gradient of ``name`` for each slice of the last backward (the workers'
        are views of the shared block: read them before the next call)."""
        i = self._grad_index[k, name]
        local = self.local[k].grads[name]
        return [local] + [exchange.grad(i, local)
                          for _, _, exchange in self._children[:self._pieces - 1]]

    def local_ops(self):
        """The replicas whose caches live in this process."""
        return [self.local]


@contextlib.contextmanager
def _ended(process):
    """Turn a broken pipe to a worker process into an error that names it."""
    try:
        yield
    except (EOFError, OSError):
        process.join(timeout=1)
        raise RuntimeError(f"scratchae worker process {process.pid} ended "
                           f"(exit code {process.exitcode})") from None


def _stop(children):
    for process, connection, _ in children:
        try:
            connection.send(None)
        except (OSError, ValueError):
            pass
        connection.close()
    for process, _, _ in children:
        process.join(timeout=1)
        if process.is_alive():
            process.terminate()
            process.join()
    children.clear()
