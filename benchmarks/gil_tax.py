"""What a second worker thread costs each worker: the memory it shares, and Python's GIL.

The compiled models split a batch over worker threads (``docs/fast.md``
section 7). Two workers on two cores do not each run at the speed of one:
this script times one worker's share of a training step (forward, loss,
backward, Adam on 64 images, one BLAS thread) while the other core runs,
in the same process,

* nothing (the worker alone),
* a thread of large GEMMs, which shares the caches and the memory bus but
  needs Python's global interpreter lock (GIL) once every ~100 ms,
* a second worker, the same step on its own copy of the model (the real
  split, without the split's own work),
* a thread of small NumPy calls, which takes and releases the GIL about
  every 2 microseconds.

NumPy releases the GIL inside its loops and BLAS calls but holds it while it
sets a call up, and the Python between calls holds it too. A thread that
comes back from a C call while the other thread holds the GIL sleeps until
it is released, and waking it takes the operating system tens of
microseconds on a virtual machine. The GEMM row shows what sharing the
machine costs; the difference between it and the second-worker row is what
the GIL costs, and it grows with the number of NumPy calls per step.

    python benchmarks/gil_tax.py [--model conv|vae] [--steps 40]
"""

import argparse
import statistics
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits

from scratchae import fast
from scratchae.losses import BernoulliNLL, SigmoidCrossEntropy
from scratchae.models import conv_denoiser
from scratchae.vae import conv_vae
from scratchae.validate import arg_positive_int


def one_worker_step(model_name, batch_size=64, seed=0):
    """A function that runs one training step of ``model_name`` on a fixed batch."""
    x = np.random.default_rng(seed).uniform(0, 1, (batch_size, 1, 28, 28)).astype(np.float32)
    if model_name == "vae":
        model = conv_vae(2)
        net = model.compiled(lambda part, input_grad: fast.compile(part, input_grad=input_grad,
                                                                   workers=1))
        loss = fast.losses.faster(BernoulliNLL())
        penalty = net.penalty
    else:
        model = conv_denoiser()
        net = fast.compile(model, workers=1)
        loss = fast.losses.faster(SigmoidCrossEntropy())
        penalty = float
    optimizer = fast.Adam(model.parameters(), lr=1e-3)

    def step():
        loss.forward(net.forward(x), x)
        penalty()
        net.backward(loss.backward())
        optimizer.step(net.gradients())
    return step


def large_gemms(stop):
    a = np.random.default_rng(1).standard_normal((1500, 1500), dtype=np.float32)
    while not stop.is_set():
        a @ a


def small_calls(stop):
    a = np.random.default_rng(1).standard_normal(2000, dtype=np.float32)
    out = np.empty_like(a)
    while not stop.is_set():
        for _ in range(100):
            np.add(a, 1, out=out)


def timed(step, steps):
    """Median milliseconds of ``steps`` calls of ``step`` after 3 untimed ones."""
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def with_neighbour(step, neighbour, steps):
    """Time ``step`` while ``neighbour(stop_event)`` runs in another thread."""
    stop = threading.Event()
    thread = threading.Thread(target=neighbour, args=(stop,))
    thread.start()
    try:
        return timed(step, steps)
    finally:
        stop.set()
        thread.join()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/gil_tax.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("conv", "vae"), default="conv",
                        help="the conv denoiser (default) or the conv VAE")
    parser.add_argument("--steps", type=arg_positive_int, default=40)
    args = parser.parse_args(argv)
    with threadpool_limits(1, "blas"):
        step = one_worker_step(args.model)
        twin = one_worker_step(args.model, seed=1)
        alone = timed(step, args.steps)
        gemms = with_neighbour(step, large_gemms, args.steps)

        def second_worker(stop):
            while not stop.is_set():
                twin()
        second = with_neighbour(step, second_worker, args.steps)
        small = with_neighbour(step, small_calls, args.steps)
    print(f"one worker's step ({args.model}, 64 images, one BLAS thread), median of "
          f"{args.steps}; the other core runs, in the same process:")
    for name, ms in (("nothing", alone), ("large GEMMs (memory shared, GIL rarely taken)", gemms),
                     ("a second worker (the real split)", second),
                     ("small NumPy calls (the GIL taken every ~2 us)", small)):
        print(f"  {name:48s} {ms:7.1f} ms  {ms / alone:5.2f}x")


if __name__ == "__main__":
    main()
