"""Show and measure checkerboard artifacts: transposed conv vs. resize + conv.

    python demos/checkerboard.py                          # 2 epochs on 10000 images per model
    python demos/checkerboard.py --data-dir DIR --out /tmp/cb
    python demos/checkerboard.py --backend cupy --train-size 60000

Trains two denoisers with the same encoder, data, noise, seed and budget:

* ``upsample``: :func:`~scratchae.models.conv_denoiser`, whose decoder
  resizes (nearest neighbour) and then convolves;
* ``transposed``: :func:`~scratchae.models.conv_denoiser_transposed`,
  whose decoder is 3x3 transposed convolutions with stride 2.

Each is then scored with :func:`scratchae.checkerboard.checkerboard_score`
(the share of an image's energy at period 2) on its output for a blank
(all-zero) input, a constant 0.5 input and noisy test digits, and on its
last hidden layer (the 64 channels that the final 3x3 conv turns into the
output) for the blank input.

What to expect: the transposed decoder's hidden layers are full of
checkerboards at any stage of training, but a trained final conv learns to
filter most of the period-2 pattern out of the output, so the output's
score stays small. What it cannot filter is the checkerboard of the first
transposed conv (4x4 -> 7x7), which the two later 2x upsamplings magnify
into a lattice of period 8 pixels: plainly visible in the outputs for
constant inputs, though not at period 2.

Writes to --out (default ./out): checkerboard.png (both models' outputs
on noisy test digits 10..19, zoomed crops, and, for constant inputs, the
outputs and the most active hidden channel, contrast-stretched) and the
checkpoints checkerboard_upsample.npz and checkerboard_transposed.npz
(resume with --resume). Ends with a table and the line
``checkerboard hidden transposed=<s> upsample=<s>  output(0.5) transposed=<s> upsample=<s>``:
the two measurements where the artifact shows as a number, the last hidden
layer on the blank input and the output on a constant 0.5 input.
"""

import sys
from pathlib import Path

import numpy as np

from scratchae import backend, plots
from scratchae.checkerboard import checkerboard_score, checkerboard_scores
from scratchae.cli import DemoSpec, build_parser, figure_digits, run_guarded, train_demo
from scratchae.models import conv_denoiser, conv_denoiser_transposed

LEVELS = np.round(np.linspace(0.0, 0.9, 10), 2)  # the constant inputs shown in the figure
DIGITS_SCORED = 1000  # test digits whose outputs are scored
CROP = slice(8, 20)  # the central 12 x 12 pixels, for the zoomed rows


def _spec(name, build_model, description=""):
    return DemoSpec(name=name, description=description, build_model=build_model,
                    make_figures=None, epochs=2, lr=1e-3, batch_size=128, noise_factor=0.5)


MODELS = {  # label -> how train_demo builds and names it
    "upsample": _spec("checkerboard_upsample", lambda args: conv_denoiser(seed=args.seed)),
    "transposed": _spec("checkerboard_transposed",
                        lambda args: conv_denoiser_transposed(seed=args.seed)),
}


def build_demo_parser():
    parser = build_parser(_spec(
        "checkerboard", None,
        "Train the convolutional denoiser twice, with a resize + conv decoder and with a "
        "transposed-convolution decoder, and measure their checkerboard artifacts."))
    parser.set_defaults(train_size=10000)
    return parser


def constant_outputs(trainer, value, count=1):
    """The model's (N, 1, 28, 28) outputs in [0, 1] for ``count`` images of constant ``value``."""
    return trainer.predict(np.full((count, 1, 28, 28), value, dtype=np.float32))


def stretch(images):
    """Map each image's own min..max to 0..1, so a faint pattern becomes visible."""
    lo = images.min(axis=(1, 2, 3), keepdims=True)
    span = images.max(axis=(1, 2, 3), keepdims=True) - lo
    return np.where(span > 0, (images - lo) / np.where(span > 0, span, 1), 0.5)


def last_hidden_layer(model, images):
    """The decoder's last hidden activations: the input of the final 1-channel conv.

    Parameters
    ----------
    images : ndarray, shape (N, 1, 28, 28), host NumPy

    Returns
    -------
    ndarray, shape (N, 64, 28, 28), host NumPy
    """
    h = backend.asarray(images)
    for layer in model.layers[:-1]:
        h = layer.forward(h)
    return backend.to_numpy(h)


