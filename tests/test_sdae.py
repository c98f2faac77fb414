"""The stacked denoising autoencoder: tied weights, softmax cross-entropy, the two-stage loop.

Gradients are checked in float64 with a random upstream gradient; the tied
weight is perturbed where it lives (the encoder's array), so the check sees
both of its uses. The loop's new paths (pairs, the best epoch, patience, a
resume in the middle of the second layer's pretraining) are checked on tiny
models and the bundled sample.
"""
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchae import backend, checkpoint, fast
from scratchae.data import load_sample, validation_split
from scratchae.gradcheck import check_loss, gradient_errors
from scratchae.layers import Dense, Sigmoid
from scratchae.layers.tied import TiedDense
from scratchae.losses import SoftmaxCrossEntropy, error_rate
from scratchae.models import Sequential
from scratchae.noise import masking
from scratchae.optim import Adam
from scratchae.sdae import (
    ClassifierTrainer,
    Recipe,
    StackedDenoisingAutoencoder,
    corruption_levels,
    hidden_sizes,
    stage_checkpoints,
    train_stacked,
)
from scratchae.train import Trainer, TrainingInterrupted, best_path, cosine_schedule

from conftest import to_np, to_xp
from test_train import _sample_idx_dir

F64 = np.float64


def _tied(d=7, m=5, seed=0, dtype=F64):
    encoder = Dense(d, m, dtype=dtype, seed=seed)
    return encoder, Sequential([encoder, Sigmoid(), TiedDense(encoder)], (d,))


# -- the tied layer ---------------------------------------------------------------
def test_tied_dense_gradients_alone(backend):
    encoder = Dense(6, 4, dtype=F64, seed=1)
    layer = TiedDense(encoder)
    layer.params["b"][...] = to_xp(np.random.default_rng(2).normal(size=6))
    errors = gradient_errors(layer, np.random.default_rng(3).normal(size=(3, 4)), seed=4)
    assert set(errors) == {"dx", "W", "b"}
    assert max(errors.values()) < 1e-7, errors


def test_tied_autoencoder_gradient_sees_both_uses_of_w(backend):
    encoder, model = _tied()
    assert list(model.params) == ["0.W", "0.b", "2.b"]  # W once, under its first use
    x = np.random.default_rng(0).uniform(0, 1, (4, 7))
    errors = gradient_errors(model, x, seed=1)
    assert max(errors.values()) < 1e-7, errors
    # the summed gradient is the encoder's part plus the decoder's part
    grads = model.grads
    both = to_np(model.layers[0].grads["W"]) + to_np(model.layers[2].grads["W"])
    np.testing.assert_allclose(to_np(grads["0.W"]), both, rtol=1e-12)
    assert np.abs(to_np(model.layers[2].grads["W"])).max() > 0  # the decoder's part counts


def test_tied_weight_is_the_encoders_array_updated_once_and_saved_once(backend, tmp_path):
    encoder, model = _tied(dtype=np.float32)
    assert model.layers[2].params["W"] is encoder.params["W"]
    assert len(model.parameters()) == 3
    x = to_xp(np.random.default_rng(0).uniform(0, 1, (4, 7)), dtype=np.float32)
    model.forward(x)
    model.backward(to_xp(np.ones((4, 7)), dtype=np.float32))
    before = to_np(encoder.params["W"])
    Adam(model.parameters(), lr=0.1).step(model.gradients())
    # one Adam step moves each entry by about lr (sign of the gradient), not twice that
    step = np.abs(to_np(encoder.params["W"]) - before)
    assert np.allclose(step[step > 0], 0.1, rtol=1e-3)
    model.save(tmp_path / "tied.npz")
    saved = checkpoint.load_npz(tmp_path / "tied.npz")
    assert sorted(k for k in saved if not k.startswith("__")) == ["0.W", "0.b", "2.b"]


def test_tied_layer_refuses_a_non_dense_and_wrong_inputs():
    with pytest.raises(TypeError, match="TiedDense: expected the encoder Dense"):
        TiedDense(Sigmoid())
    layer = TiedDense(Dense(6, 4, seed=0))
    with pytest.raises(ValueError, match=r"expected 4 input features, got input of shape"):
        layer.forward(np.zeros((2, 6), np.float32))


