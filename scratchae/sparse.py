"""The sparse autoencoder of Stanford's UFLDL tutorial: a model that adds its own penalties.

::

    784 pixels -> Dense -> 196 sigmoid units -> KLSparsity -> Dense -> 784 logits
                  W1 (784, 196)                (identity)      W2 (196, 784)

trained on ``SigmoidCrossEntropy(logits, x) + model.penalty()``, where the
penalty is the KL sparsity of the hidden units plus L2 weight decay on
``W1`` and ``W2``. Its learned encoder weights, each column of ``W1`` drawn
as a 28x28 image, look like pen strokes (see
:func:`scratchae.plots.filter_grid`); without the sparsity they are
blurry and global.

The penalties' math is in :mod:`scratchae.layers.sparsity`; this module
puts it in a model (:class:`SparseAutoencoder`) that a training loop can
use like any other: the loop adds ``model.penalty()`` to the loss, and
``model.backward`` already includes the penalties' gradients.
"""

import numpy as np

from . import backend
from .layers import Dense, Flatten, Reshape, Sigmoid
from .layers.sparsity import KLSparsity, WeightDecay
from .models import MNIST_SHAPE, Sequential
from .train import Trainer
from .validate import float_dtype, non_negative_float, positive_int, probability

PIXELS = 28 * 28  # values per MNIST image, over which the loss averages


class SparseAutoencoder(Sequential):
    """A :class:`~scratchae.models.Sequential` that adds its own penalties to the loss.

    Two kinds of penalty, both added by the model itself so that the
    training loop needs nothing special (``loss = loss_fn.forward(logits,
    x) + model.penalty()``, then ``model.backward(loss_fn.backward())``):

    * **activity penalties**: every layer with a ``penalty()`` method
      (:class:`~scratchae.layers.sparsity.KLSparsity`,
      :class:`~scratchae.layers.sparsity.L1Activity`). They are identity
      layers whose ``backward`` adds their gradient, so the chain rule
      needs no help;
    * **weight decay**, ``(lam/2) sum W^2`` over every parameter named
      ``"W"`` (the weight matrices of Dense and Conv2D layers, never the
      biases): :meth:`backward` adds ``lam * W`` to each ``dL/dW``.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple of int, optional
        See :class:`~scratchae.models.Sequential`.
    weight_decay : float, default 0.0
        lambda, >= 0, taken literally (see :func:`sparse_autoencoder` for
        the scale the demo uses).
    name : str, optional
        Default ``"SparseAutoencoder"``.
    check_finite : bool, default True

    Attributes
    ----------
    decay : WeightDecay
    code_index : int or None
        Index of the first activity-penalty layer: the layers before it
        compute the code (:meth:`hidden`).

    Notes
    -----
    ``architecture()`` is the layer stack (whose activity layers show their
    coefficients, e.g. ``KLSparsity(rho=0.1, beta=0.0127551)``) plus a
    last line ``WeightDecay(lam=...)``, so checkpoints of models trained
    with other penalties are refused.
    """

    def __init__(self, layers, input_shape=None, *, weight_decay=0.0, name=None,
                 check_finite=True):
        super().__init__(layers, input_shape, name=name or "SparseAutoencoder",
                         check_finite=check_finite)
        self.decay = WeightDecay(weight_decay)
        self.activity_layers = [layer for layer in self.layers
                                if callable(getattr(layer, "penalty", None))]
        # the code is the input of the first activity layer
        self.code_index = (self.layers.index(self.activity_layers[0])
                           if self.activity_layers else None)

    def __repr__(self):
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"SparseAutoencoder({inner}\n  {self.decay!r}\n)"

    def architecture(self):
        """The layer stack, then the weight decay (stored in checkpoints)."""
        return super().architecture() + "\n" + repr(self.decay)

    # -- the penalties -------------------------------------------------------
    def _decayed(self):
        """The layers whose ``"W"`` is decayed."""
        return [layer for layer in self.layers if "W" in layer.params]

    def _zero(self):
        params = self.parameters()
        xp = backend.get_array_module(params[0]) if params else backend.get_xp()
        return xp.zeros((), dtype=self.dtype)

    def penalty_parts(self):
        """The penalty's two parts, each a 0-d array (on the device, not synced).

        Returns
        -------
        dict
            ``"sparsity"``: the sum of the activity layers' penalties for
            the last forward's batch; ``"weight_decay"``:
            ``(lam/2) sum W^2`` of the current weights.

        Raises
        ------
        RuntimeError
            If an activity layer has not run ``forward`` yet.
        """
        sparsity, decay = self._zero(), self._zero()
        for layer in self.activity_layers:
            sparsity = sparsity + layer.penalty()
        if self.decay.lam:
            for layer in self._decayed():
                decay = decay + self.decay.penalty(layer.params["W"])
        return {"sparsity": sparsity, "weight_decay": decay}

    def penalty(self):
        """What the model adds to the loss for the last forward: a 0-d array.

        ``sparsity + weight_decay`` of :meth:`penalty_parts`. The training
        loop minimises ``loss_fn.forward(logits, x) + model.penalty()``;
        :meth:`backward` returns and fills the gradients of that sum.
        """
        parts = self.penalty_parts()
        return parts["sparsity"] + parts["weight_decay"]

    def backward(self, dout):
        """Backpropagate ``dL/dlogits``; fill every layer's ``grads``, penalties included.

        ``L = loss + penalty()``: the activity layers add their gradients on
        the way down (they are layers, so the chain rule carries them to the
        encoder), and then the weight decay's gradient is added to every
        ``dL/dW``.

        Parameters
        ----------
        dout : ndarray, the output's shape (N, 1, 28, 28)
            ``dloss/dlogits``, e.g. ``SigmoidCrossEntropy.backward()``. Do
            not add the penalties' gradients to it: this method does.

        Returns
        -------
        dx : ndarray, the input's shape, or None

        Raises
        ------
        RuntimeError
            If ``forward`` was never called.
        ValueError
            If ``dout`` does not have the last output's shape (no gradient
            is changed then).
        """
        dout = super().backward(dout)  # the chain rule, last layer first
        if self.decay.lam:
            for layer in self._decayed():
                W = layer.params["W"]
                # d/dW [(lam/2) sum W^2] = lam * W, added to the loss's dL/dW
                layer.grads["W"] = layer.grads["W"] + self.decay.gradient(W)
        return dout

    # -- what the figures and the demo look at ----------------------------------
    def _code_layer(self):
        """The first activity layer (its input is the code); ValueError if there is none."""
        if self.code_index is None:
            raise ValueError(f"{self.name}: has no activity-penalty layer, so no code to show")
        return self.layers[self.code_index]

    def hidden(self, x):
        """The code: the output of the layers before the first activity layer.

        Runs those layers' ``forward`` (overwriting their caches: call it
        between training steps, not between ``forward`` and ``backward``),
        but not the activity layer, so the recorded penalty is kept.

        Parameters
        ----------
        x : ndarray, shape (N, *input_shape)

        Returns
        -------
        ndarray, shape (N, H)
            For :func:`sparse_autoencoder`, the hidden sigmoid activations.
        """
        self._code_layer()  # raises if there is no code
        self.check_input(x)
        for layer in self.layers[:self.code_index]:
            x = layer.forward(x)
        return x

    def mean_activation(self):
        """Mean over units of the last forward's mean activations ``rho_hat``: a 0-d array."""
        layer = self._code_layer()
        if layer.rho_hat is None:
            raise RuntimeError(f"{self.name}: mean_activation() called before forward()")
        return layer.rho_hat.mean()

    def encoder_weights(self):
        """The weights into the code: ``W`` of the last layer with one before the code.

        Returns
        -------
        ndarray, shape (D, H)
            Column j holds the weights into hidden unit j (784 x 196 for
            :func:`sparse_autoencoder`); on the device.
        """
        self._code_layer()  # raises if there is no code
        for layer in reversed(self.layers[:self.code_index]):
            if "W" in layer.params:
                return layer.params["W"]
        raise ValueError(f"{self.name}: no weight matrix before the code")


