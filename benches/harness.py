"""Shared plumbing of the benchmarks: loading reach, the per-request contenders, count checks and a
small timing harness (``perf_counter_ns``, warm-up, median and p10/p90, GC off while timing)."""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

import data as bench_data
from baselines import Baseline
from data import BenchRequest, SyntheticRegistry

CONTENDERS = ("reach", "pyroaring", "sets", "floor")
"""Per request: reach (resolve + ids to numpy), the pyroaring pipeline (+ export), the Python-set
pipeline (+ export), and the bare-kernel floor (count only). ``contenders`` also returns the
side measurements ``reach_resolve`` (no export), ``reach_count`` and ``reach_parse`` (the Python
validation of the audience alone)."""


def check_codes() -> None:
    """The generator's platform/vendor code tables must match the core's."""
    import reach

    if tuple(reach.PLATFORMS) != bench_data.PLATFORMS or tuple(reach.VENDORS) != bench_data.VENDORS:
        raise AssertionError(
            f"code tables differ: reach {reach.PLATFORMS} {reach.VENDORS}, "
            f"benches {bench_data.PLATFORMS} {bench_data.VENDORS}"
        )


def load_reach(data: SyntheticRegistry) -> tuple[Any, float]:
    """A new ``reach.Registry`` loaded from ``data`` by ``load_arrays``, and the seconds taken."""
    import reach

    reg = reach.Registry()
    t = time.perf_counter()
    loaded = reg.load_arrays(**data.load_arrays_kwargs())
    seconds = time.perf_counter() - t
    if loaded != data.n or len(reg) != data.n:
        raise AssertionError(f"load_arrays loaded {loaded} devices (len {len(reg)}), want {data.n}")
    return reg, seconds


