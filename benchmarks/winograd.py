"""Fewer multiplications, measured: Winograd F(2x2, 3x3) and its sub-pixel twin, in NumPy.

Issue #18 asked whether the minimal-filtering algorithms pay in scratchae's
fast path. This script times them against what the fast path does, on one
worker's share of the tutorial's batch (64 images, one BLAS thread, CPU
time, so that other processes on the machine matter less), and measures
their float32 error:

* **Winograd F(2x2, 3x3)** for the 3x3 'same' conv 64 -> 64 at 14x14 (the
  encoder's second conv): each 2x2 output tile from a 4x4 input tile, 16
  multiplications instead of 36 (2.25x fewer), ``Y = A^T [(G g G^T) * (B^T d B)] A``
  as 16 GEMMs (tiles x C) @ (C x O). Against the fast path's direct conv
  (im2col in slices, one GEMM). Its backward has the same structure (dx is
  the same algorithm on dy with the flipped kernel; dW transforms dy and
  reuses the input's tiles), so the forward decides.
* **The sub-pixel conv with 9 products instead of 16** (64 -> 64, 14x14 ->
  28x28): in 1-D, the two outputs of an input pixel are
  ``y[2i] = W0 (x[i-1] - x[i]) + (W0+W1+W2) x[i]`` and
  ``y[2i+1] = (W0+W1+W2) x[i] + W2 (x[i+1] - x[i])``: 3 products for 2
  outputs instead of 4; in 2-D, 9 GEMMs of (pixels x C) @ (C x O) instead of
  16 per input pixel. Forward and backward, against the ``subpixel`` and
  ``window_grad`` rules.

Both compute fewer products but read and write the transformed arrays in
separate NumPy passes (element-wise work on 64-number runs) and run GEMMs
with 64 columns, which this BLAS runs at a lower rate than the fast path's
larger ones; the table shows whether that is paid back.

    python benchmarks/winograd.py [--batch-size 64] [--repeats 9]
"""

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from scratchae.fast import conv as fast_conv
from scratchae.fast import subpixel
from scratchae.validate import arg_positive_int

#: F(2x2, 3x3): kernel transform G (4x3); the input and output transforms are
#: written out as additions below (B^T d B, A^T m A).
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
#: The sub-pixel twin: kernel sums S (3x3), rows W0, W0+W1+W2, W2.
S = np.array([[1, 0, 0], [1, 1, 1], [0, 0, 1]])
CHUNK = 4  # images per slice: the transformed arrays stay in the cache (best of 2..64 here)

_buffers = {}


def scratch(name, shape, dtype):
    size = int(np.prod(shape))
    if name not in _buffers or _buffers[name].size < size or _buffers[name].dtype != dtype:
        _buffers[name] = np.empty(size, dtype=dtype)
    return _buffers[name][:size].reshape(shape)


def padded(x, name, extra=(1, 1)):
    n, h, w, c = x.shape
    out = scratch(name, (n, h + 1 + extra[0], w + 1 + extra[1], c), x.dtype)
    out[...] = 0
    out[:, 1:h + 1, 1:w + 1] = x
    return out


def winograd_forward(x, W4):
    """3x3 'same' conv of x (N, H, W, C) with W4 (3, 3, C, O) by F(2x2, 3x3)."""
    n, h, w, c = x.shape
    o = W4.shape[3]
    th, tw = (h + 1) // 2, (w + 1) // 2
    U = np.einsum("ip,jq,pqco->ijco", G, G, W4).astype(x.dtype).reshape(16, c, o)
    y = np.empty((n, th, 2, tw, 2, o), dtype=x.dtype)
    for start in range(0, n, CHUNK):
        xs = x[start:start + CHUNK]
        m = len(xs)
        d = padded(xs, "pad", (2 * th - h + 1, 2 * tw - w + 1))
        r = [d[:, k:k + 2 * th:2] for k in range(4)]          # tile rows k, (m, th, Wp, c)
        u = scratch("u", (4, m, th, d.shape[2], c), x.dtype)  # B^T d: rows
        np.subtract(r[0], r[2], out=u[0])
        np.add(r[1], r[2], out=u[1])
        np.subtract(r[2], r[1], out=u[2])
        np.subtract(r[1], r[3], out=u[3])
        V = scratch("V", (16, m, th, tw, c), x.dtype)          # (B^T d) B: columns
        for i in range(4):
            q = [u[i][:, :, k:k + 2 * tw:2] for k in range(4)]
            np.subtract(q[0], q[2], out=V[4 * i])
            np.add(q[1], q[2], out=V[4 * i + 1])
            np.subtract(q[2], q[1], out=V[4 * i + 2])
            np.subtract(q[1], q[3], out=V[4 * i + 3])
        M = scratch("M", (16, m * th * tw, o), x.dtype)
        np.matmul(V.reshape(16, -1, c), U, out=M)             # 16 GEMMs: the products
        M = M.reshape(4, 4, m, th, tw, o)
        P = scratch("P", (2, 4, m, th, tw, o), x.dtype)        # A^T M: rows
        for j in range(4):
            np.add(M[0, j], M[1, j], out=P[0, j])
            P[0, j] += M[2, j]
            np.subtract(M[1, j], M[2, j], out=P[1, j])
            P[1, j] -= M[3, j]
        ys = y[start:start + CHUNK]
        for a in range(2):                                     # (A^T M) A: columns
            np.add(P[a, 0], P[a, 1], out=ys[:, :, a, :, 0])
            ys[:, :, a, :, 0] += P[a, 2]
            np.subtract(P[a, 1], P[a, 2], out=ys[:, :, a, :, 1])
            ys[:, :, a, :, 1] -= P[a, 3]
    return y.reshape(n, 2 * th, 2 * tw, o)[:, :h, :w]


