"""scratchae: autoencoders written from scratch in NumPy, with an optional CuPy backend.

Modules
-------
layers      the textbook layers, each with its backward: Dense, Conv2D, ConvTranspose2D,
            MaxPool2D, Upsample2D, ReLU, Sigmoid, Flatten, Reshape, GaussianSampler,
            GaussianKL, KLSparsity, L1Activity
losses      SigmoidCrossEntropy (mean over pixels), BernoulliNLL (summed per image)
optim       Adam, SGD
models      Sequential, dense_autoencoder, conv_denoiser, conv_denoiser_transposed
vae         VAE, vae (PyTorch's example model), its trainer and test metrics
sparse      the sparse autoencoder of UFLDL: sparse_autoencoder
fast        compile(model): the same models, computed faster (the fast path)
train       Trainer: the four-line step, evaluation, checkpoints, Ctrl-C
checkpoint  weights and training state in one .npz
gradcheck   numerical gradient checks for any layer or model (also a CLI)
backend     the NumPy/CuPy switch (set_backend, get_array_module)
validate    the argument checks every module shares
"""

__version__ = "0.1.0"
