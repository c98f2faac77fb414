"""The training loop, evaluation, checkpoints and the demos, end to end."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scratchae import backend
from scratchae.data import load_sample
from scratchae.models import conv_denoiser, dense_autoencoder
from scratchae.noise import make_noise
from scratchae.train import Trainer, predict, psnr

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^test bce=\d+\.\d{4} psnr_in=(inf|\d+\.\d{2})dB psnr_out=\d+\.\d{2}dB$")


@pytest.fixture(scope="module")
def sample():
    return load_sample()


def test_psnr_matches_formula():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(3, 1, 4, 4))
    b = rng.uniform(size=(3, 1, 4, 4))
    expected = [10 * np.log10(1 / np.mean((a[i] - b[i]) ** 2)) for i in range(3)]
    np.testing.assert_allclose(psnr(a, b), expected)
    assert np.isinf(psnr(a, a)).all()


def test_conv_denoiser_learns_on_bundled_sample(sample):
    """100 small steps already denoise: the output's PSNR clearly beats the input's."""
    trainer = Trainer(conv_denoiser(seed=0), lr=3e-3, batch_size=32,
                      noise=make_noise("gaussian", 0.5), seed=0, progress=False, log=lambda s: None)
    trainer.fit(sample.train_images[:1600], epochs=2)
    metrics = trainer.evaluate(sample.test_images[:300])
    assert metrics["psnr_in"] == pytest.approx(9.4, abs=0.5)  # the tutorial's noise level
    assert metrics["psnr_out"] > metrics["psnr_in"] + 3.0  # measured: +4.5 dB
    assert metrics["bce"] < 0.22


def test_plain_autoencoder_loss_decreases(sample):
    trainer = Trainer(dense_autoencoder(seed=0), lr=0.01, batch_size=64, seed=0,
                      progress=False, log=lambda s: None)
    trainer.fit(sample.train_images[:2000], sample.test_images[:200], epochs=2)
    losses = trainer.history["train_loss"]
    assert losses[1] < losses[0]
    assert trainer.history["test_loss"][-1] < 0.2
    assert np.isinf(trainer.history["psnr_in"][-1])  # clean input: PSNR of the input is inf


def test_test_noise_is_fixed_between_evaluations(sample):
    trainer = Trainer(dense_autoencoder(seed=0), noise=make_noise("gaussian", 0.5), seed=3,
                      progress=False)
    a = trainer.corrupt_test(sample.test_images[:50])
    b = trainer.corrupt_test(sample.test_images[:50])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample.test_images[:50])


def test_checkpoint_written_each_epoch_and_loadable(sample, tmp_path):
    path = tmp_path / "ae.npz"
    trainer = Trainer(dense_autoencoder(seed=0), checkpoint=path, progress=False,
                      log=lambda s: None)
    trainer.fit(sample.train_images[:256], epochs=1)
    assert path.exists()
    model = dense_autoencoder(seed=1)
    model.load(path)  # a training checkpoint loads as plain weights
    for k, v in trainer.model.params.items():
        np.testing.assert_array_equal(backend.to_numpy(model.params[k]), backend.to_numpy(v))


def test_float64_datasets_are_cast_once_to_the_model_dtype_with_a_note(sample, monkeypatch):
    """uint8 / 255.0 is float64: fit, evaluate and predict cast each dataset once (not per
    batch) to the model's float32, say so once in the log, and give what float32 gives."""
    def run(train, test):
        lines, batches = [], []
        trainer = Trainer(dense_autoencoder(hidden=8, seed=0), batch_size=32,
                          noise=make_noise("gaussian", 0.3), progress=False, log=lines.append)
        step = trainer.train_step
        monkeypatch.setattr(trainer, "train_step", lambda clean: batches.append(clean.dtype)
                            or step(clean))
        trainer.fit(train, test, epochs=2)
        history = {k: v for k, v in trainer.history.items() if k != "epoch_time"}
        result = (history, trainer.evaluate(test), trainer.predict(test[:5]))
        return result, [line for line in lines if line.startswith("note:")], set(batches)

    train, test = sample.train_images[:96], sample.test_images[:40]
    (history, metrics, images), notes, dtypes = run(train.astype(np.float64),
                                                    test.astype(np.float64))
    assert notes == ["note: train_images are float64; cast once to the model's float32",
                     "note: test_images are float64; cast once to the model's float32",
                     "note: images are float64; cast once to the model's float32",
                     "note: images are float64; cast once to the model's float32"]
    assert dtypes == {np.dtype(np.float32)} and images.dtype == np.float32
    (history32, metrics32, images32), notes32, _ = run(train, test)
    assert notes32 == [] and history == history32 and metrics == metrics32
    np.testing.assert_array_equal(images, images32)


@pytest.mark.parametrize("fast", [False, True])
def test_trainer_predicts_on_the_path_it_trains_on(sample, monkeypatch, fast):
    """fast=False (--textbook) with one worker trains the textbook layers: predict must
    run them too, not compile a fresh fast model on every call."""
    import scratchae.fast
    from scratchae.layers.activations import sigmoid

    model = conv_denoiser(seed=0)
    trainer = Trainer(model, fast=fast, workers=1, progress=False, log=lambda s: None)
    compiled = []
    monkeypatch.setattr(scratchae.fast, "compile", lambda *a, **k: compiled.append(a))
    x = sample.test_images[:4]
    out = trainer.predict(x)
    assert compiled == []
    if not fast:
        np.testing.assert_array_equal(out, sigmoid(model.forward(x)))


