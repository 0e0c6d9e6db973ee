"""reach side by side with the alternatives, on one synthetic registry, in one run.

    python benches/side_by_side.py --devices 10000000 --repeat 7 --json /tmp/side_by_side.json

Builds the data (``data.py``), loads reach from numpy arrays and (for at most ``--jsonl-devices``
devices) from JSON Lines, builds the pyroaring and Python-set baselines over the same memberships
(the set baseline only if the projected peak stays under ``--sets-budget-gib``), then times every
request for reach (resolve + ids to numpy), the pyroaring pipeline (+ export), the set pipeline
(+ export) and the bare-kernel floor, after checking that they all reach the same devices. Also:
broadcast count, ids export of a ~n/2 result, bytes per device, snapshot save/load. Prints
Markdown tables for the README and writes everything as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform as py_platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from baselines import (
    build_rid_index,
    build_roaring,
    build_sets,
    current_rss_bytes,
    estimate_sets_bytes,
    max_rss_bytes,
    sets_fit,
)
from data import export_request, make_registry, make_requests, tag_name
from harness import (
    CONTENDERS,
    check_codes,
    contenders,
    export_pair,
    fmt_ms,
    ids_are_load_order,
    load_reach,
    measure,
    measure_all,
    verify,
)

GIB = 1 << 30
MIB = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=10_000_000, help="registry size")
    p.add_argument("--repeat", type=int, default=11, help="timed repeats per contender (minimum)")
    p.add_argument(
        "--min-time",
        type=float,
        default=0.25,
        help="repeat a fast contender until this many seconds (at most 1000 runs)",
    )
    p.add_argument("--seed", type=int, default=20240601, help="data seed")
    p.add_argument(
        "--jsonl-devices",
        type=int,
        default=1_000_000,
        help="devices in the JSON Lines import benchmark (at most --devices)",
    )
    p.add_argument(
        "--sets",
        choices=("auto", "on", "off"),
        default="auto",
        help="build the Python-set baseline: auto = only if it fits --sets-budget-gib",
    )
    p.add_argument("--sets-budget-gib", type=float, default=12.0, help="peak RSS budget for sets")
    p.add_argument("--tmpdir", default=tempfile.gettempdir(), help="where scratch files go")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    return p.parse_args(argv)


def log(msg: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import pyroaring

    import reach

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / GIB, 1),
        "python": py_platform.python_version(),
        "numpy": np.__version__,
        "pyroaring": getattr(pyroaring, "__version__", "?"),
        "reach": getattr(reach, "__version__", None)
        or getattr(getattr(reach, "_core", None), "__version__", "?"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Do every measurement; returns the results (see ``render_markdown``)."""
    import reach

    check_codes()
    n = args.devices
    out: dict[str, Any] = {
        "config": {
            "devices": n,
            "repeat": args.repeat,
            "min_time": args.min_time,
            "seed": args.seed,
            "sets": args.sets,
            "sets_budget_gib": args.sets_budget_gib,
        },
        "machine": machine_info(),
    }

    # ---- data -----------------------------------------------------------------------------
    log(f"generating {n:,} devices")
    t = time.perf_counter()
    data = make_registry(n, seed=args.seed)
    gen_s = time.perf_counter() - t
    requests = make_requests(data)
    out["data"] = {
        "generate_s": gen_s,
        "generate_breakdown_s": data.timings,
        "tags": len(data.tag_names),
        "memberships": int(data.tag_indptr[-1]),
        "mean_tags_per_device": data.mean_tags_per_device(),
        "alias_groups": data.n_alias_groups,
        "top_tag_devices": int(data.tag_members[0].size),
        "cohort": int(data.cohort.size),
    }
    log(
        f"generated in {gen_s:.1f} s: {data.mean_tags_per_device():.2f} tags/device, "
        f"{data.n_alias_groups:,} aliases, RSS {current_rss_bytes() / GIB:.2f} GiB"
    )

    tmp = Path(tempfile.mkdtemp(prefix="reach-bench-", dir=args.tmpdir))
    jsonl_path = tmp / "devices.jsonl"
    snap_path = tmp / "registry.snapshot"
    try:
        jsonl_n = min(args.jsonl_devices, n)
        log(f"writing {jsonl_n:,} JSON Lines to {jsonl_path}")
        data.write_jsonl(jsonl_path, limit=jsonl_n)
        jsonl_bytes = jsonl_path.stat().st_size

        # ---- loading reach ------------------------------------------------------------------
        load_repeats = max(1, min(args.repeat, 3))
        log(f"load_arrays x{load_repeats}")

        def load_fresh() -> int:
            reg_, _ = load_reach(data)
            return len(reg_)

        arrays_stats, _ = measure(load_fresh, load_repeats, warmup=0)
        reg, first_load_s = load_reach(data)
        compare_ids = ids_are_load_order(reg, data)

        log(f"load_jsonl x{load_repeats} ({jsonl_n:,} lines)")

        def load_jsonl_fresh() -> int:
            r = reach.Registry()
            got = int(r.load_jsonl(str(jsonl_path)))
            if got != jsonl_n:
                raise AssertionError(f"load_jsonl loaded {got} devices, want {jsonl_n}")
            return got

        jsonl_stats, _ = measure(load_jsonl_fresh, load_repeats, warmup=0)
        jsonl_path.unlink()
        out["load"] = {
            "arrays": {
                **arrays_stats.as_dict(),
                "devices": n,
                "devices_per_s": n / (arrays_stats.median_ms / 1e3),
            },
            "jsonl": {
                **jsonl_stats.as_dict(),
                "devices": jsonl_n,
                "file_bytes": jsonl_bytes,
                "devices_per_s": jsonl_n / (jsonl_stats.median_ms / 1e3),
            },
        }

        mem = {k: int(v) for k, v in reg.memory_usage().items()}
        out["memory"] = {
            "usage": mem,
            "bytes_per_device_beyond_tags": (mem["total"] - mem["tags"]) / n,
            "tag_bytes_per_membership": mem["tags"] / max(1, int(data.tag_indptr[-1])),
            "total_bytes_per_device": mem["total"] / n,
        }

        # The per-device CSR is not needed any more: free it before the baselines.
        data.tag_indices = np.empty(0, dtype=np.uint32)
        data.alias_bytes = np.empty(0, dtype=np.uint8)
        gc.collect()

        # ---- baselines ----------------------------------------------------------------------
        log("building the pyroaring baseline")
        t = time.perf_counter()
        rid_to_id = build_rid_index(data)
        roaring = build_roaring(data, rid_to_id)
        roaring_s = time.perf_counter() - t
        gc.collect()
        baselines_info: dict[str, Any] = {
            "pyroaring_build_s": roaring_s,
            "rss_after_pyroaring_bytes": current_rss_bytes(),
        }
        sets = None
        budget = int(args.sets_budget_gib * GIB)
        fits, projected = sets_fit(data, budget)
        estimate = estimate_sets_bytes(data)
        baselines_info["sets_estimate_bytes"] = estimate
        baselines_info["sets_projected_peak_bytes"] = projected
        if args.sets == "on" or (args.sets == "auto" and fits):
            log(f"building the Python-set baseline (estimate {estimate / GIB:.1f} GiB)")
            t = time.perf_counter()
            gc.disable()
            sets = build_sets(data, rid_to_id)
            gc.enable()
            baselines_info["sets_build_s"] = time.perf_counter() - t
            baselines_info["sets_built"] = True
        else:
            why = (
                "--sets off"
                if args.sets == "off"
                else f"projected peak {projected / GIB:.1f} GiB > budget {args.sets_budget_gib} GiB"
            )
            print(f"Python-set baseline skipped: {why}", flush=True)
            log(f"Python-set baseline skipped: {why}")
            baselines_info["sets_built"] = False
            baselines_info["sets_skipped_reason"] = why
        baselines_info["peak_rss_after_baselines_bytes"] = max_rss_bytes()
        out["baselines"] = baselines_info
        log(f"peak RSS so far {max_rss_bytes() / GIB:.2f} GiB")

        gc.collect()
        gc.freeze()  # everything built so far is immortal for the collector: steadier timings

        # ---- requests -----------------------------------------------------------------------
        req_results = []
        for req in requests:
            c = contenders(req, reg, roaring, sets)
            log(f"request {req.name}: warm-up and check")
            first = {k: f() for k, f in c.funcs.items() if k in CONTENDERS}
            reached = verify(req.name, first, compare_ids)
            del first
            stats = measure_all(c.funcs, args.repeat, min_time_s=args.min_time)
            entry: dict[str, Any] = {
                **export_request(req),
                "reached": reached,
                "contenders": {k: s.as_dict() for k, s in stats.items()},
                "pyroaring_over_reach": stats["pyroaring"].median_ms / stats["reach"].median_ms,
                "reach_over_floor": stats["reach"].median_ms / stats["floor"].median_ms,
            }
            if "sets" in stats:
                entry["sets_over_reach"] = stats["sets"].median_ms / stats["reach"].median_ms
            req_results.append((req, stats, entry))
            log(
                f"  {req.name}: {reached:,} reached; "
                + ", ".join(
                    f"{k} {s.median_ms:.3f} ms ({s.faults_per_call:.0f} faults/call)"
                    for k, s in stats.items()
                )
            )
        out["requests"] = [e for _, _, e in req_results]

        # ---- broadcast count, export ----------------------------------------------------------
        log("broadcast count")
        plats = ["android", "ios"]
        count_reach = reg.count_audience("all", platform=plats)
        count_roar = roaring.count("all", plats)
        if int(count_reach) != int(count_roar):
            raise AssertionError(f"broadcast count: reach {count_reach} vs pyroaring {count_roar}")
        bc = measure_all(
            {
                "reach": lambda: reg.count_audience("all", platform=plats),
                "pyroaring": lambda: roaring.count("all", plats),
            },
            args.repeat,
            min_time_s=args.min_time,
        )
        bc_reach, bc_roar = bc["reach"], bc["pyroaring"]
        out["broadcast_count"] = {
            "platform": plats,
            "count": int(count_reach),
            "reach": bc_reach.as_dict(),
            "pyroaring": bc_roar.as_dict(),
        }

        log("ids export of the top tag")
        reach_export, roaring_export, export_n = export_pair(reg, roaring, tag_name(0))
        a, b = reach_export(), roaring_export()
        if len(a) != len(b) or (compare_ids and not np.array_equal(a, b)):
            raise AssertionError("ids export: reach and pyroaring differ")
        del a, b
        ex = measure_all(
            {"reach": reach_export, "pyroaring": roaring_export},
            args.repeat,
            min_time_s=args.min_time,
        )
        ex_reach, ex_roar = ex["reach"], ex["pyroaring"]
        out["export"] = {
            "tag": tag_name(0),
            "ids": export_n,
            "reach_ids": ex_reach.as_dict(),
            "pyroaring_to_array": ex_roar.as_dict(),
        }

        # ---- snapshot -------------------------------------------------------------------------
        log("snapshot save/load")
        snap_repeats = max(1, min(args.repeat, 3))
        save_stats, _ = measure(lambda: reg.save(str(snap_path)), snap_repeats)
        snap_bytes = snap_path.stat().st_size
        probe = requests[1]

        def load_snapshot() -> int:
            loaded = reach.Registry.load(str(snap_path))
            return len(loaded)

        load_stats, loaded_n = measure(load_snapshot, snap_repeats)
        if loaded_n != n:
            raise AssertionError(f"snapshot load: {loaded_n} devices, want {n}")
        again = reach.Registry.load(str(snap_path))
        want = len(reg.resolve_audience(probe.audience, platform=probe.platform))
        got = len(again.resolve_audience(probe.audience, platform=probe.platform))
        if got != want:
            raise AssertionError(f"snapshot round trip: {probe.name} reaches {got}, want {want}")
        del again
        out["snapshot"] = {
            "bytes": snap_bytes,
            "bytes_per_device": snap_bytes / n,
            "save": save_stats.as_dict(),
            "load": load_stats.as_dict(),
        }
        out["first_load_arrays_s"] = first_load_s
        out["peak_rss_bytes"] = max_rss_bytes()
        out["ids_compared"] = compare_ids
    finally:
        for f in (jsonl_path, snap_path):
            f.unlink(missing_ok=True)
        tmp.rmdir()
    return out


