"""The CuPy path: host/device discipline, the cost of a GPU step, and (on a GPU) a smoke test.

Most tests here run on tests/strict_cupy.py, a NumPy stand-in for CuPy that
enforces CuPy's rules and counts what a GPU would do (kernel launches,
transfers, synchronizations). It is no GPU: it proves nothing about CUDA.
The last test, marked ``gpu``, needs a real CUDA GPU and is skipped elsewhere.
"""
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import scratchae.backend as B
from scratchae import checkpoint, fast, gradcheck
from scratchae.data import load_sample
from scratchae.losses import SigmoidCrossEntropy
from scratchae.models import conv_denoiser, dense_autoencoder
from scratchae.noise import make_noise, salt_and_pepper
from scratchae.optim import Adam
from scratchae.train import Trainer, TrainingDiverged

from conftest import REAL_CUPY, to_np

ROOT = Path(__file__).resolve().parents[1]


def _one_step(net, optimizer, x, t):
    loss_fn = SigmoidCrossEntropy(check_targets=False)
    loss = loss_fn.forward(net.forward(x), t)
    net.backward(loss_fn.backward())
    optimizer.step(net.gradients())
    return loss


# --------------------------------------------------------------------------
# the cost of one training step on a GPU, counted
# --------------------------------------------------------------------------
def test_a_conv_training_step_launches_under_400_kernels_and_moves_nothing(strict_cupy_backend):
    """The conv denoiser at batch 128 on the fast path: under 400 launches (one im2col
    slice per conv, one fused Adam kernel per parameter), no host transfer and no wait."""
    model = conv_denoiser(seed=0)
    model.check_finite = False  # as in Trainer.fit, which checks the data once up front
    net, optimizer = fast.compile(model), fast.Adam(model.parameters())
    rng = np.random.default_rng(0)
    x = B.asarray(rng.uniform(size=(128, 1, 28, 28)).astype(np.float32))
    _one_step(net, optimizer, x, x)  # the first step uploads the small constant tables
    with strict_cupy_backend.allow_synchronize(False), strict_cupy_backend.counting() as c:
        _one_step(net, optimizer, x, x)
    assert c.launches < 400, c.by_op.most_common(12)
    assert (c.uploads, c.downloads, c.syncs) == (0, 0, 0), c


def _trainer(kind):
    from scratchae.sparse import SparseTrainer, sparse_autoencoder
    from scratchae.vae import VAETrainer, vae

    quiet = {"progress": False, "log": lambda s: None}
    noise = make_noise("gaussian", 0.5)
    return {
        "dense": lambda: Trainer(dense_autoencoder(seed=0), **quiet),
        "dense_denoise": lambda: Trainer(dense_autoencoder(seed=0), noise=noise, **quiet),
        "conv": lambda: Trainer(conv_denoiser(seed=0), noise=noise, **quiet),
        "conv_textbook": lambda: Trainer(conv_denoiser(seed=0), noise=noise, fast=False,
                                         workers=1, **quiet),
        "vae": lambda: VAETrainer(vae(seed=0), **quiet),
        "sparse": lambda: SparseTrainer(sparse_autoencoder(seed=0), **quiet),
    }[kind]()


@pytest.mark.parametrize("kind, uploads", [
    ("dense", 0), ("dense_denoise", 1), ("conv", 1), ("conv_textbook", 1), ("vae", 1),
    ("sparse", 0),
])
def test_what_a_training_step_uploads(strict_cupy_backend, kind, uploads):
    """Trainer.train_step of every model, counted: nothing waits for the GPU, nothing is
    downloaded, and the one upload is the random numbers drawn on the host so that both
    backends see the same stream: a denoiser's noise, or the VAE sampler's eps (N, K).
    (The textbook Upsample2D uploaded its index rows, 6 arrays a step.)"""
    trainer = _trainer(kind)
    trainer.net.check_finite, trainer.loss_fn.check_targets = False, False  # as in fit
    clean = B.asarray(np.random.default_rng(0).uniform(size=(4, 1, 28, 28)).astype(np.float32))
    trainer.train_step(clean)
    with strict_cupy_backend.allow_synchronize(False), strict_cupy_backend.counting() as c:
        trainer.train_step(clean)
    assert (c.uploads, c.downloads, c.syncs) == (uploads, 0, 0), c


