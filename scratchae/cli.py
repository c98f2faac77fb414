"""What the demos share: their command-line flags, data, training and errors.

Each demo in ``demos/`` declares its defaults, its model and its figures;
:func:`run_demo` does the rest, so every demo behaves the same way:
``--backend``, ``--epochs``, ``--resume``, a progress bar, a checkpoint in
``--out``, one ``error: ...`` line (no traceback) on bad input, and a last
line ``test bce=... psnr_in=...dB psnr_out=...dB``.
"""

import argparse
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import backend
from .data import load_mnist
from .noise import NOISES, make_noise
from .train import Trainer, TrainingDiverged, TrainingInterrupted, format_summary
from .validate import arg_non_negative_int, arg_positive_float, arg_positive_int


class DemoHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows every flag's default exactly once.

    argparse's ``ArgumentDefaultsHelpFormatter`` appends ``(default: X)`` to
    every help text, which printed ``(default: all) (default: None)`` for a
    flag whose help already says what None means. Here a help that states
    its own default (``... (default: all)``) keeps it while the flag's
    default is None, and a demo that sets another default
    (``parser.set_defaults(train_size=10000)``) gets that one instead; an
    on/off flag says ``(default: off)``.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        own = re.search(r" \(default: [^()]*\)$", text)
        if action.default is None and own:
            return text
        if own:
            text = text[:own.start()]
        if action.nargs == 0 and action.const is True and action.default is False:  # store_true
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


class DemoParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``error: <message>``.

    argparse's default prints the whole usage block and the program's name
    before the message; a learner then has to look for what went wrong.
    The exit code stays 2 (argparse's, "bad command line"); ``--help``
    still shows the full usage.
    """

    def error(self, message):
        self.exit(2, f"error: {message}\n")


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
    trainer : type, optional
        A :class:`~scratchae.train.Trainer` subclass that measures other
        things (default ``Trainer``).
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
    trainer: object = None


def build_parser(spec):
    """The common flags, with the demo's defaults."""
    parser = demo_parser(spec.description)
    parser.add_argument("--epochs", type=arg_positive_int, default=spec.epochs,
                        help="passes over the training images")
    parser.add_argument("--batch-size", type=arg_positive_int, default=spec.batch_size,
                        help="images per training step")
    parser.add_argument("--lr", type=arg_positive_float, default=spec.lr,
                        help="Adam's learning rate")
    add_run_flags(parser)
    if spec.noise_factor is not None:
        parser.add_argument("--noise", choices=tuple(NOISES), default="gaussian",
                            help="the corruption: gaussian noise, salt-and-pepper, or masking")
        parser.add_argument("--noise-factor", type=arg_positive_float, default=spec.noise_factor,
                            help="gaussian: std of the noise; salt-pepper/mask: fraction of pixels")
    if spec.extra_args:
        spec.extra_args(parser)
    return parser


def demo_parser(description):
    """An empty :class:`DemoParser` with the demos' ``--help`` format."""
    return DemoParser(description=description, formatter_class=DemoHelpFormatter)


def add_run_flags(parser):
    """The flags of every demo that are not about the recipe: the backend, the data, the
    seed, where the files go, resuming, progress, threads and the textbook path."""
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy",
                        help="numpy (CPU) or cupy (NVIDIA GPU)")
    parser.add_argument("--train-size", type=arg_positive_int, default=None,
                        help="train on the first N training images only (default: all)")
    parser.add_argument("--data-dir", default=None,
                        help="directory with the MNIST IDX files (default: $SCRATCHAE_DATA, "
                             "the cache, a download, or the bundled sample)")
    parser.add_argument("--seed", type=arg_non_negative_int, default=0,
                        help="seed of every random stream: initial weights, shuffling, noise")
    parser.add_argument("--out", default="out", help="directory for figures and the checkpoint")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint OUT/NAME.npz")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--workers", type=arg_positive_int, default=None,
                        help="workers sharing each batch on the CPU: processes on Linux, threads "
                             "elsewhere (default: one per BLAS "
                             "thread, i.e. per core; 1 with --backend cupy)")
    parser.add_argument("--textbook", action="store_true",
                        help="train the textbook layers as written (scratchae.layers), not the "
                             "fast path (scratchae.fast); the same function, slower")
    parser.add_argument("--summary", action="store_true", help="print the model's summary() first")
    return parser


