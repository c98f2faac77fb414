"""``compile(model)``: a textbook ``Sequential`` rewritten into fast ops.

The rewrite walks the layer list once, left to right, and at each position
applies the first rule that matches (each rule is one identity; see
``docs/fast.md`` for the derivations and the measured gains):

=============  ==================================  ====================================
rule           textbook layers                     fast op
=============  ==================================  ====================================
subpixel       Upsample2D (x2) + Conv2D 3x3        ``SubPixelConv``: four 2x2 phase
               'same' [+ ReLU]                     convolutions of the small input
window_grad    (inside ``SubPixelConv``)           its backward as one stride-2 4x4
                                                   im2col of dy
conv           Conv2D (stride 1) [+ ReLU]          ``Conv``: multiply-first when O < C,
                                                   flipped-kernel dx, im2col slices
relu_pool      ReLU + MaxPool2D (2x2, stride 2)    ``MaxPool(relu=True)``: pool first,
                                                   ReLU on 4x fewer values
maxpool        MaxPool2D (2x2, stride 2)           ``MaxPool``: four corners, channels-last
fused_relu     ... + ReLU                          bias and ReLU in place on the op's output
fused_sigmoid  Dense + Sigmoid                     the sigmoid in place on the op's
                                                   output, as 1/2 + tanh(x/2)/2
dense          Dense [+ ReLU]                      ``Dense``
upsample       Upsample2D (other sizes)            ``Upsample``, index arrays kept on
                                                   the device
reshape        Flatten, Reshape((C, H, W))         ``Flatten``, ``Reshape``
               anything else                       ``Textbook``: the layer as written
=============  ==================================  ====================================

(and, before "anything else", the rules of :mod:`scratchae.fast.strided`:
``strided_conv``, any other Conv2D [+ ReLU] -> ``StridedConv``;
``subpixel_transposed``, ConvTranspose2D 3x3 stride 2 padding 1
output_padding 1 [+ ReLU] -> ``SubPixelTransposed``, each output phase
from its own taps of the small input; ``transposed_stride1``, ConvTranspose2D
at stride 1 -> ``TransposedAsConv``, the convolution it equals (kernel
turned by 180 degrees); and ``transposed_conv``, any other
ConvTranspose2D [+ ReLU] -> ``TransposedConv``)

and two rules about the whole model: the first op with parameters skips
dL/dx (training needs no gradient for the input images; with ``conv_pool``,
a first conv and the max-pool after it become one ``ConvPool`` op that never
stores the conv's full-size output or its gradient), and on the CPU
the batch is split over workers where that pays
(:mod:`scratchae.fast.parallel`).

The compiled model computes the same function with the same parameter
arrays (tested to 1e-9 in float64, output, dx and every parameter
gradient), so an optimizer built on ``model.parameters()`` trains either,
and a checkpoint is the same whichever trained it.
"""

from .. import backend
from ..layers import (
    Conv2D,
    ConvTranspose2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Upsample2D,
)
from ..models import Sequential, check_dout, sum_gradients
from ..summary import summarize
from . import ops, strided
from .parallel import (
    MIN_WORK_PER_WORKER,
    ForkedWorkers,
    Workers,
    activations_per_sample,
    batch_slices,
    check_workers,
    fork_available,
)

#: Split batches over worker processes (True) or threads (False): see
#: :class:`~scratchae.fast.parallel.ForkedWorkers` for why processes, where they can fork.
USE_PROCESSES = fork_available()


def _keys(index, layer):
    return {name: f"{index}.{name}" for name in layer.params}


def _is_fast_pool(layer):
    return (isinstance(layer, MaxPool2D) and layer.kernel_size == (2, 2)
            and layer.stride == (2, 2))


def _is_fast_conv(layer, shape):
    """A Conv2D at stride 1 whose padding is smaller than the kernel (then dx is a convolution)."""
    if not isinstance(layer, Conv2D) or layer.stride != (1, 1):
        return False
    h, w = shape[2:] if shape is not None else layer.kernel_size
    (top, bottom), (left, right) = layer.pads(h, w)
    kh, kw = layer.kernel_size
    return max(top, bottom) < kh and max(left, right) < kw


def _doubles(upsample, shape):
    """True if this Upsample2D makes every pixel a 2x2 block (nearest, scale 2)."""
    if upsample.scale_factor is not None:
        return upsample.scale_factor == (2, 2)
    return shape is not None and upsample.size == (2 * shape[2], 2 * shape[3])


