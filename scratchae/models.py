"""Models: a ``Sequential`` container and the tutorial's two autoencoders."""

import os
import zipfile

import numpy as np

from . import backend
from .layers import (Conv2D, Dense, Flatten, MaxPool2D, ReLU, Reshape,
                     Upsample2D)
from .fileio import atomic_write
from .layers.base import check_float_dtype


class Sequential:
    """Layers applied one after another; backward runs them in reverse.

    Parameters
    ----------
    layers : list of Layer

    Attributes
    ----------
    params, grads : dict of str to ndarray
        Every layer's arrays, keyed ``"<layer index>.<name>"`` (e.g. ``"0.W"``).
    """

    def __init__(self, layers):
        self.layers = list(layers)

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self):
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    def forward(self, x):
        """x : ndarray, the first layer's input shape -> the last layer's output."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout, input_grad=True):
        """dout : ndarray, the output's shape -> dL/dx, the input's shape.

        Fills every layer's ``grads`` on the way (chain rule, last layer first).

        Parameters
        ----------
        dout : ndarray, the output's shape
        input_grad : bool, default True
            When False, stop at the first layer that has parameters and
            return None: training needs no gradient with respect to the
            input images, and skipping it saves the first layer's dx.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params), 0)
        for i in range(len(self.layers) - 1, -1, -1):
            if not input_grad and i == first:
                return self.layers[i].backward(dout, input_grad=False)
            dout = self.layers[i].backward(dout)
        return dout

    def output_shape(self, input_shape):
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape

    @property
    def params(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @property
    def grads(self):
        return {f"{i}.{k}": layer.grads[k]
                for i, layer in enumerate(self.layers) for k in layer.params}

    def parameters(self):
        """List of every parameter array (the optimizer updates these in place)."""
        return list(self.params.values())

    def gradients(self):
        """List of gradients from the last ``backward``, in ``parameters()`` order."""
        return list(self.grads.values())

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].dtype if params else np.dtype(np.float32)

    def architecture(self):
        """A string that identifies the layer stack (stored in checkpoints)."""
        return "\n".join(repr(layer) for layer in self.layers)

    def state_arrays(self):
        """Parameters as host NumPy arrays, keyed like ``params``."""
        return {k: backend.to_numpy(v) for k, v in self.params.items()}

    def load_state_arrays(self, arrays, source="checkpoint"):
        """Copy arrays (keyed like ``params``) into the parameters, in place.

        Checks every key and shape first, so a mismatch changes nothing.
        """
        params = self.params
        missing = sorted(set(params) - set(arrays))
        extra = sorted(set(arrays) - set(params))
        if missing or extra:
            raise ValueError(
                f"{source} does not match this model: missing {missing or 'nothing'}, "
                f"unexpected {extra or 'nothing'}"
            )
        for k, p in params.items():
            if tuple(arrays[k].shape) != tuple(p.shape):
                raise ValueError(
                    f"{source} does not match this model: parameter {k} has shape "
                    f"{tuple(arrays[k].shape)}, expected {tuple(p.shape)}"
                )
        for k, p in params.items():
            p[...] = backend.asarray(arrays[k], dtype=p.dtype)

    def save(self, path):
        """Write the parameters to ``path`` (``.npz``), atomically.

        The file is written next to its destination and renamed into place,
        so a crash never leaves a half-written checkpoint behind.
        """
        save_npz(path, {"__architecture__": np.array(self.architecture()), **self.state_arrays()})

    def load(self, path):
        """Load parameters saved by :meth:`save` into this model, in place.

        Raises
        ------
        ValueError
            If the file is not a readable ``.npz`` or was saved from another
            architecture.
        """
        arrays = load_npz(path)
        # A training checkpoint also stores optimizer and loop state under
        # "train/..." keys (see scratchae.train); a model needs only its weights.
        arrays = {k: v for k, v in arrays.items() if not k.startswith("train/")}
        saved = str(arrays.pop("__architecture__", ""))
        if saved and saved != self.architecture():
            raise ValueError(
                f"{path}: checkpoint is of another architecture.\n"
                f"saved:\n{saved}\nthis model:\n{self.architecture()}"
            )
        self.load_state_arrays(arrays, source=str(path))


def save_npz(path, arrays):
    """Save a dict of arrays to ``path`` atomically (temp file + ``os.replace``)."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_npz(path):
    """Read every array of an ``.npz`` file into a dict, with clear errors."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npz checkpoint ({error})") from None


def dense_autoencoder(hidden=64, *, seed=0, dtype=np.float32):
    """The tutorial's dense autoencoder: 784 -> hidden (ReLU) -> 784 logits.

    Parameters
    ----------
    hidden : int, default 64
        Size of the code.
    seed : int
        Seed of the Glorot-uniform weights.
    dtype : {numpy.float32, numpy.float64}

    Returns
    -------
    Sequential
        Input (N, 1, 28, 28) in [0, 1]; output logits (N, 1, 28, 28)
        (apply a sigmoid to get an image).
    """
    dtype = check_float_dtype(dtype, "dense_autoencoder")
    rng = np.random.default_rng(seed)
    return Sequential([
        Flatten(),
        Dense(784, hidden, dtype=dtype, rng=rng),
        ReLU(),
        Dense(hidden, 784, dtype=dtype, rng=rng),
        Reshape((1, 28, 28)),
    ])


def conv_denoiser(*, seed=0, dtype=np.float32):
    """The tutorial's convolutional denoising autoencoder.

    Encoder: 28x28x1 -> conv 64 -> pool -> 14x14x64 -> conv 64 -> pool
    -> 7x7x64 -> conv 32 -> pool ('same') -> 4x4x32. Decoder: resize to 7x7,
    conv 32; resize to 14x14, conv 64; resize to 28x28, conv 64; conv 1
    (logits). Every conv is 3x3 'same' with ReLU, except the last.
    Resize + conv is used instead of a transposed convolution, which tends
    to paint checkerboard artifacts.

    Parameters
    ----------
    seed : int
    dtype : {numpy.float32, numpy.float64}

    Returns
    -------
    Sequential
        Input (N, 1, 28, 28); output logits (N, 1, 28, 28).
    """
    dtype = check_float_dtype(dtype, "conv_denoiser")
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out):
        return Conv2D(c_in, c_out, 3, padding="same", dtype=dtype, rng=rng)

    return Sequential([
        # encoder
        conv(1, 64), ReLU(), MaxPool2D(2),                   # 28x28x64 -> 14x14x64
        conv(64, 64), ReLU(), MaxPool2D(2),                  # 14x14x64 -> 7x7x64
        conv(64, 32), ReLU(), MaxPool2D(2, padding="same"),  # 7x7x32 -> 4x4x32
        # decoder
        Upsample2D(size=(7, 7)), conv(32, 32), ReLU(),
        Upsample2D(size=(14, 14)), conv(32, 64), ReLU(),
        Upsample2D(size=(28, 28)), conv(64, 64), ReLU(),
        conv(64, 1),                                         # logits
    ])
