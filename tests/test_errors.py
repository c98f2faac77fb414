"""Bad input at every boundary gets a clear error, raised before anything changes.

One test per case: the error's type, that the message names the object and
what was expected against what was given, and, for calls that change
state (an optimizer step, loading weights, resuming), that nothing changed.
The command-line cases run a demo in a subprocess and check for exactly one
``error: ...`` line on stderr, no traceback, and a non-zero exit code.

The IDX and data-directory cases of :mod:`scratchae.data` are tested in
``test_data.py`` (bad magic, truncated body, item counts, missing and
incomplete directories); here they are checked once more through the CLI.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchae import backend, fast
from scratchae.checkpoint import load_npz, weights
from scratchae.cli import DemoSpec, run_demo, run_guarded
from scratchae.layers import (
    Conv2D,
    ConvTranspose2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Upsample2D,
)
from scratchae.losses import SigmoidCrossEntropy
from scratchae.models import Sequential, conv_denoiser, conv_denoiser_transposed, dense_autoencoder
from scratchae.noise import make_noise
from scratchae.optim import SGD, Adam
from scratchae.sparse import sparse_autoencoder
from scratchae.train import Trainer, TrainingDiverged
from scratchae.vae import vae

from conftest import to_np, to_xp
from test_train import _sample_idx_dir

ROOT = Path(__file__).resolve().parents[1]
# One BLAS thread: the demos' tiny matrices gain nothing from more, and on a
# busy machine extra threads make them much slower.
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _images(n=4, seed=0, shape=(1, 28, 28)):
    return np.random.default_rng(seed).uniform(size=(n, *shape)).astype(np.float32)


def _weights(model):
    return {k: to_np(v) for k, v in model.params.items()}


def _assert_same_weights(model, before):
    after = _weights(model)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


# --------------------------------------------------------------------------
# Layers: forward
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layer, shape, pattern", [
    (Dense(12, 3, seed=0), (2, 3, 4),
     r"Dense\(12, 3\): expected a 2-D input .*got shape \(2, 3, 4\) \(3-D\)"),
    (Dense(12, 3, seed=0), (12,), r"Dense\(12, 3\): expected a 2-D input .*\(1-D\)"),
    (Conv2D(3, 2, 3, seed=0), (3, 8, 8),
     r"Conv2D\(3, 2.*expected a 4-D input \(N, C, H, W\).*\(3-D\)"),
    (MaxPool2D(2), (2, 8, 8), r"MaxPool2D.*expected a 4-D input.*\(3-D\)"),
    (Upsample2D(scale_factor=2), (1, 2, 3, 8, 8), r"Upsample2D.*expected a 4-D input.*\(5-D\)"),
    (ConvTranspose2D(3, 2, 3, seed=0), (3, 8, 8),
     r"ConvTranspose2D.*expected a 4-D input.*\(3-D\)"),
    (Flatten(), (5,), r"Flatten: expected an input of at least 2-D.*got shape \(5,\)"),
])
def test_layer_wrong_ndim(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer.forward(np.zeros(shape, np.float32))
    assert layer._cache is None  # nothing was cached


@pytest.mark.parametrize("layer, shape, pattern", [
    (Conv2D(3, 2, 3, seed=0), (2, 5, 8, 8), r"Conv2D\(3, 2.*expected 3 input channels, got input "
                                            r"of shape \(2, 5, 8, 8\) with 5 channels"),
    (ConvTranspose2D(4, 2, 3, seed=0), (2, 1, 8, 8),
     r"ConvTranspose2D.*expected 4 input channels.*with 1"),
    (Dense(784, 8, seed=0), (2, 783),
     r"Dense\(784, 8\): expected 784 input features, got input of shape \(2, 783\)"),
    (Reshape((1, 28, 28)), (2, 780),
     r"Reshape\(\(1, 28, 28\)\): expected an input with 784 values per "
                                     r"sample, got shape \(2, 780\)"),
])
def test_layer_wrong_channels_or_features(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer.forward(np.zeros(shape, np.float32))


@pytest.mark.parametrize("layer, shape, pattern", [
    (Conv2D(1, 2, 5, padding="valid", seed=0), (1, 1, 4, 9),
     r"Conv2D.*spatial size \(4, 9\) is smaller than the kernel \(5, 5\)"),
    (Conv2D(1, 2, (3, 7), padding=1, seed=0), (1, 1, 8, 4),
     r"Conv2D.*spatial size \(8, 4\) is smaller than the kernel \(3, 7\)"),
    (MaxPool2D(3), (1, 2, 2, 9), r"MaxPool2D.*spatial size \(2, 9\) is smaller than the window"),
])
def test_layer_spatial_size_too_small(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer.forward(np.zeros(shape, np.float32))


# --------------------------------------------------------------------------
# Layers: backward
# --------------------------------------------------------------------------
LAYER_CASES = {  # name -> (layer, input shape)
    "dense": (lambda: Dense(6, 4, seed=0), (3, 6)),
    "conv": (lambda: Conv2D(2, 3, 3, seed=0), (2, 2, 5, 5)),
    "conv_stride2": (lambda: Conv2D(2, 3, 3, stride=2, seed=0), (2, 2, 5, 5)),
    "conv_transpose": (lambda: ConvTranspose2D(2, 3, 3, stride=2, seed=0), (2, 2, 4, 4)),
    "maxpool": (lambda: MaxPool2D(2), (2, 2, 4, 4)),
    "upsample": (lambda: Upsample2D(size=(7, 7)), (2, 2, 4, 4)),
    "relu": (lambda: ReLU(), (2, 5)),
    "sigmoid": (lambda: Sigmoid(), (2, 5)),
    "flatten": (lambda: Flatten(), (2, 2, 3)),
    "reshape": (lambda: Reshape((2, 3)), (2, 6)),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_backward_before_forward(case):
    make, shape = LAYER_CASES[case]
    layer = make()
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)") as info:
        layer.backward(np.zeros(shape, np.float32))
    assert type(layer).__name__ in str(info.value)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_backward_with_mismatched_dout(case):
    make, shape = LAYER_CASES[case]
    layer = make()
    y = layer.forward(_images(shape=shape[1:], n=shape[0]))
    grads_before = {k: to_np(v).copy() for k, v in layer.grads.items()}
    bad = np.zeros((y.shape[0] + 1,) + tuple(y.shape[1:]), np.float32)
    expected = str(tuple(y.shape)).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=rf"backward expected dout of shape {expected}.*got"):
        layer.backward(bad)
    for k, g in grads_before.items():  # the gradients were not touched
        np.testing.assert_array_equal(to_np(layer.grads[k]), g)


# --------------------------------------------------------------------------
# The model boundary
# --------------------------------------------------------------------------
def test_model_checks_input_shape():
    model = Sequential(conv_denoiser(seed=0).layers, input_shape=(1, 28, 28), name="conv_denoiser")
    with pytest.raises(ValueError,
                       match=r"^conv_denoiser: expected input of shape \(N, 1, 28, 28\), "
                                         r"got \(8, 1, 32, 32\)$"):
        model.forward(np.zeros((8, 1, 32, 32), np.float32))
    assert all(layer._cache is None for layer in model.layers)  # no layer ran
    with pytest.raises(ValueError,
                       match=r"expected input of shape \(N, 1, 28, 28\), got \(1, 28, 28\)"):
        model.forward(np.zeros((1, 28, 28), np.float32))


@pytest.mark.parametrize("factory, name", [(conv_denoiser, "conv_denoiser"),
                                           (dense_autoencoder, "dense_autoencoder"),
                                           (conv_denoiser_transposed, "conv_denoiser_transposed")])
def test_factory_models_check_input_shape(factory, name):
    model = factory(seed=0)
    assert model.input_shape == (1, 28, 28)
    with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(N, 1, 28, 28\), "
                                         r"got \(8, 1, 32, 32\)"):
        model.forward(np.zeros((8, 1, 32, 32), np.float32))


@pytest.mark.parametrize("bad, what", [(np.nan, "1 NaN"), (np.inf, "1 inf"), (-np.inf, "1 inf")])
def test_model_rejects_nan_and_inf_input(backend, bad, what):
    model = Sequential(dense_autoencoder(hidden=4, seed=0).layers, input_shape=(1, 28, 28),
                       name="dense_autoencoder")
    x = _images(2)
    x[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=rf"dense_autoencoder: the input holds NaN or inf "
                                         rf"\({what} among 1568 values\)"):
        model.forward(to_xp(x))
    assert all(layer._cache is None for layer in model.layers)
    model.check_finite = False  # switched off (as the Trainer does in its loop): no check
    with np.errstate(invalid="ignore"):
        assert np.isnan(to_np(model.forward(to_xp(x)))).any()


def test_model_rejects_integer_input():
    model = dense_autoencoder(hidden=4, seed=0)
    with pytest.raises(TypeError, match=r"expected a floating-point input .*got dtype uint8"):
        model.forward(np.zeros((2, 1, 28, 28), np.uint8))


@pytest.mark.parametrize("build, name", [
    (lambda: dense_autoencoder(hidden=4, seed=0), "dense_autoencoder"),
    (lambda: fast.compile(dense_autoencoder(hidden=4, seed=0), workers=1), "dense_autoencoder"),
    (lambda: vae(latent=2, hidden=8, seed=0), "vae.encoder"),
    (lambda: sparse_autoencoder(hidden=4, seed=0), "sparse_autoencoder"),
], ids=["sequential", "fast", "vae", "sparse"])
def test_model_refuses_another_float_dtype_than_its_parameters(backend, build, name):
    """float64 images (uint8 / 255.0) would make float64 activations and gradients for
    float32 weights, silently (and fail in the fused Adam on a GPU): the layer-level API
    refuses them, naming the model, both dtypes and the fix."""
    model = build()
    x = to_xp(np.full((2, 1, 28, 28), 0.5))
    with pytest.raises(TypeError, match=re.escape(
            f"{name}: got a float64 input for float32 parameters; "
            f"cast it first, e.g. x.astype(np.float32)")):
        model.forward(x)
    model.forward(x.astype(np.float32))
    double = dense_autoencoder(hidden=4, seed=0, dtype=np.float64)  # a gradient check's
    assert double.forward(x).dtype == np.float64
    shapes_only = Sequential([Flatten(), Reshape((1, 28, 28))])  # no parameters: any float
    assert shapes_only.forward(x).dtype == np.float64
    assert shapes_only.forward(x.astype(np.float32)).dtype == np.float32


def test_train_step_refuses_float64_batches_for_a_float32_model():
    trainer = Trainer(dense_autoencoder(hidden=4, seed=0), progress=False, log=lambda s: None)
    with pytest.raises(TypeError, match="got a float64 input for float32 parameters"):
        trainer.train_step(np.full((2, 1, 28, 28), 0.5))


def test_model_backward_before_forward_and_bad_dout():
    model = Sequential([Flatten(), Dense(6, 2, seed=0)], name="tiny")
    with pytest.raises(RuntimeError, match=r"tiny: backward\(\) called before forward\(\)"):
        model.backward(np.zeros((3, 2), np.float32))
    model.forward(_images(3, shape=(2, 3)))
    before = {k: g.copy() for k, g in model.grads.items()}
    with pytest.raises(ValueError, match=r"tiny: backward expected dout of shape \(3, 2\) "
                                         r"\(the forward output's\), got \(3, 3\)"):
        model.backward(np.zeros((3, 3), np.float32))
    for k, g in before.items():
        np.testing.assert_array_equal(model.grads[k], g)


def test_sequential_rejects_non_layers_and_bad_input_shape():
    with pytest.raises(TypeError, match=r"item 1 .* is not a layer"):
        Sequential([Flatten(), "Dense"])
    with pytest.raises(ValueError, match=r"input_shape must hold positive ints, got \(1, 0, 28\)"):
        Sequential([Flatten()], input_shape=(1, 0, 28))


# --------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------
def test_loss_shape_mismatch():
    loss = SigmoidCrossEntropy()
    with pytest.raises(ValueError, match=r"logits and targets must have the same shape, got "
                                         r"logits \(2, 1, 28, 28\) and targets \(2, 784\)"):
        loss.forward(np.zeros((2, 1, 28, 28)), np.zeros((2, 784)))
    with pytest.raises(RuntimeError, match="backward"):  # and nothing was cached
        loss.backward()


@pytest.mark.parametrize("bad, pattern", [
    (1.5, r"targets must be in \[0, 1\], got values from 0 to 1.5"),
    (-0.25, r"targets must be in \[0, 1\], got values from -0.25 to 1"),
    (255.0, r"targets must be in \[0, 1\], got values from 0 to 255 \(scale images to \[0, 1\]"),
    (np.nan, r"targets must be finite, in \[0, 1\]; found 1 NaN among 6 values"),
    (np.inf, r"targets must be finite, in \[0, 1\]; found 1 inf among 6 values"),
])
def test_loss_targets_outside_unit_interval(backend, bad, pattern):
    loss = SigmoidCrossEntropy()
    t = np.array([[0.0, 0.5, 1.0], [0.2, 0.3, 0.4]])
    t[1, 2] = bad
    with pytest.raises(ValueError, match="SigmoidCrossEntropy: " + pattern):
        loss.forward(to_xp(np.zeros((2, 3))), to_xp(t))
    assert loss._cache is None
    # check_targets=False (a loop that checked its data up front) skips the check
    assert np.isfinite(float(SigmoidCrossEntropy(check_targets=False).forward(
        to_xp(np.zeros((2, 3))), to_xp(np.clip(np.nan_to_num(t), 0, 2)))))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_loss_does_not_raise_on_non_finite_logits(backend, bad):
    """Non-finite logits mean divergence: the loss returns it, the Trainer reports it."""
    x = np.zeros((2, 3))
    x[0, 1] = bad
    with np.errstate(invalid="ignore"):  # inf - inf inside the formula
        value = float(SigmoidCrossEntropy().forward(to_xp(x), to_xp(np.full((2, 3), 0.5))))
    assert not np.isfinite(value)


# --------------------------------------------------------------------------
# The optimizers
# --------------------------------------------------------------------------
def _adam_problem():
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    opt = Adam(params, lr=0.1)
    opt.step([np.ones((3, 2)), np.ones(2)])  # a real step first: state is not trivial
    return params, opt


def _adam_snapshot(params, opt):
    return ([p.copy() for p in params], opt.t, [m.copy() for m in opt.m], [v.copy() for v in opt.v])


def _assert_adam_unchanged(params, opt, snapshot):
    p0, t0, m0, v0 = snapshot
    assert opt.t == t0
    for a, b in zip(params + opt.m + opt.v, p0 + m0 + v0):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("grads, error, pattern", [
    ([np.ones((3, 2))], ValueError,
     r"Adam\.step: expected 2 gradients \(one per parameter\), got 1"),
    ([np.ones((3, 2)), np.ones(2), np.ones(2)], ValueError,
     r"Adam\.step: expected 2 gradients .*got 3"),
    ([np.ones((3, 2)), np.ones(3)], ValueError,
     r"Adam\.step: gradient 1 has shape \(3,\), expected \(2,\)"),
    ([np.ones((2, 3)), np.ones(2)], ValueError,
     r"Adam\.step: gradient 0 has shape \(2, 3\), expected \(3, 2\)"),
    ([np.ones((3, 2)), None], TypeError,
     r"Adam\.step: gradient 1 is a NoneType, expected an array of shape \(2,\)"),
    (None, TypeError, r"Adam\.step: expected a list of 2 gradient arrays, got NoneType"),
])
def test_adam_step_with_bad_gradients_changes_nothing(grads, error, pattern):
    params, opt = _adam_problem()
    snapshot = _adam_snapshot(params, opt)
    with pytest.raises(error, match=pattern):
        opt.step(grads)
    _assert_adam_unchanged(params, opt, snapshot)


def test_sgd_step_with_bad_gradients_changes_nothing():
    params = [np.ones((2, 2)), np.ones(3)]
    opt = SGD(params, lr=0.1)
    with pytest.raises(ValueError,
                       match=r"SGD\.step: gradient 1 has shape \(2,\), expected \(3,\)"):
        opt.step([np.ones((2, 2)), np.ones(2)])
    np.testing.assert_array_equal(params[0], np.ones((2, 2)))  # the first one was not updated


@pytest.mark.parametrize("lr", [0, -1e-3, float("nan"), float("inf"), "0.1", True])
def test_optimizer_rejects_bad_learning_rate(lr):
    with pytest.raises(ValueError, match=rf"Adam: lr must be a positive finite number, got {lr!r}"):
        Adam([np.ones(2)], lr=lr)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"betas": (0.9, 1.0)}, r"Adam: betas must be in \[0, 1\), got \(0.9, 1.0\)"),
    ({"betas": (float("nan"), 0.999)}, r"Adam: betas must be in \[0, 1\)"),
    ({"betas": 0.9}, r"Adam: betas must be a pair of numbers"),
    ({"eps": 0.0}, r"Adam: eps must be a positive finite number, got 0.0"),
])
def test_adam_rejects_bad_hyperparameters(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Adam([np.ones(2)], **kwargs)


def test_optimizer_rejects_empty_or_non_array_params():
    with pytest.raises(ValueError, match=r"Adam: got an empty parameter list"):
        Adam([])
    with pytest.raises(TypeError, match=r"SGD: parameter 0 is a float, expected an array"):
        SGD([1.0])


@pytest.mark.parametrize("mutate, pattern", [
    (lambda s: s["m"].pop(), r"state has 1/2 first/second moments, expected 2"),
    (lambda s: s.update(v=[s["v"][0], np.ones(3)]),
     r"moment v\[1\] has shape \(3,\), expected \(2,\)"),
    (lambda s: s["m"][0].__setitem__((0, 0), np.nan), r"moment m\[0\] is not finite \(1 NaN"),
    (lambda s: s.update(t=-1), r"step count t must be an int >= 0, got -1"),
    (lambda s: s.pop("lr"), r"state lacks lr"),
])
def test_adam_load_state_dict_checks_everything_first(mutate, pattern):
    params, opt = _adam_problem()
    state = opt.state_dict()
    state["t"] = 7
    for m in state["m"] + state["v"]:
        m += 5.0
    mutate(state)
    snapshot = _adam_snapshot(params, opt)
    with pytest.raises(ValueError, match=r"Adam\.load_state_dict: " + pattern):
        opt.load_state_dict(state)
    _assert_adam_unchanged(params, opt, snapshot)


# --------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------
def test_unknown_backend():
    with pytest.raises(ValueError, match=r"unknown backend 'jax'; expected one of: numpy, cupy"):
        backend.set_backend("jax")
    assert backend.get_backend() == "numpy"


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy and a GPU are available here")
def test_cupy_missing_says_how_to_install():
    with pytest.raises(RuntimeError, match=r"backend 'cupy' is not available: .*pip install "
                                           r"cupy-cuda12x.*cupy-cuda13x.*--backend numpy"):
        backend.set_backend("cupy")
    assert backend.get_backend() == "numpy"


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------
def test_load_checkpoint_of_another_architecture_changes_nothing(tmp_path):
    dense_autoencoder(hidden=16, seed=1).save(tmp_path / "ae16.npz")
    model = dense_autoencoder(hidden=32, seed=0)
    before = _weights(model)
    with pytest.raises(ValueError,
                       match=r"ae16\.npz: checkpoint is of another architecture than this "
                                         r"model .*layer 1 is Dense\(784, 16\) there but "
                                         r"Dense\(784, 32\) here") as info:
        model.load(tmp_path / "ae16.npz")
    assert "\n" not in str(info.value)  # one line, for the CLI
    _assert_same_weights(model, before)
    model2 = conv_denoiser(seed=0)
    before2 = _weights(model2)
    with pytest.raises(ValueError, match=rf"another architecture.* it has 5 layers, this model "
                                         rf"{len(model2.layers)};"):
        model2.load(tmp_path / "ae16.npz")
    _assert_same_weights(model2, before2)


def test_load_checkpoint_with_wrong_shapes_changes_nothing(tmp_path):
    """No architecture string (a hand-made file): the keys and shapes are still checked."""
    model = dense_autoencoder(hidden=8, seed=0)
    arrays = {k: np.ones(v.shape, np.float32) for k, v in weights(model).items()}
    arrays["3.b"] = np.ones(5, np.float32)
    np.savez(tmp_path / "odd.npz", **arrays)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"odd\.npz does not match this model .*parameter 3\.b "
                                         r"has shape \(5,\), expected \(784,\)"):
        model.load(tmp_path / "odd.npz")
    _assert_same_weights(model, before)
    del arrays["3.b"]
    np.savez(tmp_path / "missing.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing 3\.b, unexpected nothing"):
        model.load(tmp_path / "missing.npz")
    _assert_same_weights(model, before)


def test_load_checkpoint_with_nan_weights_changes_nothing(tmp_path):
    model = dense_autoencoder(hidden=8, seed=0)
    arrays = weights(model)
    arrays["1.W"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    fresh = dense_autoencoder(hidden=8, seed=3)
    before = _weights(fresh)
    with pytest.raises(ValueError, match=r"nan\.npz: parameter 1\.W is not finite \(1 NaN"):
        fresh.load(tmp_path / "nan.npz")
    _assert_same_weights(fresh, before)


def test_load_truncated_checkpoint(tmp_path):
    path = tmp_path / "cut.npz"
    dense_autoencoder(hidden=8, seed=0).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    model = dense_autoencoder(hidden=8, seed=1)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"cut\.npz: not a readable \.npz checkpoint .*truncated"):
        model.load(path)
    _assert_same_weights(model, before)


def _write_npy(path):
    with open(path, "wb") as f:  # a file object: np.save adds no ".npy" to the name
        np.save(f, np.zeros(3))  # a single array, not an archive of named arrays


@pytest.mark.parametrize("write", [
    lambda p: p.write_text("these are not weights\n"),
    lambda p: p.write_bytes(b""),
    _write_npy,
], ids=["text", "empty", "npy"])
def test_load_non_npz_checkpoint(tmp_path, write):
    path = tmp_path / "weights.npz"
    write(path)
    model = dense_autoencoder(hidden=8, seed=1)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"weights\.npz: not a readable \.npz checkpoint"):
        model.load(path)
    _assert_same_weights(model, before)


def test_load_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz: no such checkpoint file"):
        load_npz(tmp_path / "nothing.npz")
    with pytest.raises(FileNotFoundError, match=r"is a directory"):
        load_npz(tmp_path)


def _trainer(checkpoint=None, **kwargs):
    kwargs = {"lr": 0.01, "batch_size": 32, "seed": 0, "progress": False, "log": lambda s: None,
              **kwargs}
    return Trainer(dense_autoencoder(hidden=8, seed=0), checkpoint=checkpoint, **kwargs)


def _trainer_state(trainer):
    return (_weights(trainer.model), trainer.optimizer.t, trainer.epoch, trainer.batch,
            trainer.shuffle_rng.bit_generator.state, trainer.noise_rng.bit_generator.state)


def _assert_trainer_unchanged(trainer, state):
    weights, t, epoch, step, shuffle, noise = state
    _assert_same_weights(trainer.model, weights)
    assert (trainer.optimizer.t, trainer.epoch, trainer.batch) == (t, epoch, step)
    assert trainer.shuffle_rng.bit_generator.state == shuffle
    assert trainer.noise_rng.bit_generator.state == noise
    assert trainer.perm is None


@pytest.mark.parametrize("kwargs, pattern", [
    ({"batch_size": 64}, r"was trained with batch size 32, got 64; resume with --batch-size 32"),
    ({"seed": 1}, r"was trained with seed 0, got 1; resume with --seed 0"),
])
def test_resume_with_other_settings_changes_nothing(tmp_path, kwargs, pattern):
    path = tmp_path / "ck.npz"
    _trainer(path).fit(_images(64), epochs=1)
    trainer = _trainer(**kwargs)
    state = _trainer_state(trainer)
    with pytest.raises(ValueError, match=r"ck\.npz: " + pattern):
        trainer.resume(path)
    _assert_trainer_unchanged(trainer, state)


def test_resume_from_weights_only_changes_nothing(tmp_path):
    path = tmp_path / "weights.npz"
    dense_autoencoder(hidden=8, seed=5).save(path)
    trainer = _trainer()
    state = _trainer_state(trainer)
    with pytest.raises(ValueError, match=r"weights\.npz: holds weights but no training state"):
        trainer.resume(path)
    _assert_trainer_unchanged(trainer, state)


def test_resume_with_damaged_training_state_changes_nothing(tmp_path):
    path = tmp_path / "ck.npz"
    _trainer(path).fit(_images(64), epochs=1)
    arrays = load_npz(path)
    del arrays["train/adam_v.3"]
    np.savez(path, **arrays)
    trainer = _trainer()
    state = _trainer_state(trainer)
    with pytest.raises(ValueError, match=r"damaged training state \(lacks train/adam_v\.3\)"):
        trainer.resume(path)
    _assert_trainer_unchanged(trainer, state)


def test_resume_with_other_training_set_size(tmp_path):
    path = tmp_path / "ck.npz"
    trainer = _trainer(path)
    trainer.perm = np.arange(64)  # as if interrupted mid-epoch on 64 images
    trainer.save(path)
    resumed = _trainer()
    resumed.resume(path)
    with pytest.raises(ValueError, match=r"shuffling 64 training images, got 48; resume with the "
                                         r"same data"):
        resumed.fit(_images(48), epochs=2)
    assert resumed.batch == 0 and resumed.optimizer.t == 0


# --------------------------------------------------------------------------
# The Trainer's own checks (the whole dataset, once)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, pattern", [
    ({"batch_size": 0}, r"Trainer: batch_size must be a positive int, got 0"),
    ({"batch_size": 2.5}, r"Trainer: batch_size must be a positive int, got 2.5"),
    ({"lr": float("nan")}, r"Adam: lr must be a positive finite number, got nan"),
    ({"lr": -1.0}, r"Adam: lr must be a positive finite number, got -1.0"),
    ({"seed": -1}, r"Trainer: seed must be an int >= 0, got -1"),
])
def test_trainer_rejects_bad_settings(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        _trainer(**kwargs)


@pytest.mark.parametrize("epochs", [0, -1, 2.5, float("nan"), float("inf"), True])
def test_fit_rejects_bad_epochs(epochs):
    trainer = _trainer()
    state = _trainer_state(trainer)
    with pytest.raises(ValueError,
                       match=rf"Trainer\.fit: epochs must be a positive int, got {epochs!r}"):
        trainer.fit(_images(8), epochs=epochs)
    _assert_trainer_unchanged(trainer, state)


def _poisoned(kind):
    x = _images(40)
    if kind == "nan":
        x[33, 0, 5, 5] = np.nan
    elif kind == "inf":
        x[2, 0, 0, 0] = np.inf
    elif kind == "range":
        x[7, 0, 1, 1] = 1.5
    elif kind == "uint8":
        x = (x * 255).astype(np.uint8)
    elif kind == "shape":
        x = x.reshape(40, 1, 784)
    return x


@pytest.mark.parametrize("kind, error, pattern", [
    ("nan", ValueError,
     r"train_images must be finite, in \[0, 1\]; found 1 NaN among 31360 values"),
    ("inf", ValueError, r"train_images must be finite, in \[0, 1\]; found 1 inf"),
    ("range", ValueError, r"train_images must be in \[0, 1\], got values from .* to 1.5"),
    ("uint8", TypeError,
     r"train_images: expected floating-point images in \[0, 1\], got dtype uint8"),
    ("shape", ValueError,
     r"train_images: expected images of shape \(N, 1, 28, 28\), got \(40, 1, 784\)"),
])
def test_fit_checks_the_whole_training_set_first(tmp_path, kind, error, pattern):
    path = tmp_path / "ck.npz"
    trainer = _trainer(path)
    trainer.model.input_shape = (1, 28, 28)  # as the factories / the CLI set it
    state = _trainer_state(trainer)
    with pytest.raises(error, match=r"Trainer\.fit: " + pattern):
        trainer.fit(_poisoned(kind), epochs=1)
    _assert_trainer_unchanged(trainer, state)
    assert not path.exists()


def test_fit_checks_the_test_set_first():
    trainer = _trainer()
    state = _trainer_state(trainer)
    with pytest.raises(ValueError, match=r"Trainer\.fit: test_images must be finite.*1 NaN"):
        trainer.fit(_images(40), _poisoned("nan"), epochs=1)
    _assert_trainer_unchanged(trainer, state)
    with pytest.raises(ValueError, match=r"Trainer\.evaluate: images must be in \[0, 1\]"):
        trainer.evaluate(_poisoned("range"))


def test_fit_switches_per_step_checks_off_and_back_on(monkeypatch):
    trainer = _trainer(noise=make_noise("gaussian", 0.5))
    seen = []
    step = trainer.train_step

    def spy(clean):
        seen.append((trainer.model.check_finite, trainer.loss_fn.check_targets))
        return step(clean)

    monkeypatch.setattr(trainer, "train_step", spy)
    trainer.fit(_images(64), _images(8), epochs=1)
    assert seen and set(seen) == {(False, False)}  # the data was checked once, up front
    assert trainer.model.check_finite and trainer.loss_fn.check_targets  # restored


# --------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    trainer = _trainer(path)
    x = _images(64)
    trainer.fit(x, epochs=1)
    good = path.read_bytes()
    forward = trainer.loss_fn.forward
    calls = {"n": 0}

    def loss_goes_nan(logits, targets):
        calls["n"] += 1
        value = forward(logits, targets)
        return value * np.nan if calls["n"] == 2 else value

    monkeypatch.setattr(trainer.loss_fn, "forward", loss_goes_nan)
    with pytest.raises(TrainingDiverged, match=r"the training loss became nan at epoch 2, batch 2: "
                                               r"training diverged\. Try a lower learning rate "
                                               r"\(now 0\.01; e\.g\. 0\.001.*The last good "
                                               r"checkpoint, .*ck\.npz, was left as it was\."):
        trainer.fit(x, epochs=3)
    assert path.read_bytes() == good  # byte for byte
    assert trainer.history["train_loss"] and len(trainer.history["train_loss"]) == 1


def test_divergence_with_a_huge_learning_rate(tmp_path):
    path = tmp_path / "ck.npz"
    trainer = _trainer(path, lr=1e30)
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf) at epoch 1.*lower learning rate "
                                               r"\(now 1e\+30.*No checkpoint was written"):
        trainer.fit(_images(64), epochs=2)
    assert not path.exists()


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    """A last step that makes a weight inf while its loss was finite: no checkpoint."""
    path = tmp_path / "ck.npz"
    trainer = _trainer(path)
    step = trainer.optimizer.step

    def poisoning_step(grads):
        step(grads)
        trainer.model.layers[1].params["W"][0, 0] = np.inf

    monkeypatch.setattr(trainer.optimizer, "step", poisoning_step)
    with pytest.raises(TrainingDiverged, match=r"parameter 1\.W became non-finite \(1 inf"):
        trainer.fit(_images(16), epochs=1)
    assert not path.exists()


# --------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name, amount, pattern", [
    ("gaussian", 0, r"noise factor must be a positive finite number, got 0"),
    ("gaussian", float("nan"), r"noise factor must be a positive finite number, got nan"),
    ("gaussian", float("inf"), r"noise factor must be a positive finite number, got inf"),
    ("mask", 1.5, r"masking fraction must be at most 1, got 1.5"),
    ("salt-pepper", -0.1, r"salt-and-pepper amount must be a positive finite number"),
    ("speckle", 0.5, r"unknown noise 'speckle'; expected one of: gaussian, salt-pepper, mask"),
])
def test_bad_noise(name, amount, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_noise(name, amount)


# --------------------------------------------------------------------------
# The command line: one "error: ..." line, no traceback, non-zero exit
# --------------------------------------------------------------------------
def _run(demo, *flags, data_dir=None, out=None):
    command = [sys.executable, str(ROOT / "demos" / demo), "--no-progress", "--epochs", "1",
               *flags]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    if out is not None:
        command += ["--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV)


def _assert_one_error_line(result, pattern, code=None):
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert "usage:" not in result.stderr


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return _sample_idx_dir(tmp_path_factory.mktemp("idx"))


@pytest.mark.parametrize("flags, pattern", [
    (["--epochs", "0"], r"argument --epochs: expected a positive integer, got '0'"),
    (["--epochs", "nan"], r"argument --epochs: expected a positive integer, got 'nan'"),
    (["--batch-size", "-1"], r"argument --batch-size: expected a positive integer, got '-1'"),
    (["--lr", "inf"], r"argument --lr: expected a positive finite number, got 'inf'"),
    (["--lr", "0"], r"argument --lr: expected a positive finite number, got '0'"),
    (["--noise-factor", "0"],
     r"argument --noise-factor: expected a positive finite number, got '0'"),
    (["--noise-factor", "nan"], r"argument --noise-factor: expected a positive finite number"),
    (["--seed", "-1"], r"argument --seed: expected an integer >= 0, got '-1'"),
    (["--backend", "jax"], r"argument --backend: invalid choice: 'jax'"),
    (["--frobnicate"], r"unrecognized arguments: --frobnicate"),
])
def test_cli_bad_flag_values(flags, pattern, tmp_path):
    result = _run("conv_denoise.py", *flags, out=tmp_path / "out")
    _assert_one_error_line(result, pattern, code=2)
    assert not (tmp_path / "out").exists()  # rejected before anything was created


def test_cli_noise_factor_too_large_for_mask(tmp_path, idx_dir):
    result = _run("dense_denoise.py", "--noise", "mask", "--noise-factor", "1.5",
                  data_dir=idx_dir, out=tmp_path)
    _assert_one_error_line(result,
     r"--noise-factor 1.5: masking fraction must be at most 1", code=1)


def test_cli_out_under_a_regular_file(tmp_path, idx_dir):
    (tmp_path / "file").write_text("x")
    result = _run("dense_autoencoder.py", data_dir=idx_dir, out=tmp_path / "file" / "out")
    _assert_one_error_line(result,
     r"--out '.*file/out' is not a writable directory \(Not a directory\)",
                           code=1)


def test_cli_missing_data_dir(tmp_path):
    result = _run("dense_autoencoder.py", data_dir=tmp_path / "nowhere", out=tmp_path / "out")
    _assert_one_error_line(result, r"MNIST directory .*nowhere does not exist", code=1)


def test_cli_incomplete_data_dir(tmp_path, idx_dir):
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in idx_dir.glob("train-*"):
        (partial / f.name).write_bytes(f.read_bytes())
    result = _run("dense_autoencoder.py", data_dir=partial, out=tmp_path / "out")
    _assert_one_error_line(result, r"MNIST directory .*partial is missing t10k-images-idx3-ubyte, "
                                   r"t10k-labels-idx1-ubyte", code=1)


def test_cli_bad_idx_file(tmp_path, idx_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in idx_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    import gzip
    raw = gzip.decompress((bad / "t10k-images-idx3-ubyte.gz").read_bytes())
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x04" + raw[4:]))
    result = _run("dense_autoencoder.py", data_dir=bad, out=tmp_path / "out")
    _assert_one_error_line(result,
     r"t10k-images-idx3-ubyte\.gz: bad magic number 0x00000804", code=1)


def test_cli_resume_without_checkpoint(tmp_path, idx_dir):
    result = _run("dense_autoencoder.py", "--resume", data_dir=idx_dir, out=tmp_path)
    _assert_one_error_line(result, r"--resume: no checkpoint at .*dense_autoencoder\.npz "
                                   r"\(run without --resume first\)", code=1)


def test_cli_resume_from_another_architecture(tmp_path, idx_dir):
    dense_autoencoder(hidden=16, seed=0).save(tmp_path / "dense_autoencoder.npz")
    result = _run("dense_autoencoder.py", "--resume", "--hidden", "32", data_dir=idx_dir,
                  out=tmp_path)
    _assert_one_error_line(result, r"dense_autoencoder\.npz: checkpoint is of another "
                                   r"architecture than this model \(dense_autoencoder\).*"
                                   r"Dense\(784, 16\) there but Dense\(784, 32\) here", code=1)


def test_cli_resume_from_truncated_checkpoint(tmp_path, idx_dir):
    path = tmp_path / "dense_autoencoder.npz"
    dense_autoencoder(seed=0).save(path)
    path.write_bytes(path.read_bytes()[:1000])
    result = _run("dense_autoencoder.py", "--resume", data_dir=idx_dir, out=tmp_path)
    _assert_one_error_line(result,
     r"dense_autoencoder\.npz: not a readable \.npz checkpoint", code=1)


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy and a GPU are available here")
def test_cli_backend_cupy_without_cupy(tmp_path, idx_dir):
    result = _run("conv_denoise.py", "--backend", "cupy", data_dir=idx_dir, out=tmp_path)
    _assert_one_error_line(result, r"backend 'cupy' is not available: .*pip install cupy-cuda12x.*"
                                   r"cupy-cuda13x", code=1)


def test_cli_divergence(tmp_path, idx_dir):
    result = _run("dense_autoencoder.py", "--lr", "1e30", "--train-size", "256",
                  data_dir=idx_dir, out=tmp_path)
    _assert_one_error_line(result, r"training loss became (nan|inf) at epoch 1.* diverged\. Try a "
                                   r"lower learning rate \(now 1e\+30", code=1)
    assert not (tmp_path / "dense_autoencoder.npz").exists()


# --------------------------------------------------------------------------
# run_demo in-process: Ctrl-C outside fit, exceptions the CLI turns into a line
# --------------------------------------------------------------------------
def _spec(build_model=None, make_figures=None):
    return DemoSpec(name="tiny", description="a tiny demo for tests",
                    build_model=build_model or (lambda args: dense_autoencoder(hidden=4, seed=0)),
                    make_figures=make_figures or (lambda trainer, data, args: []),
                    epochs=1, lr=0.01, batch_size=64)


def _raise(error):
    def function(*args):
        raise error
    return function


def test_ctrl_c_while_building_exits_130_with_one_line(tmp_path, capsys, idx_dir):
    code = run_demo(_spec(build_model=_raise(KeyboardInterrupt())),
                    ["--out", str(tmp_path), "--data-dir", str(idx_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130
    assert err.splitlines() == ["interrupted: nothing was saved"]


def test_ctrl_c_while_drawing_figures_exits_130_with_one_line(tmp_path, capsys, idx_dir):
    code = run_demo(_spec(make_figures=_raise(KeyboardInterrupt())),
                    ["--out", str(tmp_path), "--data-dir", str(idx_dir), "--no-progress",
                     "--train-size", "128"])
    captured = capsys.readouterr()
    assert code == 130
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert lines[0].startswith(f"interrupted: {tmp_path / 'tiny.npz'} holds the last saved state; "
                               f"resume with: python ")
    assert lines[0].endswith("--resume")
    assert (tmp_path / "tiny.npz").exists()
    assert "training: epochs 1..1" in captured.out


@pytest.mark.parametrize("error, pattern", [
    (TypeError("bad type\nsecond line"), r"^error: bad type; second line$"),
    (MemoryError("cannot allocate"),
     r"^error: out of memory \(cannot allocate\); try a smaller --batch-size$"),
])
def test_run_demo_prints_other_errors_as_one_line(tmp_path, capsys, idx_dir, error, pattern):
    code = run_demo(_spec(build_model=_raise(error)),
                    ["--out", str(tmp_path), "--data-dir", str(idx_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1
    assert re.match(pattern, err.strip()), err


def test_run_guarded_for_custom_demos(capsys):
    """What demos with their own main (e.g. compare_denoisers.py) wrap it in."""
    assert run_guarded(lambda: {"bce": 0.1, "psnr_in": 9.4, "psnr_out": 18.25}) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "test bce=0.1000 psnr_in=9.40dB psnr_out=18.25dB"
    assert run_guarded(_raise(FileNotFoundError("MNIST directory x does not exist"))) == 1
    assert capsys.readouterr().err == "error: MNIST directory x does not exist\n"
    assert run_guarded(_raise(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "interrupted\n"
