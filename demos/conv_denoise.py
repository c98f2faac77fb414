"""Train the tutorial's convolutional denoising autoencoder on MNIST.

    python demos/conv_denoise.py                               # the tutorial: 10 epochs
    python demos/conv_denoise.py --epochs 1 --train-size 10000  # about a minute on a CPU
    python demos/conv_denoise.py --backend cupy                # on an NVIDIA GPU

Writes to --out (default ./out): conv_denoise.png (noisy / denoised / clean
test digits 10..19), conv_denoise_loss.png (loss curves) and the
checkpoint conv_denoise.npz (resume with --resume).
"""

import sys
from pathlib import Path

from scratchae import plots
from scratchae.cli import DemoSpec, figure_digits, run_demo
from scratchae.models import conv_denoiser


def make_figures(trainer, data, args):
    out = Path(args.out)
    rows = figure_digits(data, trainer)
    return [
        plots.image_rows(rows, out / "conv_denoise.png",
                         title=f"Convolutional denoiser, {args.noise} noise {args.noise_factor}, "
                               f"{plots.epochs(trainer.epoch)}"),
        plots.loss_curves(trainer.history, out / "conv_denoise_loss.png",
                          title="Convolutional denoiser"),
    ]


SPEC = DemoSpec(
    name="conv_denoise",
    description="Train the convolutional denoising autoencoder (conv + max-pool encoder, "
                "nearest-upsample + conv decoder) on noisy MNIST digits.",
    build_model=lambda args: conv_denoiser(seed=args.seed),
    make_figures=make_figures,
    epochs=10,
    lr=1e-3,
    noise_factor=0.5,
)

if __name__ == "__main__":
    sys.exit(run_demo(SPEC))
