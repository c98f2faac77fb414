"""Adam, in place: the same update as :class:`scratchae.optim.Adam`, without temporaries.

The textbook ``Adam.step`` allocates a handful of temporaries per
parameter and per step; this one folds both bias corrections into the
step size and the epsilon (the same update) and runs
:func:`scratchae.backend.adam_update`: on NumPy a chain of in-place
operations that also keeps the first moment out of the slow subnormal
floats, on CuPy one fused kernel per parameter.
"""

import math

from .. import backend, optim

#: Clear Adam's subnormal first moments every this many steps (NumPy).
FLUSH_EVERY = 16


class Adam(optim.Adam):
    """:class:`scratchae.optim.Adam` with the update done in place (same arguments, same state)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        # one scratch block, reused by every parameter (adam_update works block by block)
        self._scratch = backend.get_array_module(self.params[0]).empty(
            min(max(p.size for p in self.params), backend.ADAM_BLOCK), self.params[0].dtype)

    def step(self, grads):
        """Apply one update; ``grads`` lists ``dL/dp`` in the order of ``params``."""
        grads = self._check(grads)
        self.t += 1
        b1, b2 = self.betas
        # m_hat / (sqrt(v_hat) + eps) = lr_t m / (sqrt(v) + eps_t) with
        #   lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),   eps_t = eps sqrt(1 - b2^t)
        correction2 = math.sqrt(1 - b2**self.t)
        lr_t = self.lr * correction2 / (1 - b1**self.t)
        eps_t = self.eps * correction2
        # Subnormal first moments (see backend.flush_subnormals) take ~800 steps
        # to appear; clearing them every FLUSH_EVERY steps costs 3 of 15 passes
        # only that often.
        flush = self.t % FLUSH_EVERY == 0
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            scratch = self._scratch.astype(p.dtype, copy=False)
            backend.adam_update(p, g, m, v, lr_t, b1, b2, eps_t, scratch, flush=flush)
