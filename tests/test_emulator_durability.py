"""Durability: ``reach serve`` killed with SIGKILL in the middle of a stream of device updates
comes back with every update it acknowledged (journal on disk before the answer)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from reach.emulator.server import spawn

KEY, SECRET = "d0d0d0d0d0d0d0d0d0d0d0d0", "durable-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()}
DEVICES = 40


def start(store: Path, checkpoint_every: int) -> tuple[subprocess.Popen[str], int]:
    args = ["--app", f"{KEY}:{SECRET}", "--store", str(store)]
    return spawn([*args, "--checkpoint-every", str(checkpoint_every)])


def request(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = None if body is None else json.dumps(body)
    conn.request(method, path, body=data, headers=AUTH)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, json.loads(raw) if raw else None


@pytest.mark.parametrize("checkpoint_every", [7, 100_000])
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, checkpoint_every: int):
    store = tmp_path / "store"
    proc, port = start(store, checkpoint_every)
    devices = [{"registration_id": f"d{i}", "platform": "android"} for i in range(DEVICES)]
    assert request(port, "POST", "/_emulator/devices", devices)[0] == 200
    acked: list[tuple[str, str]] = []
    stop = threading.Event()

    def stream(worker: int) -> None:
        n = 0
        while not stop.is_set():
            rid, tag = f"d{(n * 7 + worker) % DEVICES}", f"w{worker}_{n}"
            try:
                status, _ = request(port, "POST", f"/v3/devices/{rid}", {"tags": {"add": [tag]}})
            except (OSError, http.client.HTTPException):
                return  # the server is gone: this one was never acknowledged
            if status == 200:
                acked.append((rid, tag))
            n += 1

    workers = [threading.Thread(target=stream, args=(w,)) for w in range(3)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 30
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for w in workers:
        w.join()
    assert len(acked) >= 60, "the stream did not get going"

    proc, port = start(store, checkpoint_every)
    try:
        tags = {}
        for i in range(DEVICES):
            status, info = request(port, "GET", f"/v3/devices/d{i}")
            assert status == 200
            tags[f"d{i}"] = set(info["tags"])  # type: ignore[index]
        missing = [(rid, tag) for rid, tag in acked if tag not in tags[rid]]
        assert missing == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
