"""Data parallelism: one batch, several CPU cores.

BLAS runs the convolutions' GEMMs on every core, but the rest of a step
(ReLU, max-pooling, upsampling, the im2col copies: about 40% of the conv
model's step on 2 cores) is NumPy element-wise work, and NumPy runs that
on one core. So we split the *batch* instead, the way multi-GPU training
does::

    batch of N  ->  slices of N_1, N_2, ... samples, one per worker thread
    worker i:       forward pass of its slice, on a replica of the model
                    (the same parameter arrays, its own caches and
                    gradients), with a one-thread BLAS
    main thread:    the loss of the whole batch and dL/dlogits (cheap)
    worker i:       backward pass of its slice of dL/dlogits
    combine:        dL/dtheta = sum_i dL/dtheta from slice i

The sum is exact: the loss adds up one term per sample (divided by N),
so its gradient adds up the slices' gradients. Only the rounding
differs from a one-worker step. NumPy releases Python's global interpreter lock inside its loops and BLAS
calls, which is why plain threads run at the same time here.

Each worker's BLAS is limited to one thread (with threadpoolctl) so that
two workers on two cores do not each start a two-thread GEMM: four busy
threads on two cores slow OpenBLAS down badly. Scratch buffers are per
thread (see :func:`scratchae.layers.base.workspace`).

On the GPU there is nothing to gain (CuPy already keeps the device busy),
so the CuPy backend always uses one worker: the plain four lines of
:mod:`scratchae.train`.
"""

import contextvars
import copy
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import backend


def blas_threads():
    """How many threads NumPy's BLAS uses; None if threadpoolctl cannot tell."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # it is a dependency, but keep working without it
        return None
    pools = ThreadpoolController().select(user_api="blas").info()
    return max((pool["num_threads"] for pool in pools), default=None)


def default_workers():
    """Worker threads a training step uses by default.

    As many as NumPy's BLAS threads (the cores it was allowed, e.g. by
    ``OPENBLAS_NUM_THREADS``), 1 on the CuPy backend, and 1 when the BLAS
    cannot be limited to one thread per worker.
    """
    if backend.get_backend() != "numpy":
        return 1
    return blas_threads() or 1


def check_workers(workers, owner):
    """Return ``workers`` as an int, or ``default_workers()`` for None."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"{owner}: workers must be a positive int or None (automatic), "
                         f"got {workers!r}")
    if workers > 1 and backend.get_backend() != "numpy":
        raise ValueError(f"{owner}: workers={workers} splits the batch over CPU cores, "
                         f"which only the NumPy backend uses; the "
                         f"{backend.get_backend()} backend needs workers=1")
    return int(workers)


#: Fewest layer-output values a worker must compute for a split to pay.
#: Measured on 2 cores: the conv denoiser at batch 16 (2.7 million per
#: worker) ran 12% faster on 2 workers than on 1, at batch 8 (1.3 million)
#: no faster; the dense autoencoder at batch 1024 (1.3 million) ran 40% slower.
MIN_WORK_PER_WORKER = 2_000_000


def activations_per_sample(model, sample_shape):
    """How many numbers all layer outputs of one sample hold.

    A measure of the work a step does outside the GEMMs: every layer
    writes its output (and backward a gradient of the same size).

    Parameters
    ----------
    model : Sequential
    sample_shape : tuple of int
        One sample's shape, e.g. (1, 28, 28).
    """
    shape, total = (1, *sample_shape), 0
    for layer in model.layers:
        shape = layer.output_shape(shape)
        total += math.prod(shape)
    return total


