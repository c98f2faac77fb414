"""Batch slices on worker threads (scratchae.fast.parallel): the same loss and gradients
as one worker."""
import gc
import os
import threading

import numpy as np
import pytest

import scratchae.backend as B
import scratchae.fast.model as fast_model
import scratchae.fast.parallel as parallel
from scratchae import fast
from scratchae.fast.conv import workspace
from scratchae.fast.parallel import batch_slices, check_workers
from scratchae.layers import Dense
from scratchae.losses import SigmoidCrossEntropy
from scratchae.models import Sequential, conv_denoiser, dense_autoencoder
from scratchae.train import Trainer, predict

from conftest import to_np, to_xp


@pytest.fixture(autouse=True)
def split_small_batches(monkeypatch):
    """Split even the tiny test batches (the real threshold keeps them whole)."""
    monkeypatch.setattr(fast_model, "MIN_WORK_PER_WORKER", 1)


@pytest.fixture(params=["threads", "processes"])
def kind(request, monkeypatch):
    """Worker threads or forked worker processes (where the platform can fork)."""
    if request.param == "processes" and not parallel.fork_available():
        pytest.skip("no fork on this platform: the workers are threads")
    monkeypatch.setattr(fast_model, "USE_PROCESSES", request.param == "processes")
    return request.param


@pytest.mark.parametrize("n, workers", [(128, 2), (7, 2), (7, 3), (5, 8), (1, 2), (10, 1)])
def test_batch_slices_cover_the_batch_evenly(n, workers):
    slices = batch_slices(n, workers)
    assert len(slices) == min(n, workers)
    assert slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    sizes = [s.stop - s.start for s in slices]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def _batch(model, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n,) + tuple(model.input_shape)
    return rng.uniform(size=shape).astype(dtype), rng.uniform(size=shape).astype(dtype)


def _forward_backward(model, inputs, targets, workers):
    """The loss of one step on a compiled model; its gradients are in ``net.grads``."""
    net = fast.compile(model, workers=workers)
    loss_fn = SigmoidCrossEntropy()
    loss = loss_fn.forward(net.forward(inputs), targets)
    net.backward(loss_fn.backward())
    return net, loss


def _gradients(model, inputs, targets, workers):
    net, loss = _forward_backward(model, inputs, targets, workers)
    return float(to_np(loss)), {k: to_np(g) for k, g in net.grads.items()}


@pytest.mark.parametrize("build", [conv_denoiser, dense_autoencoder])
@pytest.mark.parametrize("workers, n", [(2, 6), (3, 7), (4, 3)])
def test_same_loss_and_gradients_as_one_worker(backend, build, workers, n, kind):
    if backend != "numpy":
        pytest.skip("several workers are for the NumPy backend")
    model = build(seed=1, dtype=np.float64)
    inputs, targets = _batch(model, n, np.float64)
    loss_one, grads_one = _gradients(model, inputs, targets, 1)
    loss_many, grads_many = _gradients(model, inputs, targets, workers)
    assert loss_many == pytest.approx(loss_one, rel=1e-12)
    assert grads_many.keys() == grads_one.keys()
    for key, g in grads_one.items():
        assert grads_many[key].dtype == g.dtype
        np.testing.assert_allclose(grads_many[key], g, rtol=1e-9, atol=1e-12 * np.abs(g).max(),
                                   err_msg=key)


def test_float32_stays_float32(kind):
    model = conv_denoiser(seed=0)
    inputs, targets = _batch(model, 4, np.float32)
    net, loss = _forward_backward(model, inputs, targets, 2)
    assert loss.dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.gradients())


def test_forward_matches_the_model(backend, kind):
    model = dense_autoencoder(hidden=8, seed=0, dtype=np.float64)
    inputs = to_xp(_batch(model, 5, np.float64)[0])
    workers = 3 if backend == "numpy" else 1
    out = fast.compile(model, workers=workers).forward(inputs)
    np.testing.assert_allclose(to_np(out), to_np(model.forward(inputs)), rtol=1e-12)


