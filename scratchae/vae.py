"""A variational autoencoder (VAE), with both gradient paths written out.

The model of Kingma & Welling (2014) and of PyTorch's ``examples/vae``::

    x (N, 1, 28, 28) -> encoder -> mu, logvar (N, K)     q(z|x) = N(mu, diag(exp(logvar)))
                     -> sampler -> z = mu + exp(0.5 logvar) * eps
                     -> decoder -> logits (N, 1, 28, 28)  p(x|z) = Bernoulli(sigmoid(logits))

trained to minimise the negative ELBO, in nats per image::

    loss = BernoulliNLL(logits, x) + KL(q(z|x) || N(0, I))
           \\_ summed over pixels _/   \\_ summed over latent dims _/   both averaged over the batch

One training step, the same four lines as every scratchae model::

    logits = model.forward(x)                          # encoder, sampler, decoder
    loss = rec.forward(logits, x) + model.penalty()    # rec = BernoulliNLL(); penalty = KL
    model.backward(rec.backward())                     # adds the KL's gradient itself
    optimizer.step(model.gradients())

``docs/vae.md`` derives every gradient; the pieces live in
``scratchae/layers/gaussian.py`` (:class:`GaussianSampler`,
:class:`GaussianKL`), ``scratchae/losses.py`` (:class:`BernoulliNLL`) and
here (:class:`VAE`, :func:`vae`, :func:`evaluate`).

Random streams (all NumPy generators on the host, so both backends see the
same numbers): the weights come from ``default_rng(seed)``, the training
eps from ``default_rng([seed, 4])`` (:data:`SAMPLER_STREAM`), the test
metrics' eps from ``default_rng([seed, 3])`` (:data:`TEST_EPS_STREAM`).
:class:`scratchae.train.Trainer` shuffles with ``[seed, 1]``.
"""

import copy

import numpy as np

from . import backend, checkpoint, validate
from .layers import Conv2D, ConvTranspose2D, Dense, Flatten, ReLU, Reshape
from .layers.activations import sigmoid
from .layers.gaussian import GaussianKL, GaussianSampler
from .losses import BernoulliNLL
from .models import MNIST_SHAPE, Sequential, check_dout
from .summary import summarize
from .train import Trainer

TEST_EPS_STREAM = 3  # default_rng([seed, 3]): one eps per test image, for the test metrics
SAMPLER_STREAM = 4  # default_rng([seed, 4]): the sampler's eps during training


