"""Optimizers that update parameter arrays in place: SGD and Adam."""

from . import backend
from .validate import non_negative_int, nonfinite_summary, positive_float


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
        self.lr = positive_float(lr, "lr", name)

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
            raise ValueError(f"Adam: betas must be a pair of numbers in [0, 1), "
                             f"got {betas!r}") from None
        if not (0 <= b1 < 1 and 0 <= b2 < 1):  # False for NaN
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas!r}")
        self.betas = (b1, b2)
        self.eps = positive_float(eps, "eps", "Adam")
        self.t = 0
        self.m = [backend.get_array_module(p).zeros_like(p) for p in self.params]
        self.v = [backend.get_array_module(p).zeros_like(p) for p in self.params]

    def step(self, grads):
        """Apply one update; ``grads`` lists ``dL/dp`` in the order of ``params``."""
        grads = self._check(grads)
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            xp = backend.get_array_module(p)
            m[...] = b1 * m + (1 - b1) * g  # running mean of g
            v[...] = b2 * v + (1 - b2) * g * g  # running mean of g^2
            m_hat = m / (1 - b1**self.t)  # both means start at 0: correct the bias
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)

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
        t = non_negative_int(state["t"], "step count t", "Adam.load_state_dict")
        lr = positive_float(state["lr"], "lr", "Adam.load_state_dict")
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
        self.t = t
        self.lr = lr
        for mine, theirs in pairs:  # written with each moment's own array library
            mine[...] = backend.get_array_module(mine).asarray(theirs, dtype=mine.dtype)
