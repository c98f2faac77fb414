"""The training loop: mini-batches, fresh noise, evaluation, checkpoints.

One step is the whole of backprop in four lines (:meth:`Trainer.train_step`)::

    logits = net.forward(noisy)                                  # predict
    loss = loss_fn.forward(logits, clean) + net.penalty()        # compare with the clean image
    net.backward(loss_fn.backward())                             # dL/dparam for every layer
    optimizer.step(net.gradients())                              # Adam moves every parameter

``net`` is by default the model compiled by :func:`scratchae.fast.compile`:
the same parameter arrays, computed faster; with ``fast=False`` (the demos'
``--textbook``) it is the textbook layers as written. On a multi-core CPU
either splits each batch over the cores. ``net.penalty()`` is 0 for the
autoencoders, and a model's own loss terms otherwise (a VAE's KL divergence,
a sparsity penalty).

Everything else here is bookkeeping: shuffling, progress, evaluation,
checkpoints that can be resumed bit for bit (:mod:`scratchae.checkpoint`),
and stopping cleanly on Ctrl-C or when the loss blows up.
"""

import math
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend, checkpoint, validate
from . import fast as fast_path
from .layers.activations import sigmoid
from .losses import SigmoidCrossEntropy
from .optim import Adam
from .validate import non_negative_int, nonfinite_summary, positive_int


class TrainingDiverged(RuntimeError):
    """The loss (or a weight) became NaN or infinite; the last checkpoint was kept as it was."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; ``checkpoint`` holds the state it stopped in (or None)."""

    def __init__(self, checkpoint=None):
        super().__init__()
        self.checkpoint = checkpoint


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
    """Sigmoid of a model's logits, computed batch by batch on the fast path.

    Parameters
    ----------
    model : Sequential (or a compiled one)
    images : ndarray, shape (N, 1, 28, 28), host NumPy
        Any floating dtype: cast once to the model's, with a note on stderr.
    batch_size : int
    workers : int, optional
        Threads that share each batch; None: one per core on the CPU.

    Returns
    -------
    ndarray, shape (N, 1, 28, 28), host NumPy, values in [0, 1]
    """
    net = model if hasattr(model, "source") else fast_path.compile(model, workers=workers)
    return _sigmoid_batches(net, validate.in_model_dtype(images, net.dtype, "images"),
                            batch_size)


def _sigmoid_batches(net, images, batch_size):
    """``sigmoid(net.infer(batch))`` for every batch of host ``images``, on the host
    (``infer``: the fast path's forward that keeps nothing for backward)."""
    infer = getattr(net, "infer", net.forward)
    return np.concatenate([
        backend.to_numpy(sigmoid(infer(backend.asarray(images[i:i + batch_size]))))
        for i in range(0, len(images), batch_size)])


def format_summary(metrics):
    """The one summary line every denoising demo ends with."""
    return (f"test bce={metrics['bce']:.4f} psnr_in={metrics['psnr_in']:.2f}dB "
            f"psnr_out={metrics['psnr_out']:.2f}dB")


@contextmanager
def _checks_off(model, loss_fn):
    """Switch off the model's NaN/inf check and the loss's target check for a loop
    over data that was checked once, up front; restore them afterwards."""
    saved = model.check_finite, loss_fn.check_targets
    model.check_finite, loss_fn.check_targets = False, False
    try:
        yield
    finally:
        model.check_finite, loss_fn.check_targets = saved


