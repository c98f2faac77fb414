"""Train a stacked denoising autoencoder on MNIST and classify digits with it.

    python demos/stacked_denoising.py --data-dir DIR                  # the default recipe
    python demos/stacked_denoising.py --data-dir DIR --no-pretrain    # the same, no pretraining
    python demos/stacked_denoising.py --data-dir DIR --corruption 0   # stacked ordinary AEs

Vincent et al. (JMLR 2010), as in the classic Theano tutorial: 784-1000-1000-1000-10,
sigmoid units. Each hidden layer is first trained alone, without labels, as
a denoising autoencoder with tied weights (masking noise 0.1, 0.2, 0.3 on
its input, the clean codes of the layers below); then the layers are
stacked, a softmax layer is put on top, and the whole network is fine-tuned
on the labels. The last 10,000 training digits are held out for validation:
the fine-tuning epoch with the lowest validation error is kept, and the
test set is evaluated once, at the end (scratchae/sdae.py, docs/sdae.md).

Writes to --out (default ./out): stacked_denoising_filters.png (the first
layer's filters after pretraining, beside those of a --corruption 0 run in
the same --out, if there is one), stacked_denoising_valid.png (the
validation error per fine-tuning epoch, with the --no-pretrain and
--corruption 0 runs found in --out), stacked_denoising_errors.png (the
misclassified test digits), and the checkpoints (one per stage; resume with
--resume). The --no-pretrain and --corruption 0 runs write under their own
names (stacked_denoising_no_pretrain..., stacked_denoising_corruption0...).
Ends with one line, e.g.
``test error=1.34% valid=1.41% (best fine-tuning epoch 17) pretrain=212s finetune=305s``.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from scratchae import backend, checkpoint, fast, plots
from scratchae.cli import add_run_flags, check_output_dir, demo_parser, run_guarded
from scratchae.data import load_mnist, validation_split
from scratchae.sdae import (
    Recipe,
    StackedDenoisingAutoencoder,
    corruption_levels,
    hidden_sizes,
    stage_checkpoints,
    train_stacked,
)
from scratchae.validate import arg_positive_float, arg_positive_int

NAME = "stacked_denoising"
DEFAULTS = Recipe()


def default_corruption(depth):
    """0.1, 0.2, 0.3 for the first three layers (the Theano tutorial's), then 0.3 again."""
    levels = DEFAULTS.corruption
    return levels[:depth] + levels[-1:] * (depth - len(levels))


def run_name(args):
    """The stem of a run's files: the comparison runs get their own."""
    if args.no_pretrain:
        return f"{NAME}_no_pretrain"
    if args.corruption is None:  # the default levels, none of them 0
        return NAME
    try:
        levels = corruption_levels(args.corruption, len(hidden_sizes(args.hidden)))
    except ValueError:
        return NAME  # the run itself reports the bad --corruption, as one line
    return NAME if any(levels) else f"{NAME}_corruption0"


def build_parser():
    parser = demo_parser("Greedy layer-wise pretraining of denoising autoencoders, then "
                         "fine-tuning: a stacked denoising autoencoder classifies MNIST "
                         "(every gradient by hand).")
    add = parser.add_argument
    add("--hidden", type=_arg(hidden_sizes), default="1000,1000,1000",
        help="hidden layer sizes")
    add("--corruption", default=None,
        help="masking noise of each layer's pretraining, in [0, 1): one level, or one per "
             "layer; 0 trains stacked ordinary autoencoders (default: 0.1,0.2,0.3, the "
             "last level repeated for deeper stacks)")
    add("--no-pretrain", action="store_true",
        help="fine-tune from random weights, without pretraining (what pretraining buys)")
    add("--pretrain-epochs", type=arg_positive_int, default=DEFAULTS.pretrain_epochs,
        help="epochs of each layer's pretraining")
    add("--pretrain-lr", type=arg_positive_float, default=DEFAULTS.pretrain_lr,
        help="Adam's learning rate for pretraining")
    add("--finetune-epochs", type=arg_positive_int, default=DEFAULTS.finetune_epochs,
        help="epochs of fine-tuning; the best on the validation split is kept")
    add("--finetune-lr", type=arg_positive_float, default=DEFAULTS.finetune_lr,
        help="Adam's learning rate at the start of fine-tuning")
    add("--finetune-schedule", choices=("cosine", "constant"),
        default=DEFAULTS.finetune_schedule,
        help="cosine: the fine-tuning lr decays to 0 along half a cosine; constant: it stays")
    add("--finetune-noise", default=f"{DEFAULTS.finetune_noise:g}",
        help="masking noise on the images during fine-tuning, in [0, 1) (0: none)")
    add("--batch-size", type=arg_positive_int, default=DEFAULTS.batch_size,
        help="images per training step, in every stage")
    add("--valid-size", type=arg_positive_int, default=10_000,
        help="the last N training digits are the validation split")
    add_run_flags(parser)
    return parser


def _arg(parse):
    """An argparse type from a parser that raises ValueError: the message becomes argparse's."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).split(": ", 1)[-1]) from None
    return convert


def load_data(args, log):
    """(train, valid, test): (images, labels) pairs, host NumPy."""
    data = load_mnist(args.data_dir, progress=not args.no_progress)
    train, valid = validation_split(data.train_images, data.train_labels, args.valid_size)
    if args.train_size is not None:
        train = (train[0][:args.train_size], train[1][:args.train_size])
    log(f"{NAME}: {len(train[0])} training / {len(valid[0])} validation / "
        f"{len(data.test_images)} test digits from {data.source}; backend {args.backend}")
    return train, valid, (data.test_images, data.test_labels)


def make_figures(model, trainer, test, args, out):
    """The figures in ``out``; returns their paths."""
    name, paths = run_name(args), []
    first = {}
    denoising = stage_checkpoints(out, NAME, model.depth)[0]
    if denoising.exists():  # labelled with the noise that run pretrained layer 1 with
        noise = checkpoint.read_meta(denoising).get("noise", "")
        first[f"masking noise {noise[5:-1]}" if noise.startswith("mask(") else noise] = denoising
    ordinary = stage_checkpoints(out, f"{NAME}_corruption0", model.depth)[0]
    if ordinary.exists():
        first["no noise (--corruption 0)"] = ordinary
    if first:
        weights = {label: checkpoint.load_npz(path)["1.W"] for label, path in first.items()}
        weights = {k: w for k, w in weights.items() if w.shape == (784, model.hidden[0])}
        if weights:
            paths.append(plots.filter_comparison(
                weights, out / f"{NAME}_filters.png", count=100,
                title="The first layer's filters after pretraining (100 of "
                      f"{model.hidden[0]})"))
    curves = {}
    for label, stem in (("pretrained", NAME), ("no pretraining", f"{NAME}_no_pretrain"),
                        ("pretrained without noise", f"{NAME}_corruption0")):
        path = stage_checkpoints(out, stem, model.depth)[-1]
        if path.exists():
            curves[label] = checkpoint.read_history(path).get("error")
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        paths.append(plots.error_curves(curves, out / f"{NAME}_valid.png",
                                        title="Validation error per fine-tuning epoch"))
    predicted = trainer.predict(test[0])
    wrong = np.flatnonzero(predicted != test[1])
    if len(wrong):
        shown = wrong[:60]
        paths.append(plots.labelled_digits(
            test[0][shown], [f"{p} (true {t})" for p, t in zip(predicted[shown], test[1][shown])],
            out / f"{name}_errors.png",
            title=f"{len(wrong)} misclassified test digits (the first {len(shown)}): "
                  f"predicted (true)"))
    return paths


def main(argv=None):
    args = build_parser().parse_args(argv)
    checkpoint_path = Path(args.out) / f"{run_name(args)}.npz"

    def run():
        def log(line):
            print(line, flush=True)

        hidden = hidden_sizes(args.hidden)  # the default is text too
        corruption = corruption_levels(
            args.corruption if args.corruption is not None else default_corruption(len(hidden)),
            len(hidden))
        args.corruption = ",".join(f"{v:g}" for v in corruption)
        recipe = Recipe(hidden=hidden, corruption=corruption, pretrain=not args.no_pretrain,
                        pretrain_epochs=args.pretrain_epochs, pretrain_lr=args.pretrain_lr,
                        finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                        finetune_schedule=args.finetune_schedule,
                        finetune_noise=corruption_levels(args.finetune_noise, 1,
                                                         "--finetune-noise")[0],
                        batch_size=args.batch_size)
        backend.set_backend(args.backend)
        out = check_output_dir(args.out)
        model = StackedDenoisingAutoencoder(hidden, seed=args.seed)
        if args.summary:  # the classifier that is fine-tuned, as it will train
            net = model.classifier if args.textbook else fast.compile(model.classifier)
            log(str(net.summary()))
        train, valid, test = load_data(args, log)
        result = train_stacked(model, recipe, train, valid, seed=args.seed, out=out,
                               name=run_name(args), resume=args.resume,
                               progress=not args.no_progress, log=log, workers=args.workers,
                               fast=not args.textbook)
        trainer = result["trainer"]
        metrics = trainer.evaluate(test)  # once, with the best epoch's parameters
        log(f"test set, evaluated once with the parameters of fine-tuning epoch "
            f"{trainer.best['epoch']} (chosen on the validation split)")
        for path in make_figures(model, trainer, test, args, out):
            log(f"wrote {path}")
        return (f"test error={100 * metrics['error']:.2f}% "
                f"valid={100 * trainer.best['value']:.2f}% "
                f"(best fine-tuning epoch {trainer.best['epoch']}) "
                f"pretrain={result['pretrain_seconds']:.0f}s "
                f"finetune={result['finetune_seconds']:.0f}s")

    return run_guarded(run, checkpoint=checkpoint_path, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
