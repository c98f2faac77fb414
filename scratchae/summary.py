"""``model.summary()``: what flows through a model, layer by layer.

Keras's ``model.summary()`` and torchinfo's ``summary()`` for scratchae's
models. For one input of a given shape (default: the model's own
``input_shape``) the table gives each layer's

* **output shape** (one sample, no batch axis), from the layer's own
  ``output_shape``, the method ``forward`` checks its input with, so a
  shape the model cannot take is refused with ``forward``'s message;
* **parameters**, counted from the layer's ``params`` arrays (an array shared
  with a layer above it, a tied weight, is counted at its first use only);
* **multiply-adds** of its forward pass for one image, from the layer's own
  ``macs`` (next to its ``output_shape`` in its file: ``N*D*M`` for a
  ``Dense``, ``N*OH*OW*KH*KW*C*O`` for a ``Conv2D``; element-wise layers
  count 0). Training costs about three times as much (forward, dx, dW);
* **activations**: the bytes of its output for one image, in the model's
  dtype (what a forward pass writes; the caches ``backward`` keeps are
  of the same order);
* for a compiled model (:func:`scratchae.fast.compile`), the **fast rule**
  that computes it (``docs/fast.md``), or ``textbook`` for a layer no rule
  takes, which runs as written.

Then the totals: parameters (and their memory), multiply-adds and
activations per image.

Example
-------
>>> from scratchae.models import conv_denoiser
>>> print(conv_denoiser().summary())           # doctest: +SKIP
"""

import math
from dataclasses import dataclass

import numpy as np

#: The fast rule behind each fast op class (``scratchae/fast``), by class name.
#: A ReLU that an op applies in place is ``fused_relu`` (or ``relu_pool``
#: when a max-pool took it), a sigmoid ``fused_sigmoid``; an op not listed here
#: shows its class name.
OP_RULES = {
    "SubPixelConv": "subpixel",
    "Conv": "conv",
    "ConvPool": "conv_pool",
    "MaxPool": "maxpool",
    "Dense": "dense",
    "Upsample": "upsample",
    "Flatten": "reshape",
    "Reshape": "reshape",
    "StridedConv": "strided_conv",
    "TransposedConv": "transposed_conv",
    "SubPixelTransposed": "subpixel_transposed",
    "TransposedAsConv": "transposed_stride1",
    "Textbook": "textbook",
}


@dataclass(frozen=True)
class Row:
    """One layer of a :class:`Summary`.

    Attributes
    ----------
    name : str
        Its key in the model (``"3"``, ``"encoder.0"``) and its class, e.g. ``"3 Conv2D"``.
    layer : object
        The layer itself.
    output_shape : tuple of int
        For one sample (no batch axis).
    params : int
    macs : int
        Multiply-adds of its forward pass, per sample.
    activation_bytes : int
        Bytes of its output, per sample.
    rule : str or None
        The fast rule that computes it (compiled models only).
    """

    name: str
    layer: object
    output_shape: tuple
    params: int
    macs: int
    activation_bytes: int
    rule: str = None


