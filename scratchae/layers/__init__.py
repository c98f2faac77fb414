"""Hand-written layers, each with ``forward`` and ``backward`` side by side.

============  ==========================  ==========================
layer         file                        what backward does
============  ==========================  ==========================
Dense         ``layers/dense.py``         ``dx = dout @ W.T``
Conv2D        ``layers/conv.py``          GEMMs + col2im
MaxPool2D     ``layers/pool.py``          route to the argmax
Upsample2D    ``layers/upsample.py``      sum the copies
ReLU/Sigmoid  ``layers/activations.py``   multiply by the derivative
Flatten       ``layers/shape.py``         reshape back
============  ==========================  ==========================
"""

from .activations import ReLU, Sigmoid, sigmoid
from .base import Layer
from .conv import Conv2D, col2im, im2col
from .conv_transpose import ConvTranspose2D
from .dense import Dense
from .pool import MaxPool2D
from .shape import Flatten, Reshape
from .upsample import Upsample2D

__all__ = [
    "Layer", "Dense", "Conv2D", "MaxPool2D", "Upsample2D", "ReLU", "Sigmoid",
    "ConvTranspose2D", "Flatten", "Reshape", "sigmoid", "im2col", "col2im",
]
