"""The fast path: the textbook models, computed faster, with the same parameters.

:mod:`scratchae.layers` is the specification, written to be read.
This package computes the same functions faster, each trick resting on
one identity (derived, with its measured gain, in ``docs/fast.md``)::

    from scratchae import fast
    model = conv_denoiser()                 # textbook layers
    net = fast.compile(model)               # the same parameter arrays, fast ops
    optimizer = fast.Adam(model.parameters())
    loss_fn = fast.losses.faster(SigmoidCrossEntropy())
    logits = net.forward(noisy)             # the same four lines train it
    loss = loss_fn.forward(logits, clean)
    net.backward(loss_fn.backward())
    optimizer.step(net.gradients())
    images = net.infer(test_images)         # evaluation: forward only, nothing cached

Modules
-------
model     ``compile``: the rewrite rules, and ``FastSequential``
ops       the fast ops (channels-last), one per rule
conv      stride-1 convolution: im2col slices, multiply-first, flipped-kernel dx
subpixel  nearest x2 upsample + 3x3 conv as four 2x2 phase convolutions; its
          backward as one stride-2 4x4 window of dy
convpool  a model's first conv and its max-pool, with no dx, as one op
parallel  batch slices on worker processes (threads where there is no fork)
optim     Adam in place (one fused kernel per parameter on CuPy)
losses    the sigmoid cross-entropies in fewer passes over memory
"""

from . import losses
from .model import FastSequential, compile  # noqa: A004
from .optim import Adam

__all__ = ["compile", "FastSequential", "Adam", "losses"]
