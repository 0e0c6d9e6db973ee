"""A small synthetic registry for the demo and the emulator's ``--demo`` (vectorised numpy)."""

from __future__ import annotations

import numpy as np

from .registry import Registry

DEMO_TAGS = ("深圳", "北京", "广州", "上海", "female", "male", "vip", "member", "新用户", "sports")
# Share of devices holding each of DEMO_TAGS (independent draws).
DEMO_SHARES = (0.3, 0.25, 0.15, 0.2, 0.5, 0.45, 0.05, 0.2, 0.1, 0.12)


def build_demo(n: int, seed: int = 7, into: Registry | None = None) -> Registry:
    """``n`` devices: ``rid{i}``, 70/28/2 android/ios/winphone, mixed vendors, the demo tags,
    aliases ``user{i // 2}`` (two devices per user) on 80% of devices, 30% online; loaded
    ``into`` a registry (a new one by default), which is returned.
    """
    rng = np.random.default_rng(seed)
    rids = np.char.add("rid", np.arange(n).astype(str)).astype(np.bytes_)
    rid_lens = np.char.str_len(rids).astype(np.uint64)
    rid_offsets = np.concatenate([[0], np.cumsum(rid_lens)]).astype(np.uint64)
    rid_bytes = np.frombuffer(b"".join(rids.tolist()), dtype=np.uint8)
    platform = rng.choice(3, size=n, p=[0.70, 0.28, 0.02]).astype(np.uint8)
    vendor = np.where(platform == 0, rng.integers(0, 8, size=n), 0).astype(np.uint8)
    member = rng.random((n, len(DEMO_TAGS))) < np.array(DEMO_SHARES)
    counts = member.sum(axis=1)
    tag_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
    tag_indices = np.nonzero(member)[1].astype(np.uint32)
    has_alias = rng.random(n) < 0.8
    aliases = np.char.add("user", (np.arange(n) // 2).astype(str)).astype(np.bytes_)
    aliases = np.where(has_alias, aliases, b"")
    alias_offsets = np.concatenate([[0], np.cumsum(np.char.str_len(aliases))]).astype(np.uint64)
    alias_bytes = np.frombuffer(b"".join(aliases.tolist()) or b"\0", dtype=np.uint8)
    reg = Registry() if into is None else into
    reg.load_arrays(
        rid_bytes=rid_bytes,
        rid_offsets=rid_offsets,
        platform=platform,
        vendor=vendor,
        tag_names=list(DEMO_TAGS),
        tag_indptr=tag_indptr,
        tag_indices=tag_indices,
        alias_bytes=alias_bytes,
        alias_offsets=alias_offsets,
        online=rng.random(n) < 0.3,
    )
    return reg
