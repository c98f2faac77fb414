#!/usr/bin/env bash
# The GPU checks, in one command, for the day a CUDA GPU is at hand (not yet run on
# one: no GPU has been available). Each step has its own timeout, so the whole
# stays under 8 minutes (2 + 1.7 + 4 minutes; the full training's target is under 60 s):
#
#     bash benchmarks/gpu_check.sh [MNIST_DIR]
#
# 1. the tests that need a GPU: every backend-parametrized test on real CuPy
#    (pytest -m gpu), and the GPU smoke test (train, save, resume, evaluate,
#    the denoise and gradcheck command lines on CuPy);
# 2. the training-step throughput against PyTorch on CUDA (same model, batch 128);
# 3. the tutorial's full conv denoiser training on CuPy (10 epochs of 60,000
#    digits), timed, with its summary line.
#
# MNIST_DIR (or $SCRATCHAE_DATA) holds the four MNIST .gz files; without it
# step 3 trains on the bundled sample instead (and says so). Works from a
# checkout without installing (PYTHONPATH=.). Each step prints its figures;
# the last lines repeat them.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
data_dir="${1:-${SCRATCHAE_DATA:-}}"
out="${TMPDIR:-/tmp}/scratchae_gpu_check"
mkdir -p "$out"

echo "== 1/3 GPU tests: python -m pytest -q -m gpu"
timeout 120 python -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -n 15
tests=$?

echo "== 2/3 throughput: python benchmarks/throughput.py --backend cupy --vs-torch"
timeout 100 python benchmarks/throughput.py --backend cupy --vs-torch --repeats 20 2>&1 \
    | tee "$out/throughput.txt" | tail -n 25

echo "== 3/3 the tutorial's training: python demos/conv_denoise.py --backend cupy"
start=$(date +%s.%N)
timeout 240 python demos/conv_denoise.py --backend cupy --no-progress --out "$out/demo" \
    ${data_dir:+--data-dir "$data_dir"} 2>&1 | tee "$out/demo.txt" | tail -n 14
end=$(date +%s.%N)

echo "== summary"
echo "gpu tests: $( [ "$tests" -eq 0 ] && echo passed || echo "FAILED (exit $tests)")"
grep -E "^(conv|dense) +batch" "$out/throughput.txt" || echo "throughput: no summary (see above)"
echo "full training: $(tail -n 1 "$out/demo.txt")  wall $(python -c "print(f'{$end - $start:.1f}')") s"