class Summary:
    """The table ``model.summary()`` returns; ``print`` it, or read its numbers.

    Attributes
    ----------
    title : str
        The model's name.
    input_shape : tuple of int
        One sample's shape.
    rows : list of Row
    dtype : numpy.dtype
    notes : list of str
        Lines printed under the totals.
    """

    def __init__(self, title, input_shape, rows, dtype, notes=()):
        self.title, self.input_shape, self.rows = title, tuple(input_shape), list(rows)
        self.dtype, self.notes = np.dtype(dtype), list(notes)

    @property
    def total_params(self):
        return sum(row.params for row in self.rows)

    @property
    def total_macs(self):
        """Multiply-adds of one forward pass, per sample."""
        return sum(row.macs for row in self.rows)

    @property
    def activation_bytes(self):
        """Bytes of all layer outputs of one sample's forward pass."""
        return sum(row.activation_bytes for row in self.rows)

    @property
    def param_bytes(self):
        return self.total_params * self.dtype.itemsize

    def __repr__(self):
        return str(self)

    def __str__(self):
        compiled = any(row.rule is not None for row in self.rows)
        head = ["layer", "output shape", "parameters", "mult-adds", "activations"]
        body = [[row.name, _shape(row.output_shape), f"{row.params:,}", f"{row.macs:,}",
                 _bytes(row.activation_bytes)] + ([row.rule or ""] if compiled else [])
                for row in self.rows]
        total = ["total", "", f"{self.total_params:,}", f"{self.total_macs:,}",
                 _bytes(self.activation_bytes)] + ([""] if compiled else [])
        if compiled:
            head.append("fast rule")
        widths = [max(len(line[k]) for line in [head, total, *body]) for k in range(len(head))]

        def line(cells):  # text columns to the left, numbers to the right
            return "  ".join(c.ljust(w) if k in (0, 1, 5) else c.rjust(w)
                             for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(line(head))
        lines = [f"{self.title}: input {_shape(self.input_shape)}, {self.dtype.name}",
                 line(head), rule, *map(line, body), rule, line(total),
                 f"parameters: {self.total_params:,} ({_bytes(self.param_bytes)} "
                 f"as {self.dtype.name})",
                 f"per image: {self.total_macs:,} multiply-adds forward (about 3x that to "
                 f"train), {_bytes(self.activation_bytes)} of layer outputs",
                 *self.notes]
        return "\n".join(lines)


def _shape(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _bytes(n):
    """1,536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _check_input_shape(input_shape, default, owner):
    """``input_shape`` (or the model's own) as a tuple of positive ints."""
    if input_shape is None:
        input_shape = default
        if input_shape is None:
            raise ValueError(f"{owner}: summary() needs an input shape (the model has no "
                             f"input_shape), e.g. summary(input_shape=(1, 28, 28))")
    try:
        shape = tuple(int(s) for s in input_shape)
        if any(s < 1 or s != t for s, t in zip(shape, input_shape)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: summary's input_shape must be one sample's shape, a tuple "
                         f"of positive ints such as (1, 28, 28), got {input_shape!r}") from None
    return shape


def _fast_rules(net):
    """The fast rule computing each of a compiled model's textbook layers, in layer order."""
    owner = {id(layer): op for op in net.ops for layer in op.layers}
    first = next((op for op in net.ops if op.params), None)
    rules = []
    for i, layer in enumerate(net.layers):
        op = owner.get(id(layer))
        if op is None:  # an activation applied by the op before it (in place), or a ReLU by
            before = owner.get(id(net.layers[i - 1])) if i > 0 else None  # a max-pool after it
            rules.append("fused_relu" if getattr(before, "relu", False)
                         else "fused_sigmoid" if getattr(before, "sigmoid", False)
                         else "relu_pool")
            continue
        name = type(op).__name__
        rule = "relu_pool" if name == "MaxPool" and op.relu else OP_RULES.get(name, name)
        rules.append(rule + (" (no dx)" if op is first and not op.input_grad else ""))
    return rules


def _sequential_rows(model, input_shape, prefix=""):
    """The rows of a Sequential (or a compiled one) for one sample of ``input_shape``.

    Checks the input as ``model.forward`` would: the model's own check (on
    a stand-in array of that shape, one zero broadcast: no memory), then
    each layer's ``output_shape``. Returns the rows and the output shape.
    """
    dtype = np.dtype(model.dtype)
    model.check_input(np.broadcast_to(np.zeros((), dtype), (1, *input_shape)))
    rules = _fast_rules(model) if hasattr(model, "ops") else [None] * len(model.layers)
    rows, shape, seen = [], (1, *input_shape), set()
    for i, (layer, rule) in enumerate(zip(model.layers, rules)):
        out = tuple(layer.output_shape(shape))  # raises forward's error for a shape it refuses
        # an array two layers share (tied weights) is counted once, at its first use
        own = [p for p in layer.params.values() if id(p) not in seen]
        seen.update(id(p) for p in own)
        rows.append(Row(f"{prefix}{i} {type(layer).__name__}", layer, out[1:],
                        sum(math.prod(p.shape) for p in own),
                        int(layer.macs(shape)), math.prod(out[1:]) * dtype.itemsize, rule))
        shape = out
    return rows, shape[1:]


def summarize(model, input_shape=None):
    """The :class:`Summary` of ``model`` for one sample of ``input_shape``.

    What ``model.summary()`` returns, for a :class:`~scratchae.models.Sequential`,
    a :class:`~scratchae.sparse.SparseAutoencoder`, a :class:`~scratchae.vae.VAE`
    and a compiled model (:func:`scratchae.fast.compile`).

    Parameters
    ----------
    model : Sequential, SparseAutoencoder, VAE, FastSequential
    input_shape : tuple of int, optional
        One sample's shape, e.g. ``(1, 28, 28)``; default the model's
        ``input_shape``.

    Returns
    -------
    Summary

    Raises
    ------
    ValueError
        For a shape the model cannot take: the message ``forward`` gives
        for a batch of one such sample, which names the refusing layer.
    """
    name = getattr(model, "name", type(model).__name__)
    input_shape = _check_input_shape(input_shape, getattr(model, "input_shape", None), name)
    if hasattr(model, "encoder") and hasattr(model, "decoder"):  # a VAE
        rows, heads = _sequential_rows(model.encoder, input_shape, "encoder.")
        latent = model.check_heads((1, *heads))[1]
        sampler = model.sampler
        rows.append(Row("sampler GaussianSampler", sampler, (latent,), 0,
                        int(sampler.macs((1, latent))),
                        latent * np.dtype(model.dtype).itemsize))
        decoder_rows, _ = _sequential_rows(model.decoder, (latent,), "decoder.")
        return Summary(name, input_shape, rows + decoder_rows, model.dtype,
                       [f"mu and logvar: the encoder's {heads[0]} outputs split in two; "
                        f"z = mu + exp(0.5 logvar) * eps"])
    rows, _ = _sequential_rows(model, input_shape)
    notes = [f"penalty: {model.decay!r} on every W"] if hasattr(model, "decay") else []
    if hasattr(model, "ops"):
        notes.append(f"compiled: {len(model.ops)} fast ops for {len(model.layers)} layers, "
                     f"the batch split over up to {model.workers} thread"
                     f"{'s' * (model.workers != 1)}")
    return Summary(name, input_shape, rows, model.dtype, notes)
