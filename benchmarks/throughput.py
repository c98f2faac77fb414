"""Training-step throughput and memory of scratchae's two autoencoders.

Times one training step -- forward pass, sigmoid cross-entropy loss,
backward pass, Adam update -- of ``scratchae.models.conv_denoiser()`` and
``scratchae.models.dense_autoencoder()`` on a fixed random batch, and
optionally the same step of the same architecture in PyTorch.

Usage
-----
From the repository root, with the package installed
(``pip install -e .``; ``pip install -e ".[bench]"`` adds PyTorch)::

    python benchmarks/throughput.py                  # both models, NumPy
    python benchmarks/throughput.py --vs-torch       # ... and PyTorch, alternating
    python benchmarks/throughput.py --profile        # per-layer time breakdown
    python benchmarks/throughput.py --model dense --batch-size 256
    python benchmarks/throughput.py --backend cupy --vs-torch   # GPU (torch on CUDA)
    python benchmarks/throughput.py --threads 1      # single-threaded BLAS
    python benchmarks/throughput.py --workers 1      # no batch slices on threads
    python benchmarks/throughput.py --textbook       # the textbook layers, not scratchae.fast

Options
-------
--model {conv,dense,both}    which autoencoder(s), default both
--batch-size B               default 128
--backend {numpy,cupy}       where scratchae runs, default numpy
--repeats R                  timed steps, default 10
--warmup W                   untimed steps first, default 3
--threads T                  BLAS/OpenMP threads; sets OPENBLAS_NUM_THREADS,
                             OMP_NUM_THREADS and MKL_NUM_THREADS before NumPy is
                             imported, and ``torch.set_num_threads(T)``. Default:
                             what NumPy's BLAS already uses (threadpoolctl if it
                             is installed, else those variables, else the number
                             of CPUs this process may run on)
--workers W                  workers that share each batch on scratchae's fast
                             path (scratchae.fast.parallel); default: one per
                             BLAS thread on NumPy, 1 on CuPy
--textbook                   time the textbook layers (scratchae.layers), as
                             written, instead of the fast path (scratchae.fast),
                             as Trainer(fast=False) trains them: each batch split
                             over --workers threads (--workers 1: one plain loop)
--ablate                     what each trick of the fast path gains: the full fast
                             path and, alternating with it, the fast path without
                             each trick in turn (every name --without takes, and
                             --workers 1), one table of step times per model
--without RULE[,RULE...]     the fast path without some of its tricks, to measure
                             what each gains: a rewrite rule of scratchae.fast
                             (subpixel, window_grad, conv, conv_pool, maxpool,
                             relu_pool, fused_relu, dense, upsample, reshape),
                             first_dx (compute the first layer's
                             dx), fast_loss (the textbook loss), fast_adam (the
                             textbook Adam); --workers 1 leaves out the threads
--dtype {float32,float64}    default float32 (PyTorch uses the same dtype)
--vs-torch                   also time PyTorch (skipped with a note if absent)
--profile                    per-layer forward/backward breakdown
--min-time SECONDS           shortest duration of one timed repeat, default 0.05:
                             a step faster than that (the dense model's) runs
                             several times back to back per repeat; 0 = one step
--no-memory                  skip the peak-memory subprocesses
--seed S                     seed of the weights and of the batch, default 0
--clock {wall,cpu}           wall (default): elapsed time; cpu: the process's CPU
                             seconds, all threads added up, far less disturbed by
                             other processes on a busy machine; with --threads 1
                             --workers 1 it is the work of one step

The batch
---------
``clean`` is uniform in [0, 1], shape (B, 1, 28, 28); the input is
``clip(clean + 0.5 * gaussian noise, 0, 1)`` and the target is ``clean``
(a denoising step). The same arrays feed both frameworks.

What the numbers mean
---------------------
median ms
    Median wall-clock time of one step over ``--repeats`` timed repeats
    (after ``--warmup`` untimed steps, which pay for first-touch page
    faults, lazy allocations and caches). A repeat is one step, or, when a
    step is shorter than ``--min-time`` (judged from the fastest warm-up
    step), ``steps/repeat`` steps back to back whose mean is taken, so that
    microsecond timer and scheduler jitter do not dominate. The median
    ignores the odd repeat slowed down by another process; min and max are
    printed beside it to show the spread. On CuPy (and torch on CUDA) the
    GPU is synchronised before each timer starts and stops, since GPU calls
    return before the work is done.
samples/s
    ``B / median``: training samples processed per second.
GFLOP/s, % sgemm
    Effective GFLOP/s: the step's floating-point operations counted by the
    direct algorithm (multiply-adds x 2: KH*KW*C*O per output pixel of a
    conv, 16*C*O per input pixel of a sub-pixel conv, the four 2x2 phase
    convolutions; forward, dW, and dx where it is computed), whatever the
    op really computes, over the median step time: the same count for both
    frameworks. "% sgemm" sets it against the machine's limit measured in
    the same run: NumPy's float32 GEMM of two 1024 x 1024 matrices on
    ``--threads`` threads (best of 5). ``--profile`` gives the same figure
    for each op's forward and backward.
ratio
    scratchae samples/s divided by torch samples/s: above 1 means
    scratchae is faster. The two frameworks are timed *alternately*
    (scratchae step, torch step, scratchae step, ...) in one process, so a
    burst of machine noise hits both rather than only one of them.
peak RSS
    Peak resident memory (high-water mark: ``VmHWM`` of /proc/self/status
    on Linux, ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` elsewhere --
    Linux's ru_maxrss survives ``exec`` and would include the parent's
    peak) of a fresh subprocess that imports only one framework, builds one model and
    runs ``--warmup`` + min(``--repeats``, 3) steps (every buffer, gradient
    and Adam moment exists after the first step, so more steps add nothing),
    plus the peaks of the worker processes it forked (scratchae's fast
    path on Linux), which count the pages they share with it once more
    each: an upper bound for scratchae.
    Measuring in a separate process keeps the two frameworks (and the two
    models) from counting each other's memory.
baseline
    The subprocess's RSS right after its imports (interpreter + NumPy +
    the framework), before any model exists.
peak - baseline
    What the training step itself needed: weights, gradients, Adam state,
    the batch, the activations kept for backward and scratch buffers.
GPU pool peak
    With ``--backend cupy``: bytes held by CuPy's default memory pool after
    the steps (the pool never shrinks by itself, so this is its peak), and
    ``torch.cuda.max_memory_reserved()`` for torch.

With ``--profile``, each layer's ``forward`` and ``backward`` are wrapped
with timers (the GPU is synchronised around every call on CuPy, which makes
that step a little slower than an unprofiled one). The table lists, per
layer, the median forward and backward milliseconds over the ``--repeats``
profiled steps; the loss, the Adam update and the remainder (Python glue
between layers, the timers themselves) get rows of their own. "% step" is
each row's share of the sum of all rows, a typical step whose parts add up
to 100 %.

This is a script that prints figures, not a test: results depend on the
machine, the BLAS library and whatever else is running. The 1-minute load
average is printed at the start and at the end: when it exceeds the number
of CPUs, other processes competed for them, and multithreaded BLAS/OpenMP
code suffers most (its threads wait for each other), so absolute figures
can be several times slower; the alternating ratio is steadier.
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

# Only the argument checks before NumPy: --threads must be set before NumPy
# loads its BLAS (scratchae.validate imports nothing heavy).
from scratchae.validate import arg_non_negative_int, arg_positive_float, arg_positive_int

MODELS = ("conv", "dense")
FRAMEWORKS = ("scratchae", "torch")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CHILD_MARKER = "@@memory-result@@ "
MEMORY_CHILD_MAX_REPEATS = 3

np = None  # NumPy is imported in main(), after the thread variables are set.
clock = time.perf_counter  # what a step's time is read from (--clock)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Time one training step (forward, loss, backward, Adam) of "
                    "scratchae's autoencoders, optionally against PyTorch.",
    )
    parser.add_argument("--model", choices=MODELS + ("both",), default="both")
    parser.add_argument("--batch-size", type=arg_positive_int, default=128)
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--repeats", type=arg_positive_int, default=10,
                        help="timed steps (default 10)")
    parser.add_argument("--warmup", type=arg_non_negative_int, default=3,
                        help="untimed steps before timing (default 3)")
    parser.add_argument("--threads", type=arg_positive_int, default=None,
                        help="BLAS/OpenMP threads (default: what NumPy's BLAS uses)")
    parser.add_argument("--workers", type=arg_positive_int, default=None,
                        help="scratchae workers sharing each batch (default: one per "
                             "BLAS thread on NumPy, 1 on CuPy)")
    parser.add_argument("--textbook", action="store_true",
                        help="time the textbook layers as written, not the fast path")
    parser.add_argument("--ablate", action="store_true",
                        help="time the fast path without each of its tricks in turn")
    parser.add_argument("--without", default="", metavar="RULE[,RULE...]",
                        help="the fast path without these tricks (see the docstring)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--vs-torch", action="store_true",
                        help="also time the same architecture in PyTorch")
    parser.add_argument("--profile", action="store_true",
                        help="per-layer forward/backward time breakdown")
    parser.add_argument("--min-time", type=arg_positive_float, default=0.05,
                        help="shortest duration of one timed repeat in seconds: fast steps "
                             "run several times back to back per repeat (default 0.05; "
                             "0 = exactly one step per repeat)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory subprocesses")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time (default); cpu: CPU seconds of the whole "
                             "process, every thread added up, which other processes on a "
                             "busy machine disturb far less (use with --threads 1 "
                             "--workers 1: the work of a step, not its parallel speed)")
    # Internal: run one (model, framework) pair and report its memory as JSON.
    parser.add_argument("--_memory-child", nargs=2, metavar=("MODEL", "FRAMEWORK"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._memory_child is not None:
        model, framework = args._memory_child
        if model not in MODELS or framework not in FRAMEWORKS:
            parser.error(f"bad --_memory-child arguments: {model} {framework}")
    return args


# --------------------------------------------------------------------------
# machine description
# --------------------------------------------------------------------------
def usable_cpus():
    """CPUs this process may run on (what OpenBLAS sizes its pool by)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def detect_blas_threads():
    """Return (threads, where the number came from) for NumPy's BLAS."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return max(p["num_threads"] for p in pools), "threadpoolctl"
    for var in THREAD_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), var
    return usable_cpus(), "CPU count"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def blas_description():
    """NumPy's BLAS as 'name version', from numpy.show_config(mode='dicts')."""
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
    except Exception:  # older NumPy: no mode= argument / other layout
        return "unknown BLAS"
    return f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()


