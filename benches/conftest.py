"""Fixtures of the pytest-benchmark suite.

``pytest benches --benchmark-enable --benchmark-only`` runs on 1M devices (``REACH_BENCH_DEVICES``
overrides). Without ``--benchmark-enable`` the project's ``addopts`` disable benchmarks: each
benchmarked function then runs once, as a smoke test, on a small registry (20,000 devices), so
``pytest benches`` stays quick.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from baselines import build_rid_index, build_roaring, build_sets
from data import make_registry, make_requests
from harness import BenchEnv, check_codes, ids_are_load_order, load_reach

BENCH_DEVICES = 1_000_000
SMOKE_DEVICES = 20_000
JSONL_DEVICES = 1_000_000


def benchmarks_enabled(config: pytest.Config) -> bool:
    """Whether pytest-benchmark will time (not just run once) the benchmarked functions."""
    disabled = config.getoption("benchmark_disable", False) and not config.getoption(
        "benchmark_enable", False
    )
    return not disabled and not config.getoption("benchmark_skip", False)


def bench_devices(config: pytest.Config) -> int:
    """Registry size of this run."""
    env = os.environ.get("REACH_BENCH_DEVICES")
    if env:
        return int(env.replace("_", ""))
    return BENCH_DEVICES if benchmarks_enabled(config) else SMOKE_DEVICES


@pytest.fixture(scope="module")
def bench_env(request: pytest.FixtureRequest) -> Iterator[BenchEnv]:
    """Generate the data, load reach, build the pyroaring and set baselines."""
    pytest.importorskip("reach")
    check_codes()
    n = bench_devices(request.config)
    data = make_registry(n)
    reg, _ = load_reach(data)
    rid_to_id = build_rid_index(data)
    gc.disable()
    try:
        roaring = build_roaring(data, rid_to_id)
        sets = build_sets(data, rid_to_id)
    finally:
        gc.enable()
    gc.collect()
    gc.freeze()
    env = BenchEnv(
        data=data,
        requests={r.name: r for r in make_requests(data)},
        reg=reg,
        roaring=roaring,
        sets=sets,
        compare_ids=ids_are_load_order(reg, data),
    )
    yield env
    gc.unfreeze()


@pytest.fixture(scope="module")
def jsonl_file(bench_env: BenchEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The first (at most) 1M devices as a JSON Lines import file."""
    path = tmp_path_factory.mktemp("jsonl") / "devices.jsonl"
    bench_env.data.write_jsonl(path, limit=JSONL_DEVICES)
    yield path
    path.unlink(missing_ok=True)