def test_replicas_share_parameters_but_not_caches_or_gradients():
    model = dense_autoencoder(hidden=8, seed=0)
    net = fast.compile(model, workers=1)
    net.forward(_batch(model, 2, np.float32)[0])
    for op in net.ops:
        twin = op.replica()
        assert twin is not op
        for key in op.params:
            assert twin.params[key] is op.params[key]
        assert twin._cache is None and twin.grads == {}
    dense = next(i for i, layer in enumerate(model.layers) if layer.params)
    model.layers[dense].params["W"] += 1.0  # what the optimizer does, in place
    first = next(op for op in net.ops if op.params)
    assert first.replica().params["W"] is model.layers[dense].params["W"]


def test_gradients_are_new_arrays_and_params_untouched(kind):
    model = dense_autoencoder(hidden=8, seed=0, dtype=np.float64)
    before = {k: v.copy() for k, v in model.params.items()}
    inputs, targets = _batch(model, 6, np.float64)
    net, _ = _forward_backward(model, inputs, targets, 2)
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key])
        assert not np.shares_memory(net.grads[key], value)


def test_workspaces_are_per_thread():
    like = np.zeros(1, dtype=np.float32)
    here = workspace("test-parallel", (4,), like)
    there = []
    thread = threading.Thread(target=lambda: there.append(workspace("test-parallel", (4,), like)))
    thread.start()
    thread.join()
    assert not np.shares_memory(here, there[0])
    assert np.shares_memory(here, workspace("test-parallel", (2,), like))  # reused in one thread


