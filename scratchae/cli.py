"""What the demos share: their command-line flags, data, training and errors.

Each demo in ``demos/`` declares its defaults, its model and its figures;
:func:`run_demo` does the rest, so every demo behaves the same way:
``--backend``, ``--epochs``, ``--resume``, a progress bar, a checkpoint in
``--out``, one ``error: ...`` line (no traceback) on bad input, and a last
line ``test bce=... psnr_in=...dB psnr_out=...dB``.
"""

import argparse
import math
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import backend
from .data import load_mnist
from .noise import NOISES, make_noise
from .train import Trainer, TrainingDiverged, TrainingInterrupted, format_summary


def positive_int(text):
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


@dataclass
class DemoSpec:
    """A demo's name, defaults and pieces.

    Attributes
    ----------
    name : str
        Also the stem of its files in ``--out`` (``NAME.npz``, ``NAME.png``...).
    description : str
    build_model : callable
        ``build_model(args) -> Sequential``.
    make_figures : callable
        ``make_figures(trainer, data, args) -> list of Path``.
    epochs, lr, batch_size : defaults of the flags
    noise_factor : float or None
        ``None`` for a plain (clean-input) autoencoder: no noise flags.
    extra_args : callable, optional
        ``extra_args(parser)`` adds the demo's own flags.
    """

    name: str
    description: str
    build_model: object
    make_figures: object
    epochs: int
    lr: float
    batch_size: int = 128
    noise_factor: float = None
    extra_args: object = None


def build_parser(spec):
    """The common flags, with the demo's defaults."""
    parser = argparse.ArgumentParser(
        description=spec.description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy",
                        help="numpy (CPU) or cupy (NVIDIA GPU)")
    parser.add_argument("--epochs", type=positive_int, default=spec.epochs)
    parser.add_argument("--batch-size", type=positive_int, default=spec.batch_size)
    parser.add_argument("--lr", type=positive_float, default=spec.lr, help="Adam's learning rate")
    parser.add_argument("--train-size", type=positive_int, default=None,
                        help="train on the first N training images only (default: all)")
    parser.add_argument("--data-dir", default=None,
                        help="directory with the MNIST IDX files (default: $SCRATCHAE_DATA, "
                             "the cache, a download, or the bundled sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out", help="directory for figures and the checkpoint")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint OUT/NAME.npz")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    if spec.noise_factor is not None:
        parser.add_argument("--noise", choices=tuple(NOISES), default="gaussian",
                            help="the corruption: gaussian noise, salt-and-pepper, or masking")
        parser.add_argument("--noise-factor", type=positive_float, default=spec.noise_factor,
                            help="gaussian: std of the noise; salt-pepper/mask: fraction of pixels")
    if spec.extra_args:
        spec.extra_args(parser)
    return parser


def check_output_dir(path):
    """Create ``path`` if needed and make sure we can write there, before training."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OSError(f"--out {str(path)!r} is not a writable directory ({error.strerror or error})") from None
    return path


def load_data(args):
    """MNIST as float32 (N, 1, 28, 28) images, cut to ``--train-size``."""
    data = load_mnist(args.data_dir, progress=not args.no_progress)
    train = data.train_images
    if args.train_size is not None:
        if args.train_size > len(train):
            print(f"note: --train-size {args.train_size} is more than the {len(train)} "
                  f"training images available; using all of them", file=sys.stderr)
        train = train[:args.train_size]
    return data, train


def resume_command():
    """The command line that was run, with ``--resume`` added."""
    argv = [a for a in sys.argv if a != "--resume"]
    return "python " + " ".join(shlex.quote(a) for a in argv) + " --resume"


def train_demo(spec, args, log=print):
    """Build, train (or resume) and evaluate one demo's model.

    Returns
    -------
    trainer : Trainer
    data : MNIST
    metrics : dict
        Final test metrics (``bce``, ``psnr_in``, ``psnr_out``).
    """
    backend.set_backend(args.backend)
    out = check_output_dir(args.out)
    checkpoint = out / f"{spec.name}.npz"
    if args.resume and not checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint} (run without --resume first)")
    data, train = load_data(args)
    log(f"{spec.name}: {len(train)} training / {len(data.test_images)} test images "
        f"from {data.source}; backend {args.backend}")
    noise = None
    if spec.noise_factor is not None:
        noise = make_noise(args.noise, args.noise_factor)
    trainer = Trainer(spec.build_model(args), lr=args.lr, batch_size=args.batch_size,
                      noise=noise, seed=args.seed, checkpoint=checkpoint,
                      progress=not args.no_progress, log=log)
    if args.resume:
        meta = trainer.resume(checkpoint)
        log(f"resumed from {checkpoint}: {meta['epoch']} epochs and {meta['step']} batches done")
    if trainer.epoch < args.epochs:
        trainer.fit(train, data.test_images, epochs=args.epochs)
    history = trainer.history
    if history["test_loss"] and history["test_loss"][-1] is not None and trainer.epoch == len(history["test_loss"]):
        metrics = {"bce": history["test_loss"][-1], "psnr_in": history["psnr_in"][-1],
                   "psnr_out": history["psnr_out"][-1]}
    else:
        metrics = trainer.evaluate(data.test_images)
    return trainer, data, metrics


def run_demo(spec, argv=None):
    """Parse flags, train, draw figures, print the summary; return the exit code."""
    args = build_parser(spec).parse_args(argv)
    try:
        trainer, data, metrics = train_demo(spec, args)
        for path in spec.make_figures(trainer, data, args):
            print(f"wrote {path}")
    except TrainingInterrupted as stop:
        where = f"checkpoint saved to {stop.checkpoint}; " if stop.checkpoint else ""
        print(f"\ninterrupted: {where}resume with:\n  {resume_command()}", file=sys.stderr)
        return 130
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_summary(metrics))
    return 0


def figure_digits(data, trainer, start=10, count=10):
    """Test digits ``start..start+count-1`` as noisy, denoised and clean rows.

    Returns
    -------
    list of (str, ndarray of shape (count, 1, 28, 28))
    """
    clean = data.test_images[start:start + count]
    noisy = trainer.corrupt_test(data.test_images[:start + count])[start:]
    denoised = trainer.predict(noisy)
    return [("noisy", backend.to_numpy(noisy)), ("denoised", denoised), ("clean", clean)]


__all__ = ["DemoSpec", "run_demo", "train_demo", "build_parser", "positive_int",
           "positive_float", "figure_digits"]