def test_fast_path_equals_textbook_on_the_tied_autoencoder_and_the_classifier(backend):
    model = StackedDenoisingAutoencoder((9, 5), classes=3, seed=0, dtype=F64)
    rng = np.random.default_rng(0)
    for part in (model.autoencoder(0), model.autoencoder(1), model.classifier):
        for p in part.parameters():  # biases off zero
            p[...] = p + to_xp(rng.uniform(-0.1, 0.1, p.shape))
        shape = (3,) + part.input_shape
        x = to_xp(rng.uniform(0, 1, shape))
        y = part.forward(x)
        dout = to_xp(rng.normal(size=y.shape))
        dx = part.backward(dout)
        grads = {k: to_np(g) for k, g in part.grads.items()}
        for workers in (1, 2) if backend == "numpy" else (1,):
            net = fast.compile(part, input_grad=True, workers=workers)
            np.testing.assert_allclose(to_np(net.forward(x)), to_np(y), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(to_np(net.backward(dout)), to_np(dx), rtol=1e-9,
                                       atol=1e-12)
            assert list(net.grads) == list(grads)
            for k, g in net.grads.items():
                np.testing.assert_allclose(to_np(g), grads[k], rtol=1e-9, atol=1e-12)


# -- softmax cross-entropy ----------------------------------------------------------
def test_softmax_cross_entropy_value_gradient_and_error_rate(backend):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(to_xp(logits), to_xp(labels)))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert value == pytest.approx(-np.log(p[np.arange(5), labels]).mean(), rel=1e-12)
    expected = (p - np.eye(4)[labels]) / 5  # (softmax - onehot) / N
    np.testing.assert_allclose(to_np(loss.backward()), expected, rtol=1e-12)
    assert check_loss(loss, to_xp(logits), to_xp(labels)) < 1e-8
    assert float(error_rate(to_xp(logits), to_xp(labels))) == pytest.approx(
        np.mean(logits.argmax(axis=1) != labels))


def test_softmax_cross_entropy_is_stable_for_huge_logits(backend):
    logits = to_xp(np.array([[1000.0, -1000.0, 0.0], [-1000.0, -999.0, -1001.0]]),
                   dtype=np.float32)
    labels = to_xp(np.array([1, 1]))
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(logits, labels))
    assert value == pytest.approx((2000 + np.log1p(np.exp(-1) + np.exp(-2))) / 2, rel=1e-6)
    grad = to_np(loss.backward())
    assert grad.dtype == np.float32 and np.isfinite(grad).all()


@pytest.mark.parametrize("labels, pattern", [
    (np.array([0, 3]), r"labels must be in \[0, 3\) for 3 classes, got values from 0 to 3"),
    (np.array([0.0, 1.0]), r"labels must be integer class indices, got dtype float64"),
    (np.array([0, 1, 2]), r"expected logits \(N, K\) and labels \(N,\), got logits \(2, 3\)"),
])
def test_softmax_cross_entropy_refuses_bad_labels(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3)), labels)


# -- masking noise, the split, the flags ---------------------------------------------
def test_masking_noise_zeroes_a_fraction_of_any_array(backend):
    codes = to_xp(np.full((200, 50), 0.7, np.float32), dtype=np.float32)
    masked = to_np(masking(codes, 0.3, np.random.default_rng(0)))
    assert masked.shape == (200, 50) and masked.dtype == np.float32
    assert set(np.unique(masked)) <= {0.0, np.float32(0.7)}
    assert abs((masked == 0).mean() - 0.3) < 0.01


def test_validation_split_holds_out_the_last_digits():
    images, labels = np.arange(10.0)[:, None], np.arange(10)
    (tx, ty), (vx, vy) = validation_split(images, labels, 3)
    assert ty.tolist() == list(range(7)) and vy.tolist() == [7, 8, 9]
    with pytest.raises(ValueError, match="a validation split of 10 digits leaves none of the 10"):
        validation_split(images, labels, 10)


@pytest.mark.parametrize("text", ["0", "1000,-1", "a,b", "", "1000,,1000"])
def test_hidden_sizes_refuses_what_is_not_a_list_of_positive_ints(text):
    with pytest.raises(ValueError, match="must be a list of positive integers"):
        hidden_sizes(text)


