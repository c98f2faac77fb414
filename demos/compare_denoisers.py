"""The tutorial's comparison: a dense denoiser vs. the convolutional one.

    python demos/compare_denoisers.py                          # 3 epochs each, all of MNIST
    python demos/compare_denoisers.py --epochs 1 --train-size 10000

Both models see the same training digits, the same noise and the same
number of epochs. Writes compare_denoisers.png (noisy digits, each model's
output with its test PSNR, the clean digits) to --out, and checkpoints
compare_dense.npz / compare_conv.npz (so --resume works here too).
"""

import sys
from pathlib import Path

from scratchae import plots
from scratchae.cli import DemoSpec, build_parser, figure_digits, run_guarded, train_demo
from scratchae.models import conv_denoiser, dense_autoencoder
from scratchae.train import format_summary

DENSE = DemoSpec(name="compare_dense", description="", make_figures=None, epochs=3, lr=1e-3,
                 noise_factor=0.5,
                 build_model=lambda args: dense_autoencoder(hidden=32, seed=args.seed))
CONV = DemoSpec(name="compare_conv", description="", make_figures=None, epochs=3, lr=1e-3,
                noise_factor=0.5, build_model=lambda args: conv_denoiser(seed=args.seed))


def compare(args):
    results = {}
    for label, spec in (("dense", DENSE), ("conv", CONV)):
        print(f"--- {label} denoiser ---")
        results[label] = train_demo(spec, args)
    _, data, _ = results["conv"]
    rows = {label: dict(figure_digits(data, trainer)) for label, (trainer, _, _) in results.items()}
    path = plots.side_by_side(
        rows["conv"]["noisy"],
        {label: rows[label]["denoised"] for label in results},
        rows["conv"]["clean"],
        Path(args.out) / "compare_denoisers.png",
        psnr={label: metrics["psnr_out"] for label, (_, _, metrics) in results.items()},
        title=f"Dense vs. convolutional denoiser, {plots.epochs(args.epochs)} each, "
              f"{args.noise} noise {args.noise_factor}",
    )
    print(f"wrote {path}")
    for label, (_, _, metrics) in results.items():
        print(f"{label + ' denoiser:':16s}{format_summary(metrics)}")
    return results["conv"][2]  # the summary line printed last is the conv denoiser's


def main(argv=None):
    parser = build_parser(DemoSpec(
        name="compare_denoisers", build_model=None, make_figures=None, epochs=3, lr=1e-3,
        noise_factor=0.5,
        description="Train a dense (784-32-784) and the convolutional denoiser on the same "
                    "noisy digits and show their outputs side by side."))
    args = parser.parse_args(argv)
    return run_guarded(lambda: compare(args), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
