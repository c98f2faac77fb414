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
from .parallel import Workers, check_workers

#: Clear Adam's subnormal first moments every this many steps (NumPy).
FLUSH_EVERY = 16
#: A parameter is shared between threads only if each gets this many entries.
ADAM_MIN_SHARE = 65536


class Adam(optim.Adam):
    """:class:`scratchae.optim.Adam` with the update done in place (same arguments, same state).

    Parameters
    ----------
    params, lr, betas, eps
        As for :class:`scratchae.optim.Adam`.
    workers : int, default 1
        Threads that share the update on the CPU (NumPy releases the GIL in
        its element-wise loops): each parameter of more than
        ``workers * ADAM_MIN_SHARE`` entries is cut into that many pieces.
        Every entry's update depends on that entry only, so the result is
        the same, bit for bit.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, workers=1):
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        self.workers = check_workers(workers, "fast.Adam")
        # each thread's share: (parameter index, flat slice) pieces, and its own scratch block
        shares = [[] for _ in range(self.workers)]
        for i, p in enumerate(self.params):
            parts = self.workers if p.size >= self.workers * ADAM_MIN_SHARE else 1
            bounds = [p.size * k // parts for k in range(parts + 1)]
            for k in range(parts):
                shares[(i + k) % self.workers].append((i, slice(bounds[k], bounds[k + 1])))
        self._shares = [share for share in shares if share]
        self._scratch = [backend.get_array_module(p).empty(
            min(max(p.size for p in self.params), backend.ADAM_BLOCK), self.params[0].dtype)
            for _ in self._shares]
        self._pool = Workers(len(self._shares)) if len(self._shares) > 1 else None

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
        arrays = list(zip(self.params, grads, self.m, self.v))

        def update(k, share):
            for i, part in share:
                p, g, m, v = (a.reshape(-1)[part] for a in arrays[i])
                scratch = self._scratch[k].astype(p.dtype, copy=False)
                backend.adam_update(p, g, m, v, lr_t, b1, b2, eps_t, scratch, flush=flush)

        if self._pool is None:
            update(0, self._shares[0])
        else:
            self._pool.map(update, self._shares)