@pytest.mark.parametrize("text, pattern", [
    ("1", r"in \[0, 1\); got 1.0"), ("-0.1", r"got -0.1"), ("nan", r"got nan"),
    ("0.1,0.2", r"one per hidden layer \(3\), got 2"), ("x", r"expected numbers in \[0, 1\)"),
])
def test_corruption_levels_refuse_what_is_outside_0_1(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        corruption_levels(text, 3)


def test_corruption_levels_one_value_for_every_layer():
    assert corruption_levels("0.25", 3) == (0.25, 0.25, 0.25)
    assert corruption_levels("0", 2) == (0.0, 0.0)


# -- the loop on (inputs, targets) pairs ---------------------------------------------
def _data(n_train=600, n_valid=200):
    sample = load_sample()
    return ((sample.train_images[:n_train], sample.train_labels[:n_train]),
            (sample.train_images[-n_valid:], sample.train_labels[-n_valid:]))


def test_classifier_trainer_keeps_the_best_validation_epoch(tmp_path):
    train, valid = _data()
    model = StackedDenoisingAutoencoder((32,), seed=0)
    lines = []
    trainer = ClassifierTrainer(model.classifier, lr=3e-3, batch_size=32, seed=(0, 4),
                                checkpoint=tmp_path / "c.npz", progress=False, log=lines.append)
    trainer.fit(train, valid, epochs=4)
    errors = trainer.history["error"]
    best = int(np.argmin(errors)) + 1  # earliest on a tie
    assert trainer.best["epoch"] == best
    assert "valid_loss" in trainer.history and "test_loss" not in trainer.history
    assert "(best so far)" in lines[best - 1]
    # the model ends with the best epoch's parameters, also saved on their own
    again = trainer.evaluate(valid)
    assert again["error"] == pytest.approx(errors[best - 1])
    saved = checkpoint.load_npz(best_path(tmp_path / "c.npz"))
    for k, p in model.classifier.params.items():
        np.testing.assert_array_equal(saved[k], to_np(p))


def test_patience_stops_early_and_resume_keeps_the_best(tmp_path):
    train, valid = _data()
    scripted = iter([0.5, 0.3, 0.3, 0.4, 0.2])  # the best is epoch 2; epochs 3 and 4 are not

    class Scripted(ClassifierTrainer):
        def finish_metrics(self, totals, count):
            return {**super().finish_metrics(totals, count), "error": next(scripted)}

    model = StackedDenoisingAutoencoder((16,), seed=0)
    path = tmp_path / "c.npz"
    trainer = Scripted(model.classifier, batch_size=100, seed=0, checkpoint=path,
                       progress=False, log=lambda line: None, patience=2)
    trainer.fit(train, valid, epochs=10)
    assert trainer.epoch == 4 and trainer.best["epoch"] == 2
    kept = [to_np(p) for p in trainer.best["params"]]
    for p, k in zip(model.classifier.parameters(), kept):  # fit ended with epoch 2's
        np.testing.assert_array_equal(to_np(p), k)
    resumed = ClassifierTrainer(StackedDenoisingAutoencoder((16,), seed=5).classifier,
                                batch_size=100, seed=0, progress=False, log=lambda line: None)
    resumed.resume(path)
    assert (resumed.best["epoch"], resumed.best["value"]) == (2, 0.3)
    for a, b in zip(resumed.best["params"], kept):
        np.testing.assert_array_equal(to_np(a), b)


def test_classifier_trainer_checks_labels_before_any_work():
    train, valid = _data()
    trainer = ClassifierTrainer(StackedDenoisingAutoencoder((8,), seed=0).classifier,
                                progress=False, log=lambda line: None)
    with pytest.raises(ValueError, match="train_images targets: expected 600 labels"):
        trainer.fit((train[0], train[1][:-1]), valid, epochs=1)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        trainer.fit((train[0], train[1] + 5), valid, epochs=1)
    with pytest.raises(ValueError, match="selects the best epoch on an evaluation set"):
        trainer.fit(train, epochs=1)
    assert trainer.epoch == 0


# -- the stages: pretraining then fine-tuning, interrupted and resumed ----------------
RECIPE = Recipe(hidden=(24, 12), corruption=(0.1, 0.2), pretrain_epochs=2, finetune_epochs=2,
                batch_size=50, finetune_noise=0.1)


def _run(out, resume=False, stop_at=None, monkeypatch=None):
    train, valid = _data(300, 100)
    model = StackedDenoisingAutoencoder(RECIPE.hidden, seed=0)
    if stop_at is not None:  # Ctrl-C at the stop_at-th step of the whole run
        steps = {"n": 0}
        original = Trainer.train_step

        def step(self, *batch):
            steps["n"] += 1
            if steps["n"] == stop_at:
                raise TrainingInterrupted(self._save_on_interrupt())
            return original(self, *batch)

        monkeypatch.setattr(Trainer, "train_step", step)
    try:
        result = train_stacked(model, RECIPE, train, valid, seed=0, out=out, resume=resume,
                               progress=False, log=lambda line: None, workers=1)
    finally:
        if monkeypatch is not None:
            monkeypatch.undo()
    return model, result


@pytest.mark.parametrize("stop_at, stages_saved", [(15, 2), (28, 3)])
def test_an_interrupt_resumes_in_its_stage_bit_for_bit(tmp_path, monkeypatch, stop_at,
                                                       stages_saved):
    reference, _ = _run(tmp_path / "reference")
    out = tmp_path / "run"
    out.mkdir()
    # 300 images / 50 = 6 steps an epoch, 2 epochs a layer: step 15 is in layer 2's second
    # epoch, step 28 in the fine-tuning's first (its cosine lr resumes at the same step)
    with pytest.raises(TrainingInterrupted):
        _run(out, stop_at=stop_at, monkeypatch=monkeypatch)
    paths = stage_checkpoints(out, "stacked_denoising", 2)
    assert [p.exists() for p in paths] == [k < stages_saved for k in range(3)]
    resumed, result = _run(out, resume=True)
    for k, p in reference.classifier.params.items():
        np.testing.assert_array_equal(to_np(p), to_np(resumed.classifier.params[k]))
    assert result["trainer"].best is not None


def test_resume_refuses_another_architecture_before_any_work(tmp_path):
    _run(tmp_path)
    stage2 = stage_checkpoints(tmp_path, "stacked_denoising", 2)[1]
    stamp = stage2.stat().st_mtime_ns
    train, valid = _data(300, 100)
    with pytest.raises(ValueError, match="another architecture"):
        train_stacked(StackedDenoisingAutoencoder((24, 13), seed=0), RECIPE, train, valid,
                      out=tmp_path, resume=True, progress=False, log=lambda line: None,
                      workers=1)
    assert stage2.stat().st_mtime_ns == stamp  # refused, nothing written


def test_a_fresh_run_removes_the_stages_of_an_earlier_run(tmp_path):
    paths = stage_checkpoints(tmp_path, "stacked_denoising", 2)
    for p in paths[1:]:
        p.write_bytes(b"an earlier run's")
    lines = []
    train, valid = _data(300, 100)
    recipe = Recipe(hidden=(24, 12), pretrain_epochs=1, finetune_epochs=1, batch_size=100,
                    corruption=0.1)
    train_stacked(StackedDenoisingAutoencoder((24, 12), seed=0), recipe, train, valid,
                  out=tmp_path, progress=False, log=lines.append, workers=1)
    assert any("removed stacked_denoising_layer2.npz, stacked_denoising.npz" in line
               for line in lines)
    assert all(p.read_bytes()[:2] == b"PK" for p in paths)  # all rewritten by this run


def test_resume_without_checkpoints_says_so(tmp_path):
    train, valid = _data(300, 100)
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint of stacked_denoising"):
        train_stacked(StackedDenoisingAutoencoder(RECIPE.hidden), RECIPE, train, valid,
                      out=tmp_path, resume=True, progress=False, log=lambda line: None)


def test_codes_are_the_clean_encoder_outputs():
    model = StackedDenoisingAutoencoder((10, 6), seed=0)
    images = load_sample().test_images[:7]
    codes = model.codes(images, 2)
    h = images.reshape(7, -1)
    for encoder in model.encoders:
        h = 1 / (1 + np.exp(-(h @ to_np(encoder.params["W"]) + to_np(encoder.params["b"]))))
    np.testing.assert_allclose(codes, h, rtol=1e-5)
    assert codes.dtype == np.float32 and backend.get_backend() == "numpy"


# -- the demo -------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
SUMMARY = re.compile(r"^test error=\d+\.\d\d% valid=\d+\.\d\d% \(best fine-tuning epoch \d+\) "
                     r"pretrain=\d+s finetune=\d+s$")
QUICK = ["--hidden", "32,16", "--pretrain-epochs", "1", "--finetune-epochs", "2",
         "--valid-size", "100", "--batch-size", "50", "--no-progress"]


def _demo(*flags, data_dir=None, out):
    return subprocess.run(
        [sys.executable, str(ROOT / "demos" / "stacked_denoising.py"), *QUICK, *flags,
         "--out", str(out)] + (["--data-dir", str(data_dir)] if data_dir else []),
        capture_output=True, text=True, timeout=300, env=ENV)


def test_demo_runs_and_ends_with_the_summary_line(tmp_path):
    data = _sample_idx_dir(tmp_path, n_train=400, n_test=100)
    result = _demo("--corruption", "0", data_dir=data, out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    result = _demo(data_dir=data, out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert SUMMARY.match(lines[-1]), lines[-1]
    assert any("chosen on the validation split" in line for line in lines)
    for name in ("stacked_denoising_filters.png", "stacked_denoising_valid.png",
                 "stacked_denoising_errors.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG", name
    assert (tmp_path / "out" / "stacked_denoising_corruption0_layer1.npz").exists()
    # the filter figure labels each run with the noise its checkpoint says it used
    from scratchae.checkpoint import read_meta
    assert read_meta(tmp_path / "out" / "stacked_denoising_layer1.npz")["noise"] == "mask(0.1)"
    assert read_meta(tmp_path / "out" / "stacked_denoising_corruption0_layer1.npz")[
        "noise"] == "none"


@pytest.mark.parametrize("flags, message", [
    (["--corruption", "1"], "error: --corruption: each level is the probability of zeroing an "
                            "input, in [0, 1); got 1.0"),
    (["--corruption", "0.1,0.2,0.3"], "error: --corruption: expected one level or one per "
                                      "hidden layer (2), got 3: '0.1,0.2,0.3'"),
    (["--hidden", "32,x"], "error: argument --hidden: hidden layer sizes must be a list of "
                           "positive integers such as 1000,1000,1000, got '32,x'"),
    (["--resume"], "error: --resume: no checkpoint of stacked_denoising in"),
])
def test_demo_bad_flags_get_one_line(tmp_path, flags, message):
    result = _demo(*flags, data_dir=_sample_idx_dir(tmp_path, 400, 100), out=tmp_path / "out")
    assert result.returncode in (1, 2)
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_demo_refuses_missing_or_short_label_files(tmp_path):
    data = _sample_idx_dir(tmp_path, 400, 100)
    labels = data / "train-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    labels.unlink()
    result = _demo(data_dir=data, out=tmp_path / "out")
    assert result.returncode == 1
    assert "is missing train-labels-idx1-ubyte" in result.stderr
    with gzip.open(labels, "wb") as f:  # 399 labels for 400 images
        raw = gzip.decompress(good)
        f.write(raw[:4] + (399).to_bytes(4, "big") + raw[8:-1])
    result = _demo(data_dir=data, out=tmp_path / "out")
    assert result.returncode == 1
    assert "400 train images but 399 labels" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_demo_resume_of_another_architecture_is_refused(tmp_path):
    data = _sample_idx_dir(tmp_path, 400, 100)
    assert _demo(data_dir=data, out=tmp_path / "out").returncode == 0
    result = _demo("--resume", "--hidden", "32,17", data_dir=data, out=tmp_path / "out")
    assert result.returncode == 1
    assert "checkpoint is of another architecture" in result.stderr, result.stderr


def test_cosine_schedule_decays_to_near_zero():
    schedule = cosine_schedule(1e-3)
    rates = [schedule(t, 10) for t in range(10)]
    assert rates[0] == 1e-3 and rates[5] == pytest.approx(5e-4)
    assert all(a > b > 0 for a, b in zip(rates, rates[1:]))