def _nine(x, X):
    """X[s, t] = the 9 transformed inputs (differences with the centre pixel)."""
    m, h, w, c = x.shape
    d = padded(x, "pad9")
    R = scratch("R", (2, m, h, w + 2, c), x.dtype)
    np.subtract(d[:, 0:h], d[:, 1:h + 1], out=R[0])
    np.subtract(d[:, 2:h + 2], d[:, 1:h + 1], out=R[1])
    for s, r in enumerate((R[0], d[:, 1:h + 1], R[1])):
        np.subtract(r[:, :, 0:w], r[:, :, 1:w + 1], out=X[s, 0])
        np.copyto(X[s, 1], r[:, :, 1:w + 1])
        np.subtract(r[:, :, 2:w + 2], r[:, :, 1:w + 1], out=X[s, 2])


def subpixel9_forward(x, W, bias):
    """relu(upsample x2 + 3x3 'same' conv + bias) with 9 products per input pixel."""
    n, h, w, c = x.shape
    o = W.shape[0]
    Gk = np.einsum("su,tv,ocuv->stco", S, S, W).astype(x.dtype).reshape(9, c, o)
    y = np.empty((n, h, 2, w, 2, o), dtype=x.dtype)
    for start in range(0, n, CHUNK):
        xs = x[start:start + CHUNK]
        m = len(xs)
        X = scratch("X", (3, 3, m, h, w, c), x.dtype)
        _nine(xs, X)
        M = scratch("M9", (9, m * h * w, o), x.dtype)
        np.matmul(X.reshape(9, -1, c), Gk, out=M)
        M = M.reshape(3, 3, m, h, w, o)
        P = scratch("P9", (2, 3, m, h, w, o), x.dtype)
        for t in range(3):
            np.add(M[0, t], M[1, t], out=P[0, t])
            np.add(M[1, t], M[2, t], out=P[1, t])
        P[:, 1] += bias
        ys = y[start:start + CHUNK]
        for a in range(2):
            np.add(P[a, 0], P[a, 1], out=ys[:, :, a, :, 0])
            np.add(P[a, 1], P[a, 2], out=ys[:, :, a, :, 1])
        np.maximum(ys, 0, out=ys)
    return y.reshape(n, 2 * h, 2 * w, o)


def subpixel9_backward(x, dout, W, y):
    """dW, db, dx of :func:`subpixel9_forward` (the adjoint of each step)."""
    n, h, w, c = x.shape
    o = W.shape[0]
    Gk = np.einsum("su,tv,ocuv->stco", S, S, W).astype(x.dtype).reshape(9, c, o)
    Gt = np.ascontiguousarray(Gk.transpose(0, 2, 1))
    dG = np.zeros((9, c, o), dtype=x.dtype)
    db = np.zeros(o, dtype=x.dtype)
    dx = np.empty_like(x)
    d6, y6 = dout.reshape(n, h, 2, w, 2, o), y.reshape(n, h, 2, w, 2, o)
    for start in range(0, n, CHUNK):
        part = slice(start, start + CHUNK)
        xs = x[part]
        m = len(xs)
        dm = scratch("dm", (3, 3, m, h, w, o), x.dtype)
        for a in range(2):
            for b in range(2):
                np.multiply(d6[part, :, a, :, b], y6[part, :, a, :, b] > 0, out=dm[2 * a, 2 * b])
        np.add(dm[0, 0], dm[0, 2], out=dm[0, 1])
        np.add(dm[2, 0], dm[2, 2], out=dm[2, 1])
        np.add(dm[0, 0], dm[2, 0], out=dm[1, 0])
        np.add(dm[0, 2], dm[2, 2], out=dm[1, 2])
        np.add(dm[1, 0], dm[1, 2], out=dm[1, 1])
        db += dm[1, 1].reshape(-1, o).sum(axis=0)
        X = scratch("X", (3, 3, m, h, w, c), x.dtype)
        _nine(xs, X)
        dmf = dm.reshape(9, -1, o)
        dG += np.matmul(X.reshape(9, -1, c).transpose(0, 2, 1), dmf)
        dX = scratch("dX", (3, 3, m, h, w, c), x.dtype)
        np.matmul(dmf, Gt, out=dX.reshape(9, -1, c))
        E = scratch("E", (3, m, h, w, c), x.dtype)
        for s in range(3):  # the transform's adjoint: columns, then rows
            e = E[s]
            np.subtract(dX[s, 1], dX[s, 0], out=e)
            e -= dX[s, 2]
            e[:, :, :w - 1] += dX[s, 0][:, :, 1:]
            e[:, :, 1:] += dX[s, 2][:, :, :w - 1]
        out = dx[part]
        np.subtract(E[1], E[0], out=out)
        out -= E[2]
        out[:, :h - 1] += E[0][:, 1:]
        out[:, 1:] += E[2][:, :h - 1]
    dW = np.einsum("su,tv,stco->ocuv", S, S, dG.reshape(3, 3, c, o))
    return dW, db, dx


