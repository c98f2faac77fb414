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
from .validate import nonfinite_summary, positive_int


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


def predict(model, images, batch_size, workers=None, output=sigmoid):
    """``output(logits)`` of a model, computed batch by batch on the fast path.

    Parameters
    ----------
    model : Sequential (or a compiled one)
    images : ndarray, shape (N, *input_shape), host NumPy
        Any floating dtype: cast once to the model's, with a note on stderr.
    batch_size : int
    workers : int, optional
        Workers that share each batch (processes on Linux, threads elsewhere);
        None: one per core on the CPU.
    output : callable, default sigmoid
        What the logits mean: the images (sigmoid) for an autoencoder, the
        labels (argmax) for a classifier.

    Returns
    -------
    ndarray, host NumPy: for the default, shape (N, 1, 28, 28), values in [0, 1]
    """
    net = model if hasattr(model, "source") else fast_path.compile(model, workers=workers)
    return _output_batches(net, validate.in_model_dtype(images, net.dtype, "images"),
                           batch_size, output)


def _output_batches(net, images, batch_size, output=sigmoid):
    """``output(net.infer(batch))`` for every batch of host ``images``, on the host
    (``infer``: the fast path's forward that keeps nothing for backward)."""
    infer = getattr(net, "infer", net.forward)
    return np.concatenate([
        backend.to_numpy(output(infer(backend.asarray(images[i:i + batch_size]))))
        for i in range(0, len(images), batch_size)])


def cosine_schedule(lr):
    """``schedule(step, total)``: ``lr`` decayed to 0 along half a cosine over the run.

    ``lr_t = lr * (1 + cos(pi * t / T)) / 2`` at step t of T: full at the
    start, half way at the middle, close to 0 at the end (never 0: t < T).
    Large steps first, to move; small ones last, to settle in a minimum.
    """
    lr = validate.positive_float(lr, "lr", "cosine_schedule")

    def schedule(step, total):
        return lr * (1 + math.cos(math.pi * step / total)) / 2

    schedule.__name__ = f"cosine({lr:g})"
    return schedule