def test_fit_on_float64_images_casts_them_instead_of_failing_in_the_fused_adam(
        strict_cupy_backend):
    """uint8 / 255.0 is float64. Kept as it was, it made float64 gradients, which the
    fused Adam kernel (``T g, T p``) refuses for float32 parameters on a GPU, and here
    (test_strict_cupy.py): fit casts each dataset once to the model's dtype instead."""
    lines = []
    trainer = Trainer(dense_autoencoder(hidden=8, seed=0), batch_size=16, progress=False,
                      log=lines.append)
    images = np.random.default_rng(0).uniform(size=(32, 1, 28, 28))  # float64
    trainer.fit(images, images[:8], epochs=1)
    assert lines[:2] == ["note: train_images are float64; cast once to the model's float32",
                         "note: test_images are float64; cast once to the model's float32"]
    assert all(p.dtype == np.float32 and B.get_array_module(p) is not np
               for p in trainer.model.parameters())


def test_salt_and_pepper_does_not_wait_for_the_gpu(strict_cupy_backend):
    x_np = np.random.default_rng(0).uniform(size=(4, 1, 28, 28)).astype(np.float32)
    x = B.asarray(x_np)
    with strict_cupy_backend.allow_synchronize(False), strict_cupy_backend.counting() as c:
        noisy = salt_and_pepper(x, 0.3, np.random.default_rng(1))
    assert c.syncs == 0 and c.downloads == 0
    expected = salt_and_pepper(x_np, 0.3, np.random.default_rng(1))
    np.testing.assert_array_equal(to_np(noisy), expected)
    assert noisy.dtype == np.float32


def test_divergence_names_the_batch_it_happened_in(strict_cupy_backend):
    """On CuPy the losses are read every 20 steps; the error still names the right batch."""
    calls = []

    def noise(clean, rng):
        calls.append(1)
        return clean * np.nan if len(calls) == 7 else clean

    trainer = Trainer(dense_autoencoder(hidden=8, seed=0), batch_size=8, noise=noise,
                      progress=False, log=lambda s: None)
    images = np.random.default_rng(0).uniform(size=(200, 1, 28, 28)).astype(np.float32)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, batch 7:"):
        trainer.fit(images, epochs=1)


# --------------------------------------------------------------------------
# arrays written with their own library, whatever the current backend
# --------------------------------------------------------------------------
def _on_device(build):
    B.set_backend("cupy")
    try:
        return build()
    finally:
        B.set_backend("numpy")  # the parameters stay on the device


def test_loading_weights_into_device_parameters_with_the_numpy_backend(strict_cupy_backend,
                                                                      tmp_path):
    host = dense_autoencoder(hidden=8, seed=1)
    host.save(tmp_path / "w.npz")
    device = _on_device(lambda: dense_autoencoder(hidden=8, seed=0))
    device.load(tmp_path / "w.npz")  # the backend is numpy now
    for k, p in device.params.items():
        assert B.get_array_module(p) is not np
        np.testing.assert_array_equal(to_np(p), to_np(host.params[k]))


def test_loading_weights_into_host_parameters_with_the_cupy_backend(strict_cupy_backend,
                                                                    tmp_path):
    device = _on_device(lambda: dense_autoencoder(hidden=8, seed=1))
    checkpoint.save_weights(device, tmp_path / "w.npz")  # saved from the device
    B.set_backend("numpy")
    host = dense_autoencoder(hidden=8, seed=0)
    B.set_backend("cupy")
    host.load(tmp_path / "w.npz")
    for k, p in host.params.items():
        assert B.get_array_module(p) is np
        np.testing.assert_array_equal(p, to_np(device.params[k]))


def test_adam_state_and_gradcheck_biases_across_backends(strict_cupy_backend):
    model = _on_device(lambda: dense_autoencoder(hidden=4, seed=0))
    optimizer = Adam(model.parameters())
    state = {"t": 3, "lr": 0.01, "m": [np.ones(p.shape, np.float32) for p in model.parameters()],
             "v": [np.ones(p.shape, np.float32) for p in model.parameters()]}
    optimizer.load_state_dict(state)  # the backend is numpy, the moments live on the device
    assert all(B.get_array_module(m) is not np and float(m.sum()) == m.size for m in optimizer.m)
    gradcheck._biased(model, 0)
    assert all(0.01 <= float(p.min()) for k, p in model.params.items() if k.endswith(".b"))


