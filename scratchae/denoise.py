"""Denoise your own images with a trained denoiser.

    python demos/conv_denoise.py                   # train, writes out/conv_denoise.npz
    python -m scratchae.denoise my_digit.png       # -> out/denoised/
    python -m scratchae.denoise a.png b.jpg --noise-factor 0.5 --out /tmp/dn

The model was trained on MNIST: 28x28 grayscale, a light digit on a dark
background. So each image is turned into that shape first:

1. read (PNG, JPEG, anything Pillow reads) and turned into luminance in
   [0, 1], transparent pixels drawn over white;
2. inverted when its border is mostly light (``--invert auto``), so a
   dark digit on white paper becomes a light digit on black, and
   stretched so the background is 0 and the brightest pixel 1;
3. padded to a square with the background, so the aspect ratio is
   kept, and shrunk to 28x28 by box (area) averaging;
4. optionally corrupted with the tutorial's Gaussian noise (``--noise-factor``),
   to watch the model remove noise from a clean drawing.

For every input, ``--out`` gets ``NAME_denoised.png`` (the 28x28 output
itself) and ``NAME_denoised_x8.png`` (the same, 224x224, for viewing), and
one ``before_after.png`` figure shows the model's inputs above its outputs.

Pillow is used to read and resize: it is always installed with matplotlib
(a dependency of matplotlib since 3.3), so there is no fallback.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import backend, plots
from .checkpoint import ARCHITECTURE, load_npz, load_weights
from .cli import check_output_dir, run_guarded
from .fileio import atomic_write
from .models import conv_denoiser, conv_denoiser_transposed, dense_autoencoder
from .noise import gaussian
from .train import predict
from .validate import arg_positive_float

SIZE = 28  # MNIST's image size
ZOOM = 8  # NAME_denoised_x8.png is 8x larger (nearest neighbour)
MAX_FIGURE = 20  # before_after.png shows at most this many images


class ImageError(ValueError):
    """An input image cannot be read."""


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

def load_denoiser(path):
    """Build the model a checkpoint was saved from, and load its weights.

    The checkpoint's ``"__architecture__"`` string is compared with
    ``conv_denoiser()``, ``conv_denoiser_transposed()`` and
    ``dense_autoencoder(hidden=h)``, where ``h`` is read from the saved
    first Dense weight ``"1.W"``.

    Parameters
    ----------
    path : str or Path
        A ``.npz`` written by ``Sequential.save`` or by the training loop.

    Returns
    -------
    model : Sequential
    kind : str
        ``"conv"``, ``"conv (transposed)"`` or ``"dense (hidden H)"``.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, not an ``.npz``, or not a scratchae denoiser.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found "
                                f"(train one with: python demos/conv_denoise.py)")
    arrays = load_npz(path)  # ValueError if it is not a readable .npz
    saved = str(arrays.get(ARCHITECTURE, ""))
    candidates = [("conv", conv_denoiser), ("conv (transposed)", conv_denoiser_transposed)]
    w = arrays.get("1.W")
    if w is not None and w.ndim == 2:
        hidden = int(w.shape[1])
        candidates.append((f"dense (hidden {hidden})", lambda: dense_autoencoder(hidden=hidden)))
    for kind, build in candidates:
        model = build()
        if model.architecture() == saved:
            load_weights(model, path, arrays)  # the file is not read again
            return model, kind
    summary = "; ".join(saved.splitlines()) or "none saved"
    if len(summary) > 200:
        summary = summary[:200] + "..."
    raise ValueError(f"{path} is not a checkpoint of a scratchae denoiser "
                     f"(architecture: {summary})")


# --------------------------------------------------------------------------
# Images in: any size, any polarity -> 28x28, light on dark
# --------------------------------------------------------------------------

