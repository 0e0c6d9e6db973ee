"""The yardsticks reach is measured against, built over the same memberships as the registry.

* ``RoaringBaseline``: the best pipeline a careful user could write with pyroaring and numpy: a dict
  of tag -> ``BitMap``, alias -> ``BitMap``, registration ID -> id, platform bitmaps and a live
  bitmap; n-ary ``BitMap.union``, in-place ``&=``/``-=`` in a sensible order (small candidate sets
  first, ANDs smallest first, filtering a small accumulator instead of building big unions), and
  export with ``np.frombuffer(bm.to_array())`` (the fastest export pyroaring offers: about 40x
  ``np.array(bm)``).
* ``SetBaseline``: the same plan over plain Python ``set`` objects (ints shared between sets).
* The floor is not here: it is ``Registry._kernel_floor`` in the core (bare croaring calls for the
  same algebra, no planning, no export).

Both baselines follow the JPush semantics of DESIGN.md: ``tag`` = OR, ``tag_and`` = AND,
``tag_not`` = NOT(OR), alias / registration_id = union within the type, types combine by AND,
then ``platform``, then live devices only.
"""

from __future__ import annotations

import array
import resource
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from data import PLATFORMS, BenchRequest, SyntheticRegistry

U32Array = npt.NDArray[np.uint32]


class SetLike(Protocol):
    """What the plan needs from a membership set (``BitMap`` and ``set`` both qualify)."""

    def __len__(self) -> int: ...
    def __and__(self, other: Any) -> Any: ...
    def __iand__(self, other: Any) -> Any: ...
    def __isub__(self, other: Any) -> Any: ...
    def __sub__(self, other: Any) -> Any: ...
    def copy(self) -> Any: ...


S = TypeVar("S", bound=SetLike)