def test_a_training_checkpoint_resumes_on_the_other_backend(strict_cupy_backend, tmp_path):
    images = np.random.default_rng(0).uniform(size=(64, 1, 28, 28)).astype(np.float32)

    def trainer(path=None):
        return Trainer(dense_autoencoder(hidden=8, seed=0), batch_size=16, checkpoint=path,
                       progress=False, log=lambda s: None)

    B.set_backend("numpy")
    first = trainer(tmp_path / "ck.npz")
    first.fit(images, epochs=1)
    B.set_backend("cupy")
    second = trainer()
    second.resume(tmp_path / "ck.npz")
    assert all(B.get_array_module(m) is not np for m in second.optimizer.m)
    second.fit(images, epochs=2)
    B.set_backend("numpy")
    reference = trainer()
    reference.fit(images, epochs=2)
    for k, p in reference.model.params.items():
        np.testing.assert_allclose(to_np(second.model.params[k]), p, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# the availability probe
# --------------------------------------------------------------------------
def _fake_cupy(matmul_error=None, devices=1):
    def count():
        return devices

    class Array:
        def __init__(self, value):
            self.value = value

        def reshape(self, *shape):
            return Array(self.value.reshape(*shape))

        def __add__(self, other):
            return Array(self.value + other)

        def __matmul__(self, other):
            if matmul_error:
                raise matmul_error
            return Array(self.value @ other.value)

    return types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count)),
        arange=lambda n, dtype: Array(np.arange(n, dtype=dtype)),
        asnumpy=lambda a: a.value)


@pytest.mark.parametrize("cupy, expected", [
    (_fake_cupy(), None),
    (_fake_cupy(devices=0), "no CUDA GPU was found"),
    (_fake_cupy(RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED")),
     "sees a GPU but cannot compute on it (RuntimeError: CUBLAS_STATUS_NOT_INITIALIZED)"),
])
def test_the_probe_computes_on_the_gpu(monkeypatch, cupy, expected):
    """Counting devices is not enough: a GPU without a working cuBLAS or NVRTC is refused,
    with the reason, so the GPU tests skip instead of erroring."""
    monkeypatch.setattr(B, "_import_cupy", lambda: cupy)
    monkeypatch.setattr(B, "_PROBED", {})
    problem = B._cupy_problem()
    assert problem == expected if expected is None else expected in problem
    if expected is not None:
        with pytest.raises(RuntimeError, match="backend 'cupy' is not available"):
            B.set_backend("cupy")
        assert B.get_backend() == "numpy"


# --------------------------------------------------------------------------
# on a real GPU
# --------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not REAL_CUPY, reason="needs CuPy and a usable CUDA GPU")
def test_gpu_smoke(tmp_path):
    """One epoch of the conv denoiser on 64 bundled digits on the GPU: train, save, resume,
    evaluate; then the denoise and gradcheck command lines on CuPy; then the checkpoint on
    the CPU."""
    sample = load_sample()
    B.set_backend("cupy")
    try:
        path = tmp_path / "conv.npz"
        trainer = Trainer(conv_denoiser(seed=0), batch_size=16, noise=make_noise("gaussian", 0.5),
                          checkpoint=path, progress=False, log=lambda s: None)
        trainer.fit(sample.train_images[:64], sample.test_images[:32], epochs=1)
        resumed = Trainer(conv_denoiser(seed=0), batch_size=16,
                          noise=make_noise("gaussian", 0.5), progress=False, log=lambda s: None)
        resumed.resume(path)
        resumed.fit(sample.train_images[:64], epochs=2)
        metrics = resumed.evaluate(sample.test_images[:32])
        assert np.isfinite(metrics["bce"]) and metrics["psnr_out"] > 0
    finally:
        B.set_backend("numpy")
    on_cpu = conv_denoiser(seed=1)
    on_cpu.load(path)  # saved from the GPU, loaded on the CPU
    from PIL import Image
    Image.fromarray((sample.test_images[0, 0] * 255).astype(np.uint8)).save(tmp_path / "d.png")
    for command in (["-m", "scratchae.denoise", str(tmp_path / "d.png"), "--checkpoint",
                     str(path), "--out", str(tmp_path / "out"), "--backend", "cupy"],
                    ["-m", "scratchae.gradcheck", "--backend", "cupy", "--layer", "conv2d"]):
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True,
                                timeout=300, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_check_script_parses_and_fits_in_eight_minutes():
    """benchmarks/gpu_check.sh cannot be run here (no GPU); at least it is valid bash whose
    per-step timeouts add up to under 8 minutes (issue #12)."""
    import re
    import shutil

    script = ROOT / "benchmarks" / "gpu_check.sh"
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(script)], check=True)
    timeouts = [int(t) for t in re.findall(r"^timeout (\d+) ", script.read_text(), re.M)]
    assert len(timeouts) == 3 and sum(timeouts) < 8 * 60, timeouts