class VAE:
    """Encoder -> Gaussian sampler -> decoder, with the KL term built in.

    The encoder ends in one ``Dense(hidden, 2 * latent)`` whose output is
    split into ``mu`` (first ``latent`` columns) and ``logvar`` (the rest).
    That is exactly two heads ``Dense(hidden, latent)`` side by side (its
    weight matrix is ``[W_mu | W_logvar]``), and it keeps the encoder a plain
    :class:`~scratchae.models.Sequential`: backward concatenates
    ``dmu`` and ``dlogvar`` again and hands them to one ``backward``.

    Parameters
    ----------
    encoder : Sequential
        Maps the images (N, *input_shape) to (N, 2 * latent).
    decoder : Sequential
        Maps codes (N, latent) to logits of the images' shape.
    latent : int
        K, the size of z.
    sampler : GaussianSampler, optional
        Default: a sampler seeded with ``seed``.
    seed : int, optional
        Seed of the default sampler.
    beta : float, default 1.0
        Weight of the KL term (a beta-VAE for beta != 1; the ELBO is beta = 1).
    name : str, default "vae"

    Attributes
    ----------
    encoder, decoder : Sequential
    sampler : GaussianSampler
    kl_term : GaussianKL
    mu, logvar, z : ndarray, shape (N, K)
        From the last ``forward``.
    """

    def __init__(self, encoder, decoder, latent, *, sampler=None, seed=None, beta=1.0,
                 name="vae"):
        self.latent = validate.positive_int(latent, "latent", "VAE")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise ValueError(f"VAE: beta must be a number >= 0, got {beta!r}")
        for what, part in (("encoder", encoder), ("decoder", decoder)):
            if not all(callable(getattr(part, m, None)) for m in ("forward", "backward")):
                raise TypeError(f"VAE: {what} must be a model with forward and backward, "
                                f"got {part!r}")
        self.encoder, self.decoder = encoder, decoder
        self.sampler = sampler if sampler is not None else GaussianSampler(seed=seed)
        self.kl_term = GaussianKL()
        self.beta = float(beta)
        self.name = name
        self.mu = self.logvar = self.z = None
        self._kl = None
        self._logits_shape = None  # None: no forward whose caches backward may use

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self):
        return (f"VAE(latent={self.latent}, beta={self.beta:g},\n  encoder={self.encoder!r},"
                f"\n  sampler={self.sampler!r},\n  decoder={self.decoder!r}\n)")

    # -- the model interface the training loop uses ------------------------
    @property
    def input_shape(self):
        return self.encoder.input_shape

    @property
    def dtype(self):
        return self.encoder.dtype

    @property
    def check_finite(self):
        """Check every input (images, and codes given to :meth:`decode`) for NaN/inf."""
        return self.encoder.check_finite

    @check_finite.setter
    def check_finite(self, value):
        self.encoder.check_finite = self.decoder.check_finite = bool(value)

    def check_input(self, x):
        """Raise unless ``x`` is a batch of images this model accepts (the encoder's check)."""
        self.encoder.check_input(x)

    def forward(self, x):
        """Encode, sample, decode; also compute the KL term.

        Parameters
        ----------
        x : ndarray, shape (N, 1, 28, 28), values in [0, 1]

        Returns
        -------
        logits : ndarray, shape (N, 1, 28, 28)
            ``sigmoid(logits)`` is the reconstruction (the Bernoulli means).
        """
        K = self.latent
        h = self.encoder.forward(x)  # (N, 2K)
        self.check_heads(h.shape)
        mu, logvar = h[:, :K], h[:, K:]  # (N, K) each: the two heads
        z = self.sampler.forward(mu, logvar)  # (N, K)
        self._kl = self.kl_term.forward(mu, logvar)  # 0-d, batch mean
        logits = self.decoder.forward(z)  # (N, 1, 28, 28)
        self.mu, self.logvar, self.z = mu, logvar, z
        self._logits_shape = tuple(logits.shape)
        return logits

    def check_heads(self, shape):
        """Raise unless ``shape`` is an encoder output (N, 2K) to split into mu and logvar.

        Returns
        -------
        (N, K) : the shape of mu, of logvar and of z
        """
        if len(shape) != 2 or shape[1] != 2 * self.latent:
            raise ValueError(f"{self.name}: the encoder must output (N, {2 * self.latent}) "
                             f"(mu and logvar), got {tuple(shape)}")
        return shape[0], self.latent

    def summary(self, input_shape=None):
        """Encoder, sampler and decoder, layer by layer: see :func:`scratchae.summary.summarize`."""
        return summarize(self, input_shape)

    def penalty(self):
        """The loss term the model adds itself: ``beta * KL`` of the last forward (0-d)."""
        if self._kl is None:
            raise RuntimeError(f"{self.name}: penalty() called before forward()")
        return self.beta * self._kl

    @property
    def kl(self):
        """The batch-mean KL divergence of the last forward (0-d, not weighted by beta)."""
        if self._kl is None:
            raise RuntimeError(f"{self.name}: kl read before forward()")
        return self._kl

    def backward(self, dout):
        """Backpropagate the reconstruction's ``dout`` plus the KL term's gradient.

        Parameters
        ----------
        dout : ndarray, shape of the logits (N, 1, 28, 28)
            ``dL_rec/dlogits``, e.g. ``BernoulliNLL.backward()``. The gradient
            of ``penalty()`` is added here; do not add it to ``dout``.

        Returns
        -------
        dx : ndarray, shape of x (None when the encoder is compiled without
            an input gradient, see :meth:`compiled`)
        """
        if self._logits_shape is None:
            raise RuntimeError(f"{self.name}: backward() called before forward() "
                               f"(encode() and decode() keep nothing for backward)")
        check_dout(self.name, self._logits_shape, dout)
        xp = backend.get_array_module(dout)
        dz = self.decoder.backward(dout)  # dL_rec/dz  (N, K)
        dmu_rec, dlogvar_rec = self.sampler.backward(dz)  # through z = mu + std*eps  (N, K) each
        dmu_kl, dlogvar_kl = self.kl_term.backward()  # dKL/dmu, dKL/dlogvar  (N, K) each
        # L = rec(z(mu, logvar)) + beta * KL(mu, logvar): both terms depend on
        # mu and logvar, and the chain rule sums over every path from an input
        # to L, so the two gradients add:
        dmu = dmu_rec + self.beta * dmu_kl  # dL/dmu = dL_rec/dmu + beta dKL/dmu  (N, K)
        dlogvar = dlogvar_rec + self.beta * dlogvar_kl  # same for logvar  (N, K)
        dh = xp.concatenate([dmu, dlogvar], axis=1)  # dL/dh, h = [mu | logvar]  (N, 2K)
        return self.encoder.backward(dh)  # dL/dx  (N, 1, 28, 28)

    def compiled(self, compile_part):
        """This VAE with its encoder and decoder compiled (:func:`scratchae.fast.compile`).

        The same parameter arrays, the same sampler (one random stream); the
        encoder skips dL/dx, which training does not need.
        """
        twin = copy.copy(self)
        twin.encoder = compile_part(self.encoder, input_grad=False)
        twin.decoder = compile_part(self.decoder, input_grad=True)
        if hasattr(twin.encoder, "split_with") and hasattr(twin.decoder, "own_split"):
            # Both parts split a batch as the decoder (the one with the most work per
            # image) does. A one-thread-BLAS split decoder after a two-thread-BLAS
            # encoder was the slowest step of all (conv VAE, batch 128: 122 ms, against
            # 87 ms unsplit and 70 ms split throughout): OpenBLAS's second thread
            # keeps spinning after the encoder's GEMMs, on a core a worker needs.
            decoder, latent = twin.decoder, self.latent
            twin.encoder.split_with = lambda n: decoder.own_split((n, latent))
        return twin

    def workers_for(self, batch_shape):
        """Threads a batch of ``batch_shape`` is split over in the compiled parts (the most of
        the encoder's and the decoder's; 1 for textbook parts)."""
        parts = ((self.encoder, tuple(batch_shape)), (self.decoder, (batch_shape[0], self.latent)))
        return max(part.workers_for(shape) if hasattr(part, "workers_for") else 1
                   for part, shape in parts)

    def output_shape(self, input_shape):
        """Shape of the logits for a batch of ``input_shape`` (N, 1, 28, 28)."""
        return self.decoder.output_shape((input_shape[0], self.latent))

    @property
    def params(self):
        return {**{f"encoder.{k}": v for k, v in self.encoder.params.items()},
                **{f"decoder.{k}": v for k, v in self.decoder.params.items()}}

    @property
    def grads(self):
        return {**{f"encoder.{k}": v for k, v in self.encoder.grads.items()},
                **{f"decoder.{k}": v for k, v in self.decoder.grads.items()}}

    def parameters(self):
        """List of every parameter array (the optimizer updates these in place)."""
        return list(self.params.values())

    def gradients(self):
        """List of gradients from the last ``backward``, in ``parameters()`` order."""
        return list(self.grads.values())

    def architecture(self):
        """A string that identifies the model (stored in checkpoints), one line per layer."""
        lines = [f"VAE(latent={self.latent})"]
        lines += [f"encoder.{i} {layer!r}" for i, layer in enumerate(self.encoder.layers)]
        lines += [f"decoder.{i} {layer!r}" for i, layer in enumerate(self.decoder.layers)]
        return "\n".join(lines)

    def save(self, path):
        """Write the weights to ``path`` (``.npz``) atomically; see :mod:`scratchae.checkpoint`."""
        checkpoint.save_weights(self, path)

    def load(self, path):
        """Load weights saved by :meth:`save` (or a training checkpoint), in place."""
        checkpoint.load_weights(self, path)

    # -- reproducibility ------------------------------------------------------
    @property
    def rng(self):
        """The sampler's ``numpy.random.Generator`` (training checkpoints save its state)."""
        return self.sampler.rng

    @rng.setter
    def rng(self, generator):
        self.sampler.rng = generator

    def rng_state(self):
        """The sampler's generator state (JSON-serialisable): save it to resume bit for bit."""
        return self.sampler.rng_state()

    def set_rng_state(self, state):
        """Restore a state returned by :meth:`rng_state`."""
        self.sampler.set_rng_state(state)

    # -- for figures --------------------------------------------------------
    def encode(self, x):
        """x : ndarray, shape (N, 1, 28, 28) -> ``(mu, logvar)``, each (N, K).

        For figures (the latent space); keeps nothing for ``backward``.
        """
        self._logits_shape = None
        h = self.encoder.forward(x)
        return h[:, :self.latent], h[:, self.latent:]

    def reconstruct(self, x):
        """x : ndarray, shape (N, 1, 28, 28) -> logits of ``decode(mu)``, shape (N, 1, 28, 28).

        The deterministic reconstruction (z = mu, no eps): for figures. It
        draws nothing, so the training stream is left as it was.
        """
        mu, _ = self.encode(x)
        return self.decode(mu)

    def decode(self, z):
        """z : ndarray, shape (N, K) -> logits, shape (N, 1, 28, 28).

        For figures: samples from the prior (``z ~ N(0, I)``), interpolations.
        Keeps nothing for ``backward``.
        """
        self._logits_shape = None
        return self.decoder.forward(z)


