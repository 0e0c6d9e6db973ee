"""Chunk-by-chunk evaluation (``rust/chunked.rs``) against a numpy model, on a registry large
enough to span many containers (the small registries of ``test_properties.py`` fit in one, so
they never split into several ranges; they are evaluated chunk by chunk there too, forced).
The registry is built once from numpy columns; hypothesis draws audiences over tags from dense
to sparse, with platforms, and forces chunking even where the planner would evaluate whole.
A chunked result must equal the model and the whole evaluation, and ``explain()`` must say
which way was taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reach import Registry
from reach._core import (
    CHUNKING_DEFAULT,
    PLATFORMS,
    SMALL_THRESHOLD_DEFAULT,
    _set_chunking,
    _set_small_threshold,
)

#: 10 containers of 65,536 ids and a part of one.
DEVICES = 10 * 65_536 + 1_234
#: Tag shares: dense (bitset containers), medium, sparse (array containers), and a tag held by
#: devices of the first and last containers only.
SHARES = (0.5, 0.3, 0.1, 0.05, 0.01, 0.002, 0.0005)
TAGS = (*(f"t{k}" for k in range(len(SHARES))), "edges")


@dataclass(frozen=True)
class Big:
    reg: Registry
    members: dict[str, npt.NDArray[np.bool_]]
    platform: npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def big() -> Big:
    rng = np.random.default_rng(20261123)
    n = DEVICES
    members = {f"t{k}": rng.random(n) < share for k, share in enumerate(SHARES)}
    edges = np.zeros(n, dtype=bool)
    edges[:3000] = edges[-3000:] = True
    members["edges"] = edges & (rng.random(n) < 0.5)
    members["nobody"] = np.zeros(n, dtype=bool)  # known to the model only: reaches nobody
    mask = np.stack([members[t] for t in TAGS], axis=1)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.uint64)
    indices = np.nonzero(mask)[1].astype(np.uint32)
    rids = "".join(f"r{i:07d}" for i in range(n)).encode()
    platform = rng.choice(np.arange(3, dtype=np.uint8), size=n, p=[0.7, 0.28, 0.02])
    reg = Registry()
    reg.load_arrays(
        rid_bytes=np.frombuffer(rids, dtype=np.uint8),
        rid_offsets=np.arange(n + 1, dtype=np.uint64) * 8,
        platform=platform,
        tag_names=list(TAGS),
        tag_indptr=indptr,
        tag_indices=indices,
    )
    return Big(reg, members, platform)


@pytest.fixture(autouse=True)
def _defaults() -> Iterator[None]:
    """The switches are process-wide: put the defaults back for later tests."""
    yield
    _set_chunking(*CHUNKING_DEFAULT)
    _set_small_threshold(SMALL_THRESHOLD_DEFAULT)


def model(
    big: Big, tag: list[str], tag_and: list[str], tag_not: list[str], plats: list[str]
) -> npt.NDArray[np.uint32]:
    """The ids the audience reaches, by numpy masks (every device is live)."""
    keep = np.ones(DEVICES, dtype=bool)
    if tag:
        keep &= np.logical_or.reduce([big.members[t] for t in tag])
    for t in tag_and:
        keep &= big.members[t]
    for t in tag_not:
        keep &= ~big.members[t]
    if plats:
        keep &= np.isin(big.platform, [PLATFORMS.index(p) for p in plats])
    return np.flatnonzero(keep).astype(np.uint32)


tag_lists = st.lists(st.sampled_from((*TAGS, "nobody")), max_size=4, unique=True)


@settings(deadline=None, max_examples=60)
@given(
    tag=tag_lists,
    tag_and=tag_lists,
    tag_not=tag_lists,
    plats=st.lists(st.sampled_from(PLATFORMS[:3]), max_size=2, unique=True),
    ranges_per_core=st.sampled_from([1, 3, 8, 64]),
    small_at=st.sampled_from([0, SMALL_THRESHOLD_DEFAULT]),
)
def test_chunked_equals_model_and_whole(
    big: Big,
    tag: list[str],
    tag_and: list[str],
    tag_not: list[str],
    plats: list[str],
    ranges_per_core: int,
    small_at: int,
) -> None:
    audience: Any = {"tag": tag, "tag_and": tag_and, "tag_not": tag_not}
    if not (tag or tag_and or tag_not):
        audience = "all"
    platform: str | list[str] = plats or "all"
    want = model(big, tag, tag_and, tag_not, plats)
    _set_small_threshold(small_at)
    _set_chunking(0, 0)
    whole = big.reg.resolve_audience(audience, platform).ids()
    _set_chunking(ranges_per_core, 0)
    chunked = big.reg.resolve_audience(audience, platform)
    np.testing.assert_array_equal(whole, want)
    np.testing.assert_array_equal(chunked.ids(), want)
    assert len(chunked) == want.size
    assert big.reg.count_audience(audience, platform) == want.size
    steps = chunked.explain()
    assert steps[0]["step"] == "chunked"
    assert steps[0]["result"] == steps[-1]["result"] == want.size
    _set_chunking(0, 0)
    assert "chunked" not in [s["step"] for s in chunked.explain()]


def test_the_planner_chunks_several_large_operands_only(big: Big) -> None:
    """By default: a union and an intersection of large tags chunk by chunk; one tag, and a
    rare tag with others (its few ids are probed), whole."""
    first = {
        "many large": "chunked",
        "one tag": "start",
        "a rare tag": "start",
    }
    audiences: dict[str, Any] = {
        "many large": {"tag": ["t0", "t1", "t2"], "tag_and": ["t0"], "tag_not": ["t3"]},
        "one tag": {"tag": ["t0"]},
        "a rare tag": {"tag": ["t0", "t1"], "tag_and": ["t6"]},
    }
    for name, audience in audiences.items():
        res = big.reg.resolve_audience(audience, ["android"])
        steps = res.explain()
        assert steps[0]["step"] == first[name], name
        assert steps[-1]["result"] == len(res)
        tags = audience["tag"]
        want = model(
            big, tags, audience.get("tag_and", []), audience.get("tag_not", []), ["android"]
        )
        np.testing.assert_array_equal(res.ids(), want)


@pytest.mark.parametrize("chunking", [(1, 0), (0, 0), CHUNKING_DEFAULT])
def test_explain_counts_live_devices_only(chunking: tuple[int, int]) -> None:
    """A deleted device's registration ID is counted by no step, whichever path runs (found by
    hypothesis: a step of 2 in a registry of one live device, chunking forced)."""
    reg = Registry()
    reg.upsert("0000000000000000000", "android", vendor="hms")
    reg.upsert("0000000000000000000b", "android", vendor="hms", tags=["深圳"])
    reg.delete("0000000000000000000")
    _set_small_threshold(0)
    _set_chunking(*chunking)
    rids = ["0000000000000000000", "0000000000000000000b"]
    res = reg.resolve_audience({"registration_id": rids, "tag": ["深圳"]})
    assert res.registration_ids() == ["0000000000000000000b"]
    assert [s["result"] for s in res.explain()] == [1] * len(res.explain())
