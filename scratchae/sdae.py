"""The stacked denoising autoencoder (Vincent et al., JMLR 2010): pretrain, stack, fine-tune.

A deep classifier 784 -> 1000 -> 1000 -> 1000 -> 10 (sigmoid hidden units,
softmax output) whose hidden layers are first trained one at a time,
without labels, as denoising autoencoders::

    layer k's autoencoder (k = 1, 2, 3), on the codes x of the layers below:
        x~ = x * mask            masking noise: each component zeroed with probability nu_k
        h  = sigmoid(x~ @ W_k + b_k)               the encoder: the classifier's own layer k
        x^ = h @ W_k.T + c_k                       a tied decoder (logits): W_k reused, transposed
        loss = sigmoid cross-entropy(x^, x)        reconstruct the *clean* x

Then the encoders are stacked, a softmax layer is put on top, and the whole
network is fine-tuned on the labels (softmax cross-entropy); the epoch with
the lowest validation error is kept, and the test set is evaluated once,
at the end. The denoising criterion makes each layer learn what is
*stable* in its input (strokes, not pixels): ``docs/sdae.md``.

Every stage trains through the one loop of :class:`scratchae.train.Trainer`:
a pretraining stage is an autoencoder trained on its inputs alone (targets =
the clean inputs), the fine-tuning a classifier trained on (images, labels)
pairs, with :class:`ClassifierTrainer` saying what is measured.

Random streams (NumPy generators on the host, as everywhere in scratchae):
the weights come from ``default_rng(seed)`` (W_1, W_2, W_3, then the softmax
layer's W, in that order); stage k (1..3: pretraining layer k, 4:
fine-tuning) shuffles with ``default_rng([seed, k, 1])`` and draws its noise
from ``default_rng([seed, k, 2])``. ``benchmarks/sdae_torch.py`` follows the
same contract, so the two see the same numbers.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backend, validate
from .layers import Dense, Flatten, Reshape, Sigmoid
from .layers.tied import TiedDense
from .losses import SoftmaxCrossEntropy
from .models import MNIST_SHAPE, Sequential
from .noise import make_noise
from .train import Trainer, best_path, cosine_schedule, predict

FINETUNE_STAGE = 4  # the stage number of the fine-tuning's random streams (after 3 layers)


class StackedDenoisingAutoencoder:
    """The classifier, and one tied denoising autoencoder per hidden layer, sharing weights.

    Parameters
    ----------
    hidden : sequence of int, default (1000, 1000, 1000)
        The hidden layers' sizes.
    classes : int, default 10
    seed : int
        Seeds the Glorot-uniform weights (``default_rng(seed)``, the
        encoders first, in order, then the softmax layer).
    input_shape : tuple of int, default (1, 28, 28)
    dtype : {numpy.float32, numpy.float64}

    Attributes
    ----------
    encoders : list of Dense
        Layer k's ``W_k`` (D_k-1, D_k) and ``b_k``: used by the classifier
        and by autoencoder k (tied), the same arrays.
    classifier : Sequential
        Flatten, then (Dense, Sigmoid) per hidden layer, then Dense(D_last,
        classes): (N, *input_shape) images -> (N, classes) logits.
    """

    def __init__(self, hidden=(1000, 1000, 1000), classes=10, *, seed=0,
                 input_shape=MNIST_SHAPE, dtype=np.float32):
        owner = "StackedDenoisingAutoencoder"
        self.hidden = hidden_sizes(hidden, owner)
        self.classes = validate.positive_int(classes, "classes", owner)
        dtype = validate.float_dtype(dtype, owner)
        self.input_shape = tuple(input_shape)
        rng = np.random.default_rng(validate.non_negative_int(seed, "seed", owner))
        sizes = (int(np.prod(self.input_shape)),) + self.hidden
        self.encoders = [Dense(d_in, d_out, dtype=dtype, rng=rng)
                         for d_in, d_out in zip(sizes[:-1], sizes[1:])]
        self.output_layer = Dense(sizes[-1], self.classes, dtype=dtype, rng=rng)
        layers = [Flatten()]
        for encoder in self.encoders:
            layers += [encoder, Sigmoid()]
        self.classifier = Sequential(layers + [self.output_layer], self.input_shape, name="sdae")
        self._autoencoders = {}

    def __repr__(self):
        sizes = "-".join(map(str, (int(np.prod(self.input_shape)),) + self.hidden
                             + (self.classes,)))
        return f"StackedDenoisingAutoencoder({sizes})"

    @property
    def depth(self):
        """The number of hidden layers (pretraining stages)."""
        return len(self.hidden)

    def autoencoder(self, k):
        """Layer k's tied denoising autoencoder (k = 0 for the first hidden layer).

        Built once (its decoder's bias is a parameter of its own), from the
        classifier's own ``encoders[k]``: training it trains the classifier's
        layer k.

        Returns
        -------
        Sequential
            k = 0: (N, *input_shape) images -> logits of the same shape;
            k > 0: (N, D_k-1) codes -> (N, D_k-1) logits.
        """
        if not (isinstance(k, int) and 0 <= k < self.depth):
            raise ValueError(f"{self!r}: layer index must be in 0..{self.depth - 1}, got {k!r}")
        if k not in self._autoencoders:
            encoder = self.encoders[k]
            layers = [encoder, Sigmoid(), TiedDense(encoder)]
            if k == 0:  # images in, images out
                layers = [Flatten()] + layers + [Reshape(self.input_shape)]
                shape = self.input_shape
            else:
                shape = (encoder.in_features,)
            self._autoencoders[k] = Sequential(layers, shape, name=f"sdae.autoencoder{k + 1}")
        return self._autoencoders[k]

    def encoder_stack(self, k):
        """The first ``k`` hidden layers as a model: images -> layer k's codes (N, D_k)."""
        layers = [Flatten()]
        for encoder in self.encoders[:k]:
            layers += [encoder, Sigmoid()]
        return Sequential(layers, self.input_shape, name=f"sdae.encoder{k}")

    def codes(self, images, k, batch_size=1000):
        """The clean codes of the first ``k`` hidden layers for host images, host float32.

        Parameters
        ----------
        images : ndarray, shape (N, *input_shape), host NumPy
        k : int, 1..depth
        batch_size : int

        Returns
        -------
        ndarray, shape (N, D_k), values in (0, 1)
        """
        return predict(self.encoder_stack(k), images, batch_size, output=lambda h: h)


def hidden_sizes(value, owner="--hidden"):
    """A tuple of positive ints from ``(1000, 1000)`` or the text ``"1000,1000"``."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        sizes = tuple(int(p) for p in parts)
        if not sizes or any(s < 1 for s in sizes) or (
                not isinstance(value, str) and any(isinstance(p, bool) for p in parts)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: hidden layer sizes must be a list of positive integers "
                         f"such as 1000,1000,1000, got {value!r}") from None
    return sizes


def corruption_levels(value, depth, owner="--corruption"):
    """One masking-noise level per layer, each in [0, 1), from one value or one per layer.

    Parameters
    ----------
    value : float, str or sequence of float
        ``0.25`` or ``"0.25"`` (every layer), ``"0.1,0.2,0.3"`` or ``(0.1, 0.2, 0.3)``.
    depth : int
        The number of hidden layers.
    """
    parts = value.split(",") if isinstance(value, str) else (
        value if isinstance(value, (tuple, list)) else [value])
    try:
        levels = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: expected numbers in [0, 1) such as 0.1,0.2,0.3, "
                         f"got {value!r}") from None
    if len(levels) == 1:
        levels = levels * depth
    if len(levels) != depth:
        raise ValueError(f"{owner}: expected one level or one per hidden layer ({depth}), "
                         f"got {len(levels)}: {value!r}")
    bad = [v for v in levels if not 0.0 <= v < 1.0]  # False for NaN too
    if bad:
        raise ValueError(f"{owner}: each level is the probability of zeroing an input, "
                         f"in [0, 1); got {bad[0]!r}")
    return levels


class ClassifierTrainer(Trainer):
    """:class:`~scratchae.train.Trainer` for a classifier: softmax cross-entropy, error rate.

    The same four-line step on ``(images, labels)`` pairs, with
    :class:`~scratchae.losses.SoftmaxCrossEntropy` as the loss. After each
    epoch it evaluates the validation split (``fit``'s second data set:
    ``eval_split = "valid"``), keeps the parameters of the epoch with the
    lowest validation ``error`` (``monitor="error"``), and :meth:`fit` ends
    with them in the model. Input noise, if any, is training only: the
    evaluation sees the clean images.

    Parameters
    ----------
    model : Sequential
        (N, *input_shape) -> (N, K) logits.
    classes : int
        K: labels are checked to be in [0, K).
    **kwargs
        As for :class:`~scratchae.train.Trainer` (``monitor`` defaults to "error").
    """

    loss_name = "xent"
    metric_names = ("xent", "error")
    eval_split = "valid"

    def __init__(self, model, *, classes=10, monitor="error", **kwargs):
        self.classes = validate.positive_int(classes, "classes", "ClassifierTrainer")
        super().__init__(model, loss_fn=SoftmaxCrossEntropy(), monitor=monitor, **kwargs)

    def check_targets(self, inputs, targets, what):
        """Raise unless ``targets`` are integer labels (N,) in [0, classes), one per input."""
        validate.labels(targets, what, len(inputs), self.classes)

    def corrupt_test(self, clean):
        """The evaluation sees clean images (the noise is a training regularizer only)."""
        return clean

    def output(self, logits):
        """The predicted labels: the index of the largest logit, (N,)."""
        return logits.argmax(axis=1)

    def batch_metrics(self, inputs, labels, logits):
        """The batch's summed cross-entropy and number of errors."""
        sums = backend.get_array_module(logits).stack([
            self.loss_fn.forward(logits, labels) * len(labels),
            (logits.argmax(axis=1) != labels).sum().astype(logits.dtype)])
        return dict(zip(self.metric_names, backend.to_numpy(sums).tolist()))

    def format_summary(self, metrics):
        return (f"{self.eval_split} error={100 * metrics['error']:.2f}% "
                f"xent={metrics['xent']:.4f}")


# --------------------------------------------------------------------------
# The recipe: greedy pretraining, then fine-tuning, stage by stage
# --------------------------------------------------------------------------

@dataclass
class Recipe:
    """Everything that says how a stacked denoising autoencoder is trained.

    Attributes
    ----------
    hidden : tuple of int
        The hidden layers' sizes.
    corruption : tuple of float
        Masking-noise level of each layer's pretraining, in [0, 1): the
        probability of zeroing each input component. All 0: stacked
        ordinary autoencoders (the paper's SAA-3).
    pretrain : bool
        False: fine-tune from the random initial weights (no pretraining).
    pretrain_epochs, pretrain_lr : int, float
        Per layer; Adam.
    finetune_epochs, finetune_lr : int, float
        Adam, from ``finetune_lr``.
    finetune_schedule : {"cosine", "constant"}
        "cosine": the learning rate decays to 0 along half a cosine over the
        fine-tuning's steps (:func:`~scratchae.train.cosine_schedule`).
    finetune_noise : float
        Masking noise on the images during fine-tuning, in [0, 1) (0: none):
        the denoising criterion kept as a regularizer. The validation and
        test sets are never corrupted.
    batch_size : int
    """

    hidden: tuple = (1000, 1000, 1000)
    corruption: tuple = (0.1, 0.2, 0.3)
    pretrain: bool = True
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    finetune_epochs: int = 40
    finetune_lr: float = 1e-3
    finetune_schedule: str = "cosine"
    finetune_noise: float = 0.1
    batch_size: int = 128

    def __post_init__(self):
        self.hidden = hidden_sizes(self.hidden, "Recipe: hidden")
        self.corruption = corruption_levels(self.corruption, len(self.hidden),
                                            "Recipe: corruption")
        for name in ("pretrain_epochs", "finetune_epochs", "batch_size"):
            validate.positive_int(getattr(self, name), name, "Recipe")
        for name in ("pretrain_lr", "finetune_lr"):
            validate.positive_float(getattr(self, name), name, "Recipe")
        if self.finetune_schedule not in ("cosine", "constant"):
            raise ValueError(f"Recipe: finetune_schedule must be 'cosine' or 'constant', "
                             f"got {self.finetune_schedule!r}")
        self.finetune_noise = corruption_levels(self.finetune_noise, 1,
                                                "Recipe: finetune_noise")[0]


def stage_checkpoints(out, name, depth):
    """The checkpoint of each stage: ``NAME_layer1.npz`` ... ``NAME_layerK.npz``, ``NAME.npz``."""
    out = Path(out)
    return [out / f"{name}_layer{k}.npz" for k in range(1, depth + 1)] + [out / f"{name}.npz"]


def train_stacked(model, recipe, train, valid, *, seed=0, out="out", name="stacked_denoising",
                  resume=False, progress=True, log=print, workers=None, fast=True):
    """Pretrain each layer as a denoising autoencoder, then fine-tune the classifier.

    Every stage is a :class:`~scratchae.train.Trainer` (pretraining) or
    :class:`ClassifierTrainer` (fine-tuning) with a checkpoint of its own
    (:func:`stage_checkpoints`): Ctrl-C saves the stage it stopped in, and
    ``resume=True`` goes on from there (the stages done are loaded from
    their checkpoints, bit for bit as if never interrupted).

    Parameters
    ----------
    model : StackedDenoisingAutoencoder
    recipe : Recipe
    train, valid : (ndarray, ndarray)
        (images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int), host NumPy.
    seed : int
        Stage k's streams are ``default_rng([seed, k, ...])``.
    out : str or Path
        Where the checkpoints go (an existing, writable directory).
    name : str
        Their stem.
    resume : bool
        Go on from the checkpoints; False starts afresh and first removes
        this name's stage checkpoints left by an earlier run (they belong to
        other weights).
    progress, log, workers, fast
        As for :class:`~scratchae.train.Trainer`.

    Returns
    -------
    dict
        ``"trainer"``: the fine-tuning's ClassifierTrainer (its model holds
        the best epoch's parameters); ``"pretrain_seconds"``,
        ``"finetune_seconds"``: wall time spent here on each part.
    """
    paths = stage_checkpoints(out, name, model.depth)
    if resume and not any(p.exists() for p in paths):
        raise FileNotFoundError(f"--resume: no checkpoint of {name} in {out} "
                                f"(run without --resume first)")
    if not resume:
        stale = [p for p in paths + [best_path(paths[-1])] if p.exists()]
        for p in stale:
            p.unlink()
        if stale:
            log(f"starting afresh: removed {', '.join(p.name for p in stale)} of an earlier run")
    common = dict(batch_size=recipe.batch_size, progress=progress, workers=workers, fast=fast)
    start = time.perf_counter()
    if recipe.pretrain:
        inputs = train[0]
        for k in range(model.depth):
            stage = f"pretraining layer {k + 1}/{model.depth}"
            nu = recipe.corruption[k]
            trainer = Trainer(model.autoencoder(k), lr=recipe.pretrain_lr,
                              noise=make_noise("mask", nu) if nu > 0 else None,
                              seed=(seed, k + 1), checkpoint=paths[k],
                              log=lambda line, stage=stage: log(f"{stage}: {line}"), **common)
            _resume_stage(trainer, paths[k], resume, log, stage)
            if trainer.epoch < recipe.pretrain_epochs:
                log(f"{stage}: {model.autoencoder(k).layers[1 if k == 0 else 0]!r} as a tied "
                    f"denoising autoencoder, masking noise {nu:g}, {len(inputs)} inputs")
            trainer.fit(inputs, epochs=recipe.pretrain_epochs)
            if k + 1 < model.depth:  # the next layer's inputs: this layer's clean codes
                inputs = model.codes(train[0], k + 1)
    pretrain_seconds, start = time.perf_counter() - start, time.perf_counter()
    stage = "fine-tuning"
    trainer = ClassifierTrainer(model.classifier, classes=model.classes, lr=recipe.finetune_lr,
                                lr_schedule=(cosine_schedule(recipe.finetune_lr)
                                             if recipe.finetune_schedule == "cosine" else None),
                                noise=(make_noise("mask", recipe.finetune_noise)
                                       if recipe.finetune_noise > 0 else None),
                                seed=(seed, FINETUNE_STAGE), checkpoint=paths[-1],
                                log=lambda line: log(f"{stage}: {line}"), **common)
    _resume_stage(trainer, paths[-1], resume, log, stage)
    trainer.fit(train, valid, epochs=recipe.finetune_epochs)
    return {"trainer": trainer, "pretrain_seconds": pretrain_seconds,
            "finetune_seconds": time.perf_counter() - start}


def _resume_stage(trainer, path, resume, log, stage):
    """With ``resume``, load the stage's checkpoint if there is one (checked first)."""
    if resume and path.exists():
        meta = trainer.resume(path)
        log(f"{stage}: resumed from {path}: {meta['epoch']} epochs and {meta['step']} "
            f"batches done")