def gpu_name():
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return "unknown GPU"


# --------------------------------------------------------------------------
# the batch and the two frameworks' training steps
# --------------------------------------------------------------------------
def make_batch(batch_size, dtype, seed):
    """Host arrays (noisy input, clean target), shape (B, 1, 28, 28), in [0, 1]."""
    rng = np.random.default_rng(seed)
    clean = rng.random((batch_size, 1, 28, 28))
    noisy = np.clip(clean + 0.5 * rng.standard_normal(clean.shape), 0.0, 1.0)
    return noisy.astype(dtype), clean.astype(dtype)


def no_sync():
    pass


def scratchae_sync_fn(args):
    if args.backend == "cupy":
        from scratchae import backend
        return backend.synchronize
    return no_sync


def build_scratchae(model_name, args):
    """Return (net, loss, optimizer) of scratchae on the current backend.

    ``net`` is the fast path (``scratchae.fast.compile``) or, with
    ``--textbook``, the textbook model itself; both train the same parameters.
    """
    from scratchae import fast, losses, models, optim
    make = models.conv_denoiser if model_name == "conv" else models.dense_autoencoder
    model = make(seed=args.seed, dtype=np.dtype(args.dtype))
    # As in scratchae.train.Trainer: the data is checked once up front, so the
    # per-step NaN/inf and [0, 1] checks are off (on CuPy each would sync).
    model.check_finite = False
    loss = losses.SigmoidCrossEntropy(check_targets=False)
    if args.textbook:  # as scratchae.train.Trainer(fast=False) trains it
        net = (fast.compile(model, workers=args.workers, rules=()) if args.workers > 1
               else model)
        return net, loss, optim.Adam(model.parameters(), lr=1e-3)
    without = set(filter(None, args.without.split(",")))
    rules = [rule for rule in fast.model.RULES if rule not in without]
    net = fast.compile(model, workers=args.workers, rules=rules,
                       input_grad="first_dx" in without)
    loss = loss if "fast_loss" in without else fast.losses.faster(loss)
    adam = optim.Adam if "fast_adam" in without else fast.Adam
    return net, loss, adam(model.parameters(), lr=1e-3)