def vae(latent=20, hidden=400, *, seed=0, dtype=np.float32):
    """The VAE of PyTorch's examples: 784 -> hidden (ReLU) -> latent (mu), latent (logvar);
    decoder latent -> hidden (ReLU) -> 784 logits.

    Parameters
    ----------
    latent : int, default 20
        K, the size of z.
    hidden : int, default 400
    seed : int, default 0
        Seeds the Glorot-uniform weights (``default_rng(seed)``) and the
        sampler's eps (``default_rng([seed, 4])``).
    dtype : {numpy.float32, numpy.float64}

    Returns
    -------
    VAE
        Input (N, 1, 28, 28) in [0, 1]; output logits (N, 1, 28, 28).
        Parameter keys: ``encoder.1.W/b`` (784 x hidden), ``encoder.3.W/b``
        (hidden x 2*latent: mu's columns, then logvar's), ``decoder.0.W/b``
        (latent x hidden), ``decoder.2.W/b`` (hidden x 784).
    """
    latent = validate.positive_int(latent, "latent", "vae")
    hidden = validate.positive_int(hidden, "hidden", "vae")
    seed = validate.non_negative_int(seed, "seed", "vae")
    dtype = validate.float_dtype(dtype, "vae")
    pixels = int(np.prod(MNIST_SHAPE))
    rng = np.random.default_rng(seed)
    encoder = Sequential([
        Flatten(),
        Dense(pixels, hidden, dtype=dtype, rng=rng),
        ReLU(),
        Dense(hidden, 2 * latent, dtype=dtype, rng=rng),  # [mu | logvar]
    ], input_shape=MNIST_SHAPE, name="vae.encoder")
    decoder = Sequential([
        Dense(latent, hidden, dtype=dtype, rng=rng),
        ReLU(),
        Dense(hidden, pixels, dtype=dtype, rng=rng),  # logits
        Reshape(MNIST_SHAPE),
    ], input_shape=(latent,), name="vae.decoder")
    sampler = GaussianSampler(rng=np.random.default_rng([seed, SAMPLER_STREAM]))
    return VAE(encoder, decoder, latent, sampler=sampler, name="vae")


