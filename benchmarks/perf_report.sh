#!/usr/bin/env bash
# Every figure of issue #18's performance targets, in one run (about 40 minutes on
# a 2-core machine; run it on a quiet machine: other processes change the ratios).
#
#   bash benchmarks/perf_report.sh MNIST_DIR [OUT_DIR] [PARTS]
#
# MNIST_DIR  the MNIST IDX files (.gz), e.g. /work/shared/data/mnist
# OUT_DIR    where every run's full output goes (default: perf_report)
# PARTS      any of: step dense ablate epoch full winograd (default: all of them)
#
# step      5 runs of the conv step against PyTorch (batch 128, both on 2 threads,
#           alternating inside each run): ratio, effective GFLOP/s, sgemm, peak RSS
# dense     5 runs of the dense step against PyTorch
# ablate    what each rule gains (--ablate), conv and dense
# epoch     one real epoch (20,000 images + the test set) end to end, scratchae and
#           PyTorch alternating, 5 pairs: seconds, peak memory (PSS of the process tree),
#           ratio of each pair
# full      the tutorial's full 10-epoch run: time, peak memory (tree), the final psnr_out
# winograd  Winograd F(2x2,3x3) and the 9-product sub-pixel conv against the kept rules
#
# Needs PyTorch (pip install -e ".[bench]") and Linux (/proc, for tree_memory.py).
set -euo pipefail

DATA=${1:?usage: bash benchmarks/perf_report.sh MNIST_DIR [OUT_DIR] [PARTS]}
OUT=${2:-perf_report}
PARTS=${3:-step dense ablate epoch full winograd}
RUNS=${RUNS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"
export OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
# wall time and the peak memory of the whole process tree (the workers too)
MEM="python benchmarks/tree_memory.py"

want() { [[ " $PARTS " == *" $1 "* ]]; }
note() { echo "== $*" | tee -a "$OUT/summary.txt"; }

note "$(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"

if want step; then
  note "conv step against PyTorch, batch 128, 2 threads, $RUNS runs (throughput.py --vs-torch)"
  for i in $(seq "$RUNS"); do
    python benchmarks/throughput.py --model conv --vs-torch --repeats 20 --threads 2 \
      $([ "$i" = 1 ] && echo --profile) > "$OUT/step_conv_$i.txt" 2>&1
    grep '^conv ' "$OUT/step_conv_$i.txt" | tee -a "$OUT/summary.txt"
  done
fi

if want dense; then
  note "dense step against PyTorch, batch 128, 2 threads, $RUNS runs"
  for i in $(seq "$RUNS"); do
    python benchmarks/throughput.py --model dense --vs-torch --repeats 30 --threads 2 \
      > "$OUT/step_dense_$i.txt" 2>&1
    grep '^dense ' "$OUT/step_dense_$i.txt" | tee -a "$OUT/summary.txt"
  done
fi

if want ablate; then
  note "each rule left out (--ablate), wall clock"
  python benchmarks/throughput.py --model conv --ablate --repeats 15 --threads 2 --no-memory \
    > "$OUT/ablate_conv.txt" 2>&1
  python benchmarks/throughput.py --model dense --ablate --repeats 30 --threads 2 --no-memory \
    > "$OUT/ablate_dense.txt" 2>&1
  grep -h -E '^(all tricks|without )' "$OUT/ablate_conv.txt" "$OUT/ablate_dense.txt" \
    | tee -a "$OUT/summary.txt"
fi

if want epoch; then
  note "one epoch end to end (20,000 training images, then the 10,000 test images), alternating"
  for i in $(seq "$RUNS"); do
    $MEM -o "$OUT/epoch_scratchae_$i.time" -- \
      python demos/conv_denoise.py --epochs 1 --train-size 20000 --data-dir "$DATA" \
      --no-progress --out "$OUT/epoch_out" > "$OUT/epoch_scratchae_$i.txt" 2>&1
    $MEM -o "$OUT/epoch_torch_$i.time" -- \
      python benchmarks/torch_conv_denoise.py --epochs 1 --train-size 20000 --data-dir "$DATA" \
      > "$OUT/epoch_torch_$i.txt" 2>&1
    a=$(awk '{print $1}' "$OUT/epoch_scratchae_$i.time")
    b=$(awk '{print $1}' "$OUT/epoch_torch_$i.time")
    echo "pair $i: scratchae $(cat "$OUT/epoch_scratchae_$i.time"), torch $(cat "$OUT/epoch_torch_$i.time"), \
ratio $(python -c "print(f'{$b / $a:.2f}')")" | tee -a "$OUT/summary.txt"
  done
  tail -n1 "$OUT/epoch_scratchae_1.txt" "$OUT/epoch_torch_1.txt" | tee -a "$OUT/summary.txt"
fi

if want full; then
  note "the tutorial's full run: python demos/conv_denoise.py --data-dir DIR (10 epochs, seed 0)"
  $MEM -o "$OUT/full.time" -- python demos/conv_denoise.py --data-dir "$DATA" \
    --no-progress --out "$OUT/full_out" > "$OUT/full.txt" 2>&1
  echo "$(cat "$OUT/full.time"): $(tail -n1 "$OUT/full.txt")" | tee -a "$OUT/summary.txt"
fi

if want winograd; then
  note "fewer multiplications, measured (benchmarks/winograd.py)"
  python benchmarks/winograd.py > "$OUT/winograd.txt" 2>&1
  tee -a "$OUT/summary.txt" < "$OUT/winograd.txt"
fi

note "done, load $(cut -d' ' -f1-3 /proc/loadavg); every run's output is in $OUT/"
