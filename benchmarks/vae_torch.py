"""PyTorch reference for scratchae's VAEs: the same models, data and metrics.

``--model dense`` (the default) is the model of PyTorch's ``examples/vae``
(Kingma & Welling's MNIST VAE), ``scratchae.vae.vae``::

    encoder  784 -> 400 (ReLU) -> 20 (mu), 20 (logvar)
    sampler  z = mu + exp(0.5 * logvar) * eps,  eps ~ N(0, I)
    decoder  20 -> 400 (ReLU) -> 784 logits

``--model conv`` is Keras's convolutional VAE, ``scratchae.vae.conv_vae``
(latent 2 by default)::

    encoder  Conv 3x3 stride 2 (32, ReLU) -> Conv 3x3 stride 2 (64, ReLU)
             -> Flatten -> 16 (ReLU) -> 2 (mu), 2 (logvar)
    decoder  2 -> 7*7*64 (ReLU) -> ConvTranspose 3x3 stride 2 (64, ReLU)
             -> ConvTranspose 3x3 stride 2 (32, ReLU) -> ConvTranspose 3x3 (1) logits

(the stride-2 layers with ``padding=1``, and ``output_padding=1`` for the
transposed ones, as in scratchae),

trained with Adam (lr 1e-3), batch 128, 10 epochs, on

    loss = BCE-with-logits summed over the 784 pixels + KL(q(z|x) || N(0, I)),

averaged over the batch (nats per image): the negative ELBO. It prints the
same summary line as scratchae's VAE (``scratchae.vae.format_summary``)::

    test neg_elbo=105.56 rec=80.03 kl=25.54

so the two can be compared number for number. PyTorch is used here only;
the package never imports it.

What is shared with scratchae, so that only the weights' initialisation
(PyTorch's own ``nn.Linear`` init here, Glorot there) and float rounding
differ:

* the data: ``scratchae.data.load_mnist(--data-dir)``, float32 in [0, 1];
* the order: ``numpy.random.default_rng([seed, 1]).permutation`` every
  epoch, as :class:`scratchae.train.Trainer` shuffles;
* the training noise: eps drawn on the host from
  ``numpy.random.default_rng([seed, 4])`` (float32, one (B, latent) draw
  per batch), the stream of scratchae's ``GaussianSampler`` built by
  ``scratchae.vae.vae(seed=seed)`` and ``scratchae.vae.conv_vae(seed=seed)``;
* the test metrics: one eps per test image from
  ``numpy.random.default_rng([seed, 3])``, drawn in test-set order, as
  ``scratchae.vae.evaluate`` does.

Usage
-----
::

    python benchmarks/vae_torch.py --data-dir /path/to/mnist      # 10 epochs
    python benchmarks/vae_torch.py --data-dir DIR --model conv     # latent 2
    python benchmarks/vae_torch.py --data-dir DIR --epochs 1 --threads 1

Options: ``--model`` (dense or conv), ``--init`` (torch: PyTorch's default
initialisation; scratchae: scratchae's initial weights for the same seed),
``--epochs`` (10), ``--batch-size``
(128), ``--lr`` (1e-3), ``--latent`` (20 dense, 2 conv), ``--hidden``
(400 dense, 16 conv), ``--seed`` (0), ``--threads`` (torch's default),
``--train-size`` (all).
"""

import argparse
import sys
import time

import numpy as np

from scratchae.data import load_mnist
from scratchae.validate import (
    arg_non_negative_int,
    arg_positive_float,
    arg_positive_int,
)

TEST_EPS_STREAM = 3  # numpy.random.default_rng([seed, 3]): eps of the test metrics
TRAIN_EPS_STREAM = 4  # numpy.random.default_rng([seed, 4]): eps of training (the sampler's)