def ids_are_load_order(reg: Any, data: SyntheticRegistry) -> bool:
    """Whether reach interned device ``i`` as id ``i`` (then results can be compared id by id)."""
    probe = sorted({0, data.n // 3, data.n // 2, data.n - 1})
    return all(reg.device_id(data.rid(i)) == i for i in probe)


@dataclass
class BenchEnv:
    """One registry and its baselines (the pytest suite builds one per module)."""

    data: SyntheticRegistry
    requests: dict[str, BenchRequest]
    reg: Any
    roaring: Baseline[BitMap]
    sets: Baseline[set[int]] | None
    compare_ids: bool


@dataclass
class Contenders:
    """The callables timed for one request, all over the same memberships."""

    request: BenchRequest
    funcs: dict[str, Callable[[], Any]]


def contenders(
    req: BenchRequest,
    reg: Any,
    roaring: Baseline[BitMap] | None,
    sets: Baseline[set[int]] | None,
) -> Contenders:
    """The contenders of one request (sets/pyroaring left out when not built)."""
    from reach.jpush import parse_audience

    aud, plat = req.audience, req.platform
    parsed = parse_audience(aud)
    platforms = req.platforms
    core = reg._core
    funcs: dict[str, Callable[[], Any]] = {
        "reach": lambda: reg.resolve_audience(aud, platform=plat).ids(),
    }
    if roaring is not None:
        funcs["pyroaring"] = lambda: roaring.resolve_ids(aud, plat)
    if sets is not None:
        funcs["sets"] = lambda: sets.resolve_ids(aud, plat)
    funcs["floor"] = lambda: core._kernel_floor(parsed, platforms)
    funcs["reach_resolve"] = lambda: len(reg.resolve_audience(aud, platform=plat))
    funcs["reach_count"] = lambda: reg.count_audience(aud, platform=plat)
    funcs["reach_parse"] = lambda: parse_audience(aud)
    return Contenders(req, funcs)


def result_size(value: Any) -> int:
    """The reached count of a contender's result (an id array or an int)."""
    return int(value) if isinstance(value, int | np.integer) else len(value)


def verify(name: str, results: dict[str, Any], compare_ids: bool) -> int:
    """All contenders must reach the same count (and, if ids are comparable, the same ids);
    raises AssertionError otherwise. Returns the count."""
    counts = {k: result_size(v) for k, v in results.items()}
    if len(set(counts.values())) != 1:
        raise AssertionError(f"{name}: contenders disagree on the reached count: {counts}")
    if compare_ids:
        arrays = {k: v for k, v in results.items() if isinstance(v, np.ndarray)}
        ref_name, ref = next(iter(arrays.items()))
        for k, v in arrays.items():
            if not np.array_equal(np.asarray(v, dtype=np.uint32), ref):
                raise AssertionError(f"{name}: {k} and {ref_name} reach different devices")
    return next(iter(counts.values()))


@dataclass
class Stats:
    """Timing summary of one contender, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    samples_ns: list[int] = field(repr=False, default_factory=list)
    faults_per_call: float = 0.0
    """Minor page faults of the process per timed call: memory the allocator had handed back
    to the kernel and takes again, whose first touch the kernel must zero (it makes the same
    pipeline several times slower in some process states)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "median_ms": self.median_ms,
            "p10_ms": self.p10_ms,
            "p90_ms": self.p90_ms,
            "repeats": self.repeats,
            "faults_per_call": self.faults_per_call,
        }

    def cell(self) -> str:
        """``median (p10-p90)`` for a Markdown table."""
        return f"{fmt_ms(self.median_ms)} ({fmt_ms(self.p10_ms)}–{fmt_ms(self.p90_ms)})"


def fmt_ms(ms: float) -> str:
    """Milliseconds with sensible precision."""
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def measure(
    fn: Callable[[], Any],
    repeat: int,
    *,
    warmup: int = 1,
    min_time_s: float = 0.0,
    time_budget_s: float = 60.0,
    max_repeat: int = 1000,
) -> tuple[Stats, Any]:
    """Time ``fn`` after ``warmup`` calls (0 is allowed); returns the stats and the last result.

    It runs ``repeat`` times, or more (up to ``max_repeat``) while that takes less than
    ``min_time_s`` (steadier medians for sub-millisecond contenders on a shared machine); slow
    contenders get fewer repeats (at least 3) so that one stays within ``time_budget_s``. GC is
    off while timing (everything built beforehand is frozen by the caller).
    """
    result: Any = None
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        warm_ns = 0
        for _ in range(warmup):
            result = None
            t = time.perf_counter_ns()
            result = fn()
            warm_ns = time.perf_counter_ns() - t
        if warmup and warm_ns * repeat > time_budget_s * 1e9:
            repeat = max(3, int(time_budget_s * 1e9 // max(warm_ns, 1)))
        elif warmup and min_time_s > 0:
            repeat = max(repeat, min(max_repeat, int(min_time_s * 1e9 // max(warm_ns, 1))))
        samples: list[int] = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(repeat):
            result = None  # free the previous result before the next run
            t = time.perf_counter_ns()
            result = fn()
            samples.append(time.perf_counter_ns() - t)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    finally:
        if was_enabled:
            gc.enable()
    stats = _stats(samples)
    stats.faults_per_call = faults / max(len(samples), 1)
    return stats, result


def measure_all(
    funcs: dict[str, Callable[[], Any]],
    repeat: int,
    *,
    min_time_s: float = 0.25,
    time_budget_s: float = 60.0,
) -> dict[str, Stats]:
    """``measure`` each contender in turn (a warm-cache block per contender)."""
    out: dict[str, Stats] = {}
    for k, f in funcs.items():
        out[k], _ = measure(f, repeat, min_time_s=min_time_s, time_budget_s=time_budget_s)
    return out


def _stats(samples: list[int]) -> Stats:
    arr = np.asarray(samples, dtype=np.float64) / 1e6
    return Stats(
        median_ms=float(np.median(arr)),
        p10_ms=float(np.percentile(arr, 10)),
        p90_ms=float(np.percentile(arr, 90)),
        repeats=len(samples),
        samples_ns=samples,
    )


def export_pair(
    reg: Any, roaring: Baseline[BitMap], tag: str
) -> tuple[Callable[[], npt.NDArray[np.uint32]], Callable[[], npt.NDArray[np.uint32]], int]:
    """Export-only contenders for one (large) tag: reach ``Resolution.ids()`` on a resolved result
    vs ``np.frombuffer(BitMap.to_array())``; both resolved once, outside the timing."""
    res = reg.resolve_audience({"tag": [tag]}, platform="all")
    bm = roaring.resolve({"tag": [tag]}, "all")
    if len(res) != len(bm):
        raise AssertionError(f"export {tag}: reach {len(res)} vs pyroaring {len(bm)}")
    return res.ids, lambda: np.frombuffer(bm.to_array(), dtype=np.uint32), len(bm)
