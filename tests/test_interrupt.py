"""Ctrl-C saves a checkpoint; ``--resume`` continues bit for bit.

On the NumPy backend a run that is interrupted and resumed must end with
exactly the weights, optimizer state and per-epoch losses of a run that was
never interrupted: the checkpoint holds the weights, Adam's moments and step
count, the position in the epoch, its shuffled order, the running loss sum
and both random generators' states.
"""

import gzip
import json
import os
import queue
import re
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scratchae.data import load_sample
from scratchae.models import dense_autoencoder
from scratchae.noise import make_noise
from scratchae.train import Trainer, TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
META = "train/meta"
TIMING = {"epoch_time"}  # history fields that differ from run to run


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop(META)))
    return arrays, meta


def _assert_same_training(path_a, path_b):
    """Two checkpoints hold bit-identical weights and Adam state, and the same losses."""
    a, meta_a = _load(path_a)
    b, meta_b = _load(path_b)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # exact, not approximate
    for key in ("epoch", "step", "loss_sum", "adam_t", "shuffle_rng", "noise_rng"):
        assert meta_a[key] == meta_b[key], key
    for key in set(meta_a["history"]) - TIMING:
        assert meta_a["history"][key] == meta_b["history"][key], key
    assert len(meta_a["history"]["train_loss"]) == meta_a["epoch"]


# --------------------------------------------------------------------------
# In-process: a Trainer interrupted by a real SIGINT from inside a step
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    sample = load_sample()
    return sample.train_images[:200], sample.test_images[:40]


def _trainer(path, **kwargs):
    return Trainer(dense_autoencoder(hidden=8, seed=0), lr=3e-3, batch_size=16, seed=7,
                   noise=make_noise("gaussian", 0.3), checkpoint=path, progress=False,
                   log=lambda s: None, **kwargs)


def _signal_at(trainer, monkeypatch, steps, times=1):
    """Make ``trainer`` receive SIGINT ``times`` times during its ``steps``-th step."""
    step = trainer.train_step
    count = {"n": 0}

    def stepped(clean):
        loss = step(clean)
        count["n"] += 1
        if count["n"] == steps:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(trainer, "train_step", stepped)
    return count


EPOCHS, STEPS_PER_EPOCH = 3, 13  # 200 images in batches of 16


@pytest.mark.parametrize("at", [5, STEPS_PER_EPOCH, 20, EPOCHS * STEPS_PER_EPOCH],
                         ids=["mid-epoch-1", "end-of-epoch-1", "mid-epoch-2", "last-step"])
def test_interrupt_then_resume_equals_uninterrupted(tiny, tmp_path, monkeypatch, at):
    train, test = tiny
    reference = tmp_path / "reference.npz"
    _trainer(reference).fit(train, test, epochs=EPOCHS)

    path = tmp_path / "interrupted.npz"
    first = _trainer(path)
    count = _signal_at(first, monkeypatch, at)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        first.fit(train, test, epochs=EPOCHS)
    assert info.value.checkpoint == path and path.exists()
    assert count["n"] == at  # stopped right after the step that got the signal
    _, meta = _load(path)
    assert meta["epoch"] * STEPS_PER_EPOCH + meta["step"] == at
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C works as before again

    second = _trainer(path)
    second.resume(path)
    second.fit(train, test, epochs=EPOCHS)
    assert second.epoch == EPOCHS
    _assert_same_training(path, reference)


def test_resume_without_noise_or_test_set(tiny, tmp_path, monkeypatch):
    train, _ = tiny
    reference, path = tmp_path / "reference.npz", tmp_path / "interrupted.npz"
    _trainer(reference).fit(train, epochs=2)
    first = _trainer(path)
    _signal_at(first, monkeypatch, 17)
    with pytest.raises(TrainingInterrupted):
        first.fit(train, epochs=2)
    second = _trainer(path)
    second.resume(path)
    second.fit(train, epochs=2)
    _assert_same_training(path, reference)


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tiny, tmp_path, monkeypatch):
    train, test = tiny
    path = tmp_path / "ck.npz"
    trainer = _trainer(path)
    _signal_at(trainer, monkeypatch, STEPS_PER_EPOCH + 4, times=2)
    with pytest.raises(KeyboardInterrupt) as info:
        trainer.fit(train, test, epochs=EPOCHS)
    assert not isinstance(info.value, TrainingInterrupted)  # no save on the second Ctrl-C
    _, meta = _load(path)
    assert (meta["epoch"], meta["step"]) == (1, 0)  # the end-of-epoch-1 checkpoint, intact


