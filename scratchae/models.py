"""Models: a ``Sequential`` container and the tutorial's autoencoders."""

import numpy as np

from . import checkpoint
from .layers import Conv2D, ConvTranspose2D, Dense, Flatten, MaxPool2D, ReLU, Reshape, Upsample2D
from .summary import summarize
from .validate import float_dtype, nonfinite_summary

MNIST_SHAPE = (1, 28, 28)  # one MNIST image, (C, H, W): what the model builders expect


def check_dout(name, output_shape, dout):
    """Raise unless a model's ``backward`` may run: ``forward`` came first and ``dout`` fits.

    Parameters
    ----------
    name : str
        The model's name, for the message.
    output_shape : tuple of int or None
        The last forward output's shape (None: no forward yet).
    dout : ndarray

    Raises
    ------
    RuntimeError
        Before any ``forward``.
    ValueError
        If ``dout`` does not have the forward output's shape.
    """
    if output_shape is None:
        raise RuntimeError(f"{name}: backward() called before forward()")
    if not hasattr(dout, "shape") or tuple(dout.shape) != tuple(output_shape):
        got = tuple(dout.shape) if hasattr(dout, "shape") else type(dout).__name__
        raise ValueError(f"{name}: backward expected dout of shape "
                         f"{tuple(output_shape)} (the forward output's), got {got}")


def parameter_uses(named_layers):
    """Group the parameters of named layers by array: ``{key: [(layer, name), ...]}``.

    Parameters
    ----------
    named_layers : iterable of (str, layer)
        The prefix of each layer's keys (its index) and the layer.

    Returns
    -------
    dict of str to list of (layer, str)
        Keyed ``"<prefix>.<name>"`` by the first use of each array; an array
        used by several layers (tied weights) has all its uses in one list.
    """
    uses, key_of = {}, {}
    for prefix, layer in named_layers:
        for name, array in layer.params.items():
            key = key_of.setdefault(id(array), f"{prefix}.{name}")
            uses.setdefault(key, []).append((layer, name))
    return uses


def sum_gradients(grads):
    """The sum of an array's gradients over its uses (the first one itself if it is alone)."""
    grads = iter(grads)
    total = next(grads)
    for g in grads:
        total = total + g  # dL/dW = sum over the uses of W (chain rule)
    return total