def scratchae_step_fn(model_name, args, batch):
    """A function running one scratchae training step, and its sync function."""
    from scratchae import backend
    net, loss_fn, optimizer = build_scratchae(model_name, args)
    x, t = (backend.asarray(a) for a in batch)

    def step():  # the four lines of scratchae.train.Trainer.train_step
        logits = net.forward(x)
        loss_fn.forward(logits, t)
        net.backward(loss_fn.backward())
        optimizer.step(net.gradients())

    # for the printout: how many threads share the batch
    step.workers = net.workers_for(tuple(x.shape)) if hasattr(net, "workers_for") else 1
    return step, scratchae_sync_fn(args)


def import_torch():
    """Return the torch module, or (None, reason) when it cannot be used here."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed (pip install -e \".[bench]\")"
    return torch, None


def torch_device(torch, args):
    """'cpu' or 'cuda' to match --backend; (None, reason) if CUDA is missing."""
    if args.backend == "cupy":
        if not torch.cuda.is_available():
            return None, (f"torch {torch.__version__} has no usable CUDA device, "
                          "so there is no GPU torch to compare with")
        return "cuda", None
    return "cpu", None


def build_torch_model(model_name, torch):
    if model_name == "dense":
        nn = torch.nn
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 64), nn.ReLU(),
            nn.Linear(64, 784),
            nn.Unflatten(1, (1, 28, 28)),
        )
    from torch_conv_denoise import conv_denoiser  # this folder: the same model, end to end
    return conv_denoiser()


def torch_step_fn(model_name, args, batch, torch, device):
    """A function running one torch training step, and its sync function."""
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    model = build_torch_model(model_name, torch).to(device=device, dtype=dtype)
    criterion = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, t = (torch.from_numpy(a).to(device) for a in batch)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), t)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device == "cuda" else no_sync
    return step, sync


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------
#: Untimed steps before every timed repeat, for at least this long (seconds).
#: After a call, OpenBLAS's and OpenMP's worker threads keep spinning on the
#: cores for up to ~0.1 s, waiting for more work. Had the other framework
#: just run, its spinning threads would steal the cores from this one's
#: timed repeat (measured: torch's dense step 1.1 ms -> 6 ms right after a
#: scratchae step with a 2-thread OpenBLAS). By the end of this settling
#: time they have gone to sleep.
SETTLE_SECONDS = 0.2


def settle(step, sync, seconds):
    """Run ``step`` untimed, at least once, until ``seconds`` have passed."""
    start = time.perf_counter()
    while True:
        step()
        sync()
        if time.perf_counter() - start >= seconds:
            return


def time_alternating(runners, warmup, repeats, min_time):
    """Time ``runners`` ({name: (step, sync)}) taking turns, one repeat each.

    A repeat is ``inner`` back-to-back steps, ``inner`` chosen from the
    fastest warm-up step so that a repeat lasts at least ``min_time``
    seconds (1 for slow steps, or when there is no warm-up).

    Returns ({name: list of seconds per step, one per repeat}, {name: inner}).
    """
    fastest = {name: float("inf") for name in runners}
    for _ in range(warmup):
        for name, (step, sync) in runners.items():
            start = time.perf_counter()
            step()
            sync()
            fastest[name] = min(fastest[name], time.perf_counter() - start)
    inner = {name: max(1, math.ceil(min_time / fastest[name])) if warmup else 1
             for name in runners}
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, (step, sync) in runners.items():
            settle(step, sync, SETTLE_SECONDS)
            start = clock()
            for _ in range(inner[name]):
                step()
            sync()
            times[name].append((clock() - start) / inner[name])
    return times, inner


def profile_scratchae(model_name, args, batch):
    """Per-op (fast path) or per-layer (textbook) forward/backward medians of scratchae's step.

    Returns (rows, step median seconds); rows are dicts with
    index, name, shape, fwd, bwd (seconds, medians).
    """
    from scratchae import backend
    sync = scratchae_sync_fn(args)
    args_one = argparse.Namespace(**{**vars(args), "workers": 1})  # every row its own time
    net, criterion, optimizer = build_scratchae(model_name, args_one)
    parts = net.layers if args.textbook else net.ops
    x, t = (backend.asarray(a) for a in batch)
    records = [{"fwd": [], "bwd": [], "shape": None} for _ in parts]

    def timed(fn, times, record_shape=None):
        def wrapper(*args, **kwargs):
            sync()
            start = clock()
            out = fn(*args, **kwargs)
            sync()
            times.append(clock() - start)
            if record_shape is not None:
                record_shape["shape"] = tuple(out.shape)
            return out
        return wrapper

    # Instance attributes shadow the class's methods, so the model's
    # ``part.forward(x)`` calls the timed wrappers. This model is private
    # to the profile, nothing else sees the wrappers.
    for part, rec in zip(parts, records):
        part.forward = timed(part.forward, rec["fwd"], record_shape=rec)
        part.backward = timed(part.backward, rec["bwd"])

    loss_fwd, loss_bwd, adam, total = [], [], [], []

    def step(timing):
        sync()
        start = clock()
        logits = net.forward(x)
        t0 = clock()
        criterion.forward(logits, t)
        sync()
        t1 = clock()
        dlogits = criterion.backward()
        sync()
        t2 = clock()
        net.backward(dlogits)
        t3 = clock()
        optimizer.step(net.gradients())
        sync()
        t4 = clock()
        if timing:
            loss_fwd.append(t1 - t0)
            loss_bwd.append(t2 - t1)
            adam.append(t4 - t3)
            total.append(t4 - start)

    for _ in range(args.warmup):
        step(timing=False)
    for rec in records:  # forget the warm-up steps' times
        rec["fwd"].clear()
        rec["bwd"].clear()
    for _ in range(args.repeats):
        step(timing=True)

    def med(times):  # the fast path's ops before the first weights never run backward
        return statistics.median(times) if times else 0.0
    flops = step_flops(net, x.shape)
    rows = [
        {"index": str(i), "name": repr(part), "shape": rec["shape"],
         "fwd": med(rec["fwd"]), "bwd": med(rec["bwd"]), "flops": flops[i]}
        for i, (part, rec) in enumerate(zip(parts, records))
    ]
    rows.append({"index": "", "name": "SigmoidCrossEntropy (loss)", "shape": (),
                 "fwd": med(loss_fwd), "bwd": med(loss_bwd)})
    rows.append({"index": "", "name": "Adam.step", "shape": None,
                 "fwd": 0.0, "bwd": med(adam)})
    # What no timer covered: Python glue between layers, the timers themselves.
    per_step_rest = []
    for k in range(args.repeats):
        covered = sum(rec["fwd"][k] + (rec["bwd"][k] if rec["bwd"] else 0.0) for rec in records)
        covered += loss_fwd[k] + loss_bwd[k] + adam[k]
        per_step_rest.append(total[k] - covered)
    rows.append({"index": "", "name": "other (glue, timers)", "shape": None,
                 "fwd": 0.0, "bwd": med(per_step_rest)})
    return rows, med(total)


# --------------------------------------------------------------------------
# effective GFLOP/s: the direct algorithm's multiply-adds x 2
# --------------------------------------------------------------------------
def layer_flops(layer, in_shape):
    """Forward FLOPs (2 x multiply-adds) of one textbook layer by the direct algorithm.

    in_shape : the layer's NCHW (or (N, D)) input shape. Layers without
    weights (pools, ReLUs, resizes) count 0.
    """
    from scratchae.layers import Conv2D, ConvTranspose2D, Dense
    if isinstance(layer, Conv2D):
        n, o, oh, ow = layer.output_shape(in_shape)
        kh, kw = layer.kernel_size
        return 2 * n * oh * ow * kh * kw * layer.in_channels * o
    if isinstance(layer, ConvTranspose2D):
        n, c, h, w = in_shape
        kh, kw = layer.kernel_size
        return 2 * n * h * w * kh * kw * c * layer.out_channels
    if isinstance(layer, Dense):
        return 2 * in_shape[0] * layer.in_features * layer.out_features
    return 0


def step_flops(net, batch_shape):
    """[(forward FLOPs, backward FLOPs)] per op of ``net`` (per layer for a textbook model).

    The direct algorithm's count, whatever the op really computes: a
    ``Conv`` counts KH*KW*C*O multiply-adds per output pixel; a
    ``SubPixelConv`` counts its four 2x2 phase convolutions, 16*C*O per
    input pixel (the sub-pixel rule's own direct count, without the border
    of its (H+1) x (W+1) grid); a Winograd or window trick that computes
    fewer products still counts these. The backward counts dW (as many as
    the forward) and dx (as many again) where the op computes it.
    """
    parts = getattr(net, "ops", None)
    shape = tuple(batch_shape)
    counts = []
    if parts is None:  # the textbook model: every layer computes dx
        for layer in net.layers:
            fwd = layer_flops(layer, shape)
            counts.append((fwd, 2 * fwd))
            shape = layer.output_shape(shape)
        return counts
    for op in parts:
        if type(op).__name__ == "SubPixelConv":
            n, c, h, w = shape
            fwd = 2 * n * h * w * 16 * c * op.layers[1].out_channels
        else:
            fwd = 0
            for layer in op.layers:
                fwd += layer_flops(layer, shape)
                shape = layer.output_shape(shape)
        if type(op).__name__ == "SubPixelConv":
            for layer in op.layers:
                shape = layer.output_shape(shape)
        counts.append((fwd, fwd * (2 if op.input_grad else 1)))
    return counts


def total_flops(model_name, args):
    """FLOPs of one training step (forward + backward) of the fast path at --batch-size.

    The same count for every framework and path: the work of the model with
    the sub-pixel rule, so effective GFLOP/s compare like samples/s do.
    """
    from scratchae import fast, models
    make = models.conv_denoiser if model_name == "conv" else models.dense_autoencoder
    model = make(seed=args.seed)
    net = fast.compile(model, workers=1)
    return sum(f + b for f, b in step_flops(net, (args.batch_size, *model.input_shape)))


def sgemm_peak(threads, size=1024, repeats=5):
    """The best GFLOP/s of NumPy's float32 GEMM, size^3, on ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty((size, size), dtype=np.float32)
    best = float("inf")
    with threadpool_limits(threads, user_api="blas"):
        np.matmul(a, b, out=out)
        for _ in range(repeats):
            start = clock()
            np.matmul(a, b, out=out)
            best = min(best, clock() - start)
    return 2 * size**3 / best / 1e9


