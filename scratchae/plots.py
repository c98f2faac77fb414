"""Figures for the demos: digit grids, autoencoder codes and loss curves.

Every function takes host NumPy arrays (call ``to_numpy`` on CuPy arrays
first), writes one PNG and returns its path as a :class:`pathlib.Path`.

The figures are built with matplotlib's object-oriented API
(:class:`matplotlib.figure.Figure` on a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`), never with
``pyplot``: nothing needs a display, no backend is switched and no global
figure state is left behind. Each PNG is written to a temporary file next
to ``path`` and renamed into place, so a reader never sees half a file;
missing parent directories are created.

Digit images are drawn at about one inch per digit at 100 dpi.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .fileio import atomic_write

__all__ = ["image_rows", "code_grid", "loss_curves", "side_by_side", "mosaic", "digit_grid",
           "latent_scatter", "filter_mosaic", "filter_grid", "activation_histogram",
           "filter_comparison", "error_curves", "labelled_digits"]

DPI = 100
CELL = 1.0  # inches per digit image


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def epochs(count):
    """``"1 epoch"``, ``"3 epochs"``: for figure titles."""
    return f"{count} epoch" + ("" if count == 1 else "s")


def _new_figure(width, height):
    """A Figure of ``width`` x ``height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write ``fig`` as a PNG to ``path`` atomically; return ``Path(path)``."""
    with atomic_write(path, suffix=".png") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return Path(path)


def _as_images(name, images, count=None):
    """Check ``images`` is (K, 1, H, W) or (K, H, W); return float (K, H, W)."""
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"{name}: expected shape (K, 1, H, W) or (K, H, W) with K >= 1, "
                         f"got {np.shape(images)}")
    if count is not None and a.shape[0] != count:
        raise ValueError(f"{name}: expected {count} images, got {a.shape[0]} "
                         f"(shape {np.shape(images)})")
    return a.astype(np.float32, copy=False)


def _check_labels(name, labels, count):
    """Check ``labels`` is None or a sequence of ``count`` labels; return list or None."""
    if labels is None:
        return None
    labels = [str(s) for s in labels]
    if len(labels) != count:
        raise ValueError(f"{name}: expected {count} labels, got {len(labels)}")
    return labels


def _bare(ax):
    """Remove the ticks (keeping the axis labels usable)."""
    ax.set_xticks([])
    ax.set_yticks([])


def _row_label(ax, text):
    ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=11)


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------

def image_rows(rows, path, *, title=None, row_labels=None, col_labels=None, footer=None):
    """Draw rows of grayscale digits, one labelled row per entry.

    Parameters
    ----------
    rows : list of (str, ndarray) pairs, or list of ndarray
        One entry per row: ``(label, images)``, where ``images`` has shape
        (K, 1, H, W) or (K, H, W) (e.g. H = W = 28), floats in [0, 1]
        (0 = black). Every row must hold the same number K of images.
    path : str or Path
        Where to write the PNG.
    title : str, optional
        Figure title.
    row_labels : sequence of str, optional
        One label per row, drawn at its left; overrides the labels in
        ``rows`` (needed when ``rows`` holds bare arrays).
    col_labels : sequence of str, optional
        K labels, one under each column (e.g. ``"PSNR 18.2 dB"``).
    footer : str, optional
        A line of text at the bottom of the figure.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``rows`` is empty, an entry has the wrong shape, the rows differ
        in K, or a label list has the wrong length.
    """
    if len(rows) == 0:
        raise ValueError("rows: expected at least one row, got none")
    labels, grids = [], []
    for i, row in enumerate(rows):
        if isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], str):
            label, images = row
        else:
            label, images = "", row
        count = grids[0].shape[0] if grids else None
        grids.append(_as_images(f"rows[{i}]", images, count))
        labels.append(label)
    n_rows, k = len(grids), grids[0].shape[0]
    labels = _check_labels("row_labels", row_labels, n_rows) or labels
    col_labels = _check_labels("col_labels", col_labels, k)

    height = n_rows * CELL + 0.3 + 0.5 * bool(title) + 0.4 * bool(col_labels) + 0.4 * bool(footer)
    fig = _new_figure(1.3 + k * CELL, height)
    axes = fig.subplots(n_rows, k, squeeze=False)
    for r, (label, grid) in enumerate(zip(labels, grids)):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(grid[c], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            _bare(ax)
        _row_label(axes[r, 0], label)
    if col_labels:
        for ax, text in zip(axes[-1], col_labels):
            ax.set_xlabel(text, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=13)
    if footer:
        fig.supxlabel(footer, fontsize=10)
    return _save(fig, path)


def code_grid(codes, path, *, title=None, shape=(8, 8), images=None):
    """Draw each code vector as a small image, optionally under its digit.

    Parameters
    ----------
    codes : ndarray, shape (K, D)
        One code per column, e.g. the 64 bottleneck units of the dense
        autoencoder; D must equal ``shape[0] * shape[1]``. All codes share
        one colour scale (viridis), shown by a colour bar.
    path : str or Path
        Where to write the PNG.
    title : str, optional
        Figure title.
    shape : (int, int), default (8, 8)
        How each code is folded into an image (row-major).
    images : ndarray, shape (K, 1, H, W) or (K, H, W), optional
        The input digits, drawn in grayscale in a row above their codes.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``codes`` is not 2-d, D does not match ``shape``, or ``images``
        does not hold K images.
    """
    codes = np.asarray(codes, dtype=np.float32)
    rows, cols = shape
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] != rows * cols:
        raise ValueError(f"codes: expected shape (K, {rows * cols}) with K >= 1 to match "
                         f"shape={tuple(shape)}, got {codes.shape}")
    k = codes.shape[0]
    if images is not None:
        images = _as_images("images", images, k)

    finite = codes[np.isfinite(codes)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    n_rows = 1 + (images is not None)
    fig = _new_figure(1.3 + k * CELL + 0.8, n_rows * CELL + 0.4 + 0.5 * bool(title))
    axes = fig.subplots(n_rows, k, squeeze=False)
    if images is not None:
        for ax, img in zip(axes[0], images):
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            _bare(ax)
        _row_label(axes[0, 0], "digit")
    for ax, code in zip(axes[-1], codes):
        im = ax.imshow(code.reshape(rows, cols), cmap="viridis", vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        _bare(ax)
    _row_label(axes[-1, 0], f"code\n({rows}x{cols})")
    fig.colorbar(im, ax=list(axes[-1]), shrink=0.9, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=13)
    return _save(fig, path)


def loss_curves(history, path, *, title=None, ylabel="mean sigmoid cross-entropy"):
    """Plot the training and test loss per epoch.

    Parameters
    ----------
    history : dict
        ``"train_loss"`` and ``"test_loss"``: sequences of E >= 1 floats,
        one per epoch (epochs 1..E). ``test_loss`` may hold None or NaN
        for epochs without an evaluation; the test curve joins the others.
    path : str or Path
        Where to write the PNG.
    title : str, optional
        Figure title.
    ylabel : str, optional
        What the loss is.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If a key is missing, a list is empty, or the lengths differ.
    """
    curves = {}
    for key in ("train_loss", "test_loss"):
        if key not in history:
            raise ValueError(f"history: expected key {key!r}, got keys {sorted(history)}")
        values = [math.nan if v is None else float(v) for v in history[key]]
        if not values:
            raise ValueError(f"history[{key!r}]: expected at least 1 epoch, got 0")
        curves[key] = np.array(values)
    e_train, e_test = len(curves["train_loss"]), len(curves["test_loss"])
    if e_train != e_test:
        raise ValueError(f"history: expected train_loss and test_loss of the same length, "
                         f"got {e_train} and {e_test}")

    fig = _new_figure(6.4, 4.2)
    ax = fig.subplots()
    epochs = np.arange(1, e_train + 1)
    ax.plot(epochs, curves["train_loss"], marker="o", label="train")
    test = curves["test_loss"]
    evaluated = np.isfinite(test)  # join the epochs that were evaluated
    ax.plot(epochs[evaluated], test[evaluated], marker="s", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if e_train == 1:
        ax.set_xlim(0.5, 1.5)
    ax.grid(True, alpha=0.4)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def side_by_side(noisy, outputs, clean, path, *, psnr=None, title=None):
    """Compare denoisers: noisy inputs, each model's output, clean targets.

    Parameters
    ----------
    noisy : ndarray, shape (K, 1, H, W)
        The noisy inputs (first row).
    outputs : dict of str -> ndarray, shape (K, 1, H, W)
        Each model's outputs, one row per model in the dict's order
        (e.g. ``{"dense": ..., "conv": ...}``).
    clean : ndarray, shape (K, 1, H, W)
        The clean targets (last row).
    path : str or Path
        Where to write the PNG.
    psnr : dict of str -> float, optional
        Mean PSNR (dB) per model, shown in its row label, e.g. ``"conv\\n20.1 dB"``.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If an array has the wrong shape or K differs, ``outputs`` is
        empty, or ``psnr`` names a model not in ``outputs``.
    """
    if not outputs:
        raise ValueError("outputs: expected at least one model, got none")
    psnr = dict(psnr or {})
    unknown = sorted(set(psnr) - set(outputs))
    if unknown:
        raise ValueError(f"psnr: expected model names from outputs {list(outputs)}, "
                         f"got unknown {unknown}")
    noisy = _as_images("noisy", noisy)
    k = noisy.shape[0]
    rows = [("noisy", noisy)]
    for name, out in outputs.items():
        label = f"{name}\n{psnr[name]:.1f} dB" if name in psnr else str(name)
        rows.append((label, _as_images(f"outputs[{name!r}]", out, k)))
    rows.append(("clean", _as_images("clean", clean, k)))
    return image_rows(rows, path, title=title)


def grid_shape(count):
    """(rows, cols) of a grid for ``count`` tiles: square when ``count`` is a square.

    ``cols = ceil(sqrt(count))`` and ``rows = ceil(count / cols)``: 196 ->
    (14, 14), 64 -> (8, 8), 200 -> (14, 15) with 10 empty cells at the end.
    """
    cols = math.isqrt(count - 1) + 1 if count > 1 else 1  # ceil(sqrt(count))
    return -(-count // cols), cols


def mosaic(tiles, shape=None, gap=1, fill=0.0):
    """Tile K images into one, row by row, ``gap`` pixels of ``fill`` between them.

    Parameters
    ----------
    tiles : ndarray, shape (K, H, W) or (K, 1, H, W)
    shape : (int, int), optional
        (rows, cols) of the grid; default :func:`grid_shape` (K). Cells
        after the K-th are ``fill``.
    gap : int, default 1
    fill : float, default 0.0

    Returns
    -------
    ndarray of float32, shape (rows * (H + gap) + gap, cols * (W + gap) + gap)
    """
    tiles = _as_images("tiles", tiles)
    k, h, w = tiles.shape
    rows, cols = grid_shape(k) if shape is None else shape
    if rows * cols < k:
        raise ValueError(f"shape: a {rows}x{cols} grid holds {rows * cols} tiles, got {k}")
    out = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), fill, dtype=np.float32)
    for j in range(k):
        r, c = divmod(j, cols)
        out[gap + r * (h + gap):gap + r * (h + gap) + h,
            gap + c * (w + gap):gap + c * (w + gap) + w] = tiles[j]
    return out


def digit_grid(images, path, *, shape=None, title=None, xlabel=None, ylabel=None,
               xticks=None, yticks=None):
    """Draw K digits as one grid image (no space between tiles), e.g. samples of a model.

    Parameters
    ----------
    images : ndarray, shape (K, 1, H, W) or (K, H, W), floats in [0, 1]
    path : str or Path
    shape : (int, int), optional
        (rows, cols); default :func:`grid_shape` (K).
    title, xlabel, ylabel : str, optional
    xticks, yticks : sequence of str, optional
        One label per column / row, at its centre (e.g. latent coordinates).

    Returns
    -------
    Path
    """
    tiles = _as_images("images", images)
    rows, cols = grid_shape(len(tiles)) if shape is None else shape
    picture = mosaic(tiles, (rows, cols), gap=0)
    h, w = tiles.shape[1:]
    labelled = bool(xlabel or ylabel or xticks or yticks)
    side = max(5.0, min(0.45 * max(rows, cols), 10.0))
    fig = _new_figure(side + 0.9 * labelled, side * rows / cols + 0.4 + 0.5 * bool(title)
                      + 0.6 * labelled)
    ax = fig.subplots()
    ax.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    _bare(ax)
    if xticks is not None:
        ax.set_xticks(np.arange(cols) * w + w / 2 - 0.5, _check_labels("xticks", xticks, cols),
                      fontsize=7, rotation=90)
    if yticks is not None:
        ax.set_yticks(np.arange(rows) * h + h / 2 - 0.5, _check_labels("yticks", yticks, rows),
                      fontsize=7)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        fig.suptitle(textwrap.fill(title, 60), fontsize=11)
    return _save(fig, path)


def latent_scatter(codes, labels, path, *, title=None):
    """Scatter 2-D codes, coloured by digit label (a categorical colour map, a legend).

    Parameters
    ----------
    codes : ndarray, shape (K, 2)
        E.g. a VAE's ``mu`` for the test set.
    labels : ndarray of int, shape (K,)
        The digit of each code, 0..9.
    path : str or Path
    title : str, optional

    Returns
    -------
    Path
    """
    codes = np.asarray(codes, dtype=np.float32)
    labels = np.asarray(labels)
    if codes.ndim != 2 or codes.shape[1] != 2 or len(codes) == 0:
        raise ValueError(f"codes: expected shape (K, 2) with K >= 1, got {codes.shape}")
    if labels.shape != (len(codes),):
        raise ValueError(f"labels: expected shape ({len(codes)},), got {labels.shape}")
    fig = _new_figure(7.0, 6.0)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    for digit in np.unique(labels):
        at = labels == digit
        ax.scatter(codes[at, 0], codes[at, 1], s=3, alpha=0.6, color=cmap(int(digit) % 10),
                   label=str(digit), rasterized=True)
    ax.set_xlabel("$z_1$ (mu)")
    ax.set_ylabel("$z_2$ (mu)")
    ax.legend(title="digit", markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)


FILTER_CELL = 0.6  # inches per filter tile (28 pixels drawn at ~2 screen pixels each)
MARGIN = 0.4  # inches around the filter grid
TITLE_HEIGHT = 0.4  # inches added for a title


def filter_mosaic(weights, image_shape=(28, 28), gap=1):
    """Tile the columns of an encoder weight matrix into one image, each contrast-normalised.

    As UFLDL's ``display_network``: the mean of all weights is subtracted,
    then each filter is divided by its largest absolute value, so every
    tile uses the whole range [-1, 1] (-1 black, 0 grey, +1 white) however
    weak or strong the unit's weights are. Tiles are separated by ``gap``
    pixels of -1 (black); cells of the grid with no filter are black too.

    Parameters
    ----------
    weights : ndarray, shape (D, H)
        Column j holds the weights into hidden unit j, as in a ``Dense``
        layer's ``W`` (784 x 196 for the sparse autoencoder).
    image_shape : (int, int), default (28, 28)
        How each column is folded into an image (row-major); their product
        must be D.
    gap : int, default 1

    Returns
    -------
    ndarray of float32, shape (rows * (h + gap) + gap, cols * (w + gap) + gap)
        With (rows, cols) from :func:`grid_shape` (H).

    Raises
    ------
    ValueError
        If ``weights`` is not 2-D with D = h * w and H >= 1, or is not finite.
    """
    W = np.asarray(weights, dtype=np.float64)
    h, w = (int(s) for s in image_shape)
    if W.ndim != 2 or W.shape[0] != h * w or W.shape[1] == 0:
        raise ValueError(f"weights: expected shape ({h * w}, H) with H >= 1 for "
                         f"{h}x{w} filters, got {np.shape(weights)}")
    if not np.isfinite(W).all():
        raise ValueError("weights: must be finite (training diverged?)")
    W = W - W.mean()  # centre the whole set, as display_network does
    scale = np.abs(W).max(axis=0)  # (H,): each filter's largest |weight|
    W = W / np.where(scale > 0, scale, 1.0)  # each tile in [-1, 1]; an all-zero one stays 0
    return mosaic(W.T.reshape(-1, h, w), gap=gap, fill=-1.0)


def filter_grid(weights, path, *, title=None, image_shape=(28, 28)):
    """Draw every hidden unit's input weights as a small image, in one grid.

    The sparse autoencoder's 196 filters, 28x28 each, make a 14x14 grid;
    with sparsity they look like pen strokes, without it like blurry,
    global blobs. A number H of units that is not a square gives
    ``ceil(sqrt(H))`` columns and as many rows as needed, the last one
    partly empty (see :func:`grid_shape`).

    Parameters
    ----------
    weights : ndarray, shape (D, H)
        The encoder's ``W`` (host NumPy).
    path : str or Path
        Where to write the PNG.
    title : str, optional
    image_shape : (int, int), default (28, 28)

    Returns
    -------
    Path
        ``path``. The PNG is ``cols * FILTER_CELL + MARGIN`` inches wide and
        ``rows * FILTER_CELL + MARGIN (+ TITLE_HEIGHT)`` high, at 100 dpi.
    """
    picture = filter_mosaic(weights, image_shape)
    rows, cols = grid_shape(np.shape(weights)[1])
    fig = _new_figure(cols * FILTER_CELL + MARGIN,
                      rows * FILTER_CELL + MARGIN + TITLE_HEIGHT * bool(title))
    ax = fig.subplots()
    ax.imshow(picture, cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def activation_histogram(mean_activations, rho, path, *, title=None, bins=100):
    """Histogram of the hidden units' mean activations, with the target rho marked.

    With the KL sparsity every unit's mean activation sits near rho (one
    narrow spike); without it they spread over [0, 1].

    Parameters
    ----------
    mean_activations : ndarray, shape (H,)
        ``rho_hat_j``: each unit's mean activation over a data set, in [0, 1].
    rho : float
        The target, drawn as a vertical line.
    path : str or Path
    title : str, optional
    bins : int, default 100
        Bins over [0, 1] (the same axis for every model, so two figures
        compare at a glance).

    Returns
    -------
    Path
    """
    values = np.asarray(mean_activations, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"mean_activations: expected a non-empty 1-D array of finite values, "
                         f"got shape {np.shape(mean_activations)}")
    fig = _new_figure(6.4, 4.2)
    ax = fig.subplots()
    ax.hist(values, bins=bins, range=(0.0, 1.0), color="tab:blue")
    ax.axvline(rho, color="tab:red", linestyle="--", label=f"target rho = {rho:g}")
    ax.axvline(values.mean(), color="black", linestyle=":",
               label=f"mean over units = {values.mean():.3f}")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("mean activation of a hidden unit")
    ax.set_ylabel(f"hidden units (of {values.size})")
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def filter_comparison(weights, path, *, count=100, title=None, image_shape=(28, 28)):
    """Draw the first ``count`` filters of several encoders side by side, one panel each.

    For the classic denoising-autoencoder picture: a first layer pretrained
    with masking noise learns stroke detectors, one pretrained without noise
    mostly blobs or noise.

    Parameters
    ----------
    weights : dict of str to ndarray, shape (D, H)
        A panel title, mapped to an encoder's ``W`` (host NumPy).
    path : str or Path
    count : int, default 100
        The first ``count`` units (columns) of each (all of them if fewer).
    title : str, optional
    image_shape : (int, int), default (28, 28)

    Returns
    -------
    Path
    """
    if not weights:
        raise ValueError("weights: expected at least one encoder to draw, got none")
    panels = {label: np.asarray(w)[:, :count] for label, w in weights.items()}
    rows, cols = grid_shape(max(w.shape[1] for w in panels.values()))
    side = cols * FILTER_CELL * 0.7 + MARGIN
    fig = _new_figure(side * len(panels), rows * FILTER_CELL * 0.7 + MARGIN + 0.3
                      + TITLE_HEIGHT * bool(title))
    for ax, (label, w) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels.items()):
        ax.imshow(filter_mosaic(w, image_shape), cmap="gray", vmin=-1.0, vmax=1.0,
                  interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(textwrap.fill(label, 40), fontsize=11)
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def error_curves(curves, path, *, title=None, ylabel="validation error (%)"):
    """Plot error rates per epoch, one curve per run, each run's best epoch marked.

    Parameters
    ----------
    curves : dict of str to sequence of float
        A run's label, mapped to its error rate (a fraction) after each
        epoch 1..E (E may differ between runs).
    path : str or Path
    title : str, optional
    ylabel : str, optional

    Returns
    -------
    Path
    """
    if not curves:
        raise ValueError("curves: expected at least one run, got none")
    fig = _new_figure(6.4, 4.2)
    ax = fig.subplots()
    for label, values in curves.items():
        errors = 100 * np.asarray([math.nan if v is None else v for v in values], dtype=float)
        if errors.ndim != 1 or len(errors) == 0:
            raise ValueError(f"curves[{label!r}]: expected a list of error rates, got {values!r}")
        epochs_ = np.arange(1, len(errors) + 1)
        best = int(np.nanargmin(errors))
        # the best value goes in the legend: runs that end alike put their stars together
        line, = ax.plot(epochs_, errors, marker=".",
                        label=f"{label}: {errors[best]:.2f}% at epoch {epochs_[best]}")
        ax.plot(epochs_[best], errors[best], marker="*", markersize=14, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(True, alpha=0.4)
    ax.legend(title="star: the best epoch")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def labelled_digits(images, labels, path, *, title=None, cols=10):
    """Draw digits in a grid with a caption under each (e.g. ``"3 (true 5)"``).

    Parameters
    ----------
    images : ndarray, shape (K, 1, H, W) or (K, H, W), floats in [0, 1]
    labels : sequence of K str
    path : str or Path
    title : str, optional
    cols : int, default 10

    Returns
    -------
    Path
    """
    tiles = _as_images("images", images)
    captions = _check_labels("labels", labels, len(tiles))
    cols = min(cols, len(tiles))
    rows = -(-len(tiles) // cols)
    fig = _new_figure(cols * CELL * 1.1, rows * CELL * 1.3 + 0.5 * bool(title))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    for ax, tile, caption in zip(axes, tiles, captions):
        ax.imshow(tile, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
    if title:
        fig.suptitle(textwrap.fill(title, 90), fontsize=11)
    return _save(fig, path)
