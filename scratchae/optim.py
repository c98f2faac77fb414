"""Optimizers that update parameter arrays in place: SGD and Adam."""

import math
import numbers

import numpy as np

from . import backend
from .layers.base import nonfinite_summary


def _positive_finite(value, name, owner):
    """Return ``float(value)``, raising ``ValueError`` unless it is a finite number > 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{owner}: {name} must be a positive finite number, got {value!r}")
    return float(value)


class Optimizer:
    """Shared bookkeeping: the parameter list and the check of a gradient list.

    Every check runs before the first parameter is touched, so a call that
    raises leaves the parameters and the optimizer's state as they were.
    """

    def __init__(self, params, lr):
        self.params = list(params)
        name = type(self).__name__
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not hasattr(p, "shape") or not hasattr(p, "dtype"):
                raise TypeError(f"{name}: parameter {i} is a {type(p).__name__}, expected an array")
        self.lr = _positive_finite(lr, "lr", name)

    def _check(self, grads):
        name = type(self).__name__
        try:
            grads = list(grads)
        except TypeError:
            raise TypeError(
                f"{name}.step: expected a list of {len(self.params)} gradient arrays, "
                f"got {type(grads).__name__}"
            ) from None
        if len(grads) != len(self.params):
            raise ValueError(
                f"{name}.step: expected {len(self.params)} gradients (one per parameter), "
                f"got {len(grads)}"
            )
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if not hasattr(g, "shape"):
                raise TypeError(
                    f"{name}.step: gradient {i} is a {type(g).__name__}, expected an array "
                    f"of shape {tuple(p.shape)}"
                )
            if tuple(p.shape) != tuple(g.shape):
                raise ValueError(
                    f"{name}.step: gradient {i} has shape {tuple(g.shape)}, "
                    f"expected {tuple(p.shape)} (the parameter's)"
                )
            if backend.get_array_module(g) is not backend.get_array_module(p):
                raise TypeError(
                    f"{name}.step: gradient {i} is a {type(g).__module__}.{type(g).__name__}, "
                    f"but the parameter lives in {backend.get_array_module(p).__name__}"
                )
        return grads


class SGD(Optimizer):
    """Plain gradient descent: ``p -= lr * g``.

    Parameters
    ----------
    params : list of ndarray
        Arrays updated in place.
    lr : float
    """

    def __init__(self, params, lr=0.01):
        super().__init__(params, lr)

    def step(self, grads):
        """Apply one update; ``grads`` lists ``dL/dp`` in the order of ``params``."""
        for p, g in zip(self.params, self._check(grads)):
            p -= self.lr * g

    def state_dict(self):
        return {"lr": self.lr}

    def load_state_dict(self, state):
        self.lr = float(state["lr"])


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction, updating ``params`` in place.

    For each parameter p with gradient g, at step t = 1, 2, ...::

        m = b1 m + (1 - b1) g            running mean of g
        v = b2 v + (1 - b2) g^2          running mean of g^2
        m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)   (both start at 0)
        p -= lr * m_hat / (sqrt(v_hat) + eps)

    Parameters
    ----------
    params : list of ndarray
        Arrays updated in place; any shapes.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr)
        try:
            b1, b2 = (float(b) for b in betas)
        except (TypeError, ValueError):
            raise ValueError(f"Adam: betas must be a pair of numbers in [0, 1), got {betas!r}") from None
        if not (0 <= b1 < 1 and 0 <= b2 < 1):  # False for NaN
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas!r}")
        self.betas = (b1, b2)
        self.eps = _positive_finite(eps, "eps", "Adam")
        self.t = 0
        # Moments are allocated once, like the parameters, and updated in place.
        self.m = [backend.get_array_module(p).zeros_like(p) for p in self.params]
        self.v = [backend.get_array_module(p).zeros_like(p) for p in self.params]
        self._scratch = [backend.get_array_module(p).empty_like(p) for p in self.params]

    def step(self, grads):
        """Apply one update; ``grads`` lists ``dL/dp`` in the order of ``params``."""
        grads = self._check(grads)
        self.t += 1
        b1, b2 = self.betas
        # Fold both bias corrections into the step size (same result, fewer
        # passes over memory): lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), and
        # eps is scaled the same way so the update equals the formula above.
        correction2 = math.sqrt(1 - b2**self.t)
        lr_t = self.lr * correction2 / (1 - b1**self.t)
        eps_t = self.eps * correction2
        for p, g, m, v, tmp in zip(self.params, grads, self.m, self.v, self._scratch):
            xp = backend.get_array_module(p)
            m *= b1
            m += (1 - b1) * g  # m = b1 m + (1 - b1) g
            # Where g stays 0 (a dead ReLU unit, an always-black border pixel)
            # m shrinks by b1 every step, into the "subnormal" floats below
            # finfo.tiny (1e-38 in float32), which CPUs compute ~30x slower,
            # and it never reaches 0: 1e-45 * 0.9 rounds back to 1e-45. So m is
            # set to exactly 0 once it is below 2 * tiny, far too small to matter.
            xp.abs(m, out=tmp)
            xp.greater_equal(tmp, 2 * np.finfo(m.dtype).tiny, out=tmp)  # 1.0 to keep, 0.0 to drop
            m *= tmp
            xp.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v *= b2
            v += tmp  # v = b2 v + (1 - b2) g^2
            xp.sqrt(v, out=tmp)
            tmp += eps_t
            xp.divide(m, tmp, out=tmp)
            tmp *= lr_t
            p -= tmp  # p -= lr_t * m / (sqrt(v) + eps_t)

    def state_dict(self):
        """Everything needed to continue exactly: step count and copies of both moments."""
        return {"t": self.t, "lr": self.lr, "m": [m.copy() for m in self.m],
                "v": [v.copy() for v in self.v]}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output (moments are copied in place).

        Everything is checked first: a state that does not fit raises
        ``ValueError`` and leaves this optimizer as it was.
        """
        missing = [k for k in ("t", "lr", "m", "v") if k not in state]
        if missing:
            raise ValueError(f"Adam.load_state_dict: state lacks {', '.join(missing)}")
        if len(state["m"]) != len(self.m) or len(state["v"]) != len(self.v):
            raise ValueError(
                f"Adam.load_state_dict: state has {len(state['m'])}/{len(state['v'])} "
                f"first/second moments, expected {len(self.m)} (one per parameter)"
            )
        t = state["t"]
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise ValueError(f"Adam.load_state_dict: step count t must be an int >= 0, got {t!r}")
        lr = _positive_finite(state["lr"], "lr", "Adam.load_state_dict")
        pairs = list(zip(self.m + self.v, list(state["m"]) + list(state["v"])))
        for i, (mine, theirs) in enumerate(pairs):
            which = f"{'m' if i < len(self.m) else 'v'}[{i % len(self.m)}]"
            if tuple(mine.shape) != tuple(theirs.shape):
                raise ValueError(
                    f"Adam.load_state_dict: moment {which} has shape {tuple(theirs.shape)}, "
                    f"expected {tuple(mine.shape)}"
                )
            problem = nonfinite_summary(theirs)
            if problem is not None:
                raise ValueError(f"Adam.load_state_dict: moment {which} is not finite ({problem})")
        self.t = int(t)
        self.lr = lr
        for mine, theirs in pairs:
            mine[...] = backend.asarray(theirs, dtype=mine.dtype)
