"""The fast losses keep float32's precision where the loss is small: confident logits."""
import numpy as np
import pytest

from scratchae import losses
from scratchae.fast import losses as fast_losses

from conftest import to_np, to_xp


@pytest.mark.parametrize("kind", ["SigmoidCrossEntropy", "BernoulliNLL"])
def test_fast_losses_keep_float32_precision_on_confident_logits(backend, kind):
    """|logits| in [5, 15] with the sign of their 0/1 target, a few grey targets: the
    per-pixel losses are tiny next to |x|, and summing |x|/2 and x(1/2 - t) apart (two
    large sums of opposite signs) lost 4 digits (relative error 5e-4). The textbook's is
    1e-7; the fast loss must stay within 1e-6 of the float64 value, as must its gradient."""
    rng = np.random.default_rng(0)
    shape = (128, 1, 28, 28)
    for _ in range(3):
        x = (rng.uniform(5, 15, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)
        t = (x > 0).astype(np.float32)
        t[:, :, 0, :2] = rng.uniform(size=(128, 1, 2))  # a few grey targets
        x64, t64 = x.astype(np.float64), t.astype(np.float64)
        exact = getattr(losses, kind)()
        reference = float(exact.forward(x64, t64))
        quick = fast_losses.faster(getattr(losses, kind)())
        value = quick.forward(to_xp(x), to_xp(t))
        assert value.dtype == np.float32
        assert float(value) == pytest.approx(reference, rel=1e-6)
        np.testing.assert_allclose(to_np(quick.backward()), exact.backward(), rtol=1e-5,
                                   atol=1e-6 * np.abs(exact.backward()).max())
