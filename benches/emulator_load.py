"""The emulator under load, on loopback: pushes per second and latency, device updates per second.

    python benches/emulator_load.py --devices 1000000 --seconds 10 --clients 4 --json out.json

Writes the synthetic registry of ``data.py`` as ``devices.jsonl``, starts ``reach serve --import``
on it in a subprocess (a fresh store), then drives it from this process with ``--clients``
keep-alive HTTP connections, one thread each:

- ``push``: ``POST /v3/push`` of the benchmarks' 20-tag OR audience (``or20``, ranks 10..200),
  every push resolved, split into batches and committed to the store before its answer;
- ``validate``: the same body to ``/v3/push/validate`` (resolve, no store);
- ``cid``: ``GET /v3/push/cid`` (no registry work: the HTTP layer's own ceiling on this machine);
- ``device update``: ``POST /v3/devices/{rid}`` adding a tag, durable (SQLite, synchronous=FULL)
  before the answer.

The load generator shares the machine's two cores with the server; the ``cid`` row shows what the
HTTP layer alone costs under the same conditions.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data import make_registry, make_requests
from reach.emulator.server import spawn

KEY, SECRET = "b0b0b0b0b0b0b0b0b0b0b0b0", "bench-secret"
AUTH = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()


def start_server(store: Path, import_dir: Path) -> tuple[subprocess.Popen[str], int, float]:
    t0 = time.perf_counter()
    args = ["--app", f"{KEY}:{SECRET}", "--store", str(store), "--import", str(import_dir)]
    proc, port = spawn(args, echo=lambda line: print("  server: " + line, file=sys.stderr))
    return proc, port, time.perf_counter() - t0


Call = Callable[[http.client.HTTPConnection, int], int]


def drive(port: int, clients: int, seconds: float, call: Call) -> dict[str, Any]:
    """Run ``call`` from ``clients`` threads for ``seconds``; throughput and latency."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = threading.Event()

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = 0
        while not stop.is_set():
            t = time.perf_counter()
            status = call(conn, w * 1_000_000 + n)
            latencies[w].append(time.perf_counter() - t)
            errors[w] += status != 200
            n += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = np.array([x for per in latencies for x in per]) * 1e3
    return {
        "requests": int(lat.size),
        "errors": int(sum(errors)),
        "per_second": lat.size / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "clients": clients,
    }


def post(path: str, body: bytes) -> Call:
    def call(conn: http.client.HTTPConnection, _: int) -> int:
        conn.request(
            "POST",
            path,
            body=body,
            headers={"Authorization": AUTH, "Content-Type": "application/json"},
        )
        r = conn.getresponse()
        r.read()
        return r.status

    return call


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1_000_000)
    p.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    p.add_argument("--clients", type=int, default=4, help="concurrent connections")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    data = make_registry(args.devices)
    or20 = next(r for r in make_requests(data) if r.name == "or20")
    push = {"platform": "all", "audience": or20.audience, "notification": {"alert": "Hi"}}
    body = json.dumps(push).encode()
    rids = data.rids(np.arange(min(args.devices, 100_000)))
    results: dict[str, Any] = {"devices": args.devices}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "import").mkdir()
        data.write_jsonl(root / "import" / "devices.jsonl")
        proc, port, startup = start_server(root / "store", root / "import")
        results["startup_s"] = startup
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            post("/v3/push", body)(conn, 0)
            conn.request("GET", "/_emulator/messages/1800000001")
            batches = json.loads(conn.getresponse().read())["batches"]
            results["push_reaches"] = sum(b["size"] for b in batches)

            def cid(conn: http.client.HTTPConnection, _: int) -> int:
                conn.request("GET", "/v3/push/cid", headers={"Authorization": AUTH})
                r = conn.getresponse()
                r.read()
                return r.status

            def update(conn: http.client.HTTPConnection, n: int) -> int:
                rid = rids[n % len(rids)]
                body = json.dumps({"tags": {"add": [f"bench{n % 1000}"]}}).encode()
                return post(f"/v3/devices/{rid}", body)(conn, n)

            for name, call in [
                ("push", post("/v3/push", body)),
                ("validate", post("/v3/push/validate", body)),
                ("cid", cid),
                ("device update", update),
            ]:
                for clients in sorted({1, args.clients}):
                    r = drive(port, clients, args.seconds, call)
                    results[f"{name} x{clients}"] = r
                    print(f"{name:>14} x{clients}: {r['per_second']:8.1f}/s  p50 "
                          f"{r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                          f"errors {r['errors']}", file=sys.stderr)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    print(f"\n{args.devices:,} devices; the push reaches ~{results['push_reaches']:,}; "
          f"startup with import {results['startup_s']:.1f} s\n")  # fmt: skip
    print("| request | clients | per second | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for k, v in results.items():
        if isinstance(v, dict):
            name = k.rsplit(" x", 1)[0]
            print(f"| {name} | {v['clients']} | {v['per_second']:,.0f} | {v['p50_ms']:.2f} | "
                  f"{v['p99_ms']:.2f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