def check_output_dir(path):
    """Create ``path`` if needed and make sure we can write there, before training."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OSError(f"--out {str(path)!r} is not a writable directory "
                      f"({error.strerror or error})") from None
    return path


def _say(message):
    """Print a progress line to stdout at once (a pipe would otherwise hold it back)."""
    print(message, flush=True)


def load_data(args):
    """MNIST as float32 (N, 1, 28, 28) images, cut to ``--train-size``."""
    data = load_mnist(args.data_dir, progress=not args.no_progress)
    for split, images in (("training", data.train_images), ("test", data.test_images)):
        if len(images) == 0:  # a user's own data set: say so before any work
            where = f"--data-dir {args.data_dir}" if args.data_dir else data.source
            raise ValueError(f"{where}: the {split} set holds no images; the demos need at "
                             f"least 1 training and 1 test image")
    train = data.train_images
    if args.train_size is not None:
        if args.train_size > len(train):
            print(f"note: --train-size {args.train_size} is more than the {len(train)} "
                  f"training images available; using all of them", file=sys.stderr)
        train = train[:args.train_size]
    return data, train


def resume_command(argv=None):
    """The command line that was run, with ``--resume`` added.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the script's name (default ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    words = [sys.argv[0] or "demo.py"] + [a for a in argv if a != "--resume"] + ["--resume"]
    return "python " + " ".join(shlex.quote(a) for a in words)


def train_demo(spec, args, log=None):
    """Build, train (or resume) and evaluate one demo's model.

    Everything that can be checked before training is checked first, in
    this order, so a mistake costs seconds, not an epoch: the backend,
    ``--out``, that the checkpoint to resume exists, the noise, that the
    checkpoint fits the model (before anything is loaded), then the data.
    Right before training starts, one line ``training: ...`` is printed
    (and flushed), so a script can wait for it.

    Returns
    -------
    trainer : Trainer
    data : MNIST
    metrics : dict
        Final test metrics (``bce``, ``psnr_in``, ``psnr_out``).
    """
    log = log or _say
    backend.set_backend(args.backend)
    out = check_output_dir(args.out)
    checkpoint = out / f"{spec.name}.npz"
    if args.resume and not checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint} "
                                f"(run without --resume first)")
    noise = None
    if spec.noise_factor is not None:
        try:
            noise = make_noise(args.noise, args.noise_factor)
        except ValueError as error:
            raise ValueError(f"--noise {args.noise} --noise-factor {args.noise_factor}: "
                             f"{error}") from None
    model = spec.build_model(args)
    trainer = (spec.trainer or Trainer)(
        model, lr=args.lr, batch_size=args.batch_size, noise=noise, seed=args.seed,
        checkpoint=checkpoint, progress=not args.no_progress, log=log, workers=args.workers,
        fast=not args.textbook)
    if args.summary:  # the model as it will train: compiled, with the fast rule of each layer
        log(str(trainer.net.summary()))
    if args.resume:
        meta = trainer.resume(checkpoint)  # checks it all before changing anything
        log(f"resumed from {checkpoint}: {meta['epoch']} epochs and {meta['step']} batches done")
    data, train = load_data(args)
    log(f"{spec.name}: {len(train)} training / {len(data.test_images)} test images "
        f"from {data.source}; backend {args.backend}")
    if trainer.epoch < args.epochs:
        if args.textbook:
            path = "textbook layers"
        elif trainer.net is model and hasattr(model, "layers"):  # compile() left it as it was
            path = "textbook layers (a model with its own penalty is not compiled)"
        else:
            path = "fast path"
        workers = (trainer.net.workers_for((args.batch_size, *train.shape[1:]))
                   if hasattr(trainer.net, "workers_for") else 1)
        log(f"training: epochs {trainer.epoch + 1}..{args.epochs}, batch size {args.batch_size}, "
            f"lr {args.lr:g}, {path}, {workers} worker{'s' * (workers != 1)}; "
            f"checkpoint {checkpoint} (Ctrl-C saves it and stops)")
        trainer.fit(train, data.test_images, epochs=args.epochs)
    metrics = trainer.last_metrics() or trainer.evaluate(data.test_images)
    return trainer, data, metrics