def batch_slices(n, workers):
    """Cut ``range(n)`` into at most ``workers`` slices whose sizes differ by at most 1."""
    bounds = np.linspace(0, n, min(workers, n) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def replicate(model):
    """A model that shares ``model``'s parameter arrays, with its own caches.

    A shallow copy of every layer: ``params`` is the same dict holding the
    same arrays (so the optimizer's in-place update reaches every replica),
    while ``_cache`` and ``grads`` are the replica's own, because ``forward``
    and ``backward`` assign new objects to them instead of changing them.
    """
    twin = copy.copy(model)
    twin.layers = []
    for layer in model.layers:
        layer_twin = copy.copy(layer)
        layer_twin._cache, layer_twin.grads = None, {}
        twin.layers.append(layer_twin)
    twin._output_shape = None
    return twin


class DataParallel:
    """Forward and backward of a model, one slice of the batch per worker thread.

    Parameters
    ----------
    model : Sequential
    loss_fn : SigmoidCrossEntropy, optional
        Run once per step, on the whole batch, in the calling thread;
        needed by :meth:`forward_backward` only.
    workers : int, optional
        Threads; None picks :func:`default_workers`. With 1, nothing is
        split and no thread is started.
    """

    def __init__(self, model, loss_fn=None, workers=None):
        self.model = model
        self.loss_fn = loss_fn
        self.workers = check_workers(workers, "DataParallel")
        self._pool = None
        self._blas = None

    def workers_for(self, batch_shape):
        """How many workers a batch of ``batch_shape`` (N, ...) is split over.

        At most ``workers``, and only as many as have
        ``MIN_WORK_PER_WORKER`` layer outputs each to compute: a thread
        costs ~0.1 ms per step, and a small model's step is mostly BLAS
        calls, which use every core anyway.
        """
        if self.workers == 1:
            return 1
        try:
            work = batch_shape[0] * activations_per_sample(self.model, batch_shape[1:])
        except Exception:  # a bad shape: the forward pass will say what is wrong
            return 1
        return max(1, min(self.workers, batch_shape[0], work // MIN_WORK_PER_WORKER))

    def _slices(self, inputs):
        """One slice of ``inputs`` per worker, after checking the whole batch.

        The check comes first so that an error names the batch the caller
        passed, not a worker's slice of it.
        """
        workers = self.workers_for(tuple(inputs.shape)) if hasattr(inputs, "shape") else 1
        if workers == 1:
            return [slice(None)]
        self.model.check_input(inputs)
        return batch_slices(len(inputs), workers)

    def _replicas(self, count):
        replicas = [replicate(self.model) for _ in range(count)]
        for replica in replicas:
            replica.check_finite = False  # the whole batch was checked already
        return replicas

    def _map(self, function, pieces):
        """``[function(i, piece) for ...]``, run on the worker threads with one-thread BLAS."""
        if self._pool is None:
            from threadpoolctl import ThreadpoolController

            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="scratchae")
            self._blas = ThreadpoolController()
        # Each task runs in a copy of the caller's context, so settings such
        # as ``np.errstate`` (kept in a context variable) hold in the workers too.
        contexts = [contextvars.copy_context() for _ in pieces]
        with self._blas.limit(limits=1, user_api="blas"):
            return list(self._pool.map(lambda i, piece: contexts[i].run(function, i, piece),
                                       range(len(pieces)), pieces))

    def forward_backward(self, inputs, targets):
        """Loss of a batch; fills the model's gradients for the whole batch.

        Parameters
        ----------
        inputs : ndarray, shape (N, ...), the model's input
        targets : ndarray, the shape of the model's output

        Returns
        -------
        loss : 0-d ndarray
            ``loss_fn.forward`` of the whole batch's output. Afterwards
            ``model.gradients()`` holds dL/dparam, exactly as after
            ``model.backward(loss_fn.backward(), input_grad=False)``.
        """
        slices = self._slices(inputs)
        if len(slices) < 2:
            loss = self.loss_fn.forward(self.model.forward(inputs), targets)
            self.model.backward(self.loss_fn.backward(), input_grad=False)
            return loss
        replicas = self._replicas(len(slices))
        # 1. every worker runs the forward pass of its slice
        logits = self._map(lambda i, piece: replicas[i].forward(inputs[piece]), slices)
        # 2. the loss of the whole batch, here: it is cheap, and its gradient
        #    already carries the 1/N of the batch mean
        xp = backend.get_array_module(logits[0])
        loss = self.loss_fn.forward(xp.concatenate(logits), targets)
        dlogits = self.loss_fn.backward()
        # 3. every worker backpropagates its slice of dL/dlogits
        self._map(lambda i, piece: replicas[i].backward(dlogits[piece], input_grad=False), slices)
        # 4. L sums over all samples, so dL/dparam is the sum of the slices' parts
        for k, layer in enumerate(self.model.layers):
            grads = {}
            for name in layer.params:
                parts = [replica.layers[k].grads[name] for replica in replicas]
                total = parts[0] + parts[1]  # a new array
                for part in parts[2:]:
                    total += part
                grads[name] = total
            layer.grads = grads
        return loss

    def forward(self, inputs):
        """The model's output for a batch, computed slice by slice in parallel.

        Parameters
        ----------
        inputs : ndarray, shape (N, ...)

        Returns
        -------
        ndarray, shape (N, ...), the model's output
        """
        slices = self._slices(inputs)
        if len(slices) < 2:
            return self.model.forward(inputs)
        replicas = self._replicas(len(slices))
        outputs = self._map(lambda i, piece: replicas[i].forward(inputs[piece]), slices)
        return backend.get_array_module(outputs[0]).concatenate(outputs)
