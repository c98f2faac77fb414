"""Where a fine-tuning step of the stacked denoising autoencoder spends its time, against PyTorch.

    python benchmarks/sdae_step.py --data-dir DIR [--repeats 200] [--rounds 3]

One step of the demo's fine-tuning (784-1000-1000-1000-10, sigmoid units,
batch 128 of real MNIST digits, masking noise 0.1, softmax cross-entropy,
Adam), cut into its parts by wall-clock timers, for scratchae's fast path
and for the same network in PyTorch (``benchmarks/sdae_torch.py``'s), in
alternating rounds; then Adam alone on the network's 2.8 million
parameters: scratchae's blocked in-place update on one thread and its
blocks shared between two threads, and PyTorch's three implementations
(the default loop, ``foreach=True``, ``fused=True``). The figures behind
docs/sdae.md section 9. Needs PyTorch (``pip install -e ".[bench]"``).
"""

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from sdae_torch import glorot_weights, mask  # the PyTorch twin's init and noise (benchmarks/)

from scratchae import backend
from scratchae.data import load_mnist
from scratchae.noise import make_noise
from scratchae.sdae import ClassifierTrainer, StackedDenoisingAutoencoder
from scratchae.validate import arg_positive_int

BATCH = 128
SIZES = [784, 1000, 1000, 1000, 10]


class Timers:
    """Summed wall-clock seconds per named part."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, name, f):
        start = time.perf_counter()
        result = f()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return result

    def line(self, who, steps, total):
        parts = "  ".join(f"{k} {v / steps * 1e3:.2f}" for k, v in self.seconds.items())
        return f"{who:9s} {parts}  | step {total / steps * 1e3:.2f} ms"


def ours(x, y, repeats):
    trainer = ClassifierTrainer(StackedDenoisingAutoencoder(seed=0).classifier, progress=False,
                                noise=make_noise("mask", 0.1))
    net, loss_fn, optimizer = trainer.net, trainer.loss_fn, trainer.optimizer
    timers = Timers()

    def step():
        noisy = timers("noise", lambda: trainer.noise(x, trainer.noise_rng))
        logits = timers("forward", lambda: net.forward(noisy))
        timers("loss", lambda: loss_fn.forward(logits, y))
        dlogits = loss_fn.backward()
        timers("backward", lambda: net.backward(dlogits))
        timers("adam", lambda: optimizer.step(net.gradients()))

    return run(step, timers, repeats, "scratchae")


def theirs(x, y, repeats):
    weights = [torch.from_numpy(w).requires_grad_() for w in glorot_weights(0, SIZES)]
    biases = [torch.zeros(s, requires_grad=True) for s in SIZES[1:]]
    optimizer = torch.optim.Adam([p for pair in zip(weights, biases) for p in pair], lr=1e-3)
    x, y = torch.from_numpy(x.reshape(BATCH, -1)), torch.from_numpy(y.astype(np.int64))
    noise_rng = np.random.default_rng(1)
    timers = Timers()

    def logits_of(h):
        for W, b in zip(weights[:-1], biases[:-1]):
            h = torch.sigmoid(torch.addmm(b, h, W))
        return torch.addmm(biases[-1], h, weights[-1])

    def step():
        noisy = timers("noise", lambda: mask(torch, x, 0.1, noise_rng))
        loss = timers("fwd+loss", lambda: torch.nn.functional.cross_entropy(logits_of(noisy), y))
        optimizer.zero_grad(set_to_none=True)
        timers("backward", loss.backward)
        timers("adam", optimizer.step)
        float(loss.detach())

    return run(step, timers, repeats, "PyTorch")


def run(step, timers, repeats, who):
    for _ in range(10):
        step()
    timers.seconds.clear()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return timers.line(who, repeats, time.perf_counter() - start)


def median_ms(f, repeats):
    for _ in range(5):
        f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def adam_alone(repeats):
    """Adam's update alone, warm: scratchae on one and two threads, PyTorch's three kinds."""
    rng = np.random.default_rng(0)
    shapes = [s for a, b in zip(SIZES, SIZES[1:]) for s in ((a, b), (b,))]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [1e-3 * rng.standard_normal(s).astype(np.float32) for s in shapes]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    block = backend.ADAM_BLOCK
    blocks = [[a.reshape(-1)[i:i + block] for a in (p, g, m, v)]
              for p, g, (m, v) in zip(params, grads, moments) for i in range(0, p.size, block)]
    scratch = [np.empty(block, np.float32) for _ in range(2)]

    def update(share, k):
        for p, g, m, v in share:
            backend.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, scratch[k][:p.size],
                                flush=False)

    rows = [("scratchae, 1 thread", median_ms(lambda: update(blocks, 0), repeats))]
    with ThreadPoolExecutor(2) as pool:
        halves = [blocks[:len(blocks) // 2], blocks[len(blocks) // 2:]]
        rows.append(("scratchae, blocks on 2 threads",
                     median_ms(lambda: list(pool.map(update, halves, (0, 1))), repeats)))
    for kind in ({}, {"foreach": True}, {"fused": True}):
        tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g)
        optimizer = torch.optim.Adam(tensors, lr=1e-3, **kind)
        name = ", ".join(f"{k}=True" for k in kind) or "the default"
        rows.append((f"PyTorch, {name}, {torch.get_num_threads()} threads",
                     median_ms(optimizer.step, repeats)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=arg_positive_int, default=200,
                        help="timed steps per round (default: 200)")
    parser.add_argument("--rounds", type=arg_positive_int, default=3,
                        help="alternating rounds of the two libraries (default: 3)")
    args = parser.parse_args(argv)
    data = load_mnist(args.data_dir, progress=False)
    x, y = data.train_images[:BATCH], data.train_labels[:BATCH]
    print(f"one fine-tuning step, batch {BATCH}, ms per part (wall clock), "
          f"PyTorch {torch.__version__} on {torch.get_num_threads()} threads")
    for _ in range(args.rounds):
        print(ours(x, y, args.repeats), flush=True)
        print(theirs(x, y, args.repeats), flush=True)
    print("Adam alone, 2.8 million parameters, median ms:")
    for name, ms in adam_alone(args.repeats // 4 or 1):
        print(f"  {name:40s} {ms:6.2f}", flush=True)


if __name__ == "__main__":
    main()