def sparse_autoencoder(hidden=196, rho=0.1, beta=10.0, weight_decay=1e-2, *, seed=0,
                       dtype=np.float32):
    """UFLDL's sparse autoencoder for MNIST: 784 -> hidden (sigmoid) -> 784 logits.

    Layers: Flatten, Dense(784, hidden), Sigmoid, KLSparsity, Dense(hidden,
    784), Reshape to (1, 28, 28); weight decay on both weight matrices.
    The architecture and rho are those of UFLDL's MNIST exercise (196 units,
    rho = 0.1); beta and weight_decay are UFLDL's 3 and 3e-3 scaled up for
    cross-entropy (see below).

    **Units: beta and weight_decay are per image.** UFLDL's objective sums
    the reconstruction error over the 784 pixels of an image and averages
    over the N images::

        J = (1/N) sum_n sum_pixels err(x^, x) + beta sum_j KL(rho || rho_hat_j) + (lambda/2) sum W^2

    scratchae's :class:`~scratchae.losses.SigmoidCrossEntropy` averages over
    the pixels too, so it is that per-image sum divided by 784. This
    builder divides both weights by 784 before giving them to the layers::

        bce_mean + (beta sum_j KL + (lambda/2) sum W^2) / 784
            = (1/784) [ (1/N) sum_n sum_pixels bce + beta sum_j KL + (lambda/2) sum W^2 ]

    which is UFLDL's objective with cross-entropy as ``err``, divided by
    784. The factor changes nothing for Adam (it is invariant to the scale
    of the loss), the printed loss stays a per-pixel mean like every other
    model's, and ``beta``, ``weight_decay`` mean what they mean in UFLDL
    and in :class:`~scratchae.vae.BernoulliNLL`'s per-image units. The
    layers show the divided values (``KLSparsity(rho=0.1, beta=0.0127551)``).

    **Why 10 and 1e-2, not UFLDL's 3 and 3e-3.** UFLDL's ``err`` is the
    squared error of sigmoid outputs, whose gradient with respect to a
    logit is ``(p - t) p (1 - p)``; the cross-entropy's is ``(p - t)``,
    larger by ``1 / (p (1 - p)) >= 4``, and by 6-7 on average over
    MNIST's mostly black or white pixels (measured on trained models). So
    the reconstruction pulls harder against the same penalties. Measured
    on full MNIST (Adam, lr 3e-3 or 1e-3, batch 128, test-set mean of
    ``rho_hat``):

    ==============  ============================  ==========================
    beta, lambda    mean hidden activation        encoder filters
    ==============  ============================  ==========================
    3, 3e-3         0.132 after 20 epochs (1e-3)  strokes, some noisy ones
    **10, 1e-2**    0.111 after 10 and 20 epochs  short pen strokes
    20, 2e-2        0.105 after 10 epochs         longer strokes, digit parts
    30, 3e-2        0.103 after 10 epochs (1e-3)  whole-digit templates
    0, 1e-2         0.55                          blurry, global blobs
    ==============  ============================  ==========================

    With the defaults the mean activation settles at 0.11 (within 0.02 of
    rho, slightly above it as the KL is convex and the batch's rho_hat is
    noisy) and the filters look like strokes; the demo trains 10 epochs at
    lr 3e-3, batch 128 (24 s on a 2-core CPU).

    Parameters
    ----------
    hidden : int, default 196
        Hidden units (a square, e.g. 196 = 14 x 14, draws a square filter grid).
    rho : float, default 0.1
        Target mean activation of each hidden unit, in (0, 1).
    beta : float, default 10.0
        Weight of the KL sparsity, per image (see above); 0 switches it off
        (the mean activations are still recorded).
    weight_decay : float, default 1e-2
        lambda, per image (see above); 0 switches it off.
    seed : int
        Seed of the Glorot-uniform weights (biases start at 0).
    dtype : {numpy.float32, numpy.float64}

    Returns
    -------
    SparseAutoencoder
        Input (N, 1, 28, 28) in [0, 1]; output logits (N, 1, 28, 28).
    """
    owner = "sparse_autoencoder"
    dtype = float_dtype(dtype, owner)
    hidden = positive_int(hidden, "hidden", owner)
    rho = probability(rho, "rho", owner)
    beta = non_negative_float(beta, "beta", owner)
    weight_decay = non_negative_float(weight_decay, "weight_decay", owner)
    rng = np.random.default_rng(seed)
    return SparseAutoencoder([
        Flatten(),
        Dense(PIXELS, hidden, dtype=dtype, rng=rng),
        Sigmoid(),
        KLSparsity(rho, beta / PIXELS),             # identity; adds the sparsity
        Dense(hidden, PIXELS, dtype=dtype, rng=rng),
        Reshape(MNIST_SHAPE),                       # logits
    ], input_shape=MNIST_SHAPE, weight_decay=weight_decay / PIXELS, name=owner)