ABLATIONS = {
    "conv": ("subpixel", "window_grad", "conv", "conv_pool", "maxpool", "relu_pool",
             "fused_relu", "upsample", "first_dx", "fast_loss", "fast_adam", "threads"),
    "dense": ("dense", "fused_relu", "reshape", "first_dx", "fast_loss", "fast_adam"),
}


def ablate(model_name, args, batch):
    """Median step seconds of the full fast path and of it without each trick, alternating.

    Returns {variant: list of seconds per step}, the full fast path under "all".
    """
    runners = {"all": scratchae_step_fn(model_name, args, batch)}
    for trick in ABLATIONS[model_name]:
        variant = argparse.Namespace(**vars(args))
        if trick == "threads":
            variant.workers = 1
        else:
            variant.without = trick
        runners[trick] = scratchae_step_fn(model_name, variant, batch)
    times, _ = time_alternating(runners, args.warmup, args.repeats, args.min_time)
    return times


def print_ablation(model_name, args, times):
    full = statistics.median(times["all"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        label = "all tricks" if name == "all" else f"without {name}"
        rows.append([label, f"{med * 1e3:.2f}", f"{args.batch_size / med:.1f}",
                     "" if name == "all" else f"{med / full:.2f}"])
    print(f"[{model_name}] the fast path without one trick at a time, alternating, "
          f"{args.repeats} repeats (slowdown = step time / step time with all tricks)")
    print(table(["variant", "median ms", "samples/s", "slowdown"], rows, "lrrr"))
    print(flush=True)


# --------------------------------------------------------------------------
# memory (measured in a child process per framework and model)
# --------------------------------------------------------------------------
def proc_status_kib(field, pid="self"):
    """A ``kB`` field of /proc/PID/status (Linux; this process by default), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def ru_maxrss_kib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def current_rss_kib():
    """Resident set size now, in KiB (falls back to the peak so far)."""
    rss = proc_status_kib("VmRSS")
    return ru_maxrss_kib() if rss is None else rss


def peak_rss_kib():
    """This process's peak resident set size, in KiB.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is the portable answer, but Linux
    carries it over ``exec``: a child started by a process that had already
    grown to 300 MiB would report at least 300 MiB. ``VmHWM`` in
    /proc/self/status is the same high-water mark counted for this
    program's own memory only, so it is preferred where it exists; the two
    agree whenever the child outgrows the parent that started it.
    """
    hwm = proc_status_kib("VmHWM")
    return ru_maxrss_kib() if hwm is None else hwm


def workers_peak_rss_kib():
    """The peak resident set sizes of this process's worker processes, added up, in KiB.

    The fast path's forked workers (scratchae.fast.parallel.ForkedWorkers)
    hold their own activations; their high-water marks also count the pages
    they share with this process (the interpreter, NumPy), so the sum
    overstates what the workers add: an upper bound, on the safe side of a
    comparison with PyTorch's one process.
    """
    import multiprocessing

    peaks = (proc_status_kib("VmHWM", child.pid) for child in multiprocessing.active_children())
    return sum(peak for peak in peaks if peak is not None)


def memory_child(args):
    """Run one (model, framework) pair in this fresh process; print JSON."""
    model_name, framework = args._memory_child
    if framework == "scratchae":
        from scratchae import losses, models, optim  # noqa: F401 (imports count)
    else:
        torch, reason = import_torch()
        if torch is None:
            raise SystemExit(reason)
        torch.set_num_threads(args.threads)
    baseline = current_rss_kib()

    batch = make_batch(args.batch_size, np.dtype(args.dtype), args.seed)
    if framework == "scratchae":
        step, sync = scratchae_step_fn(model_name, args, batch)
    else:
        device, reason = torch_device(torch, args)
        if device is None:
            raise SystemExit(reason)
        step, sync = torch_step_fn(model_name, args, batch, torch, device)
    for _ in range(args.warmup + min(args.repeats, MEMORY_CHILD_MAX_REPEATS)):
        step()
        sync()

    result = {"baseline_kib": baseline, "peak_kib": peak_rss_kib() + workers_peak_rss_kib(),
              "ru_maxrss_kib": ru_maxrss_kib(), "gpu_peak_bytes": None}
    if args.backend == "cupy":
        if framework == "scratchae":
            import cupy
            result["gpu_peak_bytes"] = cupy.get_default_memory_pool().total_bytes()
        else:
            result["gpu_peak_bytes"] = torch.cuda.max_memory_reserved()
    print(CHILD_MARKER + json.dumps(result), flush=True)


def measure_memory(model_name, framework, args):
    """Run the memory child; return its result dict, or (None, why)."""
    command = [
        sys.executable, os.path.abspath(__file__),
        "--_memory-child", model_name, framework,
        "--batch-size", str(args.batch_size), "--backend", args.backend,
        "--dtype", args.dtype, "--threads", str(args.threads), "--seed", str(args.seed),
        "--workers", str(args.workers), *(["--textbook"] if args.textbook else []),
        "--without", args.without,
        "--warmup", str(args.warmup), "--repeats", str(args.repeats),
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(CHILD_MARKER):
            return json.loads(line[len(CHILD_MARKER):]), None
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return None, f"exit status {proc.returncode}: {tail}"


# --------------------------------------------------------------------------
# printing
# --------------------------------------------------------------------------
def table(headers, rows, align):
    """Plain-text table; align is a string of 'l'/'r', one per column."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def fmt(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(row, widths, align)).rstrip()

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


def load_average():
    """The 1-minute load average: above the CPU count, other work competes."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "unknown"


def plural(count, word):
    return f"{count} {word}" + ("" if count == 1 else "s")


def mib(kib):
    return kib / 1024


def print_header(args, threads_source, torch):
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs ({usable_cpus()} usable), "
          f"{plural(args.threads, 'thread')} ({threads_source})")
    print(f"numpy {np.__version__}, BLAS {blas_description()}, "
          f"python {platform.python_version()}")
    backend_text = args.backend
    if args.backend == "cupy":
        import cupy
        backend_text += f" (CuPy {cupy.__version__}, {gpu_name()})"
    torch_text = ""
    if args.vs_torch:
        torch_text = (f", torch {torch.__version__} ({plural(torch.get_num_threads(), 'thread')})"
                      if torch is not None else ", torch not available")
    path = ("textbook layers" if args.textbook else
            f"fast path without {args.without}" if args.without else "fast path")
    print(f"backend {backend_text}, scratchae {path}, up to {plural(args.workers, 'worker')}, "
          f"batch {args.batch_size}, "
          f"dtype {args.dtype}, warmup {args.warmup}, repeats {args.repeats}{torch_text}")
    clock_text = "" if args.clock == "wall" else "CPU seconds (--clock cpu), "
    print(f"step = forward + SigmoidCrossEntropy + backward + Adam; {clock_text}"
          f"figures are medians; load average {load_average()} at start")
    print(flush=True)


def print_timing(model_name, args, times, inner, workers, flop, peak):
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append([name, f"{med * 1e3:.2f}", f"{min(ts) * 1e3:.2f}",
                     f"{max(ts) * 1e3:.2f}", str(inner[name]), f"{args.batch_size / med:.1f}",
                     gflops(flop, med), f"{100 * flop / med / 1e9 / peak:.0f}"])
    title = (f"[{model_name}] step time, {args.repeats} repeats, "
             f"scratchae on {plural(workers, 'worker')}")
    if len(times) > 1:
        title += ", frameworks alternating"
    print(title)
    print(f"(effective GFLOP/s: the step's {flop / 1e9:.2f} GFLOP, the direct algorithm's "
          f"multiply-adds x 2, over the median; sgemm 1024^3 on "
          f"{plural(args.threads, 'thread')} in this run: {peak:.0f} GFLOP/s)")
    print(table(["framework", "median ms", "min ms", "max ms", "steps/repeat", "samples/s",
                 "GFLOP/s", "% sgemm"], rows, "lrrrrrrr"))
    print(flush=True)


def gflops(flop, seconds):
    """Effective GFLOP/s as text, '' where there is no work or no time."""
    return f"{flop / seconds / 1e9:.0f}" if flop and seconds > 0 else ""


def print_profile(model_name, rows, step_median, peak, threads):
    # Each row is a median over the profiled steps; their sum is a "typical
    # step" whose parts add up to 100 %, even when noise makes the median of
    # whole steps differ from the sum of the medians of their parts.
    accounted = sum(r["fwd"] + r["bwd"] for r in rows)
    body = []
    for r in rows:
        shape = "" if r["shape"] is None else str(r["shape"])
        fwd = "" if r["name"] in ("Adam.step", "other (glue, timers)") else f"{r['fwd'] * 1e3:.3f}"
        share = 100 * (r["fwd"] + r["bwd"]) / accounted
        flop_f, flop_b = r.get("flops", (0, 0))
        body.append([r["index"], r["name"], shape, fwd, f"{r['bwd'] * 1e3:.3f}",
                     gflops(flop_f, r["fwd"]), gflops(flop_b, r["bwd"]), f"{share:.1f}"])
    fwd_total = sum(r["fwd"] for r in rows)
    flop_f = sum(r.get("flops", (0, 0))[0] for r in rows)
    flop_b = sum(r.get("flops", (0, 0))[1] for r in rows)
    body.append(["", "total", "", f"{fwd_total * 1e3:.3f}",
                 f"{(accounted - fwd_total) * 1e3:.3f}", gflops(flop_f, fwd_total),
                 gflops(flop_b, accounted - fwd_total), "100.0"])
    print(f"[{model_name}] scratchae profile, medians over the steps: sum of rows "
          f"{accounted * 1e3:.2f} ms, median profiled step {step_median * 1e3:.2f} ms, "
          f"{gflops(flop_f + flop_b, step_median)} effective GFLOP/s; "
          f"sgemm 1024^3 on {plural(threads, 'thread')}: {peak:.0f} GFLOP/s")
    print("(one worker, so that every row is that op's own time; "
          "fast-path shapes are channels-last; GFLOP/s: the direct algorithm's "
          "multiply-adds x 2 over the time; Adam.step and 'other' are listed in the bwd column)")
    print(table(["#", "layer", "output shape", "fwd ms", "bwd ms", "fwd GFLOP/s", "bwd GFLOP/s",
                 "% step"], body, "rllrrrrr"))
    print(flush=True)


def print_memory(model_name, args, memory):
    rows = []
    for framework, (result, why) in memory.items():
        if result is None:
            rows.append([framework, "failed: " + why, "", "", ""])
            continue
        gpu = result["gpu_peak_bytes"]
        rows.append([framework, f"{mib(result['peak_kib']):.0f}",
                     f"{mib(result['baseline_kib']):.0f}",
                     f"{mib(result['peak_kib'] - result['baseline_kib']):.0f}",
                     "" if gpu is None else f"{gpu / 2**20:.0f}"])
    headers = ["framework", "peak RSS MiB", "baseline MiB", "peak - baseline MiB"]
    align = "lrrr"
    if args.backend == "cupy":
        headers.append("GPU pool peak MiB")
        align += "r"
    else:
        rows = [r[:4] for r in rows]
    print(f"[{model_name}] memory, one fresh subprocess per framework "
          f"({args.warmup} + {min(args.repeats, MEMORY_CHILD_MAX_REPEATS)} steps)")
    print(table(headers, rows, align))
    print(flush=True)


def summary_line(model_name, args, times, memory, workers, flop, peak):
    speed = {name: args.batch_size / statistics.median(ts) for name, ts in times.items()}
    parts = [f"{model_name:<5}", f"batch {args.batch_size}", plural(workers, "worker")]
    parts += [f"{name} {speed[name]:.1f} samples/s" for name in speed]
    if "torch" in speed:
        parts.append(f"ratio {speed['scratchae'] / speed['torch']:.2f}")
    parts.append(f"scratchae {flop * speed['scratchae'] / args.batch_size / 1e9:.0f} GFLOP/s "
                 f"of sgemm {peak:.0f}")
    mem = [(name, result) for name, (result, _) in memory.items() if result is not None]
    if mem:
        parts.append("peak RSS " + " ".join(
            f"{name} {mib(r['peak_kib']):.0f} MiB" for name, r in mem))
        gpu = [(name, r["gpu_peak_bytes"]) for name, r in mem if r["gpu_peak_bytes"] is not None]
        if gpu:
            parts.append("GPU pool " + " ".join(f"{n} {b / 2**20:.0f} MiB" for n, b in gpu))
    return "  ".join(parts)


# --------------------------------------------------------------------------
def main(argv=None):
    global np
    args = parse_args(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    threads_source = "--threads"
    if args.threads is not None:
        for var in THREAD_VARS:  # must happen before NumPy loads its BLAS
            os.environ[var] = str(args.threads)

    import numpy
    np = numpy
    try:
        from scratchae import backend
    except ImportError as error:
        raise SystemExit(f"cannot import scratchae ({error}); install it first: "
                         "pip install -e .  (from the repository root)")

    if args.threads is None:
        args.threads, threads_source = detect_blas_threads()

    child_is_torch = args._memory_child is not None and args._memory_child[1] == "torch"
    if not child_is_torch:  # a torch memory child must not load CuPy
        try:
            backend.set_backend(args.backend)
        except RuntimeError as error:
            raise SystemExit(str(error))

    from scratchae.fast.model import RULES
    from scratchae.fast.parallel import check_workers
    known = set(RULES) | {"first_dx", "fast_loss", "fast_adam"}
    unknown = set(filter(None, args.without.split(","))) - known
    if unknown:
        raise SystemExit(f"--without: unknown {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(sorted(known))}")
    try:
        args.workers = check_workers(args.workers, "--workers")
    except ValueError as error:
        raise SystemExit(str(error))

    if args._memory_child is not None:
        memory_child(args)
        return

    torch = None
    torch_note = None
    device = None
    if args.vs_torch:
        torch, torch_note = import_torch()
        if torch is not None:
            torch.set_num_threads(args.threads)
            device, torch_note = torch_device(torch, args)
            if device is None:
                torch = None

    print_header(args, threads_source, torch)
    if torch_note:
        print(f"note: --vs-torch skipped: {torch_note}\n", flush=True)

    models = MODELS if args.model == "both" else (args.model,)
    peak = sgemm_peak(args.threads)  # the machine's limit, measured in this run
    batch = make_batch(args.batch_size, np.dtype(args.dtype), args.seed)
    summaries = []
    for model_name in models:
        runners = {"scratchae": scratchae_step_fn(model_name, args, batch)}
        workers = runners["scratchae"][0].workers
        if torch is not None:
            runners["torch"] = torch_step_fn(model_name, args, batch, torch, device)
        times, inner = time_alternating(runners, args.warmup, args.repeats, args.min_time)
        del runners  # free both models before profiling and the next model
        flop = total_flops(model_name, args)
        print_timing(model_name, args, times, inner, workers, flop, peak)

        if args.profile:
            rows, step_median = profile_scratchae(model_name, args, batch)
            print_profile(model_name, rows, step_median, peak, args.threads)

        if args.ablate:
            print_ablation(model_name, args, ablate(model_name, args, batch))

        memory = {}
        if not args.no_memory:
            for framework in ("scratchae", "torch") if torch is not None else ("scratchae",):
                memory[framework] = measure_memory(model_name, framework, args)
            print_memory(model_name, args, memory)
        summaries.append(summary_line(model_name, args, times, memory, workers, flop, peak))

    print(f"summary (load average {load_average()} at the end)")
    for line in summaries:
        print(line)


if __name__ == "__main__":
    main()