def build_model(torch, latent, hidden):
    nn = torch.nn

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, hidden)
            self.fc_mu = nn.Linear(hidden, latent)
            self.fc_logvar = nn.Linear(hidden, latent)
            self.fc3 = nn.Linear(latent, hidden)
            self.fc4 = nn.Linear(hidden, 784)

        def encode(self, x):
            h = torch.relu(self.fc1(x.reshape(len(x), 784)))
            return self.fc_mu(h), self.fc_logvar(h)

        def decode(self, z):
            return self.fc4(torch.relu(self.fc3(z))).reshape(len(z), 1, 28, 28)

        def forward(self, x, eps):
            mu, logvar = self.encode(x)
            z = mu + torch.exp(0.5 * logvar) * eps
            return self.decode(z), mu, logvar

    return VAE()


def build_conv_model(torch, latent, hidden=16):
    """Keras's convolutional VAE (scratchae.vae.conv_vae), layer for layer."""
    nn = torch.nn

    class ConvVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),   # (32, 14, 14)
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # (64, 7, 7)
                nn.Flatten(), nn.Linear(64 * 7 * 7, hidden), nn.ReLU(),
                nn.Linear(hidden, 2 * latent))                         # [mu | logvar]
            self.decoder = nn.Sequential(
                nn.Linear(latent, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),                                             # (64, 14, 14)
                nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),                                             # (32, 28, 28)
                nn.ConvTranspose2d(32, 1, 3, padding=1))               # logits (1, 28, 28)

        def forward(self, x, eps):
            h = self.encoder(x)
            mu, logvar = h[:, :latent], h[:, latent:]
            z = mu + torch.exp(0.5 * logvar) * eps
            return self.decoder(z), mu, logvar

    return ConvVAE()


def copy_scratchae_init(torch, model, args):
    """Start from scratchae's initial weights (Glorot uniform, zero biases): ``--init scratchae``.

    The weights of ``scratchae.vae.conv_vae(seed=...)`` (or ``vae(...)``)
    for the same flags, so that the two runs differ only in float rounding.
    Conv2d and ConvTranspose2d weights have scratchae's layouts; a Linear's
    weight is a Dense's ``W`` transposed; the dense model's two heads are the
    two halves of scratchae's ``Dense(hidden, 2 * latent)``.
    """
    from scratchae.vae import conv_vae, vae

    if args.model == "conv":
        ref = conv_vae(latent=args.latent, hidden=args.hidden or 16, seed=args.seed)
        targets = {f"{part}.{i}": getattr(model, part)[i]
                   for part in ("encoder", "decoder") for i in (0, 2, 3, 5, 7)
                   if isinstance(getattr(model, part)[i], (torch.nn.Conv2d, torch.nn.Linear,
                                                           torch.nn.ConvTranspose2d))}
    else:
        ref = vae(latent=args.latent, hidden=args.hidden or 400, seed=args.seed)
        targets = {"encoder.1": model.fc1, "decoder.0": model.fc3, "decoder.2": model.fc4}
    params = {k: np.asarray(v) for k, v in ref.params.items()}
    with torch.no_grad():
        for key, module in targets.items():
            W = params[f"{key}.W"]
            module.weight.copy_(torch.from_numpy(W.T if W.ndim == 2 else W))
            module.bias.copy_(torch.from_numpy(params[f"{key}.b"]))
        if args.model == "dense":  # [W_mu | W_logvar]
            W, b, k = params["encoder.3.W"], params["encoder.3.b"], args.latent
            for head, cols in ((model.fc_mu, slice(0, k)), (model.fc_logvar, slice(k, 2 * k))):
                head.weight.copy_(torch.from_numpy(W[:, cols].T))
                head.bias.copy_(torch.from_numpy(b[cols]))
    return len(targets) + (2 if args.model == "dense" else 0)


def losses(torch, logits, x, mu, logvar):
    """Per-image reconstruction NLL and KL, both shape (N,), in nats."""
    F = torch.nn.functional
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return rec, kl


