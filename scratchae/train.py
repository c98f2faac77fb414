"""The training loop: mini-batches, fresh noise, evaluation, checkpoints.

One step is the whole of backprop in four lines::

    logits = model.forward(noisy)              # predict
    loss = loss_fn.forward(logits, clean)      # compare with the clean image
    model.backward(loss_fn.backward())         # dL/dparam for every layer
    optimizer.step(model.gradients())          # Adam moves every parameter

On the NumPy backend with several CPU cores, the first three lines run
on slices of the batch in parallel threads, one slice per core, and the
slices' gradients are combined (:mod:`scratchae.parallel`).

Everything else here is bookkeeping: shuffling, progress, evaluation,
checkpoints that can be resumed bit for bit, and stopping cleanly on
Ctrl-C or when the loss blows up.
"""

import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend
from .layers.activations import sigmoid
from .layers.base import nonfinite_summary
from .losses import SigmoidCrossEntropy, check_unit_interval
from .models import load_npz, save_npz
from .optim import Adam
from .parallel import DataParallel, check_workers

TRAIN_PREFIX = "train/"  # checkpoint keys that hold training state, not weights


class TrainingDiverged(RuntimeError):
    """The loss (or a weight) became NaN or infinite; the last checkpoint was kept as it was."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; a checkpoint was written if a path was given.

    Attributes
    ----------
    checkpoint : str or Path or None
        The checkpoint that holds the state training stopped in.
    """

    def __init__(self, checkpoint=None):
        super().__init__()
        self.checkpoint = checkpoint


