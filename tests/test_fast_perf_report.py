"""The performance scripts of issues #18 and #19: the FLOP count behind 'effective GFLOP/s', and
perf_report.sh's syntax and the scripts it runs (the figures themselves need a quiet
machine and minutes: they are never timed in tests)."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scratchae import fast
from scratchae.models import conv_denoiser, dense_autoencoder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks/throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_conv_step_is_counted_by_the_direct_algorithm(throughput):
    """48 MFLOP per image forward with the sub-pixel rule (issue #18), whatever the ops
    really compute: the same count with every rule of the fast path or none."""
    model = conv_denoiser()
    counts = throughput.step_flops(fast.compile(model, workers=1), (1, 1, 28, 28))
    forward = sum(f for f, _ in counts)
    assert forward == 2 * (28 * 28 * 9 * 64 + 14 * 14 * 9 * 64 * 64 + 7 * 7 * 9 * 64 * 32
                           + 7 * 7 * 9 * 32 * 32 + 7 * 7 * 16 * 32 * 64
                           + 14 * 14 * 16 * 64 * 64 + 28 * 28 * 9 * 64)
    assert round(forward / 1e6) == 48
    # backward: dW everywhere, dx everywhere but the first layer
    assert sum(b for _, b in counts) == 2 * forward - 2 * 28 * 28 * 9 * 64
    without = fast.compile(model, workers=1, rules=["subpixel", "window_grad", "conv"])
    assert sum(f for f, _ in throughput.step_flops(without, (1, 1, 28, 28))) == forward


def test_the_textbook_and_dense_counts(throughput):
    model = dense_autoencoder(hidden=64)
    assert throughput.step_flops(model, (128, 1, 28, 28)) == [
        (0, 0), (2 * 128 * 784 * 64, 4 * 128 * 784 * 64), (0, 0),
        (2 * 128 * 64 * 784, 4 * 128 * 64 * 784), (0, 0)]


def test_perf_report_is_valid_bash_and_runs_scripts_that_exist():
    script = ROOT / "benchmarks/perf_report.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    named = set(re.findall(r"python ((?:benchmarks|demos)/\w+\.py)", script.read_text()))
    assert {"benchmarks/throughput.py", "demos/conv_denoise.py",
            "benchmarks/torch_conv_denoise.py", "benchmarks/winograd.py"} <= named
    assert all((ROOT / path).exists() for path in named)


def test_gil_tax_prints_its_four_rows(capsys):
    """benchmarks/gil_tax.py runs (one timed step per row) and prints each neighbour's row."""
    spec = importlib.util.spec_from_file_location("gil_tax", ROOT / "benchmarks/gil_tax.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--model", "vae", "--steps", "1"])
    out = capsys.readouterr().out
    for row in ("nothing", "large GEMMs", "a second worker", "small NumPy calls"):
        assert re.search(rf"^  {row}.* ms +\d+\.\d\dx$", out, re.M), row


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc only")
def test_tree_memory_counts_the_children_and_passes_the_exit_status(tmp_path):
    """A child that holds 200 MiB while its parent holds little: the tree's peak sees it."""
    child = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
             "'import time; b = bytearray(200 << 20); time.sleep(1.0)'], check=True); sys.exit(3)")
    out = tmp_path / "run.mem"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/tree_memory.py"), "-o", str(out),
                           "--interval", "0.05", "--", sys.executable, "-c", child])
    assert done.returncode == 3
    wall, s, peak, mib = out.read_text().split()
    assert (s, mib) == ("s", "MiB") and float(wall) >= 1.0
    assert 200 <= int(peak) < 400


def test_tree_memory_needs_a_command():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/tree_memory.py")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no command given" in done.stderr


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc only")
def test_tree_memory_reports_a_killed_command_as_a_shell_does(tmp_path):
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/tree_memory.py"),
                           "-o", str(tmp_path / "m"), "--", sys.executable, "-c", killed])
    assert done.returncode == 128 + 9
