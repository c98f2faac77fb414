"""Train the conv denoiser with a plain loop: the four lines of backprop, nothing else.

    python demos/train_loop.py                  # 2 epochs on the bundled sample, about 35 s
    python demos/train_loop.py --epochs 1 --out /tmp/loop

The demos (demos/conv_denoise.py...) wrap the same step in scratchae.train.Trainer,
with progress, evaluation, checkpoints and Ctrl-C; here it is bare.
"""
import argparse
from pathlib import Path

import numpy as np

from scratchae import fast
from scratchae.data import load_sample
from scratchae.losses import SigmoidCrossEntropy
from scratchae.models import conv_denoiser
from scratchae.validate import arg_positive_int

parser = argparse.ArgumentParser(description="Train the conv denoiser with a bare loop.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--epochs", type=arg_positive_int, default=2, help="passes over the data")
parser.add_argument("--out", default="out", help="directory for train_loop.npz")
args = parser.parse_args()

data = load_sample()                          # 10,000 + 2,000 MNIST digits, (N, 1, 28, 28)
model = conv_denoiser(seed=0)                 # the textbook layers
net = fast.compile(model)                     # the same parameters, computed faster
loss_fn = fast.losses.faster(SigmoidCrossEntropy())
optimizer = fast.Adam(model.parameters(), lr=1e-3)
rng = np.random.default_rng(0)

for epoch in range(args.epochs):
    order = rng.permutation(len(data.train_images))
    for start in range(0, len(order), 32):
        clean = data.train_images[order[start:start + 32]]
        noisy = np.clip(clean + 0.5 * rng.standard_normal(clean.shape, dtype=np.float32), 0, 1)
        logits = net.forward(noisy)                   # predict
        loss = loss_fn.forward(logits, clean)         # compare with the clean image
        net.backward(loss_fn.backward())              # dL/dparam for every layer
        optimizer.step(net.gradients())               # Adam moves every parameter
    print(f"epoch {epoch + 1}: last batch loss {float(loss):.4f}")

clean = data.test_images
noisy = np.clip(clean + 0.5 * rng.standard_normal(clean.shape, dtype=np.float32), 0, 1)
test = [float(loss_fn.forward(net.forward(noisy[i:i + 500]), clean[i:i + 500]))
        for i in range(0, len(clean), 500)]             # 500 at a time: less memory
print(f"test loss {np.mean(test):.4f}")
model.save(Path(args.out) / "train_loop.npz")  # a checkpoint of the textbook model
