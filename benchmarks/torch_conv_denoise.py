"""The tutorial's convolutional denoiser trained in PyTorch: the reference for a real epoch.

    python benchmarks/torch_conv_denoise.py --epochs 1 --train-size 20000 --data-dir DIR

The same run as ``python demos/conv_denoise.py`` with the same flags: the
same architecture (121,281 parameters), the same MNIST images read by
``scratchae.data``, the same shuffling, training noise and fixed test
noise (NumPy generators seeded as ``scratchae.train.Trainer`` seeds them),
Adam with lr 1e-3, batch 128, sigmoid cross-entropy on logits, and the
test set evaluated after every epoch. It ends with the demo's summary line,
``test bce=... psnr_in=...dB psnr_out=...dB``, so the two can be compared
end to end, e.g. with ``/usr/bin/time -v`` on each command. The threads
are PyTorch's default (one per core), as a user would run it.

PyTorch is used here only, never in the package (``pip install -e ".[bench]"``).
"""

import argparse
import math
import time

import numpy as np
import torch
from torch import nn

from scratchae.data import load_mnist
from scratchae.validate import arg_non_negative_int, arg_positive_float, arg_positive_int


def conv_denoiser():
    """The tutorial's model, as in ``scratchae.models.conv_denoiser``."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),  # 7 -> 4, like TensorFlow's 'same'
        nn.Upsample(size=(7, 7), mode="nearest"), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Upsample(size=(14, 14), mode="nearest"), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Upsample(size=(28, 28), mode="nearest"), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 1, 3, padding=1),
    )


def gaussian(clean, factor, rng):
    """``clip(clean + factor * randn, 0, 1)``, drawn as ``scratchae.noise.gaussian`` draws it."""
    z = rng.standard_normal(clean.shape, dtype=np.float32)
    z *= np.float32(factor)
    return np.clip(clean + z, 0, 1)


def psnr(images, reference):
    mse = ((images - reference) ** 2).reshape(len(images), -1).mean(axis=1)
    return 10 * np.log10(1.0 / mse)


def evaluate(model, test, noisy, batch_size):
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    bce = psnr_in = psnr_out = 0.0
    with torch.no_grad():
        for i in range(0, len(test), batch_size):
            clean, inputs = test[i:i + batch_size], noisy[i:i + batch_size]
            logits = model(torch.from_numpy(inputs))
            bce += float(loss_fn(logits, torch.from_numpy(clean))) / clean[0].size
            psnr_in += float(psnr(inputs, clean).sum())
            psnr_out += float(psnr(torch.sigmoid(logits).numpy(), clean).sum())
    n = len(test)
    return bce / n, psnr_in / n, psnr_out / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=arg_positive_int, default=10)
    parser.add_argument("--batch-size", type=arg_positive_int, default=128)
    parser.add_argument("--lr", type=arg_positive_float, default=1e-3)
    parser.add_argument("--train-size", type=arg_positive_int, default=None)
    parser.add_argument("--noise-factor", type=arg_positive_float, default=0.5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=arg_non_negative_int, default=0)
    args = parser.parse_args(argv)

    data = load_mnist(args.data_dir, progress=False)
    train = data.train_images[:args.train_size]
    test = data.test_images
    torch.manual_seed(args.seed)
    model = conv_denoiser()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    shuffle_rng = np.random.default_rng([args.seed, 1])
    noise_rng = np.random.default_rng([args.seed, 2])
    noisy_test = gaussian(test, args.noise_factor, np.random.default_rng([args.seed, 3]))
    steps = math.ceil(len(train) / args.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: {len(train)} training / "
          f"{len(test)} test images from {data.source}", flush=True)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        perm = shuffle_rng.permutation(len(train))
        total = 0.0
        model.train()
        for step in range(steps):
            clean = train[perm[step * args.batch_size:(step + 1) * args.batch_size]]
            noisy = gaussian(clean, args.noise_factor, noise_rng)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(torch.from_numpy(noisy)), torch.from_numpy(clean))
            loss.backward()
            optimizer.step()
            total += loss.item()
        model.eval()
        bce, psnr_in, psnr_out = evaluate(model, test, noisy_test, args.batch_size)
        print(f"epoch {epoch + 1}/{args.epochs}  train bce={total / steps:.4f}  "
              f"test bce={bce:.4f} psnr_in={psnr_in:.2f}dB psnr_out={psnr_out:.2f}dB  "
              f"({time.perf_counter() - start:.1f}s)", flush=True)
    print(f"test bce={bce:.4f} psnr_in={psnr_in:.2f}dB psnr_out={psnr_out:.2f}dB")


if __name__ == "__main__":
    main()
