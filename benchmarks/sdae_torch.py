"""PyTorch reference for scratchae's stacked denoising autoencoder (SDAE).

The SDAE of Vincent et al. (JMLR 2010) and the Theano SdA tutorial on MNIST::

    784 -> 1000 -> 1000 -> 1000 (sigmoid) -> 10 (softmax)

trained in two stages:

1. **Greedy pretraining**, layer k = 1, 2, 3 in turn: a tied-weight denoising
   autoencoder on the clean codes of the trained layers below (layer 1: the
   images), ``h = sigmoid(x~ W_k + b_k)``, reconstruction logits
   ``h W_k^T + c_k``, sigmoid cross-entropy against the clean input (mean over
   the batch and the units), where ``x~`` is the input with each component
   zeroed with probability ``nu_k`` (masking noise; ``--corruption``).
   The codes of layer k for layer k + 1 are computed once, after layer k is
   trained, on the clean training images.
2. **Fine-tuning**: the three encoders stacked under a softmax layer, softmax
   cross-entropy (mean over the batch) on the labels, with masking noise
   ``--finetune-noise`` on the input images (the denoising criterion kept
   as a regulariser) and the learning rate decayed to 0 along a cosine, step
   by step: ``lr_t = lr * (1 + cos(pi * t / T)) / 2``, ``t`` the 0-based
   index of the update, ``T`` the number of updates of the stage.

Both stages use Adam (PyTorch's defaults besides the learning rate), batch
128. After every fine-tuning epoch the error on the validation split is
computed; the parameters of the epoch with the lowest validation error (the
earliest on a tie) are kept and the test set is evaluated once, with them, at
the end: nothing is selected on the test set.

It prints one line per epoch of each stage and ends with the line that
scratchae's ``demos/stacked_denoising.py`` ends with::

    test error=1.34% valid=1.41% (best fine-tuning epoch 17) pretrain=212s finetune=305s

so the two can be compared number for number and timed end to end.
PyTorch is used here only; the package never imports it.

What is shared with scratchae, so that only float rounding differs:

* the data: ``scratchae.data.load_mnist(--data-dir)``, images flattened to 784
  float32 in [0, 1]; the training digits 0..49,999 train, 50,000..59,999 are
  the validation split (the Theano tutorial's), the 10,000 test digits test;
* the weights, drawn with NumPy from ``numpy.random.default_rng(seed)`` in
  the order W1, W2, W3, W_out, each Glorot uniform
  ``uniform(-limit, limit, (fan_in, fan_out))`` with
  ``limit = sqrt(6 / (fan_in + fan_out))``, cast to float32; every bias 0
  (the encoders', the tied decoders' and the softmax layer's). A
  ``torch.nn.Linear`` would hold ``W.T``; here ``x @ W + b`` is written out;
* the order: stage k (k = 1, 2, 3 the pretraining of layer k, k = 4 the
  fine-tuning) shuffles with ``numpy.random.default_rng([seed, k, 1])``,
  ``perm = rng.permutation(n)`` each epoch, batches ``perm[i*B:(i+1)*B]``
  in order, the last partial batch included;
* the noise: stage k draws from ``numpy.random.default_rng([seed, k, 2])``,
  for each batch in order ``u = rng.random((B, n_in), dtype=float32)`` and
  the corrupted input ``x * (u >= nu)``; nothing is drawn when nu = 0.

Usage
-----
::

    python benchmarks/sdae_torch.py --data-dir /path/to/mnist     # the full recipe
    python benchmarks/sdae_torch.py --data-dir DIR --no-pretrain  # fine-tuning from random init
    python benchmarks/sdae_torch.py --data-dir DIR --corruption 0 # stacked ordinary autoencoders
    python benchmarks/sdae_torch.py --data-dir DIR --train-size 5000 \\
        --pretrain-epochs 1 --finetune-epochs 2                    # a quick check

Options: ``--seed`` (0), ``--hidden`` (1000,1000,1000), ``--corruption``
(0.1,0.2,0.3: one value for every layer or one per layer),
``--pretrain-epochs`` (10 per layer), ``--finetune-epochs`` (40),
``--batch-size`` (128, both stages), ``--pretrain-lr`` (1e-3),
``--finetune-lr`` (1e-3, the start of the cosine), ``--finetune-noise``
(0.1), ``--no-pretrain``, ``--train-size`` (the first N of the 50,000
training digits; the validation split stays whole), ``--threads`` (2).

On a quiet 2-core machine the defaults take about 4 to 5 minutes
(pretraining ~2-2.5 s per epoch and layer, fine-tuning ~4.5 s per epoch with
the validation pass). On a loaded machine, PyTorch's OpenMP threads wait on
each other: ``--threads 1`` is then faster than 2.
"""

import argparse
import math
import sys
import time

import numpy as np

from scratchae.data import load_mnist
from scratchae.validate import (
    arg_non_negative_int,
    arg_positive_float,
    arg_positive_int,
)

