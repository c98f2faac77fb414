"""Cross-entropies from logits, written to be numerically stable.

The sigmoid cross-entropy (one formula, two ways of adding it up):

* :class:`SigmoidCrossEntropy`: the **mean over every pixel** (what the
  tutorial's autoencoders minimise; Keras' and PyTorch's default);
* :class:`BernoulliNLL`: **summed over the pixels of each image, averaged
  over the images**, i.e. the negative log-likelihood of a Bernoulli
  decoder in nats per image, the reconstruction term of a VAE
  (:mod:`scratchae.vae`). Next to a KL term the difference matters: a mean
  over pixels divides the reconstruction by 784 and silently weighs the KL
  784 times more (``docs/vae.md``).

and, for classifiers (the stacked denoising autoencoder's fine-tuning),
:class:`SoftmaxCrossEntropy` over K classes with integer labels, and
:func:`error_rate`.
"""

from . import backend
from .layers.activations import sigmoid
from .validate import unit_interval


class SigmoidCrossEntropy:
    """Mean binary cross-entropy between ``sigmoid(logits)`` and ``targets``.

    Per element, with ``p = sigmoid(x)``::

        l = -(t log p + (1 - t) log(1 - p))
          = max(x, 0) - x t + log(1 + exp(-|x|))

    The second form never exponentiates a positive number, so it is finite
    for logits of any size (try +-1000), and it needs no ``clip(p, eps)``.
    Its derivative is simply ``dl/dx = sigmoid(x) - t``.

    Parameters
    ----------
    check_targets : bool, default True
        Check on every call that ``targets`` are finite and in [0, 1]
        (a pass over them, and on CuPy a wait for the GPU). A training loop
        that has checked its whole dataset once up front switches this off
        (see :class:`scratchae.train.Trainer`). The logits are never
        checked: NaN/inf logits mean training diverged, which the loop
        detects from the returned loss.
    """

    def __init__(self, check_targets=True):
        self.check_targets = bool(check_targets)
        self._cache = None

    def weight(self, x):
        """The factor the summed loss is multiplied by: 1 / (number of elements), a mean."""
        return x.dtype.type(1.0 / x.size)  # a NumPy scalar of x's dtype: keeps float32

    def __call__(self, logits, targets):
        return self.forward(logits, targets)

    def check(self, logits, targets):
        """Raise ``ValueError`` unless the shapes match and (with ``check_targets``) every
        target is finite and in [0, 1]."""
        name = type(self).__name__
        if tuple(logits.shape) != tuple(targets.shape):
            raise ValueError(
                f"{name}: logits and targets must have the same shape, "
                f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
            )
        if self.check_targets:
            unit_interval(targets, f"{name}: targets")

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        return self._cache

    def forward(self, logits, targets):
        """Return the loss, summed over all elements times :meth:`weight` (a mean here).

        Parameters
        ----------
        logits : ndarray, any shape, e.g. (N, 1, 28, 28)
        targets : ndarray, same shape as ``logits``, values in [0, 1]

        Returns
        -------
        loss : 0-d ndarray
            Stays on the device (call ``float()`` to read it), so a GPU
            training loop need not wait for it.

        Raises
        ------
        ValueError
            If the shapes differ, or (with ``check_targets``) a target is
            NaN, infinite or outside [0, 1]. Nothing is cached then.
        """
        self.check(logits, targets)
        w = self.weight(logits)
        xp = backend.get_array_module(logits)
        x, t = logits, targets
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        loss = xp.maximum(x, 0) - x * t + xp.log1p(e)
        self._cache = (x, t, e)  # backward reuses e for the sigmoid
        return loss.sum() * w

    def backward(self):
        """Return ``dL/dlogits = (sigmoid(logits) - targets) * weight``, shape of ``logits``."""
        x, t, e = self._cached()
        return (sigmoid(x, e) - t) * self.weight(x)  # dL/dx = (sigmoid(x) - t) * weight