def conv_vae(latent=2, hidden=16, *, channels=(32, 64), seed=0, dtype=np.float32):
    """The convolutional VAE of Keras's example (``keras.io/examples/generative/vae``).

    ::

        encoder  (1, 28, 28) -> Conv2D 3x3 stride 2 (32, ReLU)  -> (32, 14, 14)
                             -> Conv2D 3x3 stride 2 (64, ReLU)  -> (64, 7, 7)
                             -> Flatten -> Dense 16 (ReLU) -> Dense 2*latent  [mu | logvar]
        decoder  latent -> Dense 7*7*64 (ReLU) -> Reshape (64, 7, 7)
                        -> ConvTranspose2D 3x3 stride 2 (64, ReLU) -> (64, 14, 14)
                        -> ConvTranspose2D 3x3 stride 2 (32, ReLU) -> (32, 28, 28)
                        -> ConvTranspose2D 3x3 stride 1 (1)        -> logits (1, 28, 28)

    Keras's layers, with PyTorch's padding: the stride-2 layers use
    ``padding=1`` (and ``output_padding=1`` for the transposed ones), as
    ``benchmarks/vae_torch.py --model conv`` does. Keras's ``'same'`` pads
    a stride-2 layer on the bottom/right only, which shifts the sampling
    grid by one pixel; the sizes are the same (``docs/vae.md`` section 12).

    Parameters
    ----------
    latent : int, default 2
        K, the size of z (Keras's example uses 2).
    hidden : int, default 16
        Units of the Dense layer between the convolutions and the two heads.
    channels : (int, int), default (32, 64)
        Output channels of the two stride-2 convolutions (and, mirrored,
        of the two stride-2 transposed ones).
    seed : int, default 0
        Seeds the Glorot-uniform weights (``default_rng(seed)``) and the
        sampler's eps (``default_rng([seed, 4])``).
    dtype : {numpy.float32, numpy.float64}

    Returns
    -------
    VAE
        Input (N, 1, 28, 28) in [0, 1]; output logits (N, 1, 28, 28).
        134,165 parameters for latent 2 (Keras's summary: 69,076 in the
        encoder, 65,089 in the decoder).
    """
    latent = validate.positive_int(latent, "latent", "conv_vae")
    hidden = validate.positive_int(hidden, "hidden", "conv_vae")
    c1, c2 = validate.int_pair(channels, "channels", "conv_vae")
    seed = validate.non_negative_int(seed, "seed", "conv_vae")
    dtype = validate.float_dtype(dtype, "conv_vae")
    rng = np.random.default_rng(seed)

    def down(c_in, c_out):  # 3x3, stride 2: halves the size (28 -> 14 -> 7)
        return Conv2D(c_in, c_out, 3, stride=2, padding=1, dtype=dtype, rng=rng)

    def up(c_in, c_out, stride=2):  # 3x3, stride 2 doubles the size (7 -> 14 -> 28)
        return ConvTranspose2D(c_in, c_out, 3, stride=stride, padding=1,
                               output_padding=stride - 1, dtype=dtype, rng=rng)

    encoder = Sequential([
        down(1, c1), ReLU(),                                 # (32, 14, 14)
        down(c1, c2), ReLU(),                                # (64, 7, 7)
        Flatten(),                                           # 3136
        Dense(c2 * 7 * 7, hidden, dtype=dtype, rng=rng), ReLU(),
        Dense(hidden, 2 * latent, dtype=dtype, rng=rng),     # [mu | logvar]
    ], input_shape=MNIST_SHAPE, name="conv_vae.encoder")
    decoder = Sequential([
        Dense(latent, c2 * 7 * 7, dtype=dtype, rng=rng), ReLU(),
        Reshape((c2, 7, 7)),
        up(c2, c2), ReLU(),                                  # (64, 14, 14)
        up(c2, c1), ReLU(),                                  # (32, 28, 28)
        up(c1, 1, stride=1),                                 # logits (1, 28, 28)
    ], input_shape=(latent,), name="conv_vae.decoder")
    sampler = GaussianSampler(rng=np.random.default_rng([seed, SAMPLER_STREAM]))
    return VAE(encoder, decoder, latent, sampler=sampler, name="conv_vae")