N_TRAIN = 50_000  # training digits 0..49,999; 50,000..59,999 are the validation split
N_VALID = 10_000
SHUFFLE_STREAM = 1  # numpy.random.default_rng([seed, stage, 1]): the order of stage `stage`
NOISE_STREAM = 2  # numpy.random.default_rng([seed, stage, 2]): the masking noise of that stage
EVAL_BATCH = 2000


def arg_int_list(text):
    """``--hidden``: comma-separated positive integers, e.g. ``1000,1000,1000``."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}")
    return values


def arg_corruption(text):
    """``--finetune-noise``: one masking probability in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:  # False for NaN
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def arg_corruption_list(text):
    """``--corruption``: comma-separated masking probabilities, each in [0, 1)."""
    try:
        return [arg_corruption(v) for v in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in [0, 1), got {text!r}") from None


def glorot_weights(seed, sizes):
    """The weights of every layer, drawn as scratchae draws them.

    Parameters
    ----------
    seed : int
    sizes : list of int
        ``[784, h1, ..., hL, 10]``.

    Returns
    -------
    list of ndarray
        ``W_k`` of shape (sizes[k], sizes[k + 1]), float32, in draw order.
    """
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32))
    return weights


def batches(n, batch_size, rng):
    """One epoch's batches of indices: a fresh permutation cut in order."""
    perm = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield perm[i:i + batch_size]


def mask(torch, x, nu, rng):
    """Masking noise: each component of ``x`` (B, D) zeroed with probability ``nu``."""
    if nu == 0:
        return x
    u = rng.random(tuple(x.shape), dtype=np.float32)
    return x * torch.from_numpy(u >= nu)


