"""The VAE's Gaussian latent: the reparameterization trick and the KL term.

A variational autoencoder's encoder does not output a code ``z`` but a
Gaussian over codes, ``q(z|x) = N(mu, diag(exp(logvar)))``, one per image.
Two pieces turn that into something we can train by backprop:

* :class:`GaussianSampler` draws ``z`` from it as a *differentiable*
  function of ``mu`` and ``logvar`` (the reparameterization trick)::

      z = mu + exp(0.5 * logvar) * eps,      eps ~ N(0, I)

* :class:`GaussianKL` is the loss term that keeps ``q(z|x)`` close to the
  prior ``N(0, I)``, in closed form.

Both take *two* inputs (``mu`` and ``logvar``), so they are not plain
:class:`~scratchae.layers.base.Layer` objects, but they follow the same
conventions: ``forward`` caches only what ``backward`` needs, ``backward``
never modifies its argument, and errors name the piece and the shapes.
``docs/vae.md`` derives every gradient below.

Shapes: ``mu``, ``logvar``, ``eps`` and ``z`` are all (N, K): N images,
K latent dimensions.
"""

import numpy as np

from .. import backend
from .base import make_rng


def _check_pair(owner, mu, logvar):
    """Raise unless ``mu`` and ``logvar`` are floating (N, K) arrays of one shape and dtype."""
    for name, a in (("mu", mu), ("logvar", logvar)):
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"{owner}: {name} must be an array, got {type(a).__name__}")
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"{owner}: {name} must be floating point, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{owner}: {name} must be 2-D (N, latent), "
                             f"got shape {tuple(a.shape)}")
    if tuple(mu.shape) != tuple(logvar.shape):
        raise ValueError(f"{owner}: mu and logvar must have the same shape (N, latent), "
                         f"got mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)}")
    if mu.dtype != logvar.dtype:
        raise TypeError(f"{owner}: mu and logvar must have the same dtype, "
                        f"got mu {mu.dtype} and logvar {logvar.dtype}")