def evaluate(torch, model, images, batch_size, seed, latent):
    """Mean neg. ELBO, reconstruction and KL (nats per image), one eps per image."""
    rng = np.random.default_rng([seed, TEST_EPS_STREAM])
    rec_sum = kl_sum = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(images[i:i + batch_size])
            eps = torch.from_numpy(rng.standard_normal((len(x), latent), dtype=np.float32))
            logits, mu, logvar = model(x, eps)
            rec, kl = losses(torch, logits, x, mu, logvar)
            rec_sum += float(rec.double().sum())
            kl_sum += float(kl.double().sum())
    model.train()
    n = len(images)
    return {"neg_elbo": (rec_sum + kl_sum) / n, "rec": rec_sum / n, "kl": kl_sum / n}


def format_summary(m):
    return f"test neg_elbo={m['neg_elbo']:.2f} rec={m['rec']:.2f} kl={m['kl']:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/vae_torch.py",
                                     description="PyTorch reference run of the MNIST VAE.")
    parser.add_argument("--data-dir", help="directory with the four MNIST IDX (.gz) files")
    parser.add_argument("--model", choices=("dense", "conv"), default="dense",
                        help="PyTorch's example VAE (dense) or Keras's convolutional one")
    parser.add_argument("--epochs", type=arg_positive_int, default=10)
    parser.add_argument("--batch-size", type=arg_positive_int, default=128)
    parser.add_argument("--lr", type=arg_positive_float, default=1e-3)
    parser.add_argument("--latent", type=arg_positive_int, default=None,
                        help="size of z (default 20 dense, 2 conv)")
    parser.add_argument("--hidden", type=arg_positive_int, default=None,
                        help="units of the Dense layer before mu and logvar "
                             "(default 400 dense, 16 conv)")
    parser.add_argument("--seed", type=arg_non_negative_int, default=0)
    parser.add_argument("--threads", type=arg_positive_int, default=None)
    parser.add_argument("--init", choices=("torch", "scratchae"), default="torch",
                        help="PyTorch's default initialisation, or scratchae's initial weights "
                             "for the same --seed (then only float rounding differs)")
    parser.add_argument("--train-size", type=arg_positive_int, default=None)
    args = parser.parse_args(argv)
    if args.latent is None:
        args.latent = 2 if args.model == "conv" else 20

    try:
        import torch
    except ImportError:
        print("error: PyTorch is not installed (pip install -e \".[bench]\")", file=sys.stderr)
        return 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    mnist = load_mnist(args.data_dir)
    train = mnist.train_images[:args.train_size]
    test = mnist.test_images
    print(f"data: {mnist.source}, {len(train)} train / {len(test)} test images; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.model} VAE, latent {args.latent}")

    model = (build_conv_model(torch, args.latent, args.hidden or 16) if args.model == "conv"
             else build_model(torch, args.latent, args.hidden or 400))
    if args.init == "scratchae":
        layers = copy_scratchae_init(torch, model, args)
        print(f"init: scratchae's initial weights for seed {args.seed} ({layers} layers)")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    shuffle_rng = np.random.default_rng([args.seed, 1])
    eps_rng = np.random.default_rng([args.seed, TRAIN_EPS_STREAM])
    n = len(train)
    steps = -(-n // args.batch_size)
    start_all = time.perf_counter()
    for epoch in range(args.epochs):
        start = time.perf_counter()
        perm = shuffle_rng.permutation(n)
        total = 0.0
        for step in range(steps):
            index = perm[step * args.batch_size:(step + 1) * args.batch_size]
            x = torch.from_numpy(train[index])
            eps = torch.from_numpy(eps_rng.standard_normal((len(x), args.latent),
                                                           dtype=np.float32))
            logits, mu, logvar = model(x, eps)
            rec, kl = losses(torch, logits, x, mu, logvar)
            loss = (rec + kl).mean()  # negative ELBO, nats per image
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        m = evaluate(torch, model, test, 1000, args.seed, args.latent)
        print(f"epoch {epoch + 1}/{args.epochs}  train neg_elbo={total / steps:.2f}  "
              f"{format_summary(m)}  ({time.perf_counter() - start:.1f}s)", flush=True)
    print(f"total {time.perf_counter() - start_all:.1f}s")
    print(format_summary(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