def pretrain(torch, codes, W, b, args, stage, nu, epochs):
    """Train one tied-weight denoising autoencoder in place; return its clean codes.

    Parameters
    ----------
    codes : Tensor, shape (n, D), float32
        The clean input of this layer (the images, or the codes below).
    W : Tensor, shape (D, H), requires_grad
        The encoder's weights, shared (transposed) by the decoder.
    b : Tensor, shape (H,), requires_grad
        The encoder's bias.
    stage : int
        k for layer k: picks the shuffle and noise streams.
    nu : float
        Masking probability.
    epochs : int

    Returns
    -------
    Tensor, shape (n, H), float32
        ``sigmoid(codes @ W + b)``, the next layer's input.
    """
    F = torch.nn.functional
    c = torch.zeros(W.shape[0], requires_grad=True)  # the decoder's own bias
    optimizer = torch.optim.Adam([W, b, c], lr=args.pretrain_lr)
    order_rng = np.random.default_rng([args.seed, stage, SHUFFLE_STREAM])
    noise_rng = np.random.default_rng([args.seed, stage, NOISE_STREAM])
    n = len(codes)
    steps = math.ceil(n / args.batch_size)
    for epoch in range(epochs):
        start = time.perf_counter()
        total = 0.0
        for index in batches(n, args.batch_size, order_rng):
            x = codes[torch.from_numpy(index)]
            h = torch.sigmoid(torch.addmm(b, mask(torch, x, nu, noise_rng), W))
            logits = torch.addmm(c, h, W.t())  # tied weights: the decoder is W^T
            loss = F.binary_cross_entropy_with_logits(logits, x)  # mean over batch and units
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        print(f"pretrain layer {stage} epoch {epoch + 1}/{epochs}  "
              f"train bce={total / steps:.4f}  ({time.perf_counter() - start:.1f}s)", flush=True)
    with torch.no_grad():
        return torch.sigmoid(torch.addmm(b, codes, W))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python benchmarks/sdae_torch.py",
        description="PyTorch reference run of the stacked denoising autoencoder on MNIST.")
    parser.add_argument("--data-dir", help="directory with the four MNIST IDX (.gz) files")
    parser.add_argument("--seed", type=arg_non_negative_int, default=0)
    parser.add_argument("--hidden", type=arg_int_list, default=[1000, 1000, 1000],
                        help="hidden layer sizes (default 1000,1000,1000)")
    parser.add_argument("--corruption", type=arg_corruption_list, default=[0.1, 0.2, 0.3],
                        help="masking probability of each layer's pretraining: one value "
                             "or one per layer (default 0.1,0.2,0.3; 0 = ordinary autoencoders)")
    parser.add_argument("--pretrain-epochs", type=arg_positive_int, default=10,
                        help="pretraining epochs per layer (default 10)")
    parser.add_argument("--finetune-epochs", type=arg_positive_int, default=40)
    parser.add_argument("--batch-size", type=arg_positive_int, default=128)
    parser.add_argument("--pretrain-lr", type=arg_positive_float, default=1e-3,
                        help="Adam's learning rate in pretraining (constant; default 1e-3)")
    parser.add_argument("--finetune-lr", type=arg_positive_float, default=1e-3,
                        help="Adam's initial learning rate in fine-tuning, decayed to 0 "
                             "along a cosine (default 1e-3)")
    parser.add_argument("--finetune-noise", type=arg_corruption, default=0.1,
                        help="masking probability on the images in fine-tuning (default 0.1)")
    parser.add_argument("--no-pretrain", action="store_true",
                        help="fine-tune from the random init (what pretraining buys)")
    parser.add_argument("--train-size", type=arg_positive_int, default=None,
                        help="train on the first N training digits (default all 50,000)")
    parser.add_argument("--threads", type=arg_positive_int, default=2)
    args = parser.parse_args(argv)

    n_layers = len(args.hidden)
    corruption = args.corruption * n_layers if len(args.corruption) == 1 else args.corruption
    if args.train_size is not None and args.train_size > N_TRAIN:
        parser.error(f"argument --train-size: expected at most {N_TRAIN} (the rest of the "
                     f"training digits are the validation split), got {args.train_size}")
    if len(corruption) != n_layers:
        parser.error(f"argument --corruption: expected 1 or {n_layers} values "
                     f"(one per hidden layer), got {len(corruption)}")
    try:
        import torch
    except ImportError:
        print("error: PyTorch is not installed (pip install -e \".[bench]\")", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    F = torch.nn.functional

    mnist = load_mnist(args.data_dir, progress=False)
    if len(mnist.train_images) < N_TRAIN + N_VALID:
        print(f"error: --data-dir: expected the {N_TRAIN + N_VALID} MNIST training digits, "
              f"got {len(mnist.train_images)} ({mnist.source})", file=sys.stderr)
        return 1
    images = mnist.train_images.reshape(len(mnist.train_images), -1)
    n = args.train_size or N_TRAIN
    train_x = torch.from_numpy(np.ascontiguousarray(images[:n]))
    train_y = torch.from_numpy(mnist.train_labels[:n])
    valid = images[N_TRAIN:N_TRAIN + N_VALID], mnist.train_labels[N_TRAIN:N_TRAIN + N_VALID]
    test = mnist.test_images.reshape(len(mnist.test_images), -1), mnist.test_labels
    print(f"data: {mnist.source}, {n} train / {len(valid[0])} valid / {len(test[0])} test "
          f"images; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    sizes = [images.shape[1], *args.hidden, 10]
    weights = [torch.from_numpy(w).requires_grad_() for w in glorot_weights(args.seed, sizes)]
    biases = [torch.zeros(size, requires_grad=True) for size in sizes[1:]]
    params = [p for pair in zip(weights, biases) for p in pair]

    start = time.perf_counter()
    if not args.no_pretrain:
        codes = train_x
        for k in range(n_layers):
            codes = pretrain(torch, codes, weights[k], biases[k], args, k + 1, corruption[k],
                             args.pretrain_epochs)
        del codes
    pretrain_s = time.perf_counter() - start

    def logits_of(x):
        for W, b in zip(weights[:-1], biases[:-1]):
            x = torch.sigmoid(torch.addmm(b, x, W))
        return torch.addmm(biases[-1], x, weights[-1])

    def error(split):
        """Error rate (%) of the argmax prediction on (images, labels)."""
        x, y = split
        wrong = 0
        with torch.no_grad():
            for i in range(0, len(x), EVAL_BATCH):
                predicted = logits_of(torch.from_numpy(x[i:i + EVAL_BATCH])).argmax(1).numpy()
                wrong += int((predicted != y[i:i + EVAL_BATCH]).sum())
        return 100.0 * wrong / len(x)

    start = time.perf_counter()
    stage = n_layers + 1
    optimizer = torch.optim.Adam(params, lr=args.finetune_lr)
    order_rng = np.random.default_rng([args.seed, stage, SHUFFLE_STREAM])
    noise_rng = np.random.default_rng([args.seed, stage, NOISE_STREAM])
    steps = math.ceil(n / args.batch_size)
    total_steps = args.finetune_epochs * steps
    best_valid, best_epoch, best_params = math.inf, 0, None
    step = 0
    for epoch in range(args.finetune_epochs):
        epoch_start = time.perf_counter()
        total = 0.0
        for index in batches(n, args.batch_size, order_rng):
            lr = args.finetune_lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = torch.from_numpy(index)
            x = mask(torch, train_x[index], args.finetune_noise, noise_rng)
            loss = F.cross_entropy(logits_of(x), train_y[index])  # mean over the batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            step += 1
        valid_error = error(valid)
        if valid_error < best_valid:  # the earliest epoch wins a tie
            best_valid, best_epoch = valid_error, epoch + 1
            best_params = [p.detach().clone() for p in params]
        print(f"fine-tune epoch {epoch + 1}/{args.finetune_epochs}  train loss={total / steps:.4f}"
              f"  valid error={valid_error:.2f}%  lr={lr:.2e}  "
              f"({time.perf_counter() - epoch_start:.1f}s)", flush=True)
    with torch.no_grad():
        for p, best in zip(params, best_params):
            p.copy_(best)
    print(f"the test set is evaluated once, with the parameters of fine-tuning epoch "
          f"{best_epoch} (the lowest validation error)")
    test_error = error(test)
    finetune_s = time.perf_counter() - start
    print(f"test error={test_error:.2f}% valid={best_valid:.2f}% "
          f"(best fine-tuning epoch {best_epoch}) "
          f"pretrain={pretrain_s:.0f}s finetune={finetune_s:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