class GaussianSampler:
    """The reparameterization trick: ``z = mu + exp(0.5 * logvar) * eps``.

    ``logvar`` is the log of the *variance*, so the standard deviation is
    ``std = exp(0.5 * logvar)`` (``sqrt(exp(logvar))``), not ``exp(logvar)``.

    The noise ``eps ~ N(0, I)`` is drawn on the host by a seeded NumPy
    ``Generator``, in the dtype of ``mu``, and moved to ``mu``'s array
    library: NumPy and CuPy see the same random numbers for the same seed.
    On the GPU that is one upload of N x K numbers per ``forward``, the
    one transfer of a VAE's training step (as a denoiser's noise is).

    Backward (derived in ``docs/vae.md``). With ``z = mu + std * eps``,
    ``std = exp(logvar / 2)`` and eps held fixed::

        dz/dmu     = 1                            -> dmu     = dz
        dz/dlogvar = d exp(logvar/2) / dlogvar * eps
                   = 0.5 * exp(logvar/2) * eps    -> dlogvar = dz * 0.5 * std * eps

    Sampling itself is not differentiable, but eps does not depend on
    ``mu`` or ``logvar``: all the randomness sits in an *input* of a
    deterministic function, which is what makes this backward exist.

    Parameters
    ----------
    seed : int or sequence of int, optional
        Seed of the generator (ignored if ``rng`` is given).
    rng : numpy.random.Generator, optional
        The generator to draw eps from.

    Attributes
    ----------
    rng : numpy.random.Generator
        The noise generator. Save and restore its state with
        :meth:`rng_state` / :meth:`set_rng_state` to resume bit for bit.
    frozen : bool
        When True, ``forward`` reuses the last eps instead of drawing a new
        one, so that the sampler is a deterministic function of ``mu`` and
        ``logvar``: what a gradient check needs (see :meth:`freeze`).
    eps : ndarray, shape (N, K), or None
        The eps of the last ``forward``.
    """

    def __init__(self, *, seed=None, rng=None):
        self.rng = make_rng(seed, rng)
        self.frozen = False
        self.eps = None
        self._cache = None

    def __repr__(self):
        return "GaussianSampler()"

    def __call__(self, mu, logvar, eps=None):
        return self.forward(mu, logvar, eps)

    def freeze(self):
        """Reuse the last eps in every ``forward`` until :meth:`unfreeze`.

        Call it after one ``forward`` (which draws the eps to keep), e.g.
        before a numerical gradient check of a whole VAE.
        """
        if self.eps is None:
            raise RuntimeError("GaussianSampler: freeze() called before forward(): "
                               "no eps to keep yet")
        self.frozen = True

    def unfreeze(self):
        """Draw a fresh eps in every ``forward`` again."""
        self.frozen = False

    def rng_state(self):
        """The generator's state: a dict of ints and strings (JSON-serialisable)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        """Restore a state returned by :meth:`rng_state`."""
        self.rng.bit_generator.state = state

    def forward(self, mu, logvar, eps=None):
        """Draw ``z = mu + exp(0.5 * logvar) * eps``.

        Parameters
        ----------
        mu : ndarray, shape (N, K)
            Means of q(z|x).
        logvar : ndarray, shape (N, K)
            Log-variances of q(z|x); same dtype as ``mu``.
        eps : ndarray, shape (N, K), optional
            Use this noise instead of drawing it (or reusing it, if frozen).

        Returns
        -------
        z : ndarray, shape (N, K), dtype of ``mu``
        """
        _check_pair("GaussianSampler", mu, logvar)
        xp = backend.get_array_module(mu)
        if eps is None and self.frozen:
            eps = self.eps
        if eps is None:
            if mu.dtype not in (np.float32, np.float64):
                raise TypeError(f"GaussianSampler: mu and logvar must be float32 or float64 "
                                f"to draw eps, got {mu.dtype}")
            eps = xp.asarray(self.rng.standard_normal(mu.shape, dtype=mu.dtype))
        if tuple(eps.shape) != tuple(mu.shape):
            where = "the frozen eps" if eps is self.eps else "eps"
            raise ValueError(f"GaussianSampler: {where} has shape {tuple(eps.shape)}, "
                             f"but mu and logvar have shape {tuple(mu.shape)}")
        std = xp.exp(0.5 * logvar)  # the standard deviation: exp(logvar / 2), not exp(logvar)
        self.eps = eps
        self._cache = (std, eps)
        return mu + std * eps

    def backward(self, dz):
        """Backpropagate ``dz`` of shape (N, K); return ``(dmu, dlogvar)``, each (N, K)."""
        if self._cache is None:
            raise RuntimeError("GaussianSampler: backward() called before forward()")
        std, eps = self._cache
        if tuple(dz.shape) != tuple(std.shape):
            raise ValueError(f"GaussianSampler: backward expected dz of shape "
                             f"{tuple(std.shape)} (the forward output's), got {tuple(dz.shape)}")
        dmu = dz.copy()  # dL/dmu = dz * dz/dmu = dz * 1  (N, K); a copy, dz stays the caller's
        dlogvar = dz * 0.5 * std * eps  # dL/dlogvar = dz * 0.5 exp(logvar/2) eps  (N, K)
        return dmu, dlogvar


class GaussianKL:
    """KL divergence of ``N(mu, diag(exp(logvar)))`` from ``N(0, I)``, per image.

    Summed over the K latent dimensions, averaged over the N images of the
    batch (nats per image)::

        KL_n = -0.5 * sum_k (1 + logvar_nk - mu_nk^2 - exp(logvar_nk))
        KL   = (1/N) * sum_n KL_n

    It is 0 exactly when ``mu = 0`` and ``logvar = 0`` (q is the prior) and
    positive otherwise. Its gradient (each term depends on one entry only)::

        dKL/dmu_nk     = mu_nk / N
        dKL/dlogvar_nk = 0.5 * (exp(logvar_nk) - 1) / N

    Same interface as :class:`scratchae.losses.SigmoidCrossEntropy`:
    ``forward`` returns a 0-d array, ``backward()`` the gradients.
    """

    def __init__(self):
        self._cache = None

    def __repr__(self):
        return "GaussianKL()"

    def __call__(self, mu, logvar):
        return self.forward(mu, logvar)

    def forward(self, mu, logvar):
        """Return the batch-mean KL divergence.

        Parameters
        ----------
        mu, logvar : ndarray, shape (N, K), same dtype

        Returns
        -------
        kl : 0-d ndarray, dtype of ``mu``
            Stays on the device (call ``float()`` to read it).
        """
        _check_pair("GaussianKL", mu, logvar)
        xp = backend.get_array_module(mu)
        var = xp.exp(logvar)  # the variance
        per_image = -0.5 * (1 + logvar - mu * mu - var).sum(axis=1)  # (N,)
        self._cache = (mu, var)
        return per_image.mean()

    def backward(self):
        """Return ``(dKL/dmu, dKL/dlogvar)``, each of shape (N, K)."""
        if self._cache is None:
            raise RuntimeError("GaussianKL: backward() called before forward()")
        mu, var = self._cache
        scale = mu.dtype.type(1.0 / mu.shape[0])  # 1/N, a scalar of mu's dtype
        dmu = mu * scale  # dKL/dmu = mu / N  (N, K)
        dlogvar = 0.5 * (var - 1) * scale  # dKL/dlogvar = 0.5 (exp(logvar) - 1) / N  (N, K)
        return dmu, dlogvar
