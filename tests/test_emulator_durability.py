"""Durability: ``reach serve`` killed with SIGKILL in the middle of a stream of device updates, or
of UMS user uploads, undeliverable marks and template sends, comes back with every update and
message it acknowledged (journal on disk before the answer), and resolves sends the same."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reach.emulator.server import spawn

KEY, SECRET = "d0d0d0d0d0d0d0d0d0d0d0d0", "durable-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()}
DEVICES = 40


def start(store: Path, checkpoint_every: int) -> tuple[subprocess.Popen[str], int]:
    args = ["--app", f"{KEY}:{SECRET}", "--store", str(store)]
    return spawn([*args, "--checkpoint-every", str(checkpoint_every)])


def request(
    port: int, method: str, path: str, body: object = None, auth: dict[str, str] = AUTH
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = None if body is None else json.dumps(body)
    conn.request(method, path, body=data, headers=auth)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, json.loads(raw) if raw else None


def kill_mid_stream(
    proc: subprocess.Popen[str],
    stream: Callable[[int], None],
    workers: int,
    stop: threading.Event,
    going: Callable[[], bool],
) -> None:
    """Run ``workers`` threads of ``stream``; SIGKILL the server once ``going()`` holds (or
    after 30 s), then stop the threads."""
    threads = [threading.Thread(target=stream, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while not going() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()


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

    kill_mid_stream(proc, stream, 3, stop, lambda: len(acked) >= 60)
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


# ---- UMS accounts ------------------------------------------------------------------------------

UMS_KEY, UMS_SECRET = "e0e0e0e0e0e0e0e0e0e0e0e0", "ums-durable"
UMS_AUTH = {
    "Authorization": "Basic " + base64.b64encode(f"{UMS_KEY}:{UMS_SECRET}".encode()).decode()
}
WORKERS = 3


def ums_import(d: Path) -> Path:
    """An SMS channel, an app channel of the JPush app, a template over both, a strategy."""
    d.mkdir()
    rows = {
        "channels": [{"channel_key": "sms1", "type": "sms"},
                     {"channel_key": "push", "type": "app", "appkey": KEY}],
        "users": [{"userid": f"base{i}", "tags": {"all": ["base"]},
                   "bindings": {"all": {"sms": [f"p{i}"]}, "push": {"app": [f"d{i}"]}}}
                  for i in range(DEVICES)],
        "templates": [{"template_id": 1, "channels": ["push", "sms1"],
                       "content": {"push": "Hi", "sms1": "Hi {{n}}"}}],
        "rules": [{"rule_id": 2, "stages": [{"channel_key": "push"},
                                            {"channel_key": "sms1", "delay": 0}]}],
    }  # fmt: skip
    for name, items in rows.items():
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return d


def ums_start(
    store: Path, checkpoint_every: int, imports: Path
) -> tuple[subprocess.Popen[str], int]:
    args = ["--app", f"{KEY}:{SECRET}", "--ums", f"{UMS_KEY}:{UMS_SECRET}", "--store", str(store)]
    return spawn([*args, "--import", str(imports), "--checkpoint-every", str(checkpoint_every)])


def ums(port: int, method: str, path: str, body: object = None) -> tuple[int, Any]:
    return request(port, method, path, body, UMS_AUTH)


SEND = {"template_id": 1, "template_para": {"n": "x"}, "app_para": {"platform": "all"}}


def sent_batches(port: int, msgid: str) -> list[tuple[int, str, list[str]]]:
    status, m = request(port, "GET", f"/_emulator/messages/{msgid}")
    assert status == 200, m
    return [(b["stage"], b["channel"], sorted(b["ids"])) for b in m["batches"]]


@pytest.mark.parametrize("checkpoint_every", [7, 100_000])
def test_sigkill_loses_no_acknowledged_ums_change(tmp_path: Path, checkpoint_every: int):
    store, imports = tmp_path / "store", ums_import(tmp_path / "import")
    proc, port = ums_start(store, checkpoint_every, imports)
    devices = [{"registration_id": f"d{i}", "platform": "android", "online": i % 3 == 0}
               for i in range(DEVICES)]  # fmt: skip
    assert request(port, "POST", "/_emulator/devices", devices)[0] == 200
    # Before the stream: changes of the base users and a staged send over them.
    base = [{"userid": f"base{i}", "tags": {"all": ["base", "b2"]},
             "bindings": {"all": {"sms": [f"p{i}", f"q{i}"]}, "push": {"app": [f"d{i}"]}}}
            for i in range(0, DEVICES, 4)]  # fmt: skip
    assert ums(port, "POST", "/v1/users", base)[1] == {"code": 0, "uploaded": len(base)}
    assert ums(port, "DELETE", "/v1/users/base1")[1] == {"code": 0}
    marks = {"add": [f"p{i}" for i in range(0, DEVICES, 2)], "remove": ["p0"]}
    assert ums(port, "POST", "/_emulator/ums/undeliverable", marks)[1]["code"] == 0
    staged = {**SEND, "aud_tag": ["base"], "rule_id": 2}
    status, first = ums(port, "POST", "/v1/template/sent", staged)
    assert status == 200 and first["code"] == 0, first
    want_first = sent_batches(port, first["msgid"])
    assert want_first[0][:2] == (1, "push") and {b[0] for b in want_first} == {1, 2}

    users: list[tuple[str, dict[str, Any]]] = []  # acknowledged uploads
    marked: list[str] = []  # acknowledged undeliverable marks
    sends: list[tuple[str, str]] = []  # acknowledged sends: (msgid, the one phone it went to)
    stop = threading.Event()

    def stream(worker: int) -> None:
        n = 0
        while not stop.is_set():
            uid, phone = f"w{worker}_{n}", f"1{worker}{n:06d}"
            user = {"userid": uid, "tags": {"all": [f"t{worker}"]},
                    "bindings": {"all": {"sms": [phone]}}}  # fmt: skip
            try:
                status, answer = ums(port, "POST", "/v1/users", [user])
                if status == 200 and answer["code"] == 0:
                    users.append((uid, user))
                if n % 3 == 1:
                    status, answer = ums(port, "POST", "/_emulator/ums/undeliverable",
                                         {"add": [phone]})  # fmt: skip
                    if status == 200 and answer["code"] == 0:
                        marked.append(phone)
                if n % 3 == 2:
                    body = {**SEND, "aud_userid": [uid]}
                    status, answer = ums(port, "POST", "/v1/template/sent", body)
                    if status == 200 and answer["code"] == 0:
                        sends.append((answer["msgid"], phone))
            except (OSError, http.client.HTTPException):
                return  # the server is gone: this one was never acknowledged
            n += 1

    kill_mid_stream(proc, stream, WORKERS, stop, lambda: len(users) >= 45)
    assert len(users) >= 45 and sends and marked, "the stream did not get going"

    for f in imports.iterdir():  # the store must hold everything: the import is not read again
        f.unlink()
    proc, port = ums_start(store, checkpoint_every, imports)
    try:
        for uid, user in users:
            status, answer = ums(port, "GET", f"/v1/users/{uid}")
            assert status == 200, (uid, answer)
            assert answer["data"]["bindings"] == user["bindings"]
            assert answer["data"]["tags"] == user["tags"]
        for user in base:
            got = ums(port, "GET", f"/v1/users/{user['userid']}")[1]["data"]
            assert (got["tags"], got["bindings"]) == (
                {"all": ["b2", "base"]},
                user["bindings"],
            )
        assert ums(port, "GET", "/v1/users/base1")[0] == 400  # its deletion was acknowledged
        undeliverable = set(ums(port, "GET", "/_emulator/ums/undeliverable")[1]["ids"])
        assert set(marks["add"]) - {"p0"} <= undeliverable and "p0" not in undeliverable
        assert set(marked) <= undeliverable
        for msgid, phone in sends:  # every acknowledged send is stored as it went out
            assert sent_batches(port, msgid) == [(1, "sms1", [phone])]
        assert sent_batches(port, first["msgid"]) == want_first
        # the same send resolves the same: the stream touched none of its users
        status, again = ums(port, "POST", "/v1/template/sent", staged)
        assert status == 200 and int(again["msgid"]) > max(int(m) for m, _ in sends)
        assert sent_batches(port, again["msgid"]) == want_first
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