def pooled_score(hidden):
    """Checkerboard score of (N, C, H, W) activations, pooled over the channels.

    Each channel is scored as an image and weighted by its energy (its
    variance), so the result is the share of all channels' energy at
    period 2, and dead (constant) channels do not count.
    """
    n, c, h, w = hidden.shape
    scores = checkerboard_scores(hidden.reshape(n * c, h, w)).reshape(n, c)
    energy = hidden.var(axis=(2, 3), dtype=np.float64)
    return float((scores * energy).sum() / max(energy.sum(), 1e-300))


def measure(trainer, data, metrics):
    """Scores and the figure's images for one trained model."""
    noisy = trainer.corrupt_test(data.test_images[:DIGITS_SCORED])
    levels = np.broadcast_to(LEVELS[:, None, None, None],
                             (len(LEVELS), 1, 28, 28)).astype(np.float32)
    hidden = last_hidden_layer(trainer.model, levels)  # (levels, 64, 28, 28)
    strongest = hidden.var(axis=(2, 3)).argmax(axis=1)  # the most active channel per level
    rows = dict(figure_digits(data, trainer))
    return {
        "blank": checkerboard_score(constant_outputs(trainer, 0.0)),
        "half": checkerboard_score(constant_outputs(trainer, 0.5)),
        "digits": checkerboard_score(trainer.predict(noisy)),
        "hidden": pooled_score(hidden[:1]),  # LEVELS[0] is the blank input
        "psnr": metrics["psnr_out"],
        "noisy": rows["noisy"], "denoised": rows["denoised"], "clean": rows["clean"],
        "constants": trainer.predict(levels),
        "hidden_images": hidden[np.arange(len(LEVELS)), strongest][:, None],
    }


def make_figure(results, args, epochs):
    """One PNG: digits, zoomed digits, and (stretched) outputs and hidden channels
    for constant inputs."""
    rows = [("noisy input", results["upsample"]["noisy"])]
    for name, r in results.items():
        rows.append((f"{name}\ncb={r['digits']:.3f}\n{r['psnr']:.1f} dB", r["denoised"]))
    rows.append(("clean", results["upsample"]["clean"]))
    for name, r in results.items():
        rows.append((f"{name}\ncentre, zoomed", r["denoised"][:, :, CROP, CROP]))
    for name, r in results.items():
        rows.append((f"{name}\nconstant input\ncb(0)={r['blank']:.3f}", stretch(r["constants"])))
    for name, r in results.items():
        rows.append((f"{name}\nlast hidden layer\ncb(0)={r['hidden']:.3f}",
                     stretch(r["hidden_images"])))
    return plots.image_rows(
        rows, Path(args.out) / "checkerboard.png",
        title=f"Checkerboard artifacts: resize + conv vs. transposed conv "
              f"({epochs} epochs, {args.train_size} images, noise {args.noise_factor})",
        col_labels=[f"input {v:g}" for v in LEVELS],
        footer="cb = checkerboard score: the share of an image's energy at period 2 "
               "(0 smooth, 1 pure checkerboard).\nLast four rows, for constant inputs: "
               "the output, and the most active channel of the layer before the final conv;\n"
               "each image stretched from its own min (black) to max (white).",
    )


def format_table(results):
    lines = [
        "checkerboard score (share of energy at period 2) of the output for a blank input,",
        "a constant 0.5 input and noisy test digits, and of the last hidden layer",
        "(the input of the final conv, pooled over its channels) for the blank input:",
        (f"{'model':<12} {'cb blank':>9} {'cb 0.5':>9} {'cb digits':>10} {'cb hidden':>10} "
         f"{'psnr_out':>10}"),
    ]
    for name, r in results.items():
        lines.append(f"{name:<12} {r['blank']:>9.4f} {r['half']:>9.4f} {r['digits']:>10.4f} "
                     f"{r['hidden']:>10.4f} {r['psnr']:>8.2f}dB")
    return "\n".join(lines)


def main(argv=None):
    args = build_demo_parser().parse_args(argv)

    def run():
        results = {}
        for name, spec in MODELS.items():
            trainer, data, metrics = train_demo(spec, args)
            results[name] = measure(trainer, data, metrics)
        print(f"wrote {make_figure(results, args, trainer.epoch)}")
        print(format_table(results))
        t, u = results["transposed"], results["upsample"]
        print(f"checkerboard hidden transposed={t['hidden']:.4f} upsample={u['hidden']:.4f}  "
              f"output(0.5) transposed={t['half']:.4f} upsample={u['half']:.4f}")

    return run_guarded(run, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
