"""Deterministic synthetic device registries and the benchmark request set.

Generation is vectorised numpy (its Python loops run once per *tag*, never once per device), so
10M devices take about 20 s. Tag memberships are sampled per tag (independent Bernoulli draws, as
geometric gaps for sparse tags), then transposed into the per-device CSR by a counting sort (one
numpy scatter per tag). Only ``write_jsonl`` loops per device, once, outside any timing. The
module does not import ``reach``: the same data feeds reach, the pyroaring and Python-set
baselines, and the JSON Lines import benchmark.

Shape of the data (see ``make_registry``):

* registration IDs like JPush's: 19 lowercase hex characters, a 3-character prefix and 16 hex digits
  of a bijective 64-bit hash of the device counter (so they are unique);
* platform 70% android, 28% ios, 2% winphone; Android vendor channel none 20%, hms 25%, xiaomi 20%,
  oppo 15%, vivo 12%, honor 5%, meizu 2%, fcm 1%;
* 10,000 tags with Zipf popularity: the tag of rank ``k`` (0-based) is on about
  ``0.5 * n / (k + 1) ** ZIPF_S`` devices, so the top tag is on half the devices and an average
  device has about 8 tags;
* 80% of devices have an alias, shared by 1-3 devices; 30% of devices are online;
* a planted *cohort* (0.1% of devices, at most 1,000) carries the 20 ``tag_and`` tags and one
  ``tag`` tag of the narrow worst-case request, so that request reaches somebody.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Keep these in the order of ``reach.PLATFORMS`` / ``reach.VENDORS`` (checked by the benches).
PLATFORMS: tuple[str, ...] = ("android", "ios", "winphone", "quickapp", "web", "hmos")
VENDORS: tuple[str, ...] = ("hms", "honor", "xiaomi", "oppo", "vivo", "meizu", "fcm")

N_TAGS = 10_000
ZIPF_S = 0.9
TOP_TAG_SHARE = 0.5
ALIAS_SHARE = 0.8
ONLINE_SHARE = 0.3
RID_WIDTH = 19
ALIAS_WIDTH = 13  # "user_" + 8 hex digits

PLATFORM_SHARES: dict[str, float] = {"android": 0.70, "ios": 0.28, "winphone": 0.02}
VENDOR_SHARES: dict[str | None, float] = {
    None: 0.20,
    "hms": 0.25,
    "xiaomi": 0.20,
    "oppo": 0.15,
    "vivo": 0.12,
    "honor": 0.05,
    "meizu": 0.02,
    "fcm": 0.01,
}
ALIAS_GROUP_SIZES = (1, 2, 3)
ALIAS_GROUP_PROBS = (0.6, 0.3, 0.1)
RID_PREFIXES = (b"1a0", b"190", b"140", b"171", b"13e", b"160", b"0a1", b"1e1")

# Tags (by rank) used by the requests; the narrow request's tag_and tags and its first tag are
# planted on the cohort at generation time.
NARROW_TAG_RANKS = tuple(range(20, 40))
NARROW_AND_RANKS = tuple(range(300, 320))
NARROW_NOT_RANKS = tuple(range(1000, 1020))
NARROW_PLANTED_RANKS = (*NARROW_AND_RANKS, NARROW_TAG_RANKS[0])
BERNOULLI_MIN_SHARE = 1 / 8  # tags above this share are drawn as Bernoulli masks

U8Array = npt.NDArray[np.uint8]
U32Array = npt.NDArray[np.uint32]
U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]


def splitmix64(x: U64Array) -> U64Array:
    """The splitmix64 finaliser: a bijection on uint64 (wrapping arithmetic), vectorised."""
    z = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hex_digits(values: U64Array, width: int) -> U8Array:
    """Lowercase hex of each value's low ``width`` digits (``width`` even, at most 16), zero-padded:
    a ``(len, width)`` uint8 array. Works on bytes, so it needs no 64-bit temporaries per digit."""
    if width % 2 or not 0 < width <= 16:
        raise ValueError("width must be even and at most 16")
    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - width // 2 :]
    digits = np.empty((raw.shape[0], width), dtype=np.uint8)
    digits[:, 0::2] = raw >> 4
    digits[:, 1::2] = raw & 0xF
    # '0'..'9' are 48..57, 'a'..'f' are 97..102: add 48, and 39 more for 10..15 (all in uint8).
    letters = (digits > 9).view(np.uint8)
    letters *= 39
    digits += letters
    digits += 48
    return digits


def tag_name(rank: int) -> str:
    """The name of the tag of popularity rank ``rank`` (0 = most popular)."""
    return f"tag_{rank:05d}"


def tag_share(rank: int | npt.NDArray[np.int64], s: float = ZIPF_S) -> Any:
    """The expected share of devices that carry the tag of rank ``rank``."""
    return TOP_TAG_SHARE / (np.asarray(rank, dtype=np.float64) + 1.0) ** s


@dataclass
class SyntheticRegistry:
    """A generated registry: the arrays for ``Registry.load_arrays`` plus the same memberships in
    shapes the baselines need (per-tag member arrays, alias CSR)."""

    n: int
    seed: int
    rid_bytes: U8Array
    """``n * RID_WIDTH`` bytes; device ``i``'s ID is ``rid_bytes[19 i : 19 (i + 1)]``."""
    rid_offsets: U64Array
    platform: U8Array
    """Index into ``PLATFORMS``."""
    vendor: U8Array
    """0 = none, ``i + 1`` = ``VENDORS[i]``."""
    tag_names: list[str]
    tag_indptr: U64Array
    tag_indices: U32Array
    tag_members: list[U32Array]
    """Sorted device ids of each tag, by rank (the same memberships as the CSR)."""
    alias_group: npt.NDArray[np.int32]
    """Per device: its alias group, or -1 for no alias."""
    alias_names: U8Array
    """``(groups, ALIAS_WIDTH)`` bytes: the alias string of each group."""
    alias_indptr: I64Array
    alias_members: U32Array
    """Device ids grouped by alias group (CSR with ``alias_indptr``)."""
    alias_bytes: U8Array
    alias_offsets: U64Array
    online: npt.NDArray[np.bool_]
    cohort: U32Array
    """The planted devices of the narrow request (sorted)."""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_alias_groups(self) -> int:
        """How many distinct aliases there are."""
        return int(self.alias_names.shape[0])

    def load_arrays_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Registry.load_arrays``."""
        return {
            "rid_bytes": self.rid_bytes,
            "rid_offsets": self.rid_offsets,
            "platform": self.platform,
            "vendor": self.vendor,
            "tag_names": self.tag_names,
            "tag_indptr": self.tag_indptr,
            "tag_indices": self.tag_indices,
            "alias_bytes": self.alias_bytes,
            "alias_offsets": self.alias_offsets,
            "online": self.online,
        }

    def rid(self, device: int) -> str:
        """The registration ID of one device."""
        return self.rid_bytes[device * RID_WIDTH : (device + 1) * RID_WIDTH].tobytes().decode()

    def rids(self, devices: npt.ArrayLike | None = None) -> list[str]:
        """Registration IDs of ``devices`` (default: all), vectorised."""
        mat = self.rid_bytes.reshape(-1, RID_WIDTH)
        if devices is not None:
            mat = mat[np.asarray(devices, dtype=np.intp)]
        return [
            b.decode() for b in np.ascontiguousarray(mat).view(f"S{RID_WIDTH}").ravel().tolist()
        ]

    def alias_strings(self, groups: npt.ArrayLike | None = None) -> list[str]:
        """Alias strings of ``groups`` (default: all groups)."""
        mat = self.alias_names
        if groups is not None:
            mat = mat[np.asarray(groups, dtype=np.intp)]
        view = np.ascontiguousarray(mat).view(f"S{ALIAS_WIDTH}").ravel()
        return [b.decode() for b in view.tolist()]

    def alias_of(self, device: int) -> str | None:
        """The alias of one device, if any."""
        g = int(self.alias_group[device])
        return None if g < 0 else self.alias_strings([g])[0]

    def alias_devices(self, group: int) -> U32Array:
        """Device ids sharing alias ``group``."""
        return self.alias_members[self.alias_indptr[group] : self.alias_indptr[group + 1]]

    def device_tags(self, device: int) -> list[str]:
        """Tag names of one device."""
        lo, hi = int(self.tag_indptr[device]), int(self.tag_indptr[device + 1])
        return [self.tag_names[int(k)] for k in self.tag_indices[lo:hi]]

    def mean_tags_per_device(self) -> float:
        """Average number of tags per device."""
        return float(self.tag_indptr[-1]) / max(self.n, 1)

    def write_jsonl(self, path: str | Path, limit: int | None = None) -> int:
        """Write the first ``limit`` devices (default: all) in the import format; return the count.

        One Python loop iteration per device over prebuilt string pieces: fine for the 1M-line
        import benchmark, and always done outside the timed region.
        """
        count = self.n if limit is None else min(limit, self.n)
        rids = self.rids(np.arange(count))
        quoted_tags = [json.dumps(t) for t in self.tag_names]
        platforms = [json.dumps(p) for p in PLATFORMS]
        vendors = [json.dumps(v) for v in VENDORS]
        groups = self.alias_group[:count]
        alias_list = self.alias_strings()
        indptr = self.tag_indptr[: count + 1].tolist()
        indices = self.tag_indices[: indptr[-1]].tolist()
        plat = self.platform[:count].tolist()
        vend = self.vendor[:count].tolist()
        online = self.online[:count].tolist()
        grp = groups.tolist()
        with open(path, "w", encoding="utf-8", buffering=1 << 20) as out:
            for i in range(count):
                parts = [f'{{"registration_id":"{rids[i]}","platform":{platforms[plat[i]]}']
                if vend[i]:
                    parts.append(f',"vendor":{vendors[vend[i] - 1]}')
                lo, hi = indptr[i], indptr[i + 1]
                if hi > lo:
                    parts.append(',"tags":[' + ",".join(quoted_tags[k] for k in indices[lo:hi]))
                    parts.append("]")
                if grp[i] >= 0:
                    parts.append(f',"alias":"{alias_list[grp[i]]}"')
                if online[i]:
                    parts.append(',"online":true')
                parts.append("}\n")
                out.write("".join(parts))
        return count


def _categorical(rng: np.random.Generator, n: int, probs: Sequence[float]) -> npt.NDArray[np.intp]:
    """``n`` draws of category indices with probabilities ``probs`` (vectorised)."""
    cum = np.cumsum(np.asarray(probs, dtype=np.float64))
    cum /= cum[-1]
    return np.searchsorted(cum, rng.random(n), side="right").astype(np.intp)


def _sample_members(rng: np.random.Generator, n: int, share: float) -> U32Array:
    """Sorted distinct device ids, each device included independently with probability ``share``.

    Dense tags: a Bernoulli mask. Sparse tags: a Bernoulli process drawn as geometric gaps,
    O(members) and already sorted (no ``np.unique``)."""
    if share >= BERNOULLI_MIN_SHARE:
        return np.flatnonzero(rng.random(n, dtype=np.float32) < share).astype(np.uint32)
    expected = n * share
    parts: list[npt.NDArray[np.int64]] = []
    start = -1
    while True:
        gaps = rng.geometric(share, size=int(expected + 6 * math.sqrt(expected) + 16))
        pos = start + np.cumsum(gaps)
        parts.append(pos[pos < n])
        if pos[-1] >= n:
            break
        start = int(pos[-1])
        expected = (n - start) * share
    return np.concatenate(parts).astype(np.uint32)


def make_registry(n: int, seed: int = 20240601, n_tags: int = N_TAGS) -> SyntheticRegistry:
    """Generate a registry of ``n`` devices (deterministic for a given ``n``, ``seed``)."""
    import time

    if n <= 0:
        raise ValueError("n must be positive")
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # Registration IDs: prefix + 16 hex digits of a bijective hash of (counter ^ seed-mix).
    counters = np.arange(n, dtype=np.uint64) ^ np.uint64(seed * 0x9E3779B1 & 0xFFFFFFFFFFFFFFFF)
    suffix = hex_digits(splitmix64(counters), 16)
    prefixes = np.frombuffer(b"".join(RID_PREFIXES), dtype=np.uint8).reshape(-1, 3)
    prefix = prefixes[rng.integers(0, len(RID_PREFIXES), size=n)]
    rid_mat = np.concatenate([prefix, suffix], axis=1)
    del suffix, prefix
    rid_bytes = rid_mat.ravel()
    rid_offsets = np.arange(n + 1, dtype=np.uint64) * np.uint64(RID_WIDTH)
    timings["rids"] = time.perf_counter() - t0

    # Platforms and vendors.
    t = time.perf_counter()
    plat_names = list(PLATFORM_SHARES)
    plat_codes = np.array([PLATFORMS.index(p) for p in plat_names], dtype=np.uint8)
    platform = plat_codes[_categorical(rng, n, list(PLATFORM_SHARES.values()))]
    vendor_codes = np.array(
        [0 if v is None else VENDORS.index(v) + 1 for v in VENDOR_SHARES], dtype=np.uint8
    )
    vendor = vendor_codes[_categorical(rng, n, list(VENDOR_SHARES.values()))]
    vendor[platform != PLATFORMS.index("android")] = 0
    online = rng.random(n, dtype=np.float32) < ONLINE_SHARE
    timings["platform_vendor_online"] = time.perf_counter() - t

    # The narrow request's planted cohort.
    cohort_size = max(1, min(1000, n // 1000))
    cohort = np.sort(rng.choice(n, size=cohort_size, replace=False)).astype(np.uint32)
    planted = set(NARROW_PLANTED_RANKS)

    # Tags: per-tag member sets, then the per-device CSR by a counting sort (one scatter per tag;
    # members of one tag are distinct, so the scatter has no collisions).
    t = time.perf_counter()
    tag_names = [tag_name(k) for k in range(n_tags)]
    shares = tag_share(np.arange(n_tags, dtype=np.int64))
    tag_members: list[U32Array] = []
    for k in range(n_tags):
        members = _sample_members(rng, n, float(shares[k]))
        if members.size == 0:
            members = rng.integers(0, n, size=1, dtype=np.uint32)
        if k in planted:
            members = np.union1d(members, cohort).astype(np.uint32)
        tag_members.append(members)
    timings["tag_members"] = time.perf_counter() - t

    t = time.perf_counter()
    tag_indptr = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(np.bincount(np.concatenate(tag_members), minlength=n), out=tag_indptr[1:])
    tag_indices = np.empty(int(tag_indptr[-1]), dtype=np.uint32)
    cursor_type = np.uint32 if tag_indices.size < 2**32 else np.uint64
    cursor: npt.NDArray[Any] = tag_indptr[:-1].astype(cursor_type)
    for k, members in enumerate(tag_members):
        at = members.astype(np.intp)
        pos = cursor[at]
        tag_indices[pos] = k
        pos += 1
        cursor[at] = pos
    del cursor
    timings["tag_csr"] = time.perf_counter() - t

    # Aliases: 80% of devices, in groups of 1-3 devices, each group one alias.
    t = time.perf_counter()
    has_alias = np.flatnonzero(rng.random(n, dtype=np.float32) < ALIAS_SHARE)
    holders = rng.permutation(has_alias)
    m = holders.size
    sizes = np.asarray(ALIAS_GROUP_SIZES)[
        _categorical(rng, m // min(ALIAS_GROUP_SIZES) + 1, ALIAS_GROUP_PROBS)
    ]
    ends = np.cumsum(sizes)
    n_groups = int(np.searchsorted(ends, m, side="left")) + 1 if m else 0
    # Holders are assigned to groups in order, so ``holders`` is already grouped (CSR).
    alias_indptr = np.zeros(n_groups + 1, dtype=np.int64)
    alias_indptr[1:] = np.minimum(ends[:n_groups], m)
    group_of_holder = np.repeat(np.arange(n_groups, dtype=np.int32), np.diff(alias_indptr))
    alias_group = np.full(n, -1, dtype=np.int32)
    alias_group[holders] = group_of_holder
    alias_members = holders.astype(np.uint32)
    # Alias strings: "user_" + 8 hex digits of a permutation of the group numbers (unique).
    labels = rng.permutation(n_groups).astype(np.uint64)
    alias_names = np.concatenate(
        [
            np.broadcast_to(np.frombuffer(b"user_", dtype=np.uint8), (n_groups, 5)),
            hex_digits(labels, ALIAS_WIDTH - 5),
        ],
        axis=1,
    )
    lengths = np.where(alias_group >= 0, ALIAS_WIDTH, 0).astype(np.uint64)
    alias_offsets = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(lengths, out=alias_offsets[1:])
    alias_bytes = np.ascontiguousarray(alias_names[alias_group[has_alias]]).ravel()
    timings["aliases"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    return SyntheticRegistry(
        n=n,
        seed=seed,
        rid_bytes=rid_bytes,
        rid_offsets=rid_offsets,
        platform=platform,
        vendor=vendor,
        tag_names=tag_names,
        tag_indptr=tag_indptr,
        tag_indices=tag_indices,
        tag_members=tag_members,
        alias_group=alias_group,
        alias_names=alias_names,
        alias_indptr=alias_indptr,
        alias_members=alias_members,
        alias_bytes=alias_bytes,
        alias_offsets=alias_offsets,
        online=online,
        cohort=cohort,
        timings=timings,
    )


# --------------------------------------------------------------------------------------------------
# The request set
# --------------------------------------------------------------------------------------------------

Audience = dict[str, list[str]] | str


@dataclass(frozen=True)
class BenchRequest:
    """One benchmark request: a JPush audience and a platform selector."""

    name: str
    audience: Audience
    platform: str | list[str]
    note: str = ""

    @property
    def platforms(self) -> tuple[str, ...] | None:
        """The platform selector as a tuple, or None for "all" (the core's form)."""
        return None if self.platform == "all" else tuple(self.platform)


REQUEST_NAMES = ("broadcast", "or20", "and5", "not3", "alias1000", "rid1000", "wide", "narrow")
"""The names ``make_requests`` returns, in order."""
WIDE_OR_RANKS = tuple(range(10, 30))
WIDE_AND_RANKS = (0, 1)
WIDE_NOT_RANKS = tuple(range(50, 70))
MID_OR_RANKS = tuple(int(k) for k in np.linspace(10, 200, 20).round())
AND5_RANKS = (0, 1, 2, 3, 4)
NOT_BASE_RANK = 0
NOT_RANKS = (1, 2, 3)


def make_requests(data: SyntheticRegistry, seed: int = 7) -> list[BenchRequest]:
    """The benchmark requests over ``data`` (deterministic)."""
    rng = np.random.default_rng(seed)
    names = data.tag_names

    def tags(ranks: Sequence[int]) -> list[str]:
        return [names[k] for k in ranks]

    n_alias = min(1000, data.n_alias_groups)
    alias_groups = np.sort(rng.choice(data.n_alias_groups, size=n_alias, replace=False))
    rid_devices = np.sort(rng.choice(data.n, size=min(1000, data.n), replace=False))

    # Narrow: aliases and rids mostly among the planted cohort, and overlapping each other (alias
    # and registration_id combine by AND).
    cohort = data.cohort
    cohort_groups = data.alias_group[cohort]
    cohort_with_alias = cohort[cohort_groups >= 0]
    k_alias_cohort = min(700, cohort_with_alias.size)
    alias_cohort_devs = rng.choice(cohort_with_alias, size=k_alias_cohort, replace=False)
    narrow_groups = np.unique(data.alias_group[alias_cohort_devs])
    extra = rng.choice(data.n_alias_groups, size=n_alias, replace=False)
    extra = extra[~np.isin(extra, narrow_groups)][: max(0, n_alias - narrow_groups.size)]
    narrow_groups = np.concatenate([narrow_groups, extra])
    k_rid_cohort = min(500, alias_cohort_devs.size)
    narrow_rid_devs = rng.choice(alias_cohort_devs, size=k_rid_cohort, replace=False)
    others = rng.choice(data.n, size=min(1000, data.n), replace=False)
    others = others[~np.isin(others, narrow_rid_devs)][: max(0, 1000 - k_rid_cohort)]
    narrow_rid_devs = np.concatenate([narrow_rid_devs, others])
    narrow_rid_devs = narrow_rid_devs[: min(1000, data.n)]

    requests = [
        BenchRequest("broadcast", "all", ["android", "ios"], "all devices, platform android+ios"),
        BenchRequest("or20", {"tag": tags(MID_OR_RANKS)}, "all", "20-tag OR, ranks 10..200"),
        BenchRequest("and5", {"tag_and": tags(AND5_RANKS)}, "all", "5-tag AND, ranks 0..4"),
        BenchRequest(
            "not3",
            {"tag": tags([NOT_BASE_RANK]), "tag_not": tags(NOT_RANKS)},
            "all",
            "top tag minus 3 popular tags",
        ),
        BenchRequest(
            "alias1000", {"alias": data.alias_strings(alias_groups)}, "all", "1000 aliases"
        ),
        BenchRequest(
            "rid1000",
            {"registration_id": data.rids(rid_devices)},
            "all",
            "1000 registration IDs",
        ),
        BenchRequest(
            "wide",
            {
                "tag": tags(WIDE_OR_RANKS),
                "tag_and": tags(WIDE_AND_RANKS),
                "tag_not": tags(WIDE_NOT_RANKS),
            },
            ["android"],
            "20 OR (ranks 10..29) x 2 AND (0,1) - 20 NOT (50..69), android",
        ),
        BenchRequest(
            "narrow",
            {
                "tag": tags(NARROW_TAG_RANKS),
                "tag_and": tags(NARROW_AND_RANKS),
                "tag_not": tags(NARROW_NOT_RANKS),
                "alias": data.alias_strings(narrow_groups),
                "registration_id": data.rids(narrow_rid_devs),
            },
            ["android"],
            "20 tag + 20 tag_and + 20 tag_not + 1000 alias + 1000 rid, android",
        ),
    ]
    assert tuple(r.name for r in requests) == REQUEST_NAMES
    return requests


def export_request(req: BenchRequest) -> dict[str, Any]:
    """A JSON-friendly summary of a request (argument counts, not the 1000-element lists)."""
    if isinstance(req.audience, str):
        summary: dict[str, Any] = {"audience": req.audience}
    else:
        summary = {"audience": {k: len(v) for k, v in req.audience.items()}}
    summary.update(name=req.name, platform=req.platform, note=req.note)
    return summary
