"""pytest-benchmark suite: reach side by side with pyroaring, Python sets and the kernel floor.

    pytest benches --benchmark-enable --benchmark-only      # 1M devices
    REACH_BENCH_DEVICES=200000 pytest benches --benchmark-enable --benchmark-only

Each request is one benchmark group with four members: ``reach`` (resolve + ids to numpy),
``pyroaring`` (the best pyroaring pipeline + export), ``sets`` (the same plan over Python sets +
export) and ``floor`` (bare roaring kernels, count only). Before timing, all four must reach the
same devices. Load throughput, snapshot, broadcast count, ids export and memory go to
``extra_info``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data import REQUEST_NAMES, tag_name
from harness import (
    CONTENDERS,
    BenchEnv,
    contenders,
    export_pair,
    load_reach,
    result_size,
    verify,
)

_expected: dict[tuple[int, str], int] = {}


def expected_count(env: BenchEnv, name: str) -> int:
    """The reached count of a request, after checking that all contenders agree (cached)."""
    key = (id(env), name)
    if key not in _expected:
        c = contenders(env.requests[name], env.reg, env.roaring, env.sets)
        first = {k: f() for k, f in c.funcs.items() if k in CONTENDERS}
        _expected[key] = verify(name, first, env.compare_ids)
    return _expected[key]


def median_s(benchmark: Any) -> float | None:
    """The median of a finished benchmark in seconds (None when benchmarks are disabled)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.median)


@pytest.mark.parametrize("impl", CONTENDERS)
@pytest.mark.parametrize("name", REQUEST_NAMES)
def test_resolve(benchmark: Any, bench_env: BenchEnv, name: str, impl: str) -> None:
    """One request, one contender."""
    want = expected_count(bench_env, name)
    fn = contenders(bench_env.requests[name], bench_env.reg, bench_env.roaring, bench_env.sets)
    benchmark.group = f"resolve {name}"
    benchmark.extra_info.update(reached=want, devices=bench_env.data.n)
    result = benchmark(fn.funcs[impl])
    assert result_size(result) == want


@pytest.mark.parametrize("impl", ["reach", "pyroaring"])
def test_broadcast_count(benchmark: Any, bench_env: BenchEnv, impl: str) -> None:
    """Count of a broadcast to android + ios (no ids exported)."""
    plats = ["android", "ios"]
    benchmark.group = "broadcast count"
    if impl == "reach":
        got = benchmark(lambda: bench_env.reg.count_audience("all", platform=plats))
    else:
        got = benchmark(lambda: bench_env.roaring.count("all", plats))
    want = int(np.isin(bench_env.data.platform, [0, 1]).sum())
    benchmark.extra_info["count"] = want
    assert int(got) == want


@pytest.mark.parametrize("impl", ["reach", "pyroaring"])
def test_ids_export(benchmark: Any, bench_env: BenchEnv, impl: str) -> None:
    """Export of an already resolved ~n/2 result to a numpy uint32 array."""
    reach_fn, roaring_fn, size = export_pair(bench_env.reg, bench_env.roaring, tag_name(0))
    benchmark.group = "ids export (top tag)"
    benchmark.extra_info["ids"] = size
    out = benchmark(reach_fn if impl == "reach" else roaring_fn)
    assert len(out) == size and out.dtype == np.uint32


def test_load_arrays(benchmark: Any, bench_env: BenchEnv) -> None:
    """Bulk load from numpy arrays into a fresh registry."""
    n = bench_env.data.n
    benchmark.group = "load"
    got = benchmark.pedantic(lambda: len(load_reach(bench_env.data)[0]), rounds=3, iterations=1)
    assert got == n
    med = median_s(benchmark)
    benchmark.extra_info["devices"] = n
    if med:
        benchmark.extra_info["devices_per_s"] = round(n / med)


def test_load_jsonl(benchmark: Any, bench_env: BenchEnv, jsonl_file: Path) -> None:
    """Bulk load from a JSON Lines import file into a fresh registry."""
    import reach

    lines = min(bench_env.data.n, sum(1 for _ in jsonl_file.open("rb")))
    benchmark.group = "load"
    got = benchmark.pedantic(
        lambda: reach.Registry().load_jsonl(str(jsonl_file)), rounds=3, iterations=1
    )
    assert got == lines
    med = median_s(benchmark)
    benchmark.extra_info.update(devices=lines, file_bytes=jsonl_file.stat().st_size)
    if med:
        benchmark.extra_info["devices_per_s"] = round(lines / med)


def test_snapshot_save(benchmark: Any, bench_env: BenchEnv, tmp_path: Path) -> None:
    """Snapshot the registry to a file."""
    path = tmp_path / "registry.snapshot"
    benchmark.group = "snapshot"
    benchmark.pedantic(lambda: bench_env.reg.save(str(path)), rounds=3, iterations=1)
    size = path.stat().st_size
    benchmark.extra_info.update(bytes=size, bytes_per_device=round(size / bench_env.data.n, 2))


def test_snapshot_load(benchmark: Any, bench_env: BenchEnv, tmp_path: Path) -> None:
    """Load a snapshot into a new registry; it must resolve like the original."""
    import reach

    path = tmp_path / "registry.snapshot"
    bench_env.reg.save(str(path))
    benchmark.group = "snapshot"
    loaded = benchmark.pedantic(lambda: reach.Registry.load(str(path)), rounds=3, iterations=1)
    assert len(loaded) == bench_env.data.n
    req = bench_env.requests["wide"]
    assert len(loaded.resolve_audience(req.audience, platform=req.platform)) == expected_count(
        bench_env, "wide"
    )


def test_memory_usage(benchmark: Any, bench_env: BenchEnv) -> None:
    """``memory_usage()``; bytes per device beyond the tag bitmaps go to extra_info."""
    benchmark.group = "memory"
    usage = benchmark(bench_env.reg.memory_usage)
    n = bench_env.data.n
    memberships = int(bench_env.data.tag_indptr[-1])
    benchmark.extra_info.update(
        devices=n,
        total_bytes=int(usage["total"]),
        tag_bytes=int(usage["tags"]),
        bytes_per_device_beyond_tags=round((usage["total"] - usage["tags"]) / n, 2),
        tag_bytes_per_membership=round(usage["tags"] / memberships, 3),
    )
    assert usage["total"] >= usage["tags"] > 0
