"""Train a dense denoising autoencoder (784 -> 32 -> 784) on noisy MNIST.

    python demos/dense_denoise.py                    # the tutorial: 30 epochs
    python demos/dense_denoise.py --epochs 3         # a quick look

Writes dense_denoise.png (noisy / denoised / clean test digits 10..19),
dense_denoise_loss.png and the checkpoint dense_denoise.npz to --out.
Compare it with the convolutional denoiser: demos/compare_denoisers.py.
"""

import sys
from pathlib import Path

from scratchae import plots
from scratchae.cli import DemoSpec, figure_digits, run_demo
from scratchae.models import dense_autoencoder
from scratchae.validate import arg_positive_int


def make_figures(trainer, data, args):
    out = Path(args.out)
    return [
        plots.image_rows(figure_digits(data, trainer), out / "dense_denoise.png",
                         title=f"Dense denoiser (hidden {args.hidden}), {args.noise} noise "
                               f"{args.noise_factor}, {plots.epochs(trainer.epoch)}"),
        plots.loss_curves(trainer.history, out / "dense_denoise_loss.png", title="Dense denoiser"),
    ]


SPEC = DemoSpec(
    name="dense_denoise",
    description="Train a dense denoising autoencoder on noisy MNIST digits.",
    build_model=lambda args: dense_autoencoder(hidden=args.hidden, seed=args.seed),
    make_figures=make_figures,
    epochs=30,
    lr=1e-3,
    noise_factor=0.5,
    extra_args=lambda parser: parser.add_argument("--hidden", type=arg_positive_int, default=32,
                                                  help="size of the code"),
)

if __name__ == "__main__":
    sys.exit(run_demo(SPEC))