def evaluate(model, images, *, batch_size=1000, seed=0):
    """Negative ELBO, reconstruction and KL on a dataset, in nats per image.

    One eps per image, drawn in the images' order from
    ``default_rng([seed, 3])``, whatever ``batch_size`` is (a NumPy
    generator's stream does not depend on how the draws are cut), so the
    numbers are reproducible and the same as ``benchmarks/vae_torch.py``'s.
    The sampler's own generator (the training stream) is left untouched.

    Parameters
    ----------
    model : VAE
    images : ndarray, shape (N, 1, 28, 28), float in [0, 1], host NumPy
        Another float than the model's is cast once, with a note on stderr.
    batch_size : int
    seed : int

    Returns
    -------
    dict
        ``neg_elbo = rec + kl`` (beta is not applied: this is the ELBO),
        ``rec`` (Bernoulli NLL) and ``kl``, each a float, nats per image.
    """
    batch_size = validate.positive_int(batch_size, "batch_size", "vae.evaluate")
    seed = validate.non_negative_int(seed, "seed", "vae.evaluate")
    validate.images(images, "vae.evaluate: images", model.input_shape)
    images = validate.in_model_dtype(images, model.dtype, "images")
    rec_fn = BernoulliNLL(check_targets=False)  # checked once, above
    sampler = model.sampler
    saved = sampler.rng, sampler.frozen, model.check_finite
    sampler.rng, sampler.frozen = np.random.default_rng([seed, TEST_EPS_STREAM]), False
    model.check_finite = False
    rec = kl = 0.0
    try:
        for i in range(0, len(images), batch_size):
            x = backend.asarray(images[i:i + batch_size])
            logits = model.forward(x)
            rec += float(rec_fn.forward(logits, x)) * len(x)
            kl += float(model.kl) * len(x)
    finally:
        sampler.rng, sampler.frozen, model.check_finite = saved
    n = len(images)
    return {"neg_elbo": (rec + kl) / n, "rec": rec / n, "kl": kl / n}