def bitmap_from_array(ids: npt.NDArray[np.uint32]) -> BitMap:
    """A ``BitMap`` from a uint32 numpy array (via ``array.array``: ~6x faster than iterating)."""
    return BitMap(array.array("I", np.ascontiguousarray(ids, dtype=np.uint32).tobytes()))


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (``getrusage``; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Current resident set size of this process (from /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize()
    except OSError:
        return max_rss_bytes()


@dataclass
class Baseline(Generic[S]):
    """Membership sets of one kind plus the evaluation plan shared by both baselines."""

    name: str
    tags: dict[str, S]
    aliases: dict[str, S]
    rid_to_id: Mapping[str, int]
    platforms: dict[str, S]
    live: S
    union_all: Callable[[Sequence[S]], S]
    """A *new* set holding the union of the arguments (also for 0 or 1 argument)."""
    from_ids: Callable[[list[int]], S]
    export: Callable[[S], U32Array]
    """The result as a sorted uint32 numpy array."""

    def resolve(self, audience: Mapping[str, Sequence[str]] | str, platform: Any = "all") -> S:
        """Evaluate a (valid) JPush audience; returns a new set of device ids."""
        aud: Mapping[str, Sequence[str]] = {} if isinstance(audience, str) else audience
        tag, tag_and, tag_not = aud.get("tag", ()), aud.get("tag_and", ()), aud.get("tag_not", ())
        alias, rids = aud.get("alias", ()), aud.get("registration_id", ())
        empty = self.union_all([])

        # 1. Small candidate sets first (alias / registration_id), intersected smallest first.
        small: list[S] = []
        if alias:
            small.append(self.union_all([self.aliases[a] for a in alias if a in self.aliases]))
        if rids:
            r2i = self.rid_to_id
            small.append(self.from_ids([r2i[r] for r in rids if r in r2i]))
        acc: S | None = None
        if small:
            small.sort(key=len)
            acc = small[0]
            for s in small[1:]:
                acc &= s

        # 2. tag_and, smallest first (an unknown tag makes the result empty).
        ands = sorted((self.tags.get(t, empty) for t in tag_and), key=len)
        if ands:
            if acc is None:
                acc = ands[0] & ands[1] if len(ands) > 1 else ands[0].copy()
                ands = ands[2:]
            for b in ands:
                acc &= b

        # 3. tag (OR): filter a small accumulator by each tag instead of building the big union.
        if tag:
            ors = [self.tags[t] for t in tag if t in self.tags]
            if acc is None:
                acc = self.union_all(ors)
            elif len(acc) < sum(len(b) for b in ors):
                acc = self.union_all([acc & b for b in ors])
            else:
                acc &= self.union_all(ors)

        live_applied = False
        if acc is None:  # "all", or only tag_not
            acc = self.live.copy()
            live_applied = True

        # 4. tag_not, one difference at a time on the (by now usually small) accumulator.
        for t in tag_not:
            if t in self.tags:
                acc -= self.tags[t]

        # 5. platform: intersect with the requested ones or subtract the others, whichever
        #    touches less.
        if platform != "all":
            wanted = set(platform)
            want = [s for p, s in self.platforms.items() if p in wanted]
            other = [s for p, s in self.platforms.items() if p not in wanted]
            if sum(map(len, want)) <= sum(map(len, other)):
                acc &= want[0] if len(want) == 1 else self.union_all(want)
            else:
                for s in other:
                    acc -= s

        # 6. live devices only.
        if not live_applied:
            acc &= self.live
        return acc

    def resolve_ids(self, audience: Mapping[str, Sequence[str]] | str, platform: Any) -> U32Array:
        """``resolve`` + export to a sorted uint32 numpy array."""
        return self.export(self.resolve(audience, platform))

    def count(self, audience: Mapping[str, Sequence[str]] | str, platform: Any) -> int:
        """Cardinality of ``resolve``."""
        return len(self.resolve(audience, platform))

    def run(self, req: BenchRequest) -> U32Array:
        """Resolve one benchmark request and export its ids."""
        return self.resolve_ids(req.audience, req.platform)


# --------------------------------------------------------------------------------------------------
# pyroaring
# --------------------------------------------------------------------------------------------------


def _roaring_union(bms: Sequence[BitMap]) -> BitMap:
    if not bms:
        return BitMap()
    if len(bms) == 1:
        return bms[0].copy()
    return BitMap.union(*bms)


def _roaring_export(bm: BitMap) -> U32Array:
    return np.frombuffer(bm.to_array(), dtype=np.uint32)


def build_rid_index(data: SyntheticRegistry) -> dict[str, int]:
    """registration ID -> device id (device ids are load order, as in the registry)."""
    return dict(zip(data.rids(), range(data.n), strict=True))


def _platform_ids(data: SyntheticRegistry) -> dict[str, U32Array]:
    return {
        p: np.flatnonzero(data.platform == code).astype(np.uint32)
        for code, p in enumerate(PLATFORMS)
    }


def build_roaring(
    data: SyntheticRegistry, rid_to_id: Mapping[str, int] | None = None
) -> Baseline[BitMap]:
    """The pyroaring baseline over ``data``'s memberships."""
    tags = {
        name: bitmap_from_array(m) for name, m in zip(data.tag_names, data.tag_members, strict=True)
    }
    members = data.alias_members.tolist()
    ip = data.alias_indptr.tolist()
    aliases = {a: BitMap(members[ip[g] : ip[g + 1]]) for g, a in enumerate(data.alias_strings())}
    platforms = {p: bitmap_from_array(ids) for p, ids in _platform_ids(data).items()}
    return Baseline(
        name="pyroaring",
        tags=tags,
        aliases=aliases,
        rid_to_id=rid_to_id if rid_to_id is not None else build_rid_index(data),
        platforms=platforms,
        live=BitMap(range(data.n)),
        union_all=_roaring_union,
        from_ids=BitMap,
        export=_roaring_export,
    )


# --------------------------------------------------------------------------------------------------
# Python sets
# --------------------------------------------------------------------------------------------------


def _set_union(sets: Sequence[set[int]]) -> set[int]:
    return set().union(*sets)


def _set_export(s: set[int]) -> U32Array:
    out = np.fromiter(s, dtype=np.uint32, count=len(s))
    out.sort()
    return out


def estimate_sets_bytes(data: SyntheticRegistry) -> int:
    """A conservative estimate of the Python-set baseline's memory (set tables, shared ints)."""

    def set_bytes(m: int) -> int:
        if m <= 4:
            return 216
        # set(iterable) grows its table to keep it at most 60% full; 16 bytes a slot.
        slots = 8
        while slots * 3 < m * 5:
            slots *= 4 if m < 50_000 else 2
        return 200 + 16 * slots

    total = sum(set_bytes(m.size) for m in data.tag_members)
    sizes = np.diff(data.alias_indptr)
    total += int(sizes.size) * (216 + 100)  # one small set + dict slot + key string per alias
    total += set_bytes(data.n) + sum(set_bytes(int((data.platform == c).sum())) for c in range(3))
    total += data.n * (32 + 8)  # the shared int objects and the object array that holds them
    return total


def build_sets(
    data: SyntheticRegistry, rid_to_id: Mapping[str, int] | None = None
) -> Baseline[set[int]]:
    """The Python-set baseline over ``data``'s memberships (one int object per device id)."""
    ints = np.arange(data.n, dtype=np.int64).astype(object)  # shared Python ints

    def make(ids: npt.NDArray[Any]) -> set[int]:
        return set(ints[ids])

    tags = {name: make(m) for name, m in zip(data.tag_names, data.tag_members, strict=True)}
    members = ints[data.alias_members].tolist()
    ip = data.alias_indptr.tolist()
    aliases = {a: set(members[ip[g] : ip[g + 1]]) for g, a in enumerate(data.alias_strings())}
    platforms = {p: make(ids) for p, ids in _platform_ids(data).items()}
    return Baseline(
        name="sets",
        tags=tags,
        aliases=aliases,
        rid_to_id=rid_to_id if rid_to_id is not None else build_rid_index(data),
        platforms=platforms,
        live=set(ints.tolist()),
        union_all=_set_union,
        from_ids=set,
        export=_set_export,
    )


def sets_fit(data: SyntheticRegistry, budget_bytes: int) -> tuple[bool, int]:
    """Whether building the set baseline keeps the process under ``budget_bytes``, and the
    projected peak (current RSS + estimate, or the peak so far if higher)."""
    projected = max(max_rss_bytes(), current_rss_bytes() + estimate_sets_bytes(data))
    return projected <= budget_bytes, projected
