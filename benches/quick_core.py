"""Quick, interleaved timings of the core requests at scale, for iterating on the evaluator.

    flock /tmp/reach-bench.lock python benches/quick_core.py --devices 10000000 --requests wide

Builds the data and the registries once, then, round after round, times every contender of every
request one after the other (so that a burst of load on the shared machine hits all of them
alike), and prints the median of each contender's per-round medians with the load average.
Contenders: ``reach`` (resolve + ids to numpy), ``reach_resolve`` (no export), ``pyroaring``
(pipeline + export), ``floor`` (the bare kernel calls); with ``--whole`` also ``reach_whole``
(chunking turned off, then restored). The full table for the README comes from
``side_by_side.py``; this script is for comparing builds and plans quickly.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from baselines import build_roaring
from data import make_registry, make_requests
from harness import contenders, load_reach, verify


def main() -> None:
    """Parse the options, build, time, print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=10_000_000)
    p.add_argument("--requests", default="wide", help="comma-separated names, or 'all'")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=9, help="calls per contender per round")
    p.add_argument("--whole", action="store_true", help="also time reach with chunking off")
    args = p.parse_args()

    import reach
    from reach import _core

    data = make_registry(args.devices, seed=20240601)
    requests = {r.name: r for r in make_requests(data)}
    names = list(requests) if args.requests == "all" else args.requests.split(",")
    reg, _ = load_reach(data)
    needs_rids = "rid1000" in names or "narrow" in names
    roaring = build_roaring(data, None if needs_rids else {})
    del data
    gc.collect()
    gc.freeze()

    chunking = _core.CHUNKING_DEFAULT

    def whole(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            _core._set_chunking(0, chunking[1])
            try:
                return fn()
            finally:
                _core._set_chunking(*chunking)

        return run

    table: dict[str, dict[str, Callable[[], Any]]] = {}
    for name in names:
        c = contenders(requests[name], reg, roaring, None)
        funcs = {
            k: c.funcs[k] for k in ("reach", "reach_resolve", "pyroaring", "floor") if k in c.funcs
        }
        if args.whole:
            funcs["reach_whole"] = whole(c.funcs["reach"])
        verify(name, {k: f() for k, f in funcs.items() if k != "reach_resolve"}, True)
        table[name] = funcs
        plan = reg.resolve_audience(requests[name].audience, platform=requests[name].platform)
        print(f"{name}: {len(plan):,} devices; plan: {[s['step'] for s in plan.explain()]}")

    samples: dict[tuple[str, str], list[float]] = {}
    gc.disable()
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, funcs in table.items():
            for k, f in funcs.items():
                ts = []
                for _ in range(args.per_round):
                    t = time.perf_counter_ns()
                    f()
                    ts.append(time.perf_counter_ns() - t)
                samples.setdefault((name, k), []).append(statistics.median(ts) / 1e6)
        loads.append(os.getloadavg()[0])
    gc.enable()
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    print(f"{stamp} UTC, reach {reach.__version__}, load 1-min {min(loads):.2f}-{max(loads):.2f}")
    for name, funcs in table.items():
        med = {k: statistics.median(samples[(name, k)]) for k in funcs}
        cells = "  ".join(f"{k} {v:.2f}" for k, v in med.items())
        ratio = med["pyroaring"] / med["reach"] if "pyroaring" in med else float("nan")
        spread = [round(x, 2) for x in samples[(name, "reach")]]
        print(f"{name:10s} {cells}  ms | x{ratio:.2f} vs pyroaring | reach rounds {spread}")


if __name__ == "__main__":
    main()