def best_path(checkpoint):
    """Where the weights of the best epoch go: ``out/name.npz`` -> ``out/name_best.npz``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}_best{path.suffix or '.npz'}")


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
        Workers (processes on Linux, threads elsewhere) that share every batch
        on the fast path (see
        :mod:`scratchae.fast.parallel`); None: one per core on the CPU, 1 on
        the GPU. Results with different ``workers`` differ in rounding only.
    fast : bool, default True
        Train the compiled model (:func:`scratchae.fast.compile`); False
        trains the textbook layers as written, with the textbook loss and
        Adam (each batch still split over ``workers`` workers, which change
        no layer's arithmetic).
    loss_fn : optional
        Default :class:`~scratchae.losses.SigmoidCrossEntropy`.
    monitor : str, optional
        A metric of the evaluation set (e.g. ``"error"``) to select the best
        epoch on, lower is better: the parameters of the best epoch so far
        are kept (in the checkpoint too, and written to ``<checkpoint>_best.npz``),
        and :meth:`fit` ends with them in the model. None: the last epoch's.
    patience : int, optional
        With ``monitor``: stop early after this many epochs without a new best.
    lr_schedule : callable, optional
        ``lr_schedule(step, total) -> lr``: the learning rate of each step, from
        its index ``step`` (0-based, counted over the whole run, so a resumed
        run gets the same rates) and the run's ``total`` number of steps
        (e.g. :func:`cosine_schedule`). None: ``lr`` throughout.

    The data are ``(inputs, targets)`` pairs, or the inputs alone for an
    autoencoder (the targets are then the clean inputs). Subclasses say what
    is measured on the evaluation set by overriding :attr:`loss_name` (the
    metric that is the training loss's counterpart), :attr:`metric_names`,
    :meth:`batch_metrics` (sums over a batch) and :meth:`finish_metrics`
    (means over the set), or ``_evaluate(inputs, targets)`` as a whole (as
    :class:`~scratchae.vae.VAETrainer` and :class:`~scratchae.sparse.SparseTrainer`
    do); what the model's output means with :meth:`output`; and the
    summary line with :meth:`format_summary`.
    """

    loss_name = "bce"  # the training loss's name in logs and metrics
    metric_names = ("bce", "psnr_in", "psnr_out")
    eval_split = "test"  # what fit's second data set is: the history's "test_loss"

    def __init__(self, model, *, lr=1e-3, batch_size=128, noise=None, seed=0,
                 checkpoint=None, progress=True, log=print, eval_batch_size=None,
                 workers=None, fast=True, loss_fn=None, monitor=None, patience=None,
                 lr_schedule=None):
        self.batch_size = positive_int(batch_size, "batch_size", "Trainer")
        self.eval_batch_size = positive_int(
            batch_size if eval_batch_size is None else eval_batch_size, "eval_batch_size",
            "Trainer")
        self.seed = validate.seed(seed, "seed", "Trainer")
        if monitor is not None and monitor not in self.metric_names:
            raise ValueError(f"Trainer: monitor must be one of the metrics "
                             f"{', '.join(self.metric_names)}, got {monitor!r}")
        if patience is not None and monitor is None:
            raise ValueError("Trainer: patience needs a metric to monitor (monitor=...)")
        self.monitor = monitor
        if lr_schedule is not None and not callable(lr_schedule):
            raise TypeError(f"Trainer: lr_schedule must be a function (step, total) -> lr, "
                            f"got {lr_schedule!r}")
        self.lr_schedule = lr_schedule
        self.patience = None if patience is None else positive_int(patience, "patience",
                                                                    "Trainer")
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
        self.shuffle_rng = np.random.default_rng([*self._seed_key(), 1])
        self.noise_rng = np.random.default_rng([*self._seed_key(), 2])
        # Position in training, all saved in checkpoints:
        self.epoch = 0  # epochs completed
        self.batch = 0  # batches done in the current epoch
        self.perm = None  # this epoch's shuffled order (host)
        self.loss_sum = 0.0  # sum of this epoch's batch losses so far
        self.history = {"train_loss": [], self.eval_key: [], "epoch_time": [],
                        **{k: [] for k in self.metric_names if k != self.loss_name}}
        # The best epoch so far (with monitor): {"epoch", "value", "params"}, or None
        self.best = None

    @property
    def eval_key(self):
        """The history's key for the evaluation set's loss: ``"test_loss"``, ``"valid_loss"``."""
        return f"{self.eval_split}_loss"

    def _seed_key(self):
        """The seed as a list of ints: the start of every random stream's key."""
        return [self.seed] if isinstance(self.seed, int) else list(self.seed)

    # -- one step -----------------------------------------------------------
    def train_step(self, inputs, targets=None):
        """One update on a batch; returns the loss as a 0-d array (not synced).

        Parameters
        ----------
        inputs : ndarray, shape (N, *model.input_shape), on the current backend, in the
            model's dtype (the model refuses another: :meth:`fit` casts a dataset once)
            The clean inputs (the noise, if any, is added here).
        targets : ndarray, optional
            What the output is compared with: labels (N,) for a classifier;
            None for an autoencoder, whose target is the clean input.
        """
        net, loss_fn = self.net, self.loss_fn
        target = inputs if targets is None else targets
        noisy = inputs if self.noise is None else self.noise(inputs, self.noise_rng)
        logits = net.forward(noisy)                                # predict
        loss = loss_fn.forward(logits, target) + net.penalty()     # compare
        net.backward(loss_fn.backward())                           # dL/dparam
        self.optimizer.step(net.gradients())                       # update
        return loss

    # -- evaluation ---------------------------------------------------------
    def corrupt_test(self, clean):
        """The fixed noisy version of test images (same noise every epoch), host NumPy."""
        if self.noise is None:
            return clean
        return self.noise(clean, np.random.default_rng([*self._seed_key(), 3]))

    def output(self, logits):
        """What the model's logits mean: here the images, ``sigmoid(logits)``."""
        return sigmoid(logits)

    def _in_model_dtype(self, images, what):
        """``images`` in the model's dtype: cast once, with a note in the log, if they are
        another float (see :func:`scratchae.validate.in_model_dtype`)."""
        return validate.in_model_dtype(images, self.model.dtype, what, self.log)

    def predict(self, images):
        """:meth:`output` of the model for host inputs (N, *input_shape), batch by batch, on
        the path the trainer trains on (``fast=False``: the textbook layers), host NumPy."""
        return _output_batches(self.net, self._in_model_dtype(images, "images"),
                               self.eval_batch_size, self.output)

    def batch_metrics(self, inputs, targets, logits):
        """Sums over one evaluation batch of what :meth:`evaluate` reports.

        Parameters
        ----------
        inputs : ndarray, shape (N, ...)
            What the model was given (the noisy images, for a denoiser).
        targets : ndarray
            What it is compared with (the clean images, for an autoencoder).
        logits : ndarray
            The model's output for ``inputs``.

        Returns
        -------
        dict of str to float or ndarray
            Each metric summed over the batch; :meth:`finish_metrics` turns
            the sums over the whole set into the reported values.
        """
        sums = backend.get_array_module(logits).stack([  # read back together: one GPU wait
            (self.loss_fn.forward(logits, targets) + self.net.penalty()) * len(targets),
            psnr(inputs, targets).sum(), psnr(sigmoid(logits), targets).sum()])
        return dict(zip(("bce", "psnr_in", "psnr_out"), backend.to_numpy(sums).tolist()))

    def finish_metrics(self, totals, count):
        """The reported metrics from :meth:`batch_metrics`' sums over ``count`` samples: means."""
        return {k: v / count for k, v in totals.items()}

    def format_summary(self, metrics):
        """The line that reports :meth:`evaluate`'s metrics."""
        return format_summary(metrics)

    def last_metrics(self):
        """The test metrics of the last completed epoch, or None if it evaluated none."""
        h, key = self.history, self.eval_key
        if not h[key] or h[key][-1] is None or len(h[key]) != self.epoch:
            return None
        return {self.loss_name: h[key][-1],
                **{k: h[k][-1] for k in self.metric_names if k != self.loss_name}}

    def evaluate(self, data):
        """Mean metrics on a data set, e.g. ``bce``, ``psnr_in`` (noisy input vs clean) and
        ``psnr_out`` for a denoiser.

        Parameters
        ----------
        data : ndarray, shape (N, *input_shape), or a pair (inputs, targets)
            Host NumPy; the inputs alone for an autoencoder (clean images:
            the fixed test noise is added here).
        """
        inputs, targets = self.check_data(data, "Trainer.evaluate: images")
        with _checks_off(self.net, self.loss_fn):
            return self._evaluate(inputs, targets)

    def _evaluate(self, inputs, targets=None):
        noisy, totals, n = self.corrupt_test(inputs), {}, self.eval_batch_size
        infer = getattr(self.net, "infer", self.net.forward)  # the fast path: nothing cached
        for i in range(0, len(inputs), n):
            clean = backend.asarray(inputs[i:i + n])
            batch = backend.asarray(noisy[i:i + n])
            target = clean if targets is None else backend.asarray(targets[i:i + n])
            for k, v in self.batch_metrics(batch, target, infer(batch)).items():
                totals[k] = totals.get(k, 0.0) + v
        return self.finish_metrics(totals, len(inputs))

    # -- the data -------------------------------------------------------------
    def check_data(self, data, what):
        """Split ``data`` into (inputs, targets) and check both; raise before any work.

        Parameters
        ----------
        data : ndarray, or a pair (inputs, targets) of ndarrays
            The inputs alone: an autoencoder's data, whose targets are the
            inputs (returned as None).
        what : str
            Names the data in messages, e.g. ``"Trainer.fit: train_images"``
            (a pair's parts are then ``... inputs`` and ``... targets``).

        Returns
        -------
        inputs, targets : ndarray, ndarray or None
        """
        if not isinstance(data, tuple):
            validate.images(data, what, self.model.input_shape)
            return self._in_model_dtype(data, what.split(": ")[-1]), None
        if len(data) != 2:
            raise ValueError(f"{what}: expected an array or a pair (inputs, targets), "
                             f"got a tuple of {len(data)}")
        inputs, targets = data
        validate.images(inputs, f"{what} inputs", self.model.input_shape)
        self.check_targets(inputs, targets, f"{what} targets")
        return self._in_model_dtype(inputs, what.split(": ")[-1] + " inputs"), targets

    def check_targets(self, inputs, targets, what):
        """Raise unless ``targets`` fit ``inputs``: here images of the model's output shape."""
        if len(targets) != len(inputs):
            raise ValueError(f"{what}: got {len(targets)} for {len(inputs)} inputs")
        validate.images(targets, what)

    # -- the loop -----------------------------------------------------------
    def fit(self, train, test=None, epochs=10):
        """Train until ``epochs`` epochs are complete (resumes mid-epoch).

        Parameters
        ----------
        train : ndarray, shape (N, *input_shape), floats in [0, 1], host NumPy; or a pair
            ``(inputs, targets)``: the inputs alone train an autoencoder (target =
            the clean input); a pair trains e.g. a classifier (targets = labels).
            The inputs in the model's dtype (float32), or cast to it once, here,
            with a note in the log (``uint8 / 255.0`` is float64).
        test : ndarray or pair, optional
            Evaluated after every epoch (:meth:`evaluate`), cast likewise: the
            test set for the demos' autoencoders, a validation split when
            ``monitor`` selects the best epoch on it (never select on the test
            set: it would leak).
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
        train = self.check_data(train, "Trainer.fit: train_images")
        if test is not None:
            test = self.check_data(test, f"Trainer.fit: {self.eval_split}_images")
        if self.perm is not None and len(self.perm) != len(train[0]):
            raise ValueError(
                f"Trainer.fit: the resumed epoch was shuffling {len(self.perm)} training images, "
                f"got {len(train[0])}; resume with the same data (and --train-size)")
        if self.monitor is not None and test is None:
            raise ValueError(f"Trainer.fit: monitor={self.monitor!r} selects the best epoch on "
                             f"an evaluation set; give one (a validation split)")
        # Overflow and NaN warnings are what divergence looks like from inside
        # NumPy; the loop detects it itself and stops with one clear message.
        with _checks_off(self.net, self.loss_fn), np.errstate(over="ignore", invalid="ignore"):
            return self._fit(train, test, epochs)

    def _fit(self, train, test, epochs):
        xp = backend.get_xp()
        n, steps = len(train[0]), math.ceil(len(train[0]) / self.batch_size)
        # moved to the device once; batches are slices
        data, targets = (None if a is None else backend.asarray(a) for a in train)
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
                    if self.lr_schedule is not None:
                        self._schedule_lr(self.epoch * steps + self.batch, epochs * steps)
                    batch = (data[index],) if targets is None else (data[index], targets[index])
                    pending.append(self.train_step(*batch))
                    self.batch += 1
                    done += len(index)
                    bar.update(1)
                    if len(pending) >= check_every or self.batch == steps:
                        last = self._sync_losses(pending)
                        rate = done / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(loss=f"{last:.4f}", samples_s=f"{rate:.0f}", refresh=False)
                bar.close()
                metrics = self._evaluate(*test) if test is not None else None
                self._end_epoch(self.loss_sum / steps, metrics, time.perf_counter() - start,
                                epochs)
                if self._out_of_patience():
                    break
            if interrupted["set"]:
                # Ctrl-C came during the last epoch's evaluation or checkpoint:
                # training is complete and saved, but the user asked to stop.
                raise TrainingInterrupted(self.checkpoint or None)
        if self.best is not None:
            self.restore_best()
        return {"history": self.history}

    def _schedule_lr(self, step, total):
        """Set the optimizer's learning rate for global step ``step`` of ``total``."""
        self.optimizer.lr = validate.positive_float(
            self.lr_schedule(step, total), f"lr_schedule({step}, {total})", "Trainer")

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
        h[self.eval_key].append(metrics[self.loss_name] if metrics else None)
        for k in self.metric_names:
            if k != self.loss_name:
                h[k].append(metrics[k] if metrics else None)
        self.epoch += 1
        self.perm, self.batch, self.loss_sum = None, 0, 0.0
        line = f"epoch {self.epoch}/{epochs}  train {self.loss_name}={train_loss:.4f}"
        if metrics:
            line += f"  {self.format_summary(metrics)}"
        if self.monitor is not None and self._is_new_best(metrics[self.monitor]):
            self.best = {"epoch": self.epoch, "value": metrics[self.monitor],
                         "params": [p.copy() for p in self.model.parameters()]}
            line += "  (best so far)"
            if self.checkpoint:
                self.model.save(best_path(self.checkpoint))
        self.log(f"{line}  ({seconds:.1f}s)")
        if self.checkpoint:
            self.save(self.checkpoint)

    # -- the best epoch (with monitor) ------------------------------------------
    def _is_new_best(self, value):
        """Lower is better; a tie keeps the earlier epoch."""
        return self.best is None or value < self.best["value"]

    def _out_of_patience(self):
        """True when ``patience`` epochs have passed since the best one."""
        return (self.patience is not None and self.best is not None
                and self.epoch - self.best["epoch"] >= self.patience)

    def restore_best(self):
        """Put the parameters of the best epoch (by ``monitor``) back into the model.

        :meth:`fit` does it when it ends. Returns the best epoch (1-based).
        """
        if self.best is None:
            raise RuntimeError("Trainer.restore_best: no best epoch yet (monitor a metric "
                               "and evaluate at least one epoch)")
        for p, kept in zip(self.model.parameters(), self.best["params"]):
            p[...] = kept
        return self.best["epoch"]

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