def check_images(images, what, sample_shape=None):
    """Raise unless ``images`` is a non-empty batch of finite floats in [0, 1].

    One pass for the range and finiteness, done once per dataset (not per
    step). Changes nothing.

    Parameters
    ----------
    images : ndarray, shape (N, *sample_shape)
    what : str
        Names the array in the message, e.g. ``"Trainer.fit: train_images"``.
    sample_shape : tuple of int, optional
        The expected shape of one image, e.g. ``(1, 28, 28)``.

    Raises
    ------
    TypeError
        If ``images`` is not a floating-point array.
    ValueError
        If it is empty, has the wrong shape, or holds NaN, inf or values
        outside [0, 1].
    """
    if not (hasattr(images, "shape") and hasattr(images, "dtype")):
        raise TypeError(f"{what}: expected an array, got {type(images).__name__}")
    if sample_shape is not None and tuple(images.shape[1:]) != tuple(sample_shape):
        expected = ", ".join(["N", *map(str, sample_shape)])
        raise ValueError(f"{what}: expected images of shape ({expected}), got {tuple(images.shape)}")
    if images.ndim < 2:
        raise ValueError(f"{what}: expected a batch of images (N, ...), got shape {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError(f"{what}: got no images (shape {tuple(images.shape)})")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"{what}: expected floating-point images in [0, 1], got dtype {images.dtype}")
    check_unit_interval(images, what)


@contextmanager
def _checks_off(model, loss_fn):
    """Switch off the model's NaN/inf check and the loss's target check for a
    loop over data that was checked once, up front; restore them afterwards."""
    saved = getattr(model, "check_finite", None), loss_fn.check_targets
    if saved[0] is not None:
        model.check_finite = False
    loss_fn.check_targets = False
    try:
        yield
    finally:
        if saved[0] is not None:
            model.check_finite = saved[0]
        loss_fn.check_targets = saved[1]


def psnr(images, reference, max_value=1.0):
    """Peak signal-to-noise ratio of each image against its reference, in dB.

    ``PSNR = 10 log10(max_value^2 / MSE)``: higher is better, and identical
    images give ``inf``.

    Parameters
    ----------
    images, reference : ndarray, shape (N, ...)

    Returns
    -------
    ndarray, shape (N,)
    """
    xp = backend.get_array_module(images)
    err = (images - reference).reshape(images.shape[0], -1)
    mse = (err * err).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * xp.log10(max_value**2 / mse)


def predict(model, images, batch_size, workers=None):
    """Sigmoid of a model's logits, computed batch by batch.

    Parameters
    ----------
    model : Sequential
    images : ndarray, shape (N, 1, 28, 28), host NumPy
    batch_size : int
        Small batches keep the convolutions' scratch buffers small.
    workers : int, optional
        Threads that share each batch (see :mod:`scratchae.parallel`);
        None: one per BLAS thread on the NumPy backend, 1 on the GPU.

    Returns
    -------
    ndarray, shape (N, 1, 28, 28), host NumPy, values in [0, 1]
    """
    forward = DataParallel(model, workers=workers).forward
    return np.concatenate([
        backend.to_numpy(sigmoid(forward(backend.asarray(images[i:i + batch_size]))))
        for i in range(0, len(images), batch_size)])


def format_summary(metrics):
    """The one summary line every demo ends with."""
    return (f"test bce={metrics['bce']:.4f} psnr_in={metrics['psnr_in']:.2f}dB "
            f"psnr_out={metrics['psnr_out']:.2f}dB")


@contextmanager
def _sigint_flag():
    """While active, the first Ctrl-C only sets ``flag["set"]``; a second one
    raises ``KeyboardInterrupt`` at once. The loop checks the flag between
    steps, so a checkpoint is never taken half-way through an update."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Trainer:
    """Train an autoencoder (plain or denoising) with Adam on sigmoid cross-entropy.

    Parameters
    ----------
    model : Sequential
        Maps (N, 1, 28, 28) images to logits of the same shape.
    lr : float
        Adam's learning rate.
    batch_size : int
    noise : callable, optional
        ``noise(clean, rng) -> noisy`` (see :mod:`scratchae.noise`); ``None``
        trains a plain autoencoder on clean input.
    seed : int
        Seeds the shuffling, the training noise and the test-set noise.
    checkpoint : str or Path, optional
        Where to save (atomically) after every epoch and on Ctrl-C.
    progress : bool
        Show a tqdm progress bar.
    log : callable
        Prints one line per epoch (``print`` by default).
    eval_batch_size : int, optional
        Batch size of evaluation and prediction; by default ``batch_size``,
        so evaluation needs no more memory than training.
    workers : int, optional
        Threads that share every batch, one slice each (see
        :mod:`scratchae.parallel`). None: as many as NumPy's BLAS threads
        (the CPU cores) on the NumPy backend, 1 on the GPU. Results with
        different ``workers`` differ in rounding only.
    """

    def __init__(self, model, *, lr=1e-3, batch_size=128, noise=None, seed=0,
                 checkpoint=None, progress=True, log=print, eval_batch_size=None,
                 workers=None):
        if eval_batch_size is None:
            eval_batch_size = batch_size
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Trainer: {name} must be a positive int, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"Trainer: seed must be an int >= 0, got {seed!r}")
        if noise is not None and not callable(noise):
            raise TypeError(f"Trainer: noise must be a function noise(clean, rng), got {noise!r}")
        self.model = model
        self.loss_fn = SigmoidCrossEntropy()
        self.parallel = DataParallel(model, self.loss_fn, check_workers(workers, "Trainer"))
        self.optimizer = Adam(model.parameters(), lr=lr)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.noise = noise
        self.seed = seed
        self.checkpoint = checkpoint
        self.progress = progress
        self.log = log
        self.shuffle_rng = np.random.default_rng([seed, 1])
        self.noise_rng = np.random.default_rng([seed, 2])
        # Position in training, all saved in checkpoints:
        self.epoch = 0  # epochs completed
        self.step = 0  # batches done in the current epoch
        self.perm = None  # this epoch's shuffled order
        self.loss_sum = 0.0  # sum of this epoch's batch losses so far
        self.history = {"train_loss": [], "test_loss": [], "psnr_in": [], "psnr_out": [],
                        "epoch_time": []}

    # -- one step -----------------------------------------------------------
    def train_step(self, clean):
        """One update on a batch; returns the loss as a 0-d array (not synced).

        Parameters
        ----------
        clean : ndarray, shape (N, 1, 28, 28), on the current backend
        """
        inputs = clean if self.noise is None else self.noise(clean, self.noise_rng)
        # forward, loss and backward (split over the workers, if several)
        loss = self.parallel.forward_backward(inputs, clean)
        self.optimizer.step(self.model.gradients())
        return loss

    # -- evaluation ---------------------------------------------------------
    def corrupt_test(self, clean):
        """The fixed noisy version of a test batch (same noise every epoch).

        Parameters
        ----------
        clean : ndarray, shape (N, 1, 28, 28), host NumPy
        """
        if self.noise is None:
            return clean
        return self.noise(clean, np.random.default_rng([self.seed, 3]))

    def predict(self, images):
        """Sigmoid of the model's logits, batch by batch.

        Parameters
        ----------
        images : ndarray, shape (N, 1, 28, 28), host NumPy

        Returns
        -------
        ndarray, shape (N, 1, 28, 28), host NumPy, values in [0, 1]
        """
        return predict(self.model, images, self.eval_batch_size, self.parallel.workers)

    def evaluate(self, images):
        """Mean sigmoid cross-entropy and mean PSNR of input and output.

        Parameters
        ----------
        images : ndarray, shape (N, 1, 28, 28), clean test images, host NumPy

        Returns
        -------
        dict
            ``bce``, ``psnr_in`` (the model's input against the clean image)
            and ``psnr_out`` (the model's output against the clean image).

        Raises
        ------
        ValueError, TypeError
            If ``images`` are not finite floats in [0, 1] of the model's shape.
        """
        check_images(images, "Trainer.evaluate: images", self._sample_shape())
        with _checks_off(self.model, self.loss_fn):
            return self._evaluate(images)

    def _sample_shape(self):
        return getattr(self.model, "input_shape", None)

    def _evaluate(self, images):
        """:meth:`evaluate` without the check (the images were checked already)."""
        noisy = self.corrupt_test(images)
        bce = psnr_in = psnr_out = 0.0
        for i in range(0, len(images), self.eval_batch_size):
            clean = backend.asarray(images[i:i + self.eval_batch_size])
            inputs = backend.asarray(noisy[i:i + self.eval_batch_size])
            logits = self.parallel.forward(inputs)
            n = len(clean)
            bce += float(self.loss_fn.forward(logits, clean)) * n
            psnr_in += float(psnr(inputs, clean).sum())
            psnr_out += float(psnr(sigmoid(logits), clean).sum())
        n = len(images)
        return {"bce": bce / n, "psnr_in": psnr_in / n, "psnr_out": psnr_out / n}

    # -- the loop -----------------------------------------------------------
    def fit(self, train_images, test_images=None, epochs=10):
        """Train until ``epochs`` epochs are complete (resumes mid-epoch).

        Parameters
        ----------
        train_images : ndarray, shape (N, 1, 28, 28), float32 in [0, 1], host NumPy
        test_images : ndarray, shape (M, 1, 28, 28), optional
            Evaluated after every epoch.
        epochs : int
            Total number of epochs, counting those done before a resume.

        Returns
        -------
        dict
            ``history``: per-epoch lists of train/test loss, PSNRs and times.

        Raises
        ------
        ValueError, TypeError
            Before anything changes, if ``epochs`` is not a positive int or
            the images are not finite floats in [0, 1] of the model's shape.
        TrainingDiverged
            If the loss becomes NaN/inf (the last checkpoint is left untouched).
        TrainingInterrupted
            On Ctrl-C, after saving a checkpoint.

        Notes
        -----
        Both datasets are checked once, here (shape, finite, in [0, 1]);
        the per-batch checks of the model and the loss are then switched
        off for the loop, so a step costs no extra pass over its batch and,
        on CuPy, no extra wait for the GPU.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"Trainer.fit: epochs must be a positive int, got {epochs!r}")
        check_images(train_images, "Trainer.fit: train_images", self._sample_shape())
        if test_images is not None:
            check_images(test_images, "Trainer.fit: test_images", self._sample_shape())
        n = len(train_images)
        if self.perm is not None and len(self.perm) != n:
            raise ValueError(
                f"Trainer.fit: the resumed epoch was shuffling {len(self.perm)} training images, "
                f"got {n}; resume with the same data (and --train-size)"
            )
        # Overflow and NaN warnings are what divergence looks like from inside
        # NumPy; the loop detects it itself and stops with one clear message.
        with _checks_off(self.model, self.loss_fn), np.errstate(over="ignore", invalid="ignore"):
            return self._fit(train_images, test_images, epochs)

    def _fit(self, train_images, test_images, epochs):
        xp = backend.get_xp()
        n = len(train_images)
        steps = math.ceil(n / self.batch_size)
        # The training set moves to the device once; batches are slices of it.
        data = backend.asarray(train_images)
        # Reading a GPU loss forces a wait, so on CuPy we look only when the
        # progress bar refreshes; on NumPy it is free, so we check every step.
        check_every = 1 if xp is np else 20
        with _sigint_flag() as interrupted:
            while self.epoch < epochs:
                if self.perm is None:
                    self.perm = self.shuffle_rng.permutation(n)
                    self.step, self.loss_sum = 0, 0.0
                start = time.perf_counter()
                bar = tqdm(total=steps, initial=self.step, disable=not self.progress,
                           desc=f"epoch {self.epoch + 1}/{epochs}", unit="batch", leave=False,
                           dynamic_ncols=True)
                pending = []  # losses not yet read back from the device
                samples_this_run = 0
                while self.step < steps:
                    if interrupted["set"]:
                        bar.close()
                        self._sync_losses(pending)
                        raise TrainingInterrupted(self._save_on_interrupt())
                    index = self.perm[self.step * self.batch_size:(self.step + 1) * self.batch_size]
                    clean = data[xp.asarray(index)]  # the index moves to the device too
                    pending.append(self.train_step(clean))
                    self.step += 1
                    samples_this_run += len(index)
                    bar.update(1)
                    if len(pending) >= check_every or self.step == steps:
                        last = self._sync_losses(pending)
                        elapsed = time.perf_counter() - start
                        bar.set_postfix(loss=f"{last:.4f}",
                                        samples_s=f"{samples_this_run / max(elapsed, 1e-9):.0f}",
                                        refresh=False)
                bar.close()
                train_loss = self.loss_sum / steps
                metrics = self._evaluate(test_images) if test_images is not None else None
                self._end_epoch(train_loss, metrics, time.perf_counter() - start, epochs)
            if interrupted["set"]:
                # Ctrl-C came during the last epoch's evaluation or checkpoint:
                # training is complete and saved, but the user asked to stop.
                raise TrainingInterrupted(self.checkpoint or None)
        return {"history": self.history}

    def _sync_losses(self, pending):
        """Read queued losses (one device sync), add them up, stop on NaN/inf."""
        if not pending:
            return float("nan")
        values = [float(v) for v in (backend.to_numpy(backend.get_xp().stack(pending))
                                     if len(pending) > 1 else [pending[0]])]
        pending.clear()
        for v in values:
            if not math.isfinite(v):
                raise self._diverged(f"the training loss became {v} at epoch {self.epoch + 1}, "
                                     f"batch {self.step}")
            self.loss_sum += v
        return values[-1]

    def _diverged(self, what):
        """The :class:`TrainingDiverged` to raise, with advice and the checkpoint's fate."""
        kept = ""
        if self.checkpoint:
            kept = (f" The last good checkpoint, {self.checkpoint}, was left as it was."
                    if Path(self.checkpoint).exists() else " No checkpoint was written.")
        lr = self.optimizer.lr
        return TrainingDiverged(
            f"{what}: training diverged. Try a lower learning rate (now {lr:g}; "
            f"e.g. {lr / 10:g}; Adam usually works with 1e-3).{kept}"
        )

    def _check_params_finite(self):
        """Raise :class:`TrainingDiverged` if a weight is NaN/inf (before a checkpoint)."""
        for k, p in self.model.params.items():
            problem = nonfinite_summary(p)
            if problem is not None:
                raise self._diverged(f"parameter {k} became non-finite ({problem}) "
                                     f"in epoch {self.epoch + 1}")

    def _end_epoch(self, train_loss, metrics, seconds, epochs):
        if metrics is not None and not math.isfinite(metrics["bce"]):
            raise self._diverged(f"the test loss became {metrics['bce']} after epoch {self.epoch + 1}")
        if self.checkpoint:
            self._check_params_finite()
        h = self.history
        h["train_loss"].append(train_loss)
        h["test_loss"].append(metrics["bce"] if metrics else None)
        h["psnr_in"].append(metrics["psnr_in"] if metrics else None)
        h["psnr_out"].append(metrics["psnr_out"] if metrics else None)
        h["epoch_time"].append(seconds)
        self.epoch += 1
        self.perm, self.step, self.loss_sum = None, 0, 0.0
        line = f"epoch {self.epoch}/{epochs}  train bce={train_loss:.4f}"
        if metrics:
            line += f"  {format_summary(metrics)}"
        self.log(f"{line}  ({seconds:.1f}s)")
        if self.checkpoint:
            self.save(self.checkpoint)

    def _save_on_interrupt(self):
        if not self.checkpoint:
            return None
        self._check_params_finite()
        self.save(self.checkpoint)
        return self.checkpoint

    # -- checkpoints ----------------------------------------------------------
    def state(self):
        """Everything needed to continue training exactly: a dict of host arrays."""
        meta = {
            "epoch": self.epoch, "step": self.step, "loss_sum": self.loss_sum,
            "seed": self.seed, "batch_size": self.batch_size, "history": self.history,
            "shuffle_rng": self.shuffle_rng.bit_generator.state,
            "noise_rng": self.noise_rng.bit_generator.state,
        }
        opt = self.optimizer.state_dict()
        meta["adam_t"], meta["lr"] = opt["t"], opt["lr"]
        arrays = {TRAIN_PREFIX + "meta": np.array(json.dumps(meta))}
        if self.perm is not None:
            arrays[TRAIN_PREFIX + "perm"] = self.perm
        for i, (m, v) in enumerate(zip(opt["m"], opt["v"])):
            arrays[f"{TRAIN_PREFIX}adam_m.{i}"] = backend.to_numpy(m)
            arrays[f"{TRAIN_PREFIX}adam_v.{i}"] = backend.to_numpy(v)
        return arrays

    def save(self, path):
        """Write weights and training state to one ``.npz``, atomically."""
        arrays = {"__architecture__": np.array(self.model.architecture()),
                  **self.model.state_arrays(), **self.state()}
        save_npz(path, arrays)

    def resume(self, path):
        """Load a checkpoint written by :meth:`save` and continue from it.

        Everything is read and checked before anything is changed: on an
        error the model, the optimizer and the loop are left as they were.

        Returns
        -------
        dict
            The checkpoint's loop state (``epoch``, ``step``, ``history``...).

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        ValueError
            If the file is not a readable checkpoint of this model, holds no
            training state (weights only), or was trained with another
            batch size or seed.
        """
        weights = self.model.read_checkpoint(path)  # checks architecture and shapes
        arrays = load_npz(path)
        if TRAIN_PREFIX + "meta" not in arrays:
            raise ValueError(f"{path}: holds weights but no training state, so it cannot be resumed")
        try:
            meta = json.loads(str(arrays[TRAIN_PREFIX + "meta"]))
            epoch, step, loss_sum = int(meta["epoch"]), int(meta["step"]), float(meta["loss_sum"])
            batch_size, seed, history = meta["batch_size"], meta["seed"], meta["history"]
            adam_t = meta["adam_t"]
            rngs = [np.random.default_rng() for _ in range(2)]  # try the states on spares first
            rngs[0].bit_generator.state = meta["shuffle_rng"]
            rngs[1].bit_generator.state = meta["noise_rng"]
            if not (set(self.history) <= set(history) and epoch >= 0 and step >= 0):
                raise ValueError("inconsistent loop state")
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}: damaged training state ({error or type(error).__name__}), "
                             f"cannot resume") from None
        if batch_size != self.batch_size:
            raise ValueError(
                f"{path}: was trained with batch size {batch_size}, "
                f"got {self.batch_size}; resume with --batch-size {batch_size}"
            )
        if seed != self.seed:
            raise ValueError(f"{path}: was trained with seed {seed}, got {self.seed}; "
                             f"resume with --seed {seed}")
        count = len(self.optimizer.m)
        keys = [f"{TRAIN_PREFIX}adam_{m}.{i}" for m in "mv" for i in range(count)]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(f"{path}: damaged training state (lacks {', '.join(missing[:3])}), "
                             f"cannot resume")
        perm = arrays.get(TRAIN_PREFIX + "perm")
        if perm is not None and (perm.ndim != 1 or not np.issubdtype(perm.dtype, np.integer)):
            raise ValueError(f"{path}: damaged training state (bad shuffling order), cannot resume")
        # All checked: from here on nothing can fail half-way.
        self.optimizer.load_state_dict({  # checks the moments' shapes before changing anything
            "t": adam_t, "lr": self.optimizer.lr,
            "m": [arrays[f"{TRAIN_PREFIX}adam_m.{i}"] for i in range(count)],
            "v": [arrays[f"{TRAIN_PREFIX}adam_v.{i}"] for i in range(count)],
        })
        self.model.load_state_arrays(weights, source=str(path))
        self.epoch, self.step, self.loss_sum = epoch, step, loss_sum
        self.history = history
        self.shuffle_rng, self.noise_rng = rngs
        self.perm = perm
        return meta
