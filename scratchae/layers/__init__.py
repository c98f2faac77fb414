"""The textbook layers: each a small class with ``forward`` and ``backward`` side by side.

===============  ============================  ==================================
layer            file                          what backward does
===============  ============================  ==================================
Dense            ``layers/dense.py``           ``dx = dout @ W.T``, ``dW = x.T @ dout``
Conv2D           ``layers/conv.py``            the GEMM's backward, then col2im
ConvTranspose2D  ``layers/conv_transpose.py``  im2col of dout, then GEMMs
MaxPool2D        ``layers/pool.py``            route to the argmax
Upsample2D       ``layers/upsample.py``        sum the copies
ReLU, Sigmoid    ``layers/activations.py``     multiply by the derivative
Flatten,         ``layers/shape.py``           reshape back
Reshape
GaussianSampler  ``layers/gaussian.py``        ``dmu = dz``, ``dlogvar = dz std eps / 2``
GaussianKL       ``layers/gaussian.py``        ``mu / N``, ``(exp(logvar) - 1) / 2N``
KLSparsity,      ``layers/sparsity.py``        ``dout`` plus the penalty's gradient
L1Activity
TiedDense        ``layers/tied.py``            ``dx = dout @ W``, ``dW = dout.T @ x``
                                               (W shared with an encoder Dense)
===============  ============================  ==================================

These are the specification: :mod:`scratchae.fast` computes the same
functions faster, with the same parameters.
"""

from .activations import ReLU, Sigmoid, sigmoid
from .base import Layer
from .conv import Conv2D, col2im, im2col
from .conv_transpose import ConvTranspose2D
from .dense import Dense
from .gaussian import GaussianKL, GaussianSampler
from .pool import MaxPool2D
from .shape import Flatten, Reshape
from .sparsity import KLSparsity, L1Activity, WeightDecay
from .tied import TiedDense
from .upsample import Upsample2D

__all__ = [
    "Layer", "Dense", "Conv2D", "MaxPool2D", "Upsample2D", "ReLU", "Sigmoid",
    "ConvTranspose2D", "Flatten", "Reshape", "GaussianSampler", "GaussianKL", "KLSparsity",
    "L1Activity", "WeightDecay", "TiedDense", "sigmoid", "im2col", "col2im",
]