class SparseTrainer(Trainer):
    """:class:`~scratchae.train.Trainer` for a :class:`SparseAutoencoder`: reports the penalty.

    The training loss is the cross-entropy plus ``model.penalty()`` (the
    same four-line step). After every epoch the test set gives ``bce``,
    the ``sparsity`` penalty, the ``weight_decay`` and the
    ``mean_activation`` over units, which should end near rho; ``loss`` is
    the sum of the first three: the training loss's definition on the test
    set, so that the two curves of a loss plot are the same quantity.

    That is why the test set is measured in batches of the training size
    (``batch_size``; ``eval_batch_size`` applies to :meth:`predict` only):
    the KL sparsity is taken at a batch's mean activations, and as the KL
    is convex, a batch's is larger on average than the whole set's
    (Jensen's inequality; on the demo's trained model, 0.0251 per batch of
    128 against 0.0027 at the whole test set's means). Each batch's
    penalty is weighted by its size, like the cross-entropy, so the
    metrics do not depend on how the test set is cut into eval batches.
    """

    loss_name = "loss"
    metric_names = ("loss", "bce", "sparsity", "weight_decay", "mean_activation")

    def _evaluate(self, images, targets=None):
        model, size = self.model, self.batch_size
        code = model._code_layer()
        bce = sparsity = 0.0
        total = 0.0  # (H,) after the first batch: each unit's activations, summed
        for i in range(0, len(images), size):  # batches of the training size (docstring)
            x = backend.asarray(images[i:i + size])
            bce += float(self.loss_fn.forward(model.forward(x), x)) * len(x)
            sparsity += float(sum(layer.penalty() for layer in model.activity_layers)) * len(x)
            total = total + code.rho_hat * len(x)
        n = len(images)
        bce, sparsity = bce / n, sparsity / n
        decay = float(model.penalty_parts()["weight_decay"])
        return {"loss": bce + sparsity + decay, "bce": bce, "sparsity": sparsity,
                "weight_decay": decay, "mean_activation": float((total / n).mean())}

    def format_summary(self, metrics):
        return (f"test bce={metrics['bce']:.4f} penalty={metrics['sparsity']:.4f}"
                f"+{metrics['weight_decay']:.4f} mean_activation={metrics['mean_activation']:.3f}")