def _pools_whole(built, first, shapes, layers):
    """True if op ``first`` (a model's first op with weights, no dx) is a ``Conv`` and
    the next op a ``MaxPool`` that needs no padding of the conv's output."""
    if first + 1 >= len(built) or not isinstance(built[first], ops.Conv) \
            or not isinstance(built[first + 1], ops.MaxPool):
        return False
    pool = built[first + 1].layers[0]
    if pool.padding == "valid":
        return True
    conv_shape = shapes[layers.index(built[first].layers[0]) + 1]
    return conv_shape is not None and pool.pads(*conv_shape[2:]) == ((0, 0), (0, 0))


#: The rewrite rules, by name: ``compile(model, rules=...)`` can leave some out
#: (to measure what each one gains, ``benchmarks/throughput.py --without``).
RULES = ("subpixel", "window_grad", "conv", "maxpool", "relu_pool", "fused_relu", "dense",
         "upsample", "reshape", "conv_pool", "fused_sigmoid", "strided_conv", "transposed_conv",
         "subpixel_transposed", "transposed_stride1")


def _rewrite(layers, i, shape, rules):
    """The op for the layers starting at ``layers[i]``, and how many layers it replaces."""
    layer = layers[i]
    after = layers[i + 1:i + 3] + [None, None]
    fuse = "fused_relu" in rules
    relu_next = fuse and isinstance(after[0], ReLU)
    pool_next = {"maxpool", "relu_pool"} <= rules and _is_fast_pool(after[1])
    if ("subpixel" in rules and isinstance(layer, Upsample2D) and isinstance(after[0], Conv2D)
            and _doubles(layer, shape) and after[0].kernel_size == (3, 3)
            and after[0].stride == (1, 1) and after[0].pads(3, 3) == ((1, 1), (1, 1))):
        relu = fuse and isinstance(after[1], ReLU)
        return ops.SubPixelConv(layer, after[0], _keys(i + 1, after[0]), relu=relu,
                                window="window_grad" in rules), 2 + relu
    if "conv" in rules and _is_fast_conv(layer, shape):
        # a ReLU followed by a max-pool is left to the pool (it is cheaper there)
        relu = relu_next and not pool_next
        return ops.Conv(layer, _keys(i, layer), relu=relu), 1 + relu
    if "strided_conv" in rules and isinstance(layer, Conv2D):  # any other Conv2D (fast/strided.py)
        relu = relu_next and not pool_next
        return strided.StridedConv(layer, _keys(i, layer), relu=relu,
                                   phase_dx="subpixel_transposed" in rules), 1 + relu
    if ("subpixel_transposed" in rules and isinstance(layer, ConvTranspose2D)
            and strided.is_subpixel_transposed(layer)):
        return (strided.SubPixelTransposed(layer, _keys(i, layer), relu=relu_next),
                1 + relu_next)
    if ("transposed_stride1" in rules and isinstance(layer, ConvTranspose2D)
            and strided.is_stride1_transposed(layer)):
        return (strided.TransposedAsConv(layer, _keys(i, layer), relu=relu_next),
                1 + relu_next)
    if "transposed_conv" in rules and isinstance(layer, ConvTranspose2D):
        return strided.TransposedConv(layer, _keys(i, layer), relu=relu_next), 1 + relu_next
    if {"maxpool", "relu_pool"} <= rules and isinstance(layer, ReLU) and _is_fast_pool(after[0]):
        return ops.MaxPool(after[0], relu=True), 2  # pool first, then ReLU on 4x fewer values
    if "maxpool" in rules and _is_fast_pool(layer):
        return ops.MaxPool(layer), 1
    if "dense" in rules and isinstance(layer, Dense):
        sigmoid_next = "fused_sigmoid" in rules and isinstance(after[0], Sigmoid)
        return (ops.Dense(layer, _keys(i, layer), relu=relu_next, sigmoid=sigmoid_next),
                1 + relu_next + sigmoid_next)
    if "upsample" in rules and isinstance(layer, Upsample2D):
        return ops.Upsample(layer), 1
    if "reshape" in rules and isinstance(layer, Flatten) and shape is not None and len(shape) == 4:
        return ops.Flatten(layer), 1
    if "reshape" in rules and isinstance(layer, Reshape) and len(layer.shape) == 3:
        return ops.Reshape(layer), 1
    return ops.Textbook(layer, _keys(i, layer)), 1