def one_line(error):
    """An exception's message on one line (multi-line messages are joined with '; ')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def report_error(error):
    """Print ``error: <message>`` as one line on stderr."""
    print(f"error: {one_line(error)}", file=sys.stderr)


def report_interrupt(stop, checkpoint=None, argv=None):
    """Say on stderr, in one line plus the resume command, that Ctrl-C stopped the run.

    Parameters
    ----------
    stop : KeyboardInterrupt
        A :class:`TrainingInterrupted` (a checkpoint was saved) or a plain
        Ctrl-C that came outside training (loading data, drawing figures).
    checkpoint : Path, optional
        The demo's checkpoint, to tell whether an earlier state was kept.
    argv : list of str, optional
        The command's arguments, for the resume command.
    """
    lead = "\n" if sys.stderr.isatty() else ""  # end the terminal's "^C" line
    if isinstance(stop, TrainingInterrupted) and stop.checkpoint:
        print(f"{lead}interrupted: checkpoint saved to {stop.checkpoint}; resume with:\n"
              f"  {resume_command(argv)}", file=sys.stderr)
    elif checkpoint is not None and Path(checkpoint).exists():
        print(f"{lead}interrupted: {checkpoint} holds the last saved state; "
              f"resume with: {resume_command(argv)}", file=sys.stderr)
    elif checkpoint is not None or isinstance(stop, TrainingInterrupted):
        print(f"{lead}interrupted: nothing was saved", file=sys.stderr)
    else:
        print(f"{lead}interrupted", file=sys.stderr)


def run_guarded(main, checkpoint=None, argv=None):
    """Run ``main()`` the way every demo runs; return the exit code.

    Errors become one ``error: ...`` line on stderr (no traceback; set the
    environment variable ``SCRATCHAE_TRACEBACK=1`` to see it) and exit
    code 1; Ctrl-C, during training or outside it, exit code 130 with how
    to resume. Bad flags exit with 2 from argparse (:class:`DemoParser`).

    Parameters
    ----------
    main : callable
        ``main()`` returns the summary line to print last (a str, or a dict
        of denoising metrics for :func:`~scratchae.train.format_summary`), or None.
    checkpoint : Path, optional
        The checkpoint that a Ctrl-C outside training leaves behind.
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``), for the resume command.
    """
    try:
        metrics = main()
    except KeyboardInterrupt as stop:  # TrainingInterrupted, or Ctrl-C outside fit
        report_interrupt(stop, checkpoint, argv)
        return 130
    except MemoryError as error:  # NumPy's, and CuPy's OutOfMemoryError
        if os.environ.get("SCRATCHAE_TRACEBACK"):
            raise
        print(f"error: out of memory ({one_line(error)}); try a smaller --batch-size",
              file=sys.stderr)
        return 1
    except (TrainingDiverged, ValueError, TypeError, RuntimeError, OSError) as error:
        if os.environ.get("SCRATCHAE_TRACEBACK"):  # for developers: the full traceback
            raise
        report_error(error)
        return 1
    if isinstance(metrics, str):
        print(metrics)
    elif metrics is not None:
        print(format_summary(metrics))
    return 0


def run_demo(spec, argv=None):
    """Parse flags, train, draw figures, print the summary; return the exit code.

    Exit codes: 0 done; 1 an error (one ``error: ...`` line on stderr, no
    traceback); 2 a bad flag (likewise, from argparse); 130 Ctrl-C (after
    saving a checkpoint when training was under way). See :func:`run_guarded`.
    """
    args = build_parser(spec).parse_args(argv)

    def main():
        trainer, data, metrics = train_demo(spec, args)
        for path in spec.make_figures(trainer, data, args):
            print(f"wrote {path}", flush=True)
        return trainer.format_summary(metrics)

    return run_guarded(main, checkpoint=Path(args.out) / f"{spec.name}.npz", argv=argv)


def figure_digits(data, trainer, start=10, count=10):
    """Test digits ``start..start+count-1`` as noisy, denoised and clean rows.

    A test set with fewer than ``start + count`` digits gives its last
    ``count`` digits (all of them if it has fewer).

    Returns
    -------
    list of (str, ndarray of shape (count, 1, 28, 28))
    """
    count = min(count, len(data.test_images))
    start = min(start, len(data.test_images) - count)
    clean = data.test_images[start:start + count]
    noisy = trainer.corrupt_test(data.test_images[:start + count])[start:]
    denoised = trainer.predict(noisy)
    return [("noisy", backend.to_numpy(noisy)), ("denoised", denoised), ("clean", clean)]


__all__ = ["DemoSpec", "DemoParser", "run_demo", "train_demo", "build_parser", "demo_parser",
           "add_run_flags",
           "figure_digits", "report_error",
           "report_interrupt", "resume_command", "run_guarded"]
