"""Train a variational autoencoder on MNIST and draw its latent space.

    python demos/vae.py                          # PyTorch's example model, 10 epochs
    python demos/vae.py --latent 2               # a 2-D latent space, drawn
    python demos/vae.py --model conv             # Keras's convolutional VAE, latent 2
    python demos/vae.py --epochs 1 --train-size 10000

``--model dense`` (default) is the model of PyTorch's ``examples/vae``:
784 -> 400 (ReLU) -> 20 (mu) and 20 (logvar); z = mu + exp(0.5 logvar) *
eps; 20 -> 400 (ReLU) -> 784 logits. ``--model conv`` is Keras's
convolutional VAE (``scratchae.vae.conv_vae``): two stride-2 convolutions
and a Dense 16 down to mu and logvar (2 each by default), a Dense and two
stride-2 transposed convolutions back up. The loss is the negative ELBO in
nats per image: the Bernoulli NLL summed over pixels plus the KL
divergence from N(0, I). Every gradient is hand-written (scratchae/vae.py,
scratchae/layers/) and checked (``python -m scratchae.gradcheck --layer
vae``, tests/test_vae.py); docs/vae.md derives them.

Writes to --out (default ./out), NAME being vae (dense) or conv_vae:
NAME.png (test digits over their reconstructions), NAME_samples.png (64
digits decoded from the prior), NAME_interpolations.png (walks in latent
space between pairs of test digits), NAME_loss.png, and with a 2-D latent
space also NAME_latent.png (the test set's mu, coloured by digit) and
NAME_manifold.png (digits decoded over the prior's quantiles); the
checkpoint NAME.npz (resume with --resume). Ends with ``test neg_elbo=...
rec=... kl=...`` (nats per image on the test set, one eps per image from
a fixed seed).
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

from scratchae import backend, plots
from scratchae.cli import DemoSpec, run_demo
from scratchae.layers.activations import sigmoid
from scratchae.vae import VAETrainer, conv_vae, vae
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
    name = SPECS[args.model].name  # the files' stem: vae or conv_vae
    test, latent = data.test_images, net.latent
    kind = "VAE" if args.model == "dense" else "Conv VAE"
    done = f"{plots.epochs(trainer.epoch)}, latent {latent}"
    digits = test[:10]
    rows = [("test digit", digits), ("reconstruction", trainer.predict(digits))]
    paths = [plots.image_rows(rows, out / f"{name}.png",
                              title=f"{kind} reconstructions (z = mu), {done}")]
    prior = np.random.default_rng([args.seed, SAMPLES_SEED]).standard_normal((64, latent))
    paths.append(plots.digit_grid(_decode(net, prior), out / f"{name}_samples.png", shape=(8, 8),
                                  title=f"64 digits decoded from z ~ N(0, I), {done}"))
    # walks between pairs of test digits: z = (1 - t) mu_a + t mu_b
    pairs = [(i, i + 1) for i in range(0, min(10, len(test) - 1), 2)]
    if pairs:
        mu = _encode_mu(net, test[:pairs[-1][1] + 1], trainer.eval_batch_size)
        t = np.linspace(0, 1, 10)[:, None]
        rows = [(f"{data.test_labels[a]} -> {data.test_labels[b]}",
                 _decode(net, (1 - t) * mu[a] + t * mu[b])) for a, b in pairs]
        paths.append(plots.image_rows(rows, out / f"{name}_interpolations.png",
                                      col_labels=[f"t={v:.2f}" for v in t[:, 0]],
                                      title=f"Straight lines in latent space between test "
                                            f"digits, decoded, {done}"))
    if latent == 2:
        mu = _encode_mu(net, test, trainer.eval_batch_size)
        paths.append(plots.latent_scatter(mu, data.test_labels, out / f"{name}_latent.png",
                                          title=f"The test set's mu, by digit ({len(test)} "
                                                f"images), {done}"))
        # the prior's quantiles: equal probability mass between neighbouring rows
        q = norm.ppf(np.linspace(0.05, 0.95, GRID))
        z = np.stack(np.meshgrid(q, q[::-1]), axis=-1).reshape(-1, 2)  # z2 grows upwards
        ticks = [f"{v:.2f}" for v in q]
        paths.append(plots.digit_grid(_decode(net, z), out / f"{name}_manifold.png",
                                      shape=(GRID, GRID), xlabel="$z_1$", ylabel="$z_2$",
                                      xticks=ticks, yticks=ticks[::-1],
                                      title=f"Digits decoded over the prior's quantiles "
                                            f"(norm.ppf of 0.05..0.95), {done}"))
    paths.append(plots.loss_curves(trainer.history, out / f"{name}_loss.png",
                                   title=kind, ylabel="negative ELBO (nats per image)"))
    return paths


def _extra_args(parser):
    parser.add_argument("--model", choices=("dense", "conv"), default="dense",
                        help="PyTorch's example VAE (dense) or Keras's convolutional one (conv)")
    parser.add_argument("--latent", type=arg_positive_int, default=None,
                        help="size of z; 2 draws the latent space "
                             "(default: 20 for --model dense, 2 for conv as in Keras's example)")
    parser.add_argument("--hidden", type=arg_positive_int, default=None,
                        help="units of the hidden Dense layer before mu and logvar "
                             "(default: 400 for --model dense, 16 for conv)")


def build_model(args):
    """The VAE the flags ask for."""
    if args.model == "conv":
        return conv_vae(latent=args.latent or 2, hidden=args.hidden or 16, seed=args.seed)
    return vae(latent=args.latent or 20, hidden=args.hidden or 400, seed=args.seed)


SPEC = DemoSpec(
    name="vae",
    description="Train a variational autoencoder (reparameterization and KL by hand) on MNIST "
                "and draw its latent space.",
    build_model=build_model,
    make_figures=make_figures,
    epochs=10,
    lr=1e-3,
    batch_size=128,
    extra_args=_extra_args,
    trainer=VAETrainer,
)
#: by --model: the conv VAE's checkpoint and figures are conv_vae*.
SPECS = {"dense": SPEC, "conv": dataclasses.replace(SPEC, name="conv_vae")}


def main(argv=None):
    # --model picks the files' stem (NAME.npz, NAME*.png) before the demo parses the rest
    picker = argparse.ArgumentParser(add_help=False)
    picker.add_argument("--model", default="dense")
    model = picker.parse_known_args(argv)[0].model
    return run_demo(SPECS.get(model, SPEC), argv)


if __name__ == "__main__":
    sys.exit(main())
