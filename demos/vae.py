"""Train a variational autoencoder on MNIST and draw its latent space.

    python demos/vae.py                          # PyTorch's example model, 10 epochs
    python demos/vae.py --latent 2               # a 2-D latent space, drawn
    python demos/vae.py --epochs 1 --train-size 10000

The model of PyTorch's ``examples/vae``: 784 -> 400 (ReLU) -> 20 (mu) and
20 (logvar); z = mu + exp(0.5 logvar) * eps; 20 -> 400 (ReLU) -> 784
logits. The loss is the negative ELBO in nats per image: the Bernoulli
NLL summed over pixels plus the KL divergence from N(0, I). Every
gradient is hand-written (scratchae/vae.py, scratchae/layers/gaussian.py)
and checked (``python -m scratchae.gradcheck --layer vae``); docs/vae.md
derives them.

Writes to --out (default ./out): vae.png (test digits over their
reconstructions), vae_samples.png (64 digits decoded from the prior),
vae_interpolations.png (walks in latent space between pairs of test
digits), vae_loss.png, and with --latent 2 also vae_latent.png (the test
set's mu, coloured by digit) and vae_manifold.png (digits decoded over the
prior's quantiles); the checkpoint vae.npz (resume with --resume). Ends
with ``test neg_elbo=... rec=... kl=...`` (nats per image on the test set,
one eps per image from a fixed seed).
"""

import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

from scratchae import backend, plots
from scratchae.cli import DemoSpec, run_demo
from scratchae.layers.activations import sigmoid
from scratchae.vae import VAETrainer, vae
from scratchae.validate import arg_positive_int

SAMPLES_SEED = 5  # default_rng([seed, 5]): the z drawn from the prior for vae_samples.png
GRID = 20  # the manifold figure is GRID x GRID digits


def _decode(net, z):
    """Digits (host, (K, 1, 28, 28), in [0, 1]) decoded from host codes z (K, latent)."""
    return backend.to_numpy(sigmoid(net.decode(backend.asarray(z.astype(net.dtype)))))


def _encode_mu(net, images, batch_size):
    """The means mu (host, (N, latent)) of host images, batch by batch."""
    return np.concatenate([
        backend.to_numpy(net.encode(backend.asarray(images[i:i + batch_size]))[0])
        for i in range(0, len(images), batch_size)])


def make_figures(trainer, data, args):
    out, net = Path(args.out), trainer.net
    test, latent = data.test_images, args.latent
    done = f"{plots.epochs(trainer.epoch)}, latent {latent}"
    digits = test[:10]
    paths = [plots.image_rows([("test digit", digits), ("reconstruction", trainer.predict(digits))],
                              out / "vae.png", title=f"VAE reconstructions (z = mu), {done}")]
    prior = np.random.default_rng([args.seed, SAMPLES_SEED]).standard_normal((64, latent))
    paths.append(plots.digit_grid(_decode(net, prior), out / "vae_samples.png", shape=(8, 8),
                                  title=f"64 digits decoded from z ~ N(0, I), {done}"))
    # walks between pairs of test digits: z = (1 - t) mu_a + t mu_b
    pairs = [(i, i + 1) for i in range(0, min(10, len(test) - 1), 2)]
    if pairs:
        mu = _encode_mu(net, test[:pairs[-1][1] + 1], trainer.eval_batch_size)
        t = np.linspace(0, 1, 10)[:, None]
        rows = [(f"{data.test_labels[a]} -> {data.test_labels[b]}",
                 _decode(net, (1 - t) * mu[a] + t * mu[b])) for a, b in pairs]
        paths.append(plots.image_rows(rows, out / "vae_interpolations.png",
                                      col_labels=[f"t={v:.2f}" for v in t[:, 0]],
                                      title=f"Straight lines in latent space between test "
                                            f"digits, decoded, {done}"))
    if latent == 2:
        mu = _encode_mu(net, test, trainer.eval_batch_size)
        paths.append(plots.latent_scatter(mu, data.test_labels, out / "vae_latent.png",
                                          title=f"The test set's mu, by digit ({len(test)} "
                                                f"images), {done}"))
        # the prior's quantiles: equal probability mass between neighbouring rows
        q = norm.ppf(np.linspace(0.05, 0.95, GRID))
        z = np.stack(np.meshgrid(q, q[::-1]), axis=-1).reshape(-1, 2)  # z2 grows upwards
        ticks = [f"{v:.2f}" for v in q]
        paths.append(plots.digit_grid(_decode(net, z), out / "vae_manifold.png",
                                      shape=(GRID, GRID), xlabel="$z_1$", ylabel="$z_2$",
                                      xticks=ticks, yticks=ticks[::-1],
                                      title=f"Digits decoded over the prior's quantiles "
                                            f"(norm.ppf of 0.05..0.95), {done}"))
    paths.append(plots.loss_curves(trainer.history, out / "vae_loss.png",
                                   title="VAE", ylabel="negative ELBO (nats per image)"))
    return paths


def _extra_args(parser):
    parser.add_argument("--latent", type=arg_positive_int, default=20,
                        help="size of z (2 draws the latent space)")
    parser.add_argument("--hidden", type=arg_positive_int, default=400,
                        help="units of the encoder's and decoder's hidden layer")


SPEC = DemoSpec(
    name="vae",
    description="Train a variational autoencoder (reparameterization and KL by hand) on MNIST "
                "and draw its latent space.",
    build_model=lambda args: vae(latent=args.latent, hidden=args.hidden, seed=args.seed),
    make_figures=make_figures,
    epochs=10,
    lr=1e-3,
    batch_size=128,
    extra_args=_extra_args,
    trainer=VAETrainer,
)


def main(argv=None):
    return run_demo(SPEC, argv)


if __name__ == "__main__":
    sys.exit(main())
