"""Batch slices on worker threads: one batch, several CPU cores.

BLAS runs the GEMMs on every core, but the rest of a step (ReLU, pooling,
the im2col copies, the phase shuffles) is NumPy element-wise work, which
runs on one core. So the compiled model splits the *batch* instead, the way
multi-GPU training does::

    batch of N  ->  slices of N_1, N_2, ... samples, one per worker thread
    worker i:       forward pass of its slice, on a replica of the ops
                    (the same parameter arrays, its own caches and
                    gradients), with a one-thread BLAS
    main thread:    the loss of the whole batch and dL/dlogits (cheap)
    worker i:       backward pass of its slice of dL/dlogits
    combine:        dL/dtheta = sum_i dL/dtheta from slice i

The sum is exact: the loss adds up one term per sample (divided by N), so
its gradient adds up the slices' gradients; only the rounding differs
from one worker. NumPy releases Python's global interpreter lock inside
its loops and BLAS calls, which is why plain threads run at the same time.

Each worker's BLAS is limited to one thread (threadpoolctl) so that two
workers on two cores do not each start a two-thread GEMM: four busy
threads on two cores slow OpenBLAS down badly. On the GPU there is
nothing to gain: the CuPy backend always uses one worker.
"""

import contextvars
import math
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
    """A pool of threads that run one function per batch slice with a one-thread BLAS."""

    def __init__(self, count):
        self.count = count
        self._pool = None
        self._blas = None

    def map(self, function, pieces):
        """``[function(i, piece) for i, piece in enumerate(pieces)]``, on the threads."""
        if self._pool is None:
            from threadpoolctl import ThreadpoolController

            self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="scratchae")
            self._blas = ThreadpoolController()
        # Each task runs in a copy of the caller's context, so settings such
        # as ``np.errstate`` (kept in a context variable) hold in the workers too.
        contexts = [contextvars.copy_context() for _ in pieces]
        with self._blas.limit(limits=1, user_api="blas"):
            return list(self._pool.map(lambda i, piece: contexts[i].run(function, i, piece),
                                       range(len(pieces)), pieces))