def read_luminance(path):
    """Read an image file as luminance in [0, 1].

    Colour is reduced to ITU-R 601 luma (``0.299 R + 0.587 G + 0.114 B``);
    transparent pixels are drawn over white.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ndarray of float64, shape (H, W)

    Raises
    ------
    ImageError
        If the file is missing or is not an image Pillow can read; the
        message names the file.
    """
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)  # phone photos: apply the EXIF rotation
            if img.mode.startswith("I;16"):  # 16-bit grayscale PNG
                return np.asarray(img, dtype=np.float64) / 65535.0
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
    except FileNotFoundError:
        raise ImageError(f"cannot read image {path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image {path}: not an image file Pillow can read "
                         f"(PNG, JPEG, ...)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # Pillow reports broken or truncated files with OSError or SyntaxError
        raise ImageError(f"cannot read image {path}: {error}") from None
    luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
    alpha = rgba[..., 3]
    return luma * alpha + (1.0 - alpha)


def border_median(image):
    """Median of the outermost rows and columns of a 2-D image (its background)."""
    edges = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return float(np.median(edges))


def to_mnist(image, invert="auto"):
    """Turn a luminance image into a 28x28 MNIST-like input.

    Parameters
    ----------
    image : ndarray, shape (H, W), values in [0, 1]
    invert : {"auto", "yes", "no"}
        ``"auto"`` inverts when the border is light (median above 0.5):
        MNIST digits are light on a dark background. Then the background
        (the border's median) is stretched to 0 and the brightest pixel to 1.

    Returns
    -------
    digit : ndarray of float32, shape (28, 28), values in [0, 1]
    inverted : bool
    """
    inverted = invert == "yes" or (invert == "auto" and border_median(image) > 0.5)
    if inverted:
        image = 1.0 - image
    # Levels: background -> 0, brightest pixel -> 1, as in MNIST (paper in
    # a photo is grey, not white; ink is not black).
    background, brightest = border_median(image), image.max()
    if brightest - background > 1e-3:
        image = np.clip((image - background) / (brightest - background), 0.0, 1.0)
    h, w = image.shape
    if h != w:  # pad the short side, half on each side, with the background (0 by now)
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        square = np.full((side, side), border_median(image))
        square[top:top + h, left:left + w] = image
        image = square
    if image.shape != (SIZE, SIZE):
        # BOX: every output pixel is the mean of the input area it covers
        resized = Image.fromarray(image.astype(np.float32)).resize((SIZE, SIZE),
                                                                   Image.Resampling.BOX)
        image = np.asarray(resized)
    return np.clip(image, 0.0, 1.0).astype(np.float32), inverted


# --------------------------------------------------------------------------
# Images out
# --------------------------------------------------------------------------

def save_gray_png(image, path, zoom=1):
    """Write ``image`` (H, W) in [0, 1] as an 8-bit grayscale PNG, atomically.

    ``zoom`` > 1 repeats every pixel ``zoom`` x ``zoom`` times (nearest
    neighbour), to look at a 28x28 image without blur.
    """
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    pixels = pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)
    with atomic_write(path, suffix=".png") as f:
        Image.fromarray(pixels, mode="L").save(f, format="PNG")
    return Path(path)


def output_stems(paths):
    """One output name per input: its stem, with ``_2``, ``_3``... for repeated stems."""
    stems, seen = [], {}
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m scratchae.denoise",
        description="Denoise your own images (PNG, JPEG...) with a trained scratchae "
                    "denoiser. Each image is converted to a 28x28 light-on-dark digit first.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files")
    parser.add_argument("--checkpoint", default="out/conv_denoise.npz",
                        help="a conv_denoise / dense_denoise checkpoint (.npz)")
    parser.add_argument("--out", default="out/denoised", help="directory for the results")
    parser.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                        help="make dark-on-light images light-on-dark like MNIST; "
                             "auto: when the image's border is light")
    parser.add_argument("--noise-factor", type=arg_positive_float, default=None,
                        help="first add Gaussian noise of this std (the tutorial's is 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --noise-factor's noise")
    parser.add_argument("--backend", choices=backend.BACKENDS, default="numpy",
                        help="numpy (CPU) or cupy (NVIDIA GPU)")
    return parser


def run(args):
    """Denoise ``args.inputs``; print what was done; return the written paths."""
    backend.set_backend(args.backend)
    model, kind = load_denoiser(args.checkpoint)

    digits = []
    for path in args.inputs:
        image = read_luminance(path)
        h, w = image.shape
        if (h, w) != (SIZE, SIZE):
            how = "padded to square and resized" if h != w else "resized"
            print(f"note: {path} is {w}x{h}; {how} to {SIZE}x{SIZE}", file=sys.stderr)
        digit, inverted = to_mnist(image, args.invert)
        background = border_median(image)
        why = (f"{'light' if background > 0.5 else 'dark'} background, border median "
               f"{background:.2f}" if args.invert == "auto" else f"--invert {args.invert}")
        print(f"{path}: {'inverted' if inverted else 'not inverted'} ({why})")
        digits.append(digit)
    clean = np.stack(digits)[:, None]  # (N, 1, 28, 28)
    out = check_output_dir(args.out)  # after the inputs: a bad one leaves no empty folder

    model_input = clean
    if args.noise_factor is not None:
        model_input = gaussian(clean, args.noise_factor, np.random.default_rng(args.seed))
    denoised = predict(model, model_input, batch_size=64)

    stems = output_stems(args.inputs)
    written = []
    for stem, image in zip(stems, denoised[:, 0]):
        written.append(save_gray_png(image, out / f"{stem}_denoised.png"))
        written.append(save_gray_png(image, out / f"{stem}_denoised_x{ZOOM}.png", zoom=ZOOM))

    if args.noise_factor is None:
        rows = [("input", model_input), ("denoised", denoised)]
    else:
        rows = [("clean", clean), (f"noise {args.noise_factor:g}", model_input),
                ("denoised", denoised)]
    if len(clean) > MAX_FIGURE:
        print(f"note: before_after.png shows the first {MAX_FIGURE} of {len(clean)} images",
              file=sys.stderr)
    written.append(plots.image_rows(
        [(label, images[:MAX_FIGURE]) for label, images in rows], out / "before_after.png",
        col_labels=[stem[:12] for stem in stems[:MAX_FIGURE]],
        title=f"{kind} denoiser ({Path(args.checkpoint).name})"))
    return written


def main(argv=None):
    """Entry point of ``python -m scratchae.denoise``; returns the exit code."""
    args = build_parser().parse_args(argv)

    def denoise():
        for path in run(args):
            print(f"wrote {path}")

    return run_guarded(denoise, argv=argv)  # errors: one "error: ..." line, exit code 1


if __name__ == "__main__":
    sys.exit(main())
