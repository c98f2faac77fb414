"""Train the tutorial's plain dense autoencoder: 784 -> 64 (ReLU) -> 784.

    python demos/dense_autoencoder.py                # the tutorial: 20 epochs
    python demos/dense_autoencoder.py --epochs 2     # a quick look

Writes dense_autoencoder.png (5 test digits over their reconstructions),
dense_autoencoder_codes.png (each digit's 64-unit code as an 8x8 image),
dense_autoencoder_filters.png (each code unit's input weights as a 28x28 tile),
dense_autoencoder_loss.png and the checkpoint dense_autoencoder.npz to --out.
The input is the clean image, so psnr_in in the summary line is inf.
"""

import sys
from pathlib import Path

from scratchae import backend, plots
from scratchae.cli import DemoSpec, run_demo
from scratchae.models import Sequential, dense_autoencoder
from scratchae.validate import arg_positive_int


def make_figures(trainer, data, args):
    out = Path(args.out)
    digits = data.test_images[:5]
    encoder = Sequential(trainer.model.layers[:3])  # Flatten, Dense, ReLU: the code
    codes = backend.to_numpy(encoder.forward(backend.asarray(digits)))
    side = int(round(args.hidden ** 0.5))
    figures = [
        plots.image_rows([("original", digits), ("reconstruction", trainer.predict(digits))],
                         out / "dense_autoencoder.png",
                         title=f"Dense autoencoder (hidden {args.hidden}), "
                               f"{plots.epochs(trainer.epoch)}"),
        plots.loss_curves(trainer.history, out / "dense_autoencoder_loss.png",
                          title="Dense autoencoder"),
        plots.filter_grid(backend.to_numpy(trainer.model.layers[1].params["W"]),
                          out / "dense_autoencoder_filters.png",
                          title=f"Encoder filters: each code unit's 784 input weights "
                                f"({plots.epochs(trainer.epoch)})"),
    ]
    if side * side == args.hidden:
        figures.append(plots.code_grid(codes, out / "dense_autoencoder_codes.png", images=digits,
                                       shape=(side, side),
                                       title=f"{args.hidden}-unit codes as {side}x{side} images"))
    return figures


SPEC = DemoSpec(
    name="dense_autoencoder",
    description="Train a plain dense autoencoder on clean MNIST digits.",
    build_model=lambda args: dense_autoencoder(hidden=args.hidden, seed=args.seed),
    make_figures=make_figures,
    epochs=20,
    lr=0.01,
    extra_args=lambda parser: parser.add_argument("--hidden", type=arg_positive_int, default=64,
                                                  help="size of the code"),
)

if __name__ == "__main__":
    sys.exit(run_demo(SPEC))