def test_errors_in_a_worker_reach_the_caller(kind):
    model = dense_autoencoder(hidden=8, seed=0)
    bad = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 28, 28\), got \(4, 3\)"):
        _forward_backward(model, bad, bad, 2)
    images = np.zeros((4, 1, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape"):  # the targets, checked by the loss
        _forward_backward(model, images, images[:3], 2)
    net = fast.compile(model, workers=2)
    net.forward(images)
    with pytest.raises(ValueError, match=r"backward expected dout of shape \(4, 1, 28, 28\)"):
        net.backward(images[:3])


def test_errstate_of_the_caller_holds_in_the_workers(kind):
    model = Sequential([Dense(2, 2, seed=0)])
    model.layers[0].params["W"][...] = 3e38
    x = np.ones((4, 2), dtype=np.float32)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        fast.compile(model, workers=2).forward(x)
    with np.errstate(over="ignore", invalid="ignore"):
        fast.compile(model, workers=2).forward(x)  # no warning, no error


def test_small_work_is_not_split(monkeypatch):
    monkeypatch.setattr(fast_model, "MIN_WORK_PER_WORKER", 2_000_000)
    conv = fast.compile(conv_denoiser(), workers=2)
    dense = fast.compile(dense_autoencoder(), workers=4)
    # conv: 332,144 layer outputs per sample; dense: 2,480
    assert [conv.workers_for((n, 1, 28, 28)) for n in (1, 8, 16, 128)] == [1, 1, 2, 2]
    assert [dense.workers_for((n, 1, 28, 28)) for n in (128, 1024, 8192)] == [1, 1, 4]
    with pytest.raises(ValueError, match="expected 1 input channels"):  # forward's message
        conv.workers_for((16, 3, 28, 28))  # (the layers' output_shape checks the shape)
    assert fast.compile(conv_denoiser(), workers=1).workers_for((128, 1, 28, 28)) == 1


def test_each_worker_gets_its_slice(monkeypatch, kind):
    model = dense_autoencoder(hidden=8, seed=0)
    calls = []
    net = fast.compile(model, workers=2)
    forward = type(net.ops[0]).forward

    def spy(self, x):
        calls.append((len(x), threading.current_thread() is threading.main_thread()))
        return forward(self, x)

    monkeypatch.setattr(type(net.ops[0]), "forward", spy)
    inputs, targets = _batch(model, 5, np.float32)
    out = net.forward(inputs)
    np.testing.assert_allclose(out, model.forward(inputs), rtol=1e-5)
    if kind == "threads":
        assert sorted(calls) == [(2, False), (3, False)]  # both off the main thread
    else:  # the first slice here, the second in a process of its own (spied on there)
        assert calls == [(2, True)]
        (process, _, _), = net._pool._children
        assert process.is_alive() and process.pid != os.getpid()


def test_worker_processes_follow_the_parameters_and_end(kind):
    """The forked workers see each in-place update of the parameters; they grow their
    shared block for a larger batch; close() and garbage collection end them."""
    if kind != "processes":
        pytest.skip("worker processes only")
    model = dense_autoencoder(hidden=8, seed=0, dtype=np.float64)
    net = fast.compile(model, workers=2)
    small, large = (np.random.default_rng(0).uniform(size=(n, 1, 28, 28)) for n in (4, 2000))
    for x in (small, large, small):
        for p in model.parameters():
            p *= 1.5  # what the optimizer does, in place, between steps
        expected = model.forward(x)
        for out in (net.forward(x), net.infer(x)):
            np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-12 * abs(expected).max())
    (process, _, _), = net._pool._children
    net._pool.close()
    assert not process.is_alive() and net._pool._children == []
    net.forward(small)  # forks a new one
    (process, _, _), = net._pool._children
    del net
    gc.collect()
    process.join(timeout=5)
    assert not process.is_alive()


def test_a_worker_process_that_dies_is_named_and_replaced(kind):
    if kind != "processes":
        pytest.skip("worker processes only")
    model = dense_autoencoder(hidden=8, seed=0)
    net = fast.compile(model, workers=2)
    x = np.zeros((4, 1, 28, 28), dtype=np.float32)
    net.forward(x)
    (process, _, _), = net._pool._children
    process.kill()
    process.join()
    with pytest.raises(RuntimeError, match=rf"worker process {process.pid} ended"):
        net.forward(x)
    np.testing.assert_allclose(net.forward(x), model.forward(x), rtol=1e-6)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_bad_workers(workers):
    with pytest.raises(ValueError, match=r"Trainer: workers must be a positive int or None"):
        Trainer(dense_autoencoder(hidden=8), workers=workers)


def test_several_workers_need_the_numpy_backend(monkeypatch):
    monkeypatch.setattr(B, "get_backend", lambda: "cupy")
    with pytest.raises(ValueError, match=r"workers=2 .*only the NumPy backend.*needs workers=1"):
        check_workers(2, "Trainer")
    assert check_workers(None, "Trainer") == 1


def test_default_workers_follow_blas(monkeypatch):
    monkeypatch.setattr(parallel, "blas_threads", lambda: 3)
    assert parallel.default_workers() == 3
    monkeypatch.setattr(parallel, "blas_threads", lambda: None)  # BLAS not found
    assert parallel.default_workers() == 1


def _fit(workers):
    model = dense_autoencoder(hidden=8, seed=0, dtype=np.float64)
    images = np.random.default_rng(0).uniform(size=(40, 1, 28, 28))
    trainer = Trainer(model, lr=0.01, batch_size=16, progress=False, log=lambda s: None,
                      workers=workers)
    trainer.fit(images, images[:8], epochs=2)
    return trainer


def test_trainer_with_workers_follows_the_one_worker_run(kind):
    one, two = _fit(1), _fit(2)
    assert two.net.workers == 2
    np.testing.assert_allclose(two.history["train_loss"], one.history["train_loss"], rtol=1e-10)
    for key, value in one.model.params.items():
        np.testing.assert_allclose(two.model.params[key], value, rtol=1e-8, atol=1e-12)
    images = np.random.default_rng(1).uniform(size=(9, 1, 28, 28))
    np.testing.assert_allclose(two.predict(images), predict(two.model, images, 4, workers=1),
                               rtol=1e-12)