class Sequential:
    """Layers applied one after another; backward runs them in reverse.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple of int, optional
        The shape of one sample, e.g. ``(1, 28, 28)``. When given,
        ``forward`` checks every batch against it and names the model in
        the error, before any layer runs. Without it, the layers check what
        they can (a convolution accepts any image size).
    name : str, optional
        Names the model in error messages (default ``"Sequential"``).
    check_finite : bool, default True
        Check that every input to ``forward`` is free of NaN and inf. That
        is a pass over the batch (and, on CuPy, a wait for the GPU), so a
        training loop that has checked its whole dataset once switches it
        off (see :class:`scratchae.train.Trainer`).

    Attributes
    ----------
    params, grads : dict of str to ndarray
        Every layer's arrays, keyed ``"<layer index>.<name>"`` (e.g. ``"0.W"``).
    """

    def __init__(self, layers, input_shape=None, *, name=None, check_finite=True):
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not (callable(getattr(layer, "forward", None))
                    and callable(getattr(layer, "backward", None))):
                raise TypeError(f"Sequential: item {i} ({layer!r}) is not a layer "
                                f"(it needs forward and backward methods)")
        if input_shape is not None:
            try:
                input_shape = tuple(int(s) for s in input_shape)
            except (TypeError, ValueError):
                raise ValueError(f"Sequential: input_shape must be a tuple of ints, "
                                 f"got {input_shape!r}") from None
            if any(s < 1 for s in input_shape):
                raise ValueError(f"Sequential: input_shape must hold positive ints, "
                                 f"got {input_shape!r}")
        self.input_shape = input_shape
        self.name = name or "Sequential"
        self.check_finite = bool(check_finite)
        self._output_shape = None  # shape of the last forward's output

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self):
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    def check_input(self, x):
        """Raise ``TypeError``/``ValueError`` unless ``x`` is a batch this model accepts.

        Checks the array type and dtype (floating point, and the parameters'
        dtype if the model has parameters: a float64 batch would silently
        make float64 activations and gradients for float32 weights), the
        shape against ``input_shape`` (if set) and, with ``check_finite``,
        that there is no NaN or inf.
        """
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(f"{self.name}: expected an array, got {type(x).__name__}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{self.name}: expected a floating-point input (e.g. float32 in "
                            f"[0, 1]), got dtype {x.dtype}")
        dtype = next((p.dtype for layer in self.layers for p in layer.params.values()), None)
        if dtype is not None and x.dtype != dtype:
            raise TypeError(f"{self.name}: got a {x.dtype} input for {dtype} parameters; "
                            f"cast it first, e.g. x.astype(np.{dtype})")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            expected = ", ".join(["N", *map(str, self.input_shape)])
            raise ValueError(f"{self.name}: expected input of shape ({expected}), "
                             f"got {tuple(x.shape)}")
        problem = nonfinite_summary(x) if self.check_finite else None
        if problem is not None:
            raise ValueError(f"{self.name}: the input holds NaN or inf ({problem})")

    def forward(self, x):
        """x : ndarray, the first layer's input shape -> the last layer's output."""
        self.check_input(x)
        for layer in self.layers:
            x = layer.forward(x)
        self._output_shape = tuple(x.shape)
        return x

    def backward(self, dout):
        """dout : ndarray, the output's shape -> dL/dx, the input's shape.

        Fills every layer's ``grads`` on the way (chain rule, last layer
        first). Raises ``RuntimeError`` before any ``forward`` and
        ``ValueError`` (changing nothing) if ``dout`` has the wrong shape.
        """
        check_dout(self.name, self._output_shape, dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def penalty(self):
        """The loss terms the layers add themselves (e.g. a sparsity penalty), 0.0 if none.

        Their gradients are already part of what ``backward`` returns.
        """
        return sum((layer.penalty() for layer in self.layers if hasattr(layer, "penalty")), 0.0)

    def output_shape(self, input_shape):
        for layer in self.layers:
            input_shape = layer.output_shape(input_shape)
        return input_shape

    def summary(self, input_shape=None):
        """Each layer's output shape, parameters, multiply-adds and activations (a table).

        See :func:`scratchae.summary.summarize`; ``input_shape`` is one
        sample's shape (default the model's ``input_shape``).
        """
        return summarize(self, input_shape)

    @property
    def params(self):
        """Every layer's parameter arrays, keyed ``"<layer index>.<name>"``.

        An array that several layers share (tied weights,
        :class:`~scratchae.layers.TiedDense`) is listed once, under the key
        of its first use: the optimizer updates it once, a checkpoint stores
        it once.
        """
        return {key: uses[0][0].params[uses[0][1]] for key, uses in self.uses().items()}

    @property
    def grads(self):
        """``dL/dparam`` from the last ``backward``, keyed like :attr:`params`.

        The loss depends on a shared array through each of its uses, so by
        the chain rule its gradient is the sum of the uses' gradients.
        """
        return {key: sum_gradients(layer.grads[name] for layer, name in uses)
                for key, uses in self.uses().items()}

    def uses(self):
        """Each parameter's key, mapped to the ``(layer, name)`` pairs that use the array.

        One pair for most parameters; a tied weight has one per layer that uses it.
        """
        return parameter_uses((str(i), layer) for i, layer in enumerate(self.layers))

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

    def save(self, path):
        """Write the weights to ``path`` (``.npz``) atomically; see :mod:`scratchae.checkpoint`."""
        checkpoint.save_weights(self, path)

    def load(self, path):
        """Load weights saved by :meth:`save` (or a training checkpoint), in place."""
        checkpoint.load_weights(self, path)


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
    dtype = float_dtype(dtype, "dense_autoencoder")
    rng = np.random.default_rng(seed)
    return Sequential([
        Flatten(),
        Dense(784, hidden, dtype=dtype, rng=rng),
        ReLU(),
        Dense(hidden, 784, dtype=dtype, rng=rng),
        Reshape(MNIST_SHAPE),
    ], input_shape=MNIST_SHAPE, name="dense_autoencoder")


def _conv_encoder(conv):
    """The tutorial's encoder, 28x28x1 -> 4x4x32, with ``conv(c_in, c_out)`` making each conv."""
    return [
        conv(1, 64), ReLU(), MaxPool2D(2),                   # 28x28x64 -> 14x14x64
        conv(64, 64), ReLU(), MaxPool2D(2),                  # 14x14x64 -> 7x7x64
        conv(64, 32), ReLU(), MaxPool2D(2, padding="same"),  # 7x7x32 -> 4x4x32
    ]


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
    dtype = float_dtype(dtype, "conv_denoiser")
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out):
        return Conv2D(c_in, c_out, 3, padding="same", dtype=dtype, rng=rng)

    return Sequential(_conv_encoder(conv) + [
        # decoder: nearest-neighbour resize, then a 3x3 conv
        Upsample2D(size=(7, 7)), conv(32, 32), ReLU(),
        Upsample2D(size=(14, 14)), conv(32, 64), ReLU(),
        Upsample2D(size=(28, 28)), conv(64, 64), ReLU(),
        conv(64, 1),                                         # logits
    ], input_shape=MNIST_SHAPE, name="conv_denoiser")


