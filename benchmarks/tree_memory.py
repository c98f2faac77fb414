"""Wall time and peak memory of a command *with all its child processes* (Linux).

GNU time's ``%M`` is the high-water mark of one process. The demos split
each batch over forked worker processes, so that figure misses the
workers; adding every process's high-water mark instead counts the pages
they share (the forked copy of the model, the shared exchange block) once
per process. This script samples the proportional set size (PSS: each
shared page divided among the processes that map it) of the command's
whole process tree every ``--interval`` seconds and reports the largest
sum, so shared memory is counted once::

    python benchmarks/tree_memory.py -o run.mem -- python demos/conv_denoise.py --epochs 1

writes ``<wall> s <peak> MiB`` (one line) to ``run.mem`` (or stderr) and
exits with the command's exit status. Sampling can miss a peak shorter
than the interval; PyTorch's threads and scratchae's processes are
measured the same way.
"""

import argparse
import os
import subprocess
import sys
import time


def children(pid):
    """Direct children of ``pid`` (from /proc/PID/task/*/children)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:  # the process ended between two reads
        pass
    return found


def tree(pid):
    """``pid`` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def pss_kib(pid):
    """Proportional set size of one process in KiB (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write the result line here (default: stderr)")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="seconds between two samples (default: 0.1)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    if not os.path.exists("/proc/self/smaps_rollup"):
        parser.error("needs Linux's /proc/PID/smaps_rollup")
    start = time.perf_counter()
    process = subprocess.Popen(command)
    peak = 0
    try:
        while process.poll() is None:
            peak = max(peak, sum(pss_kib(p) for p in tree(process.pid)))
            time.sleep(args.interval)
    except KeyboardInterrupt:  # Ctrl-C reached the command too: let it end (and save) first
        process.wait()
    wall = time.perf_counter() - start
    line = f"{wall:.2f} s {peak / 1024:.0f} MiB\n"
    if args.output:
        with open(args.output, "w") as f:
            f.write(line)
    else:
        sys.stderr.write(line)
    # a command killed by signal N exits as a shell reports it: 128 + N
    return process.returncode if process.returncode >= 0 else 128 - process.returncode


if __name__ == "__main__":
    sys.exit(main())