def _ratio(x: float) -> str:
    return f"{x:.1f}×" if x >= 10 else f"{x:.2f}×"


def render_markdown(res: dict[str, Any]) -> str:
    """The README tables."""
    cfg, mach = res["config"], res["machine"]
    n = cfg["devices"]
    lines = [
        f"Synthetic registry: {n:,} devices, {res['data']['tags']:,} tags "
        f"({res['data']['mean_tags_per_device']:.1f} per device), "
        f"{res['data']['alias_groups']:,} aliases. {mach['cpu']}, {mach['cores']} cores; "
        f"Python {mach['python']}, numpy {mach['numpy']}, pyroaring {mach['pyroaring']}. "
        f"Times in ms: median (p10–p90) of at least {cfg['repeat']} runs (fast ones: "
        f"{cfg['min_time']} s worth, at most 1000) after a warm-up.",
        "",
        "| request | reached | reach | reach, no ids | parse | pyroaring | sets | floor "
        "| pyroaring / reach | reach / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(d: dict[str, Any] | None) -> str:
        if d is None:
            return "—"
        return f"{fmt_ms(d['median_ms'])} ({fmt_ms(d['p10_ms'])}–{fmt_ms(d['p90_ms'])})"

    def short(d: dict[str, Any] | None) -> str:
        return "—" if d is None else fmt_ms(d["median_ms"])

    for r in res["requests"]:
        c = r["contenders"]
        lines.append(
            f"| {r['name']} | {r['reached']:,} | {cell(c.get('reach'))} | "
            f"{short(c.get('reach_resolve'))} | {short(c.get('reach_parse'))} | "
            f"{cell(c.get('pyroaring'))} | {cell(c.get('sets'))} | {cell(c.get('floor'))} | "
            f"{_ratio(r['pyroaring_over_reach'])} | {_ratio(r['reach_over_floor'])} |"
        )
    lines += [
        "",
        "reach = `Registry.resolve_audience(audience, platform).ids()` from the JPush dict "
        "(validation included) to a numpy uint32 array; *reach, no ids* = the same without the "
        "export; *parse* = the Python validation alone (`reach.jpush.parse_audience`, median); "
        "pyroaring and sets include the export to a sorted numpy uint32 array; floor = the bare "
        "roaring kernels for the same algebra on a parsed audience, count only, no export.",
        "",
        "| measurement | reach | pyroaring | note |",
        "|---|---:|---:|---|",
    ]
    ld = res["load"]
    lines.append(
        f"| load numpy arrays | {ld['arrays']['devices_per_s'] / 1e6:.2f} M devices/s "
        f"({fmt_ms(ld['arrays']['median_ms'])} ms) | — | {n:,} devices |"
    )
    lines.append(
        f"| load JSON Lines | {ld['jsonl']['devices_per_s'] / 1e6:.2f} M devices/s "
        f"({fmt_ms(ld['jsonl']['median_ms'])} ms) | — | {ld['jsonl']['devices']:,} lines, "
        f"{ld['jsonl']['file_bytes'] / MIB:.0f} MiB |"
    )
    bc = res["broadcast_count"]
    lines.append(
        f"| broadcast count | {cell(bc['reach'])} | {cell(bc['pyroaring'])} | "
        f"platform android+ios, {bc['count']:,} devices |"
    )
    ex = res["export"]
    lines.append(
        f"| ids export | {cell(ex['reach_ids'])} | {cell(ex['pyroaring_to_array'])} | "
        f"{ex['ids']:,} ids (`Resolution.ids()` vs `np.frombuffer(bm.to_array())`) |"
    )
    mem = res["memory"]
    lines.append(
        f"| memory beyond tag bitmaps | {mem['bytes_per_device_beyond_tags']:.1f} B/device | — | "
        f"total {mem['usage']['total'] / MIB:.0f} MiB, tags {mem['usage']['tags'] / MIB:.0f} MiB |"
    )
    sn = res["snapshot"]
    lines.append(
        f"| snapshot save | {cell(sn['save'])} | — | {sn['bytes'] / MIB:.0f} MiB "
        f"({sn['bytes_per_device']:.1f} B/device) |"
    )
    lines.append(f"| snapshot load | {cell(sn['load'])} | — | |")
    b = res["baselines"]
    sets_note = (
        f"sets built in {b['sets_build_s']:.1f} s"
        if b.get("sets_built")
        else f"sets skipped: {b.get('sets_skipped_reason')}"
    )
    lines.append(
        f"| build / peak RSS | data {res['data']['generate_s']:.1f} s | "
        f"{b['pyroaring_build_s']:.1f} s | {sets_note}; peak RSS "
        f"{res['peak_rss_bytes'] / GIB:.1f} GiB |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run, print the tables, write the JSON."""
    args = parse_args(argv)
    res = run(args)
    md = render_markdown(res)
    print(md)
    if args.markdown:
        args.markdown.write_text(md, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
