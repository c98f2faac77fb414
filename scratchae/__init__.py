"""scratchae: autoencoders written from scratch in NumPy, with an optional CuPy backend.

Modules
-------
backend    the NumPy/CuPy switch (``set_backend``, ``get_array_module``)
layers     Dense, Conv2D, MaxPool2D, Upsample2D, ReLU, Sigmoid, Flatten, Reshape
losses     SigmoidCrossEntropy
optim      Adam, SGD
models     Sequential, dense_autoencoder, conv_denoiser
gradcheck  numerical gradient checks for any layer or model
"""

__version__ = "0.1.0"