def test_interrupted_save_leaves_the_old_checkpoint(tiny, tmp_path, monkeypatch):
    train, _ = tiny
    path = tmp_path / "ck.npz"
    trainer = _trainer(path)
    trainer.fit(train, epochs=1)
    good = path.read_bytes()

    def savez_interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(train, epochs=2)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary file left


# --------------------------------------------------------------------------
# The demo, in a subprocess, with a real Ctrl-C
# --------------------------------------------------------------------------
def _idx_dir(directory, n_train):
    """The bundled sample as IDX files: ``n_train`` training and 200 test digits."""
    sample = load_sample()
    directory.mkdir(parents=True, exist_ok=True)
    splits = {"train": (sample.train_images[:n_train], sample.train_labels[:n_train]),
              "t10k": (sample.test_images[:200], sample.test_labels[:200])}
    for split, (x, y) in splits.items():
        pixels = np.round(x[:, 0] * 255).astype(np.uint8)
        with gzip.open(directory / f"{split}-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">IIII", 0x803, len(pixels), 28, 28) + pixels.tobytes())
        with gzip.open(directory / f"{split}-labels-idx1-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">II", 0x801, len(y)) + y.astype(np.uint8).tobytes())
    return directory


def _demo_command(out, data_dir, epochs):
    return [sys.executable, str(ROOT / "demos" / "dense_autoencoder.py"), "--epochs", str(epochs),
            "--train-size", "6000", "--batch-size", "16", "--hidden", "16", "--no-progress",
            "--out", str(out), "--data-dir", str(data_dir)]


class _Demo:
    """A demo subprocess whose stdout lines can be awaited one by one."""

    def __init__(self, command, stderr_path):
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, bufsize=1, env=ENV, cwd=ROOT)
        self.lines = queue.Queue()
        self.stdout = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                return None  # the process ended first
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout=120):
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=10)
            self.proc.stdout.close()
            self._stderr.close()
        return code, Path(self.stderr_path).read_text()


def test_ctrl_c_in_demo_then_resume_equals_uninterrupted(tmp_path):
    data_dir = _idx_dir(tmp_path / "mnist", 6000)
    epochs = 4
    for attempt in range(3):  # a slow machine, or a fast one, may need other sizes
        out = tmp_path / f"interrupted{attempt}"
        demo = _Demo(_demo_command(out, data_dir, epochs), tmp_path / f"stderr{attempt}")
        try:
            assert demo.wait_for(r"^training: epochs 1\.\.") is not None, "".join(demo.stdout)
            first = demo.wait_for(r"^epoch 1/\d+ .*\((\d+\.\d)s\)$")
            assert first is not None, "".join(demo.stdout)
            time.sleep(max(float(first.group(1)), 0.1) / 2)  # land in the middle of epoch 2
            demo.proc.send_signal(signal.SIGINT)
        except BaseException:
            demo.proc.kill()
            raise
        finally:
            code, stderr = demo.finish()
        checkpoint = out / "dense_autoencoder.npz"
        assert code == 130, (code, stderr)
        _, meta = _load(checkpoint)
        if meta["epoch"] < epochs:
            break  # it really stopped early
        epochs *= 2  # training had already finished: give the signal more time to land
    else:
        pytest.fail("the demo finished every time before Ctrl-C reached it")

    assert "Traceback" not in stderr
    assert f"interrupted: checkpoint saved to {checkpoint}; resume with:" in stderr
    command = stderr.strip().splitlines()[-1].strip()
    assert command.startswith("python ") and command.endswith(" --resume"), command

    # Resume with exactly the command the demo printed.
    words = shlex.split(command)
    resumed = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True,
                             timeout=300, env=ENV, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {checkpoint}: {meta['epoch']} epochs and {meta['step']} batches done" \
        in resumed.stdout
    assert f"training: epochs {meta['epoch'] + 1}..{epochs}," in resumed.stdout
    print(f"interrupted at epoch {meta['epoch'] + 1}, batch {meta['step']} of {epochs} epochs "
          f"(attempt {attempt + 1})")

    reference = tmp_path / "reference"
    full = subprocess.run(_demo_command(reference, data_dir, epochs), capture_output=True,
                          text=True, timeout=300, env=ENV, cwd=ROOT)
    assert full.returncode == 0, full.stderr
    # the same summary line, and bit-identical checkpoints
    assert resumed.stdout.strip().splitlines()[-1] == full.stdout.strip().splitlines()[-1]
    _assert_same_training(checkpoint, reference / "dense_autoencoder.npz")
    _, final = _load(checkpoint)
    assert final["epoch"] == epochs