def format_summary(metrics):
    """The summary line of a VAE run: ``test neg_elbo=105.51 rec=80.04 kl=25.46``."""
    return (f"test neg_elbo={metrics['neg_elbo']:.2f} rec={metrics['rec']:.2f} "
            f"kl={metrics['kl']:.2f}")


class VAETrainer(Trainer):
    """:class:`~scratchae.train.Trainer` for a VAE: the loss is the negative ELBO.

    The same four-line step, with ``loss_fn`` a :class:`~scratchae.losses.BernoulliNLL`
    (summed over pixels) and the model's ``penalty()`` its KL term, so the
    training loss is ``rec + beta * KL`` in nats per image. The test metrics
    are :func:`evaluate`'s (``neg_elbo``, ``rec``, ``kl``, one eps per image
    from a fixed seed), and the summary line is :func:`format_summary`'s.

    ``rec + beta * KL`` is the negative ELBO only at ``beta = 1`` (the
    default). For a beta-VAE the loss is named for what it is, e.g.
    ``rec+4*kl``, in the log and as a test metric (the test curve is then
    the same quantity as the training one), and :func:`evaluate`'s
    ``neg_elbo`` (beta not applied) is reported beside it.
    """

    loss_name = "neg_elbo"
    metric_names = ("neg_elbo", "rec", "kl")

    def __init__(self, model, **kwargs):
        beta = getattr(model, "beta", 1.0)
        if beta != 1:  # rec + beta KL: not the ELBO, so not named neg_elbo
            self.loss_name = f"rec+{beta:g}*kl"
            self.metric_names = (self.loss_name, *VAETrainer.metric_names)
        super().__init__(model, loss_fn=BernoulliNLL(), **kwargs)

    def _evaluate(self, images, targets=None):
        metrics = evaluate(self.net, images, batch_size=self.eval_batch_size, seed=self.seed)
        if self.loss_name not in metrics:
            metrics[self.loss_name] = metrics["rec"] + self.model.beta * metrics["kl"]
        return metrics

    def format_summary(self, metrics):
        line = format_summary(metrics)
        if self.loss_name != "neg_elbo":  # the training loss's test counterpart first
            line = line.replace("test ", f"test {self.loss_name}={metrics[self.loss_name]:.2f} ", 1)
        return line

    def predict(self, images):
        """Reconstructions ``sigmoid(decode(mu))`` of host images (no sampling), host NumPy."""
        n, images = self.eval_batch_size, self._in_model_dtype(images, "images")
        return np.concatenate([
            backend.to_numpy(sigmoid(self.net.reconstruct(backend.asarray(images[i:i + n]))))
            for i in range(0, len(images), n)])