def conv_denoiser_transposed(*, seed=0, dtype=np.float32):
    """:func:`conv_denoiser` with a decoder of transposed convolutions.

    The encoder is built exactly as in :func:`conv_denoiser` (same layers,
    same seed, hence the same initial weights). The decoder has the same
    channel counts and output sizes, but each "resize + 3x3 conv" becomes
    one learned upsampling, a 3x3 transposed convolution with stride 2:
    4x4x32 -> 7x7x32 -> 14x14x64 -> 28x28x64 (ReLU after each), then the
    same 3x3 'same' conv to 1 channel (logits).

    The kernel (3) is deliberately not a multiple of the stride (2): the
    kernel copies of neighbouring input pixels then overlap unevenly
    (depending on the parity of its row and column, an output pixel sums
    2 x 2, 2 x 1 or 1 x 1 of them), which is what paints checkerboard
    artifacts (Odena et al., Distill 2016). This model exists to show and measure them; see
    ``demos/checkerboard.py`` and :mod:`scratchae.checkerboard`.

    Sizes: ``OH = (H - 1)*2 - 2*1 + 3 + output_padding``, so 4 -> 7 with
    output_padding 0, and 7 -> 14, 14 -> 28 with output_padding 1.

    Parameters
    ----------
    seed : int
    dtype : {numpy.float32, numpy.float64}

    Returns
    -------
    Sequential
        Input (N, 1, 28, 28); output logits (N, 1, 28, 28).
    """
    dtype = float_dtype(dtype, "conv_denoiser_transposed")
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out):
        return Conv2D(c_in, c_out, 3, padding="same", dtype=dtype, rng=rng)

    def up(c_in, c_out, output_padding):
        return ConvTranspose2D(c_in, c_out, 3, stride=2, padding=1,
                               output_padding=output_padding, dtype=dtype, rng=rng)

    return Sequential(_conv_encoder(conv) + [
        # decoder: stride-2 transposed convolutions
        up(32, 32, 0), ReLU(),                               # 4x4x32 -> 7x7x32
        up(32, 64, 1), ReLU(),                               # 7x7x32 -> 14x14x64
        up(64, 64, 1), ReLU(),                               # 14x14x64 -> 28x28x64
        conv(64, 1),                                         # logits
    ], input_shape=MNIST_SHAPE, name="conv_denoiser_transposed")