def compile(model, *, input_grad=False, workers=None, rules=RULES):  # noqa: A001 (torch.compile)
    """A fast model that computes the same function as ``model``, with the same parameters.

    Parameters
    ----------
    model : Sequential
        Built from textbook layers. A model made of several (a VAE) is
        compiled part by part through its ``compiled`` method; any other
        model (e.g. a subclass that adds its own penalty) is returned unchanged.
    input_grad : bool, default False
        Whether ``backward`` returns dL/dinput. Training does not need it,
        and the first layer's dx is then skipped.
    workers : int, optional
        Workers that share each batch (NumPy only; processes on Linux, threads
        elsewhere); None: one per core.
    rules : sequence of str, optional
        The rewrite rules to apply (default all of :data:`RULES`); layers no
        rule takes run as written, inside a ``Textbook`` op.

    Returns
    -------
    FastSequential
    """
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ValueError(f"fast.compile: unknown rules {unknown}; expected some of {RULES}")
    if hasattr(model, "compiled"):
        return model.compiled(lambda part, input_grad: compile(part, input_grad=input_grad,
                                                               workers=workers, rules=rules))
    if type(model) is not Sequential or any(hasattr(layer, "penalty") for layer in model.layers):
        # a model that adds its own terms to the loss (a sparsity penalty couples the
        # samples of a batch through its mean) runs as written, on one thread
        return model
    layers, built, i = model.layers, [], 0
    shapes = [None] * (len(layers) + 1)
    if model.input_shape is not None:
        shapes[0] = (1, *model.input_shape)
        for k, layer in enumerate(layers):
            shapes[k + 1] = layer.output_shape(shapes[k])
    while i < len(layers):
        op, used = _rewrite(layers, i, shapes[i], set(rules))
        built.append(op)
        i += used
    first = next((i for i, op in enumerate(built) if op.params), None)
    if first is not None and not input_grad:
        built[first].input_grad = False
        if "conv_pool" in rules and _pools_whole(built, first, shapes, layers):
            built[first:first + 2] = [ops.ConvPool(built[first], built[first + 1])]
    return FastSequential(model, built, input_grad, check_workers(workers, "fast.compile"))