def test_predict_casts_once_with_a_note_on_stderr(sample, capsys):
    model = dense_autoencoder(hidden=8, seed=0)
    images = predict(model, sample.test_images[:5].astype(np.float64), batch_size=2)
    assert images.dtype == np.float32
    assert capsys.readouterr().err == ("note: images are float64; cast once to the model's "
                                       "float32\n")
    np.testing.assert_array_equal(images, predict(model, sample.test_images[:5], batch_size=2))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("demo, flags", [
    ("dense_autoencoder.py", ["--epochs", "1", "--train-size", "512"]),
    ("dense_denoise.py", ["--epochs", "1", "--train-size", "512", "--noise", "mask",
                          "--noise-factor", "0.3"]),
    ("conv_denoise.py", ["--epochs", "1", "--train-size", "128", "--batch-size", "64"]),
    ("compare_denoisers.py", ["--epochs", "1", "--train-size", "128", "--batch-size", "64"]),
])
def test_demo_runs_and_prints_summary(demo, flags, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / demo), *flags, "--out", str(tmp_path),
         "--no-progress", "--data-dir", str(_sample_idx_dir(tmp_path))],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert SUMMARY.match(last), last
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs, result.stdout
    for name in pngs:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert list(tmp_path.glob("*.npz")), "no checkpoint written"


def test_train_loop_demo_runs(tmp_path, monkeypatch, capsys):
    """demos/train_loop.py, the bare loop, on 96 + 600 sample digits (it loads the sample)."""
    import dataclasses
    import runpy

    import scratchae.data

    full = load_sample()
    small = dataclasses.replace(full, train_images=full.train_images[:96],
                                train_labels=full.train_labels[:96],
                                test_images=full.test_images[:600],
                                test_labels=full.test_labels[:600])
    monkeypatch.setattr(scratchae.data, "load_sample", lambda: small)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train_loop.py"])  # its flags' defaults, not pytest's
    runpy.run_path(str(ROOT / "demos" / "train_loop.py"), run_name="__main__")
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 1", "epoch 2"]
    assert re.fullmatch(r"test loss \d\.\d{4}", lines[-1]), lines
    model = conv_denoiser(seed=1)
    model.load(tmp_path / "out" / "train_loop.npz")


def _sample_idx_dir(tmp_path, n_train=600, n_test=100):
    """Write part of the bundled sample as IDX files, so a demo reads a --data-dir."""
    import gzip
    import struct

    sample = load_sample()
    directory = tmp_path / "mnist"
    directory.mkdir(exist_ok=True)
    images = {"train": (sample.train_images[:n_train], sample.train_labels[:n_train]),
              "t10k": (sample.test_images[:n_test], sample.test_labels[:n_test])}
    for split, (x, y) in images.items():
        pixels = np.round(x[:, 0] * 255).astype(np.uint8)
        with gzip.open(directory / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, len(pixels), 28, 28) + pixels.tobytes())
        with gzip.open(directory / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, len(y)) + y.astype(np.uint8).tobytes())
    return directory


@pytest.mark.parametrize("n_test", [3, 12])
def test_a_small_test_set_draws_the_digits_it_has(tmp_path, n_test):
    """A user's own data set with fewer test images than the figure's 10..19 (issue #13)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "conv_denoise.py"), "--epochs", "1",
         "--batch-size", "32", "--out", str(tmp_path / "out"), "--no-progress",
         "--data-dir", str(_sample_idx_dir(tmp_path, n_train=64, n_test=n_test))],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert SUMMARY.match(result.stdout.strip().splitlines()[-1]), result.stdout
    assert (tmp_path / "out" / "conv_denoise.png").read_bytes()[:4] == b"\x89PNG"


def test_an_empty_test_set_fails_before_training(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "conv_denoise.py"), "--epochs", "1",
         "--out", str(tmp_path / "out"), "--no-progress",
         "--data-dir", str(_sample_idx_dir(tmp_path, n_train=64, n_test=0))],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: --data-dir {tmp_path / 'mnist'}: the test set holds no images; "
        f"the demos need at least 1 training and 1 test image"]
    assert "training:" not in result.stdout and not (tmp_path / "out" / "conv_denoise.npz").exists()


VAE_SUMMARY = re.compile(r"^test neg_elbo=\d+\.\d{2} rec=\d+\.\d{2} kl=\d+\.\d{2}$")


def test_vae_demo_runs_and_draws_its_latent_space(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "vae.py"), "--epochs", "1", "--latent", "2",
         "--hidden", "32", "--out", str(tmp_path), "--no-progress",
         "--data-dir", str(_sample_idx_dir(tmp_path))],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert VAE_SUMMARY.match(result.stdout.strip().splitlines()[-1]), result.stdout
    for name in ("vae", "vae_samples", "vae_interpolations", "vae_latent", "vae_manifold",
                 "vae_loss"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert (tmp_path / "vae.npz").exists()


SPARSE_SUMMARY = re.compile(
    r"^test bce=\d+\.\d{4} penalty=\d+\.\d{4}\+\d+\.\d{4} mean_activation=\d\.\d{3}$")


def test_sparse_autoencoder_demo_prints_the_penalty_and_draws_the_filters(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "sparse_autoencoder.py"), "--epochs", "2",
         "--hidden", "16", "--out", str(tmp_path), "--no-progress",
         "--data-dir", str(_sample_idx_dir(tmp_path))],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert SPARSE_SUMMARY.match(lines[-1]), result.stdout
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("penalty=" in e and "mean_activation=" in e for e in epochs)
    for name in ("sparse_autoencoder_filters", "sparse_autoencoder",
                 "sparse_autoencoder_activations", "sparse_autoencoder_loss"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
