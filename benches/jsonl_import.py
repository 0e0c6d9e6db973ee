"""JSON Lines import throughput, end to end: a file on disk to a registry ready to resolve.

    python benches/jsonl_import.py --devices 10000000 --file /tmp/reach-jsonl-10m.jsonl

Writes the file once with ``data.py`` (the side-by-side's synthetic registry, first
``--devices`` devices) if it is missing and keeps it for later runs; then loads it ``--repeat``
times into a fresh ``reach.Registry`` each, printing per run the wall time, devices/s, the
process's user and system CPU time, minor page faults and the load average. Run it under
``flock /tmp/reach-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from pathlib import Path

import reach
from data import make_registry


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1_000_000, help="lines written if missing")
    p.add_argument("--file", type=Path, required=True, help="the JSON Lines file (kept)")
    p.add_argument("--repeat", type=int, default=3, help="timed loads")
    p.add_argument("--seed", type=int, default=20240601, help="data seed")
    args = p.parse_args(argv)
    if not args.file.exists():
        print(f"writing {args.devices:,} lines to {args.file}", file=sys.stderr)
        make_registry(args.devices, seed=args.seed).write_jsonl(args.file, limit=args.devices)
    size = args.file.stat().st_size
    print(f"{args.file}: {size / (1 << 20):.0f} MiB")
    for k in range(args.repeat):
        gc.collect()
        reg = reach.Registry()
        before = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        n = reg.load_jsonl(args.file)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(
            f"{time.strftime('%H:%M:%S', time.gmtime())} UTC run {k}: {n:,} devices in "
            f"{wall:.3f} s = {n / wall / 1e6:.3f} M devices/s; "
            f"CPU user {after.ru_utime - before.ru_utime:.2f} s "
            f"sys {after.ru_stime - before.ru_stime:.2f} s; "
            f"{after.ru_minflt - before.ru_minflt:,} page faults; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        del reg
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    print(f"peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
