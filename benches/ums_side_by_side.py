"""UMS template sends: reach side by side with the best pyroaring + numpy pipeline, in one run.

    python benches/ums_side_by_side.py --users 10000000

Builds N users (userid ``u`` + 9 digits), 9 channels (one per type) and per (type, scope) a
share of users bound to fixed-width IDs (vectorised numpy, IDs unique, bound in one order that
both contenders number the same way; 10% of app users have a second app ID), a tag ``vip``
bound globally to ~30% of users and to the app channel for ~25%. Loads reach through its
columnar bulk calls and builds the pyroaring pipeline over the same memberships: per (type,
scope) a users ``BitMap``, a dense first-ID numpy column and a CSR of extra IDs; per
(tag, scope) a ``BitMap``. Every contender must give the same IDs per channel before anything
is timed. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from baselines import bitmap_from_array
from harness import measure
from reach.ums import UmsRegistry

U32 = npt.NDArray[np.uint32]
NONE = np.uint32(0xFFFFFFFF)

CHANNELS = (
    ("app1", "app"),
    ("oa1", "wechatoa"),
    ("mp1", "wechatmp"),
    ("sms1", "sms"),
    ("mail1", "email"),
    ("ali1", "alipay_life"),
    ("ding1", "dingtalk_cc"),
    ("wk1", "wechatwk"),
    ("wkl1", "wechatwk_linkedcorp"),
)
OWN = {"app", "wechatoa", "wechatmp", "alipay_life", "wechatwk", "wechatwk_linkedcorp"}
# (type, scope, share of users bound)
BINDINGS = (
    ("app", "app1", 0.70),
    ("wechatoa", "oa1", 0.40),
    ("wechatmp", "mp1", 0.30),
    ("sms", "all", 0.80),
    ("sms", "sms1", 0.10),
    ("email", "all", 0.30),
    ("alipay_life", "ali1", 0.20),
    ("dingtalk_cc", "all", 0.10),
    ("wechatwk", "wk1", 0.10),
    ("wechatwk_linkedcorp", "wkl1", 0.05),
)


def fixed_width(prefix: bytes, numbers: npt.NDArray[np.int64], digits: int) -> tuple[Any, Any]:
    """``prefix`` + zero-padded decimal ``numbers`` as (bytes uint8, offsets uint64)."""
    pow10 = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
    cols = ((numbers[:, None] // pow10) % 10 + 48).astype(np.uint8)
    pre = np.frombuffer(prefix, np.uint8)
    rows = np.hstack([np.broadcast_to(pre, (len(numbers), len(pre))), cols])
    width = len(pre) + digits
    return rows.ravel(), (np.arange(len(numbers) + 1, dtype=np.uint64) * width)


@dataclass
class Binding:
    """The pyroaring + numpy form of one (type, scope): what a careful user would keep."""

    users: BitMap
    first: U32  # dense over all users, NONE where unbound
    multi_users: U32  # ascending users with extra IDs
    extra_ptr: npt.NDArray[np.int64]
    extra_ids: U32

    def gather(self, sel: BitMap) -> U32:
        """IDs of the users of ``sel`` (a subset of ``users``), first then extras."""
        u = np.frombuffer(sel.to_array(), dtype=np.uint32)
        out = self.first[u]
        if len(self.multi_users):
            m = np.intersect1d(u, self.multi_users, assume_unique=True)
            if len(m):
                pos = np.searchsorted(self.multi_users, m)
                lo, hi = self.extra_ptr[pos], self.extra_ptr[pos + 1]
                starts = np.cumsum(hi - lo) - (hi - lo)  # where each user's run begins in idx
                idx = np.repeat(lo - starts, hi - lo) + np.arange(int((hi - lo).sum()))
                out = np.concatenate([out, self.extra_ids[idx]])
        return out


def build(
    n: int, seed: int
) -> tuple[UmsRegistry, dict[tuple[str, str], Binding], dict[str, BitMap]]:
    rng = np.random.default_rng(seed)
    reg = UmsRegistry()
    for key, kind in CHANNELS:
        reg.add_channel(key, kind)
    t = time.perf_counter()
    ub, uo = fixed_width(b"u", np.arange(n, dtype=np.int64), 9)
    reg._core.add_users(ub, uo)
    next_id = 0
    base: dict[tuple[str, str], Binding] = {}
    for i, (kind, scope, share) in enumerate(BINDINGS):
        users = np.flatnonzero(rng.random(n) < share).astype(np.uint32)
        extra = users[rng.random(len(users)) < 0.10] if kind == "app" else users[:0]
        rows = np.concatenate([users, extra])  # first IDs in user order, then the second ones
        ib, io = fixed_width(bytes([65 + i]), np.arange(len(rows), dtype=np.int64), 11)
        reg._core.bind_arrays(kind, scope, rows, ib, io)
        ids = np.arange(next_id, next_id + len(rows), dtype=np.uint32)
        next_id += len(rows)
        first = np.full(n, NONE, dtype=np.uint32)
        first[users] = ids[: len(users)]
        ptr = np.arange(len(extra) + 1, dtype=np.int64)
        base[(kind, scope)] = Binding(
            bitmap_from_array(users), first, extra, ptr, ids[len(users) :]
        )
    tags: dict[str, BitMap] = {}
    for scope, share in (("all", 0.30), ("app1", 0.25)):
        members = bitmap_from_array(np.flatnonzero(rng.random(n) < share).astype(np.uint32))
        reg._core.add_tag_users("vip", scope, bytes(members.serialize()))
        tags[scope] = members
    print(f"built {n:,} users, {next_id:,} IDs in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return reg, base, tags


def pyroaring_send(
    base: dict[tuple[str, str], Binding], tags: dict[str, BitMap], audience: BitMap | None
) -> list[U32]:
    """The seed's rules over pyroaring + numpy: per channel the distinct IDs, ascending."""
    out = []
    for key, kind in CHANNELS:
        if audience is None:
            a = tags.get(key) if len(tags.get(key, BitMap())) else tags["all"]
        else:
            a = audience
        own, glob = base.get((kind, key)), base.get((kind, "all"))
        parts: list[U32] = []
        if kind in OWN and own is not None:
            parts.append(own.gather(a & own.users))
        elif kind in ("sms", "email"):
            rest = a
            if own is not None:
                parts.append(own.gather(a & own.users))
                rest = a - own.users
            if glob is not None:
                parts.append(glob.gather(rest & glob.users))
        elif glob is not None:
            parts.append(glob.gather(a & glob.users))
        ids = np.concatenate(parts) if parts else np.empty(0, np.uint32)
        out.append(np.frombuffer(bitmap_from_array(ids).to_array(), dtype=np.uint32))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=10_000_000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--seed", type=int, default=20240601)
    args = p.parse_args(argv)
    reg, base, tags = build(args.users, args.seed)
    keys = [k for k, _ in CHANNELS]
    reg.add_template({"template_id": 1, "channels": keys, "content": dict.fromkeys(keys, "hi")})
    rng = np.random.default_rng(args.seed + 1)
    picked = np.sort(rng.choice(args.users, 1000, replace=False)).astype(np.uint32)
    userids = reg.userids(picked)
    tag_body = {
        "aud_tag": ["vip"],
        "template_id": 1,
        "template_para": {},
        "app_para": {"platform": "all"},
    }
    user_body = {**tag_body, "aud_userid": userids}
    del user_body["aud_tag"]
    gc.collect()
    gc.freeze()
    rows = []
    for name, body, audience in (
        ("tag vip", tag_body, None),
        ("1000 userids", user_body, BitMap(picked)),
    ):
        res = reg.resolve(body)
        want = pyroaring_send(base, tags, audience)
        for got, exp in zip(res.channels, want, strict=True):
            if not np.array_equal(got.ids, exp):
                raise AssertionError(f"{name}: channel {got.key} differs from the pipeline")
        ids = sum(len(c) for c in res.channels)
        cpu = time.process_time()
        s_reach, _ = measure(lambda b=body: reg.resolve(b), args.repeat, min_time_s=0.25)
        cpu = (time.process_time() - cpu) / (s_reach.repeats + 1)  # the warm-up call included
        s_base, _ = measure(lambda a=audience: pyroaring_send(base, tags, a), args.repeat)
        rows.append((name, res.audience, ids, s_reach, cpu, s_base))
    # reach resolves the channels on both cores: its CPU time (process, all threads, mean per
    # call) tells its work apart from whether the other core was free; the pipeline runs on one.
    print(
        "| send | audience users | IDs (9 channels) | reach ms | reach CPU ms "
        "| pyroaring+numpy ms | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, aud, ids, a, a_cpu, b in rows:
        print(
            f"| {name} | {aud:,} | {ids:,} | {a.cell()} | {a_cpu * 1e3:.3g} | {b.cell()} | "
            f"{b.median_ms / a.median_ms:.1f}x |"
        )
    mem = reg.memory_usage()
    print(
        f"\nmemory: {mem['total'] / 2**20:.0f} MiB ({mem['total'] / args.users:.1f} B/user): "
        + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in mem.items() if k != "total")
    )


if __name__ == "__main__":
    main()