class BernoulliNLL(SigmoidCrossEntropy):
    """Bernoulli negative log-likelihood from logits, in nats per image.

    The VAE's reconstruction term ``-log p(x|z)`` with
    ``p(x|z) = prod_i Bernoulli(t_i; sigmoid(x_i))``: the same per-pixel
    cross-entropy as :class:`SigmoidCrossEntropy`, but **summed over the
    pixels** of each image and averaged over the N images::

        L = (1/N) sum_n sum_i l_ni,      dL/dx_ni = (sigmoid(x_ni) - t_ni) / N

    MNIST's pixels are grey levels in [0, 1], not 0/1: for a grey target
    ``t`` the per-pixel minimum is the binary entropy
    ``-t log t - (1 - t) log(1 - t) > 0``, not 0, so this is a
    cross-entropy everyone calls an NLL, not a true log-likelihood.

    Parameters
    ----------
    check_targets : bool, default True
        As for :class:`SigmoidCrossEntropy`.
    """

    def weight(self, x):
        """1 / N, N = ``len(x)``: every pixel counts in full, the images are averaged."""
        if x.ndim < 2:
            raise ValueError(f"BernoulliNLL: expected a batch of images (N, ...), "
                             f"got logits of shape {tuple(x.shape)}")
        return x.dtype.type(1.0 / len(x))


class SoftmaxCrossEntropy:
    """Mean cross-entropy between ``softmax(logits)`` and integer class labels.

    For one sample with logits ``z`` (K,) and label ``y``, ``p = softmax(z)``,
    ``p_k = exp(z_k) / sum_j exp(z_j)``::

        l = -log p_y = logsumexp(z) - z_y
        logsumexp(z) = m + log(sum_j exp(z_j - m)),   m = max_j z_j

    Shifting by the largest logit ``m`` changes nothing (it cancels between
    numerator and denominator) but makes every exponent <= 0: nothing
    overflows for logits of any size, the sum is at least 1 (its largest
    term is ``exp(0)``), so its log is finite, and no ``clip(p, eps)`` is
    needed. The loss is the mean over the N samples; its gradient::

        dL/dz_nk = (p_nk - [k == y_n]) / N        i.e. (softmax - onehot) / N

    Parameters
    ----------
    check_targets : bool, default True
        Check on every call that the labels are integers in [0, K) (a pass
        over them, and on CuPy a wait for the GPU). A training loop that has
        checked its labels once switches this off.
    """

    def __init__(self, check_targets=True):
        self.check_targets = bool(check_targets)
        self._cache = None

    def __call__(self, logits, labels):
        return self.forward(logits, labels)

    def check(self, logits, labels):
        """Raise ``ValueError`` unless ``logits`` is (N, K) and ``labels`` is (N,) of
        integers (with ``check_targets``: each in [0, K))."""
        name = type(self).__name__
        if logits.ndim != 2 or labels.ndim != 1 or len(labels) != len(logits):
            raise ValueError(f"{name}: expected logits (N, K) and labels (N,), got logits "
                             f"{tuple(logits.shape)} and labels {tuple(labels.shape)}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"{name}: labels must be integer class indices, "
                             f"got dtype {labels.dtype}")
        if self.check_targets and len(labels):
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= logits.shape[1]:
                raise ValueError(f"{name}: labels must be in [0, {logits.shape[1]}) for "
                                 f"{logits.shape[1]} classes, got values from {lo} to {hi}")

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        return self._cache

    def forward(self, logits, labels):
        """Return the mean cross-entropy, a 0-d array (on the device, not synced).

        Parameters
        ----------
        logits : ndarray, shape (N, K)
        labels : ndarray of int, shape (N,), values in [0, K)
        """
        self.check(logits, labels)
        xp = backend.get_array_module(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)  # z - m, every entry <= 0  (N, K)
        e = xp.exp(shifted)  # in (0, 1]  (N, K)
        total = e.sum(axis=1, keepdims=True)  # sum_j exp(z_j - m), >= 1  (N, 1)
        onehot = xp.arange(logits.shape[1]) == labels[:, None]  # [k == y_n]  (N, K)
        # l_n = logsumexp(z_n) - z_ny = log(total_n) - (z_ny - m_n)
        loss = xp.log(total[:, 0]) - (shifted * onehot).sum(axis=1)  # (N,)
        self._cache = (e / total, onehot)  # softmax p  (N, K), and the one-hot labels
        return loss.sum() * logits.dtype.type(1.0 / len(logits))

    def backward(self):
        """Return ``dL/dlogits = (softmax(logits) - onehot) / N``, shape (N, K)."""
        p, onehot = self._cached()
        return (p - onehot) * p.dtype.type(1.0 / len(p))  # dL/dz = (p - onehot) / N  (N, K)


def error_rate(logits, labels):
    """The fraction of samples whose largest logit is not at their label.

    Parameters
    ----------
    logits : ndarray, shape (N, K)
    labels : ndarray of int, shape (N,)

    Returns
    -------
    0-d ndarray (on the device, not synced): wrong / N, in [0, 1]
    """
    return (logits.argmax(axis=1) != labels).mean()