class FastSequential:
    """A compiled :class:`~scratchae.models.Sequential`: same parameters, same function.

    ``forward`` and ``backward`` take and return NCHW arrays like the
    textbook model; inside, every op works channels-last. ``params``,
    ``parameters()`` and ``architecture()`` are the textbook model's, and
    ``gradients()`` comes in the same order, so the optimizer, the
    checkpoints and the training loop cannot tell the two apart.

    Attributes
    ----------
    source : Sequential
        The textbook model.
    ops : list of Op
    workers : int
        At most this many threads share a batch.
    """

    def __init__(self, source, ops_list, input_grad, workers):
        self.source = source
        self.ops = ops_list
        self.input_grad = input_grad
        self.workers = workers
        self._pool = None
        if workers > 1:
            self._pool = (ForkedWorkers(workers, ops_list, _step, source.parameters())
                          if USE_PROCESSES else Workers(workers, ops_list, _step))
        self._slices = None
        self._output_shape = None
        self._split = {}  # batch shape -> workers_for
        #: None, or a function of the batch size N that decides the split instead
        #: (:meth:`workers_for`): how parts of one model agree (``VAE.compiled``)
        self.split_with = None
        # where each of the model's parameters gets its gradient, in order: the (op, name)
        # pairs that use its array (two for a tied weight, whose gradients add up)
        self._grad_order = [(key, [(op, name) for op in ops_list
                                   for name, array in op.params.items() if array is param])
                            for key, param in source.params.items()]

    def __repr__(self):
        inner = "".join(f"\n  {op!r}" for op in self.ops)
        return f"FastSequential({inner}\n)"

    # -- what the textbook model provides -----------------------------------
    name = property(lambda self: self.source.name)
    layers = property(lambda self: self.source.layers)
    input_shape = property(lambda self: self.source.input_shape)
    params = property(lambda self: self.source.params)
    dtype = property(lambda self: self.source.dtype)

    @property
    def check_finite(self):
        return self.source.check_finite

    @check_finite.setter
    def check_finite(self, value):
        self.source.check_finite = value

    def check_input(self, x):
        self.source.check_input(x)

    def architecture(self):
        return self.source.architecture()

    def output_shape(self, input_shape):
        return self.source.output_shape(input_shape)

    def summary(self, input_shape=None):
        """The textbook model's summary, with the fast rule computing each layer."""
        return summarize(self, input_shape)

    def parameters(self):
        return self.source.parameters()

    def penalty(self):
        return 0.0

    @property
    def grads(self):
        return {key: sum_gradients(op.grads[name] for op, name in uses)
                for key, uses in self._grad_order}

    def gradients(self):
        return [sum_gradients(op.grads[name] for op, name in uses) for _, uses in self._grad_order]

    # -- the batch split ------------------------------------------------------
    def workers_for(self, batch_shape):
        """How many threads a batch of ``batch_shape`` (N, ...) is split over.

        At most ``workers``, and only as many as have ``MIN_WORK_PER_WORKER``
        layer outputs each to compute: a thread costs ~0.1 ms per step, and
        a small model's step is mostly BLAS calls, which use every core anyway.
        When ``split_with`` is set, it decides instead (at most ``workers``).
        """
        if self.split_with is not None:
            return max(1, min(self.workers, batch_shape[0], self.split_with(batch_shape[0])))
        return self.own_split(batch_shape)

    def own_split(self, batch_shape):
        """The split :meth:`workers_for` makes from this model's own work, ``split_with`` aside."""
        if self.workers == 1:
            return 1
        if batch_shape not in self._split:
            work = batch_shape[0] * activations_per_sample(self.source, batch_shape[1:])
            self._split[batch_shape] = max(1, min(self.workers, batch_shape[0],
                                                  work // MIN_WORK_PER_WORKER))
        return self._split[batch_shape]

    # -- forward and backward -------------------------------------------------
    def forward(self, x):
        """x : ndarray, (N, C, H, W) or (N, D) -> the output, in the textbook model's layout."""
        self.check_input(x)
        xp = backend.get_array_module(x)
        h = xp.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x
        parts = self.workers_for(tuple(x.shape))
        if parts == 1:
            self._slices = None
            y = _run_forward(self.ops, h)
        else:
            self._slices = batch_slices(len(x), parts)
            y = xp.concatenate(self._pool.run("forward", [h[s] for s in self._slices]))
        self._output_shape = (y.shape[0], y.shape[3], y.shape[1], y.shape[2]) if y.ndim == 4 \
            else tuple(y.shape)
        return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y

    def infer(self, x):
        """The output for inference (evaluation, prediction): the same function as
        :meth:`forward`, but no op keeps anything for a backward pass, so each
        activation is freed as soon as the next op has read it (a smaller peak,
        hence larger batches), and the max-pools skip recording their winners.

        x : ndarray, (N, C, H, W) or (N, D) -> the output, in the textbook model's layout.
        A following :meth:`backward` raises: call :meth:`forward` to train.
        """
        self.check_input(x)
        xp = backend.get_array_module(x)
        h = xp.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x
        self._slices = self._output_shape = None
        parts = self.workers_for(tuple(x.shape))
        if parts == 1:
            y = _run_infer(self.ops, h)
        else:
            y = xp.concatenate(self._pool.run("infer", [h[s] for s in batch_slices(len(x), parts)]))
        return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y

    def backward(self, dout):
        """dout : the output's shape -> dL/dx (the input's shape), or None without ``input_grad``.

        Fills ``grads`` (and so ``gradients()``) for every parameter.
        """
        check_dout(self.name, self._output_shape, dout)
        xp = backend.get_array_module(dout)
        d = xp.ascontiguousarray(dout.transpose(0, 2, 3, 1)) if dout.ndim == 4 else dout
        if self._slices is None:
            dx = _run_backward(self.ops, d, self.input_grad)
        else:
            dxs = self._pool.run("backward", [d[s] for s in self._slices], self.input_grad)
            for k, op in enumerate(self.ops):  # L sums over samples: add the slices' gradients
                # (at least two slices, so the sum is a new array, not a worker's shared view)
                op.grads = {name: sum_gradients(self._pool.gradients(k, name))
                            for name in op.params}
            dx = xp.concatenate(dxs) if self.input_grad else None
        if dx is not None and dx.ndim == 4:
            return dx.transpose(0, 3, 1, 2)
        return dx


def _step(ops_list, kind, piece, input_grad):
    """One pass of a worker: "forward", "infer" or "backward" of ``piece`` through ``ops_list``."""
    if kind == "forward":
        return _run_forward(ops_list, piece)
    if kind == "infer":
        return _run_infer(ops_list, piece)
    return _run_backward(ops_list, piece, input_grad)


def _run_forward(ops_list, h):
    for op in ops_list:
        h = op.forward(h)
    return h


def _run_infer(ops_list, h):
    for op in ops_list:
        h = op.infer(h)
    return h


def _run_backward(ops_list, d, input_grad):
    """Backward through the ops, last first; stops after the first op with parameters
    when no input gradient is wanted (nothing before it has gradients to compute)."""
    first = next((i for i, op in enumerate(ops_list) if op.params), 0)
    for i in range(len(ops_list) - 1, -1, -1):
        if not input_grad and i == first:
            ops_list[i].backward(d)
            return None
        d = ops_list[i].backward(d)
    return d
