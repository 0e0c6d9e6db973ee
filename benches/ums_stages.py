"""UMS send strategies: what stages, delivery and app routing add to a template send, in one run.

    python benches/ums_stages.py --users 10000000

Builds the users of ``ums_side_by_side.py`` (9 channels, one per type), a JPush app whose
devices are the app channel's IDs (70/28/2 android/ios/web, 30% online), and marks 20% of the
SMS IDs undeliverable. Times, for the tag send and the 1000-userid send of that benchmark,
``resolve``: without a strategy and nothing undeliverable (every channel stage 1, no delivery
work: the plain resolution), without a strategy (stage 1 delivery counted), with the app channel
routed through the JPush app, and with a 9-stage strategy over every channel (app first,
routed). Prints a Markdown table, the stage counts of the tag send, and one timing of the first
routed send (the app routing looks every app ID up then and keeps the map for later sends).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np

from harness import measure
from reach import PLATFORMS, Registry
from ums_side_by_side import BINDINGS, CHANNELS, build, fixed_width


def jpush_app(n_users: int, seed: int) -> Registry:
    """The JPush app of the app channel: one device per app ID, in the benchmark's ID order
    (the app binding is ``BINDINGS[0]``: prefix ``A``)."""
    rng = np.random.default_rng(seed)
    kind, _, share = BINDINGS[0]
    assert kind == "app"
    # Re-derive how many app IDs ums_side_by_side's build made: same generator, same draws.
    users = np.flatnonzero(rng.random(n_users) < share)
    extra = int((rng.random(len(users)) < 0.10).sum())
    n = len(users) + extra
    ib, io = fixed_width(b"A", np.arange(n, dtype=np.int64), 11)
    pick = np.random.default_rng(seed + 7)
    platform = pick.choice(
        [PLATFORMS.index("android"), PLATFORMS.index("ios"), PLATFORMS.index("web")],
        size=n,
        p=[0.70, 0.28, 0.02],
    ).astype(np.uint8)
    online = pick.random(n) < 0.30
    reg = Registry()
    reg.load_arrays(rid_bytes=ib, rid_offsets=io, platform=platform, online=online)
    return reg


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=10_000_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=20240601)
    args = p.parse_args(argv)
    reg, base, _ = build(args.users, args.seed)
    t = time.perf_counter()
    jpush = jpush_app(args.users, args.seed)
    sms = base[("sms", "all")]
    ids = np.flatnonzero(sms.first != 0xFFFFFFFF)
    bad = np.random.default_rng(args.seed + 3).random(len(ids)) < 0.20
    undeliverable = reg.channel_ids(sms.first[ids[bad]])
    print(
        f"JPush app {len(jpush):,} devices, {int(bad.sum()):,} undeliverable SMS IDs "
        f"in {time.perf_counter() - t:.1f} s",
        file=sys.stderr,
    )
    keys = [k for k, _ in CHANNELS]
    reg.add_template({"template_id": 1, "channels": keys, "content": dict.fromkeys(keys, "hi")})
    stages = [{"channel_key": k, "delay": 60 * i} for i, k in enumerate(keys)]
    reg.add_rule({"rule_id": 9, "stages": stages})
    rng = np.random.default_rng(args.seed + 1)
    picked = np.sort(rng.choice(args.users, 1000, replace=False)).astype(np.uint32)
    tag_body = {
        "aud_tag": ["vip"],
        "template_id": 1,
        "template_para": {},
        "app_para": {"platform": "all"},
    }
    user_body = {k: v for k, v in tag_body.items() if k != "aud_tag"}
    user_body["aud_userid"] = reg.userids(picked)
    devices = {"app1": jpush}
    gc.collect()
    gc.freeze()
    rows = []
    cold: dict[str, float] = {}
    for name, body in (("tag vip", tag_body), ("1000 userids", user_body)):
        cases = (
            ("no strategy, all deliver", body, None),
            ("no strategy", body, None),
            ("app routed", body, devices),
            ("9 stages, app routed", {**body, "rule_id": 9}, devices),
        )
        for case, b, d in cases:
            if case.endswith("all deliver"):
                reg.set_undeliverable(remove=undeliverable)
            else:
                reg.set_undeliverable(undeliverable)
            if d is not None and not cold:
                # The first routed send looks every app ID up in the JPush app (the routing
                # keeps that map for later sends): one timing of it, before the warm ones.
                t = time.perf_counter()
                reg.resolve(b, devices=d)
                cold[name] = (time.perf_counter() - t) * 1000
            s, res = measure(lambda b=b, d=d: reg.resolve(b, devices=d), args.repeat)
            sent = sum(len(x.channel) for x in res.stages)
            rows.append((name, case, res.audience, sent, res.delivered, s))
            if name == "tag vip" and case.startswith("9 stages"):
                for x in res.stages:
                    print(
                        f"  stage {x.stage} {x.channel.key}: {x.channel.reached:,} users, "
                        f"{len(x.channel):,} IDs, delivered {x.delivered:,}",
                        file=sys.stderr,
                    )
    print("| send | case | audience | IDs sent | users delivered | reach ms |")
    print("|---|---|---:|---:|---:|---:|")
    for name, case, aud, sent, delivered, s in rows:
        print(f"| {name} | {case} | {aud:,} | {sent:,} | {delivered:,} | {s.cell()} |")
    for name, ms in cold.items():
        print(f"\nfirst routed send of {name} (cold ID -> device map, one timing): {ms:.0f} ms")


if __name__ == "__main__":
    main()