@contextmanager
def _sigint_flag():
    """While active, the first Ctrl-C only sets ``flag["set"]``; a second one raises
    ``KeyboardInterrupt`` at once. The loop checks the flag between steps, so a
    checkpoint is never taken half-way through an update."""
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
    """Train an autoencoder (plain or denoising) with Adam.

    Parameters
    ----------
    model : Sequential (or any model with the same interface, e.g. a VAE)
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
        Batch size of evaluation and prediction; by default ``batch_size``.
    workers : int, optional
        Threads that share every batch on the fast path (see
        :mod:`scratchae.fast.parallel`); None: one per core on the CPU, 1 on
        the GPU. Results with different ``workers`` differ in rounding only.
    fast : bool, default True
        Train the compiled model (:func:`scratchae.fast.compile`); False
        trains the textbook layers as written, with the textbook loss and
        Adam (each batch still split over ``workers`` threads, which change
        no layer's arithmetic).
    loss_fn : optional
        Default :class:`~scratchae.losses.SigmoidCrossEntropy`.

    Subclasses say what is measured on the test set by overriding
    :attr:`loss_name` (the metric that is the training loss's counterpart),
    :attr:`metric_names`, ``_evaluate(images)`` (the mean of each metric
    over the test set; this class's adds up :meth:`batch_metrics` over the
    test batches, which :class:`~scratchae.vae.VAETrainer` and
    :class:`~scratchae.sparse.SparseTrainer` replace) and
    :meth:`format_summary`.
    """

    loss_name = "bce"  # the training loss's name in logs and metrics
    metric_names = ("bce", "psnr_in", "psnr_out")

    def __init__(self, model, *, lr=1e-3, batch_size=128, noise=None, seed=0,
                 checkpoint=None, progress=True, log=print, eval_batch_size=None,
                 workers=None, fast=True, loss_fn=None):
        self.batch_size = positive_int(batch_size, "batch_size", "Trainer")
        self.eval_batch_size = positive_int(
            batch_size if eval_batch_size is None else eval_batch_size, "eval_batch_size",
            "Trainer")
        self.seed = non_negative_int(seed, "seed", "Trainer")
        if noise is not None and not callable(noise):
            raise TypeError(f"Trainer: noise must be a function noise(clean, rng), got {noise!r}")
        self.model = model
        self.loss_fn = loss_fn or SigmoidCrossEntropy()
        if fast:  # the same loss in fewer passes (scratchae.fast.losses)
            self.loss_fn = fast_path.losses.faster(self.loss_fn)
        workers = fast_path.parallel.check_workers(workers, "Trainer")
        # fast=False: every layer as written, no rewrite rule; threads still split
        # each batch over the cores (they change no layer's arithmetic)
        self.net = (fast_path.compile(model, workers=workers) if fast
                    else fast_path.compile(model, workers=workers, rules=()) if workers > 1
                    else model)
        self.optimizer = (fast_path.Adam if fast else Adam)(model.parameters(), lr=lr)
        self.noise, self.checkpoint, self.progress, self.log = noise, checkpoint, progress, log
        self.shuffle_rng = np.random.default_rng([seed, 1])
        self.noise_rng = np.random.default_rng([seed, 2])
        # Position in training, all saved in checkpoints:
        self.epoch = 0  # epochs completed
        self.batch = 0  # batches done in the current epoch
        self.perm = None  # this epoch's shuffled order (host)
        self.loss_sum = 0.0  # sum of this epoch's batch losses so far
        self.history = {"train_loss": [], "test_loss": [], "epoch_time": [],
                        **{k: [] for k in self.metric_names if k != self.loss_name}}

    # -- one step -----------------------------------------------------------
    def train_step(self, clean):
        """One update on a batch; returns the loss as a 0-d array (not synced).

        Parameters
        ----------
        clean : ndarray, shape (N, 1, 28, 28), on the current backend, in the model's
            dtype (the model refuses another: :meth:`fit` casts a dataset once)
        """
        net, loss_fn = self.net, self.loss_fn
        noisy = clean if self.noise is None else self.noise(clean, self.noise_rng)
        logits = net.forward(noisy)                                # predict
        loss = loss_fn.forward(logits, clean) + net.penalty()      # compare
        net.backward(loss_fn.backward())                           # dL/dparam
        self.optimizer.step(net.gradients())                       # update
        return loss

    # -- evaluation ---------------------------------------------------------
    def corrupt_test(self, clean):
        """The fixed noisy version of test images (same noise every epoch), host NumPy."""
        if self.noise is None:
            return clean
        return self.noise(clean, np.random.default_rng([self.seed, 3]))

    def _in_model_dtype(self, images, what):
        """``images`` in the model's dtype: cast once, with a note in the log, if they are
        another float (see :func:`scratchae.validate.in_model_dtype`)."""
        return validate.in_model_dtype(images, self.model.dtype, what, self.log)

    def predict(self, images):
        """Sigmoid of the model's logits for host images (N, 1, 28, 28), batch by batch,
        on the path the trainer trains on (``fast=False``: the textbook layers)."""
        return _sigmoid_batches(self.net, self._in_model_dtype(images, "images"),
                                self.eval_batch_size)

    def batch_metrics(self, inputs, clean, logits):
        """Sums over one test batch of what :meth:`evaluate` reports (means over the set)."""
        sums = backend.get_array_module(logits).stack([  # read back together: one GPU wait
            (self.loss_fn.forward(logits, clean) + self.net.penalty()) * len(clean),
            psnr(inputs, clean).sum(), psnr(sigmoid(logits), clean).sum()])
        return dict(zip(("bce", "psnr_in", "psnr_out"), backend.to_numpy(sums).tolist()))

    def format_summary(self, metrics):
        """The line that reports :meth:`evaluate`'s metrics."""
        return format_summary(metrics)

    def last_metrics(self):
        """The test metrics of the last completed epoch, or None if it evaluated none."""
        h = self.history
        if not h["test_loss"] or h["test_loss"][-1] is None or len(h["test_loss"]) != self.epoch:
            return None
        return {self.loss_name: h["test_loss"][-1],
                **{k: h[k][-1] for k in self.metric_names if k != self.loss_name}}

    def evaluate(self, images):
        """Mean test metrics, e.g. ``bce``, ``psnr_in`` (noisy input vs clean) and ``psnr_out``.

        Parameters
        ----------
        images : ndarray, shape (N, 1, 28, 28), clean test images, host NumPy
        """
        validate.images(images, "Trainer.evaluate: images", self.model.input_shape)
        images = self._in_model_dtype(images, "images")
        with _checks_off(self.net, self.loss_fn):
            return self._evaluate(images)

    def _evaluate(self, images):
        noisy, totals = self.corrupt_test(images), {}
        infer = getattr(self.net, "infer", self.net.forward)  # the fast path: nothing cached
        for i in range(0, len(images), self.eval_batch_size):
            clean = backend.asarray(images[i:i + self.eval_batch_size])
            inputs = backend.asarray(noisy[i:i + self.eval_batch_size])
            for k, v in self.batch_metrics(inputs, clean, infer(inputs)).items():
                totals[k] = totals.get(k, 0.0) + v
        return {k: v / len(images) for k, v in totals.items()}

    # -- the loop -----------------------------------------------------------
    def fit(self, train_images, test_images=None, epochs=10):
        """Train until ``epochs`` epochs are complete (resumes mid-epoch).

        Parameters
        ----------
        train_images : ndarray, shape (N, 1, 28, 28), floats in [0, 1], host NumPy
            In the model's dtype (float32), or cast to it once, here, with
            a note in the log (``uint8 / 255.0`` is float64).
        test_images : ndarray, shape (M, 1, 28, 28), optional
            Evaluated after every epoch; cast likewise.
        epochs : int
            Total number of epochs, counting those done before a resume.

        Returns
        -------
        dict
            ``history``: per-epoch lists of train/test loss, metrics and times.

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
        Both datasets are checked once, here; the per-batch checks of the
        model and the loss are then off for the loop, so a step costs no
        extra pass over its batch and, on CuPy, no extra wait for the GPU.
        """
        positive_int(epochs, "epochs", "Trainer.fit")
        validate.images(train_images, "Trainer.fit: train_images", self.model.input_shape)
        if test_images is not None:
            validate.images(test_images, "Trainer.fit: test_images", self.model.input_shape)
        if self.perm is not None and len(self.perm) != len(train_images):
            raise ValueError(
                f"Trainer.fit: the resumed epoch was shuffling {len(self.perm)} training images, "
                f"got {len(train_images)}; resume with the same data (and --train-size)")
        train_images = self._in_model_dtype(train_images, "train_images")
        if test_images is not None:
            test_images = self._in_model_dtype(test_images, "test_images")
        # Overflow and NaN warnings are what divergence looks like from inside
        # NumPy; the loop detects it itself and stops with one clear message.
        with _checks_off(self.net, self.loss_fn), np.errstate(over="ignore", invalid="ignore"):
            return self._fit(train_images, test_images, epochs)

    def _fit(self, train_images, test_images, epochs):
        xp = backend.get_xp()
        n, steps = len(train_images), math.ceil(len(train_images) / self.batch_size)
        data = backend.asarray(train_images)  # moves to the device once; batches are slices
        # Reading a GPU loss forces a wait, so on CuPy the losses are read every
        # 20 steps (with the progress bar); on NumPy it is free: every step.
        check_every = 1 if xp is np else 20
        with _sigint_flag() as interrupted:
            while self.epoch < epochs:
                if self.perm is None:
                    self.perm = self.shuffle_rng.permutation(n)
                    self.batch, self.loss_sum = 0, 0.0
                perm = xp.asarray(self.perm)  # uploaded once per epoch
                start, done = time.perf_counter(), 0
                bar = tqdm(total=steps, initial=self.batch, disable=not self.progress,
                           desc=f"epoch {self.epoch + 1}/{epochs}", unit="batch", leave=False,
                           dynamic_ncols=True)
                pending = []  # losses not yet read back from the device
                while self.batch < steps:
                    if interrupted["set"]:
                        bar.close()
                        self._sync_losses(pending)
                        raise TrainingInterrupted(self._save_on_interrupt())
                    index = perm[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
                    pending.append(self.train_step(data[index]))
                    self.batch += 1
                    done += len(index)
                    bar.update(1)
                    if len(pending) >= check_every or self.batch == steps:
                        last = self._sync_losses(pending)
                        rate = done / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(loss=f"{last:.4f}", samples_s=f"{rate:.0f}", refresh=False)
                bar.close()
                metrics = self._evaluate(test_images) if test_images is not None else None
                self._end_epoch(self.loss_sum / steps, metrics, time.perf_counter() - start,
                                epochs)
            if interrupted["set"]:
                # Ctrl-C came during the last epoch's evaluation or checkpoint:
                # training is complete and saved, but the user asked to stop.
                raise TrainingInterrupted(self.checkpoint or None)
        return {"history": self.history}

    def _sync_losses(self, pending):
        """Read queued losses (one device sync), add them up, stop on NaN/inf."""
        if not pending:
            return float("nan")
        values = backend.to_numpy(backend.get_xp().stack(pending)).tolist()
        first = self.batch - len(pending) + 1  # the batch number of values[0]
        pending.clear()
        for k, v in enumerate(values):
            if not math.isfinite(v):
                raise self._diverged(f"the training loss became {v} at epoch {self.epoch + 1}, "
                                     f"batch {first + k}")
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
            f"e.g. {lr / 10:g}; Adam usually works with 1e-3).{kept}")

    def _check_params_finite(self):
        """Raise :class:`TrainingDiverged` if a weight is NaN/inf (before a checkpoint)."""
        for k, p in self.model.params.items():
            problem = nonfinite_summary(p)
            if problem is not None:
                raise self._diverged(f"parameter {k} became non-finite ({problem}) "
                                     f"in epoch {self.epoch + 1}")

    def _end_epoch(self, train_loss, metrics, seconds, epochs):
        if metrics is not None and not math.isfinite(metrics[self.loss_name]):
            raise self._diverged(f"the test loss became {metrics[self.loss_name]} "
                                 f"after epoch {self.epoch + 1}")
        if self.checkpoint:
            self._check_params_finite()
        h = self.history
        h["train_loss"].append(train_loss)
        h["epoch_time"].append(seconds)
        h["test_loss"].append(metrics[self.loss_name] if metrics else None)
        for k in self.metric_names:
            if k != self.loss_name:
                h[k].append(metrics[k] if metrics else None)
        self.epoch += 1
        self.perm, self.batch, self.loss_sum = None, 0, 0.0
        line = f"epoch {self.epoch}/{epochs}  train {self.loss_name}={train_loss:.4f}"
        if metrics:
            line += f"  {self.format_summary(metrics)}"
        self.log(f"{line}  ({seconds:.1f}s)")
        if self.checkpoint:
            self.save(self.checkpoint)

    def _save_on_interrupt(self):
        if not self.checkpoint:
            return None
        self._check_params_finite()
        self.save(self.checkpoint)
        return self.checkpoint

    # -- checkpoints (see scratchae.checkpoint) -------------------------------
    def save(self, path):
        """Write weights and training state to one ``.npz``, atomically."""
        checkpoint.save_training(self, path)

    def resume(self, path):
        """Load a checkpoint written by :meth:`save` and continue from it (checked first)."""
        return checkpoint.resume_training(self, path)