def cpu_ms(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        function()
        times.append(time.thread_time() - start)
    return 1e3 * statistics.median(times)


def relative_error(a, reference):
    return float(np.abs(a - reference).max() / np.abs(reference).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=arg_positive_int, default=64,
                        help="images (default 64: one of two workers' share of 128)")
    parser.add_argument("--repeats", type=arg_positive_int, default=9)
    args = parser.parse_args(argv)
    with threadpool_limits(1, user_api="blas"):  # one worker's BLAS, as in the fast path
        measure(args)


def measure(args):
    rng = np.random.default_rng(0)
    n, r = args.batch_size, args.repeats
    pads = ((1, 1), (1, 1))
    x64 = rng.standard_normal((n, 14, 14, 64))
    W = rng.standard_normal((64, 64, 3, 3)) * np.sqrt(2 / 576)
    b = rng.standard_normal(64) * 0.1
    x, W32, b32 = x64.astype(np.float32), W.astype(np.float32), b.astype(np.float32)
    W4, W4_64 = W32.transpose(2, 3, 1, 0), W.transpose(2, 3, 1, 0)

    exact = fast_conv.conv_forward(x64, W4_64, pads)
    direct = fast_conv.conv_forward(x, W4, pads)
    wino = winograd_forward(x, W4)
    rows = [("3x3 conv 64->64, 14x14, forward", "direct (im2col + GEMM)",
             cpu_ms(lambda: fast_conv.conv_forward(x, W4, pads), r), relative_error(direct, exact)),
            ("", "Winograd F(2x2, 3x3)", cpu_ms(lambda: winograd_forward(x, W4), r),
             relative_error(wino, exact))]

    y64 = subpixel.subpixel_forward(x64, W, b, relu=True)
    y = subpixel.subpixel_forward(x, W32, b32, relu=True)
    y9 = subpixel9_forward(x, W32, b32)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    ref = subpixel.subpixel_backward(x64, dout.astype(np.float64), W, y64)
    kept = subpixel.subpixel_backward(x, dout, W32, y)
    nine = subpixel9_backward(x, dout, W32, y)
    rows += [("sub-pixel 64->64, 14->28, forward", "4 phases, one GEMM (kept)",
              cpu_ms(lambda: subpixel.subpixel_forward(x, W32, b32, relu=True), r),
              relative_error(y, y64)),
             ("", "9 products", cpu_ms(lambda: subpixel9_forward(x, W32, b32), r),
              relative_error(y9, y64)),
             ("sub-pixel 64->64, backward (dW, db, dx)", "stride-2 window (kept)",
              cpu_ms(lambda: subpixel.subpixel_backward(x, dout, W32, y), r),
              max(relative_error(a, e) for a, e in zip(kept, ref))),
             ("", "9 products", cpu_ms(lambda: subpixel9_backward(x, dout, W32, y), r),
              max(relative_error(a, e) for a, e in zip(nine, ref)))]

    print(f"batch {n}, float32, one BLAS thread, CPU ms (median of {r}); error: max |float32 - "
          f"float64 direct| / max |float64 direct| (for the backward, the worst of dW, db, dx)")
    width = max(len(row[0]) for row in rows)
    for what, how, ms, err in rows:
        print(f"{what:<{width}}  {how:<27} {ms:8.2f} ms   error {err:.1e}")


if __name__ == "__main__":
    main()
