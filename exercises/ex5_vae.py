"""Exercise 5: the VAE's two gradients, the reparameterization and the KL.

Read docs/backprop.md (the VAE) and docs/vae.md first, then write
``MyGaussianSampler.backward`` and ``MyGaussianKL.backward`` below. Both
``forward`` methods are scratchae's own, unchanged. Check each with::

    python -m scratchae.gradcheck --layer vae_sampler --impl exercises/ex5_vae.py:MyGaussianSampler
    python -m scratchae.gradcheck --layer vae_kl --impl exercises/ex5_vae.py:MyGaussianKL

Shapes: ``mu``, ``logvar``, ``eps``, ``z`` are all (N, K): N images, K
latent dimensions.
"""

from scratchae.layers import GaussianKL, GaussianSampler


class MyGaussianSampler(GaussianSampler):
    """``z = mu + exp(0.5 * logvar) * eps``, with eps held fixed, and your backward.

    ``forward(mu, logvar)`` stored ``(std, eps)`` in ``self._cache``, each
    (N, K), where ``std = exp(0.5 * logvar)``.
    """

    def backward(self, dz):
        """Backpropagate ``dz = dL/dz`` to the two inputs.

        Parameters
        ----------
        dz : ndarray, shape (N, K)

        Returns
        -------
        (dmu, dlogvar) : tuple of two ndarrays, each (N, K)
            ``dL/dmu`` and ``dL/dlogvar``, two new arrays (do not return
            ``dz`` itself, nor change it).
        """
        raise NotImplementedError("return (dmu, dlogvar), each of shape (N, K)")


class MyGaussianKL(GaussianKL):
    """``KL = (1/N) sum_n -0.5 sum_k (1 + logvar - mu^2 - exp(logvar))``, with your backward.

    The KL divergence of N(mu, exp(logvar)) from N(0, 1), summed over the K
    latent dimensions and averaged over the N images: a loss term, so
    ``backward()`` takes no argument. ``forward(mu, logvar)`` stored
    ``(mu, var)`` in ``self._cache``, each (N, K), where ``var = exp(logvar)``.
    """

    def backward(self):
        """Return ``(dKL/dmu, dKL/dlogvar)``, each of shape (N, K)."""
        raise NotImplementedError("return (dKL/dmu, dKL/dlogvar), each of shape (N, K)")
