"""The store's compact id encoding round-trips every array (batches are ascending runs)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from reach.emulator.store import pack_ids, unpack_ids

ids = st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=300)


@given(runs=st.lists(ids.map(sorted), max_size=6), loose=ids)
def test_pack_round_trips(runs: list[list[int]], loose: list[int]):
    for values in ([v for r in runs for v in r], loose):
        a = np.array(values, dtype=np.uint32)
        b = unpack_ids(pack_ids(a))
        assert b.dtype == np.uint32 and b.tolist() == values


def test_pack_is_compact_for_dense_batches():
    a = np.arange(0, 1_000_000, 3, dtype=np.uint32)
    assert len(pack_ids(a)) < len(a) + 16
