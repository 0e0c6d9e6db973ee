"""The ``reach`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .registry import Registry
from .ums import UmsRegistry


def _demo(args: argparse.Namespace) -> int:
    """Build a synthetic registry and resolve a few JPush audiences over it."""
    from .demo import build_demo

    t0 = time.perf_counter()
    reg = build_demo(args.devices, seed=args.seed)
    print(f"loaded {len(reg):,} demo devices in {time.perf_counter() - t0:.2f} s")
    pushes: list[dict[str, Any]] = [
        {"platform": ["android", "ios"], "audience": "all"},
        {"platform": "all", "audience": {"tag": ["深圳", "北京"], "tag_not": ["vip"]}},
        {"platform": ["android"], "audience": {"tag_and": ["深圳", "female"]}},
        {"platform": "all", "audience": {"alias": ["user1", "user2", "user3"]}},
    ]
    for body in pushes:
        push = {**body, "notification": {"alert": "Hi, JPush!"}}
        t0 = time.perf_counter()
        res = reg.resolve(push)
        ms = (time.perf_counter() - t0) * 1e3
        batches = res.batches(max_size=args.batch)
        print(f"\n{json.dumps(body, ensure_ascii=False)}")
        print(f"  reaches {len(res):,} devices in {ms:.3f} ms, {len(batches)} batches")
        for step in res.explain():
            print(f"    {step['step']:>8} {step['operand']}: {step['result']:,}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reach`` command."""
    parser = argparse.ArgumentParser(prog="reach", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="resolve sample pushes over synthetic devices")
    demo.add_argument("--devices", type=int, default=200_000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--batch", type=int, default=1000)
    demo.set_defaults(func=_demo)
    imp = sub.add_parser("import", help="load devices.jsonl (or a directory) and save a snapshot")
    imp.add_argument("devices", help="a devices.jsonl file, or a directory of import files")
    imp.add_argument("--snapshot", required=True, help="where to write the snapshot")
    imp.add_argument(
        "--ums-snapshot",
        metavar="PATH",
        help="also load the directory's UMS files and write a UMS snapshot to PATH",
    )
    imp.set_defaults(func=_import)
    serve = sub.add_parser("serve", help="run the JPush v3 emulator (HTTP) over a durable store")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8800)
    serve.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="APPKEY:MASTERSECRET",
        help="an app to serve (repeatable); with none, a demo app is made and printed",
    )
    serve.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="GROUPKEY:SECRET=APPKEY,APPKEY",
        help="an app group for /v3/grouppush (repeatable)",
    )
    serve.add_argument(
        "--ums",
        action="append",
        default=[],
        metavar="CHANNELKEY:MASTERSECRET",
        help="a UMS account for /v1/template/sent|broadcast and /v1/users (repeatable)",
    )
    serve.add_argument(
        "--import",
        dest="import_dir",
        metavar="DIR",
        help="load DIR's device files into the first app and its UMS files into the first UMS "
        "account (each once, into an empty store; later starts use the store's snapshots)",
    )
    serve.add_argument(
        "--store",
        default="reach-data",
        metavar="PATH",
        help="the durable store's directory (default ./reach-data)",
    )
    serve.add_argument(
        "--demo",
        type=int,
        default=0,
        metavar="N",
        help="fill an empty store with N synthetic devices",
    )
    serve.add_argument(
        "--rate-limit",
        type=int,
        default=0,
        metavar="N",
        help="API calls per app and minute (default 0: unlimited)",
    )
    serve.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="N",
        help="the largest delivery batch (default 1000)",
    )
    serve.add_argument(
        "--checkpoint-every",
        type=int,
        default=100_000,
        metavar="N",
        help="snapshot an app after N journaled device changes (default 100000)",
    )
    serve.add_argument("--verbose", action="store_true", help="log every request")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def _serve(args: argparse.Namespace) -> int:
    from .emulator import AppConfig, GroupConfig, serve

    try:
        apps = [AppConfig.parse(a) for a in args.app]
        ums = [AppConfig.parse(a) for a in args.ums]
        groups = [GroupConfig.parse(g) for g in args.group]
    except ValueError as e:
        print(f"reach serve: {e}", file=sys.stderr)
        return 2
    try:
        serve(
            host=args.host,
            port=args.port,
            apps=apps,
            groups=groups,
            ums=ums,
            store_path=args.store,
            import_dir=args.import_dir,
            demo=args.demo,
            rate_limit=args.rate_limit,
            batch_size=args.batch_size,
            checkpoint_every=args.checkpoint_every,
            verbose=args.verbose,
        )
    except ValueError as e:  # a refused configuration or import file: say so, no traceback
        print(f"reach serve: {e}", file=sys.stderr)
        return 2
    return 0


def _import(args: argparse.Namespace) -> int:
    from .imports import import_directory

    reg = Registry()
    t0 = time.perf_counter()
    if Path(args.devices).is_dir():
        counts = import_directory(reg, args.devices)
    else:
        counts = {"devices.jsonl": reg.load_jsonl(args.devices)}
    reg.save(args.snapshot)
    loaded = ", ".join(f"{n:,} from {name}" for name, n in counts.items())
    print(f"imported {loaded} in {time.perf_counter() - t0:.2f} s -> {args.snapshot}")
    if args.ums_snapshot is not None:
        if not Path(args.devices).is_dir():
            print("reach import: --ums-snapshot takes a directory of import files", file=sys.stderr)
            return 2
        ums = UmsRegistry()
        counts = import_directory(ums, args.devices)
        ums.save(args.ums_snapshot)
        loaded = ", ".join(f"{n:,} from {name}" for name, n in counts.items())
        print(f"imported UMS {loaded} -> {args.ums_snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
