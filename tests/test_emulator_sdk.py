"""End to end: the official ``jpush`` SDK (PyPI, pinned) against the emulator over HTTP.

The SDK has no base-URL option; a zone added to ``jpush.common.ZONES`` points it at the emulator.
Its exceptions are the check of the error shape: ``JPushFailure`` carries the code it parsed from
``{"error": {"code", "message"}}``, ``Unauthorized`` stands for a 401.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import jpush
import pytest
from jpush import common

from emu import APP, GROUP, OTHER, open_emulator, register
from reach.emulator import Emulator
from reach.emulator.server import EmulatorServer

ZONE = "REACH_TEST"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[EmulatorServer, Emulator]]:
    emu = open_emulator(tmp_path / "store")
    register(
        emu,
        {"registration_id": "a1", "platform": "android", "vendor": "hms", "tags": ["深圳", "vip"],
         "alias": "u1", "online": True},
        {"registration_id": "a2", "platform": "android", "tags": ["深圳"], "alias": "u1"},
        {"registration_id": "i1", "platform": "ios", "tags": ["北京"], "alias": "u2",
         "online": True},
    )  # fmt: skip
    register(emu, {"registration_id": "o1", "platform": "android", "tags": ["深圳"]}, app=OTHER)
    srv = EmulatorServer(("127.0.0.1", 0), emu)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    base = srv.url
    common.ZONES[ZONE] = {
        "PUSH": f"{base}/v3/",
        "REPORT": f"{base}/v3/",
        "DEVICE": f"{base}/v3/devices/",
        "ALIAS": f"{base}/v3/aliases/",
        "TAG": f"{base}/v3/tags/",
        "SCHEDULE": f"{base}/v3/schedules/",
        "ADMIN": f"{base}/v1/",
    }
    yield srv, emu
    srv.shutdown()
    srv.server_close()
    del common.ZONES[ZONE]


def client(app: object = APP) -> jpush.JPush:
    return jpush.JPush(app.appkey, app.secret, zone=ZONE)  # type: ignore[attr-defined]


def make_push(c: jpush.JPush, audience: object, **kw: object) -> jpush.Push:
    p = c.create_push()
    p.audience = audience
    p.platform = kw.pop("platform", jpush.all_)
    p.notification = jpush.notification(alert="Hi, JPush!")
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def inspected(emu: Emulator, msg_id: str) -> set[str]:
    r = emu.handle("GET", f"/_emulator/messages/{msg_id}", {})
    return {rid for b in r.payload["batches"] for rid in b["ids"]}


def test_push_validate_and_report(server: tuple[EmulatorServer, Emulator]):
    _, emu = server
    c = client()
    r = make_push(c, jpush.audience(jpush.tag("深圳"))).send()
    assert r.status_code == 200 and r.payload["sendno"] == "0"
    msg_id = r.payload["msg_id"]
    assert inspected(emu, msg_id) == {"a1", "a2"}
    v = make_push(c, jpush.audience(jpush.tag_and("深圳", "vip"))).send_validate()
    assert v.status_code == 200
    report = c.create_report().get_received(msg_id)
    assert report.payload[0]["android_received"] == 1  # a1 was online, a2 not (yet)
    p = make_push(c, jpush.audience(jpush.alias("u2")), platform=jpush.platform("ios"))
    p.options = {"sendno": 9, "apns_production": False}
    r = p.send()
    assert r.payload["sendno"] == "9" and inspected(emu, r.payload["msg_id"]) == {"i1"}


def test_errors_reach_the_sdk_as_its_exceptions(server: tuple[EmulatorServer, Emulator]):
    _, emu = server
    with pytest.raises(common.JPushFailure) as e:
        make_push(client(), jpush.audience(jpush.alias("nobody"))).send()
    assert e.value.error_code == 1011
    with pytest.raises(common.JPushFailure) as e:
        make_push(client(), jpush.audience(jpush.tag("bad tag"))).send_validate()
    assert e.value.error_code == 1003
    with pytest.raises(common.Unauthorized):
        make_push(jpush.JPush(APP.appkey, "wrong", zone=ZONE), jpush.all_).send()
    with pytest.raises(common.JPushFailure) as e:
        make_push(jpush.JPush("nokey", "x", zone=ZONE), jpush.all_).send()
    assert e.value.error_code == 1008
    assert emu.store.message_count() == 0


def test_cid_and_idempotent_retry(server: tuple[EmulatorServer, Emulator]):
    _, emu = server
    c = client()
    cids = c.create_push().get_cid(3, "push").payload["cidlist"]
    assert len(cids) == 3 and all(x.startswith(APP.appkey + "-") for x in cids)
    first = make_push(c, jpush.all_, cid=cids[0]).send()
    again = make_push(c, jpush.all_, cid=cids[0]).send()
    assert first.payload == again.payload and emu.store.message_count() == 1


def test_grouppush(server: tuple[EmulatorServer, Emulator]):
    _, emu = server
    g = jpush.GroupPush(GROUP.key, GROUP.secret)
    g.zone = ZONE  # GroupPush takes no zone argument
    r = make_push(g, jpush.audience(jpush.tag("深圳"))).send()
    assert inspected(emu, r.payload[APP.appkey]["msg_id"]) == {"a1", "a2"}
    assert inspected(emu, r.payload[OTHER.appkey]["msg_id"]) == {"o1"}


def test_device_tag_and_alias_api(server: tuple[EmulatorServer, Emulator]):
    _, emu = server
    d = client().create_device()
    info = d.get_deviceinfo("a1").payload
    assert sorted(info["tags"]) == ["vip", "深圳"] and info["alias"] == "u1"
    tags = jpush.device_tag(jpush.add("北京"), jpush.remove("vip"))
    assert d.set_deviceinfo("a1", tags).payload == "success"
    d.set_deviceinfo("a1", jpush.device_alias("u3"))
    d.set_devicemobile("a1", jpush.device_mobile("13800000000"))
    info = d.get_deviceinfo("a1").payload
    assert sorted(info["tags"]) == ["北京", "深圳"]
    assert (info["alias"], info["mobile"]) == ("u3", "13800000000")
    assert sorted(d.get_taglist().payload["tags"]) == ["北京", "深圳"]  # nobody has vip now
    assert d.check_taguserexist("北京", "a1").payload == {"result": True}
    d.update_tagusers("vip", jpush.device_regid(jpush.add("a2", "i1")))
    assert d.check_taguserexist("vip", "i1").payload == {"result": True}
    d.delete_tag("vip", "ios")
    assert d.check_taguserexist("vip", "i1").payload == {"result": False}
    assert d.check_taguserexist("vip", "a2").payload == {"result": True}
    assert d.get_aliasuser("u1").payload == {"registration_ids": ["a2"]}
    d.delete_alias("u1")
    assert d.get_aliasuser("u1").payload == {"registration_ids": []}
    status = d.get_device_status(["a1", "a2"]).payload
    assert status == {"a1": {"online": True}, "a2": {"online": False}}
    with pytest.raises(common.JPushFailure) as e:
        d.get_deviceinfo("nobody")
    assert e.value.error_code == 1003
    # what the SDK changed is what a push reaches
    r = make_push(client(), jpush.audience(jpush.tag("北京"))).send()
    assert inspected(emu, r.payload["msg_id"]) == {"a1", "i1"}


def raw_request(srv: EmulatorServer, head: bytes) -> tuple[int, bytes]:
    """Send raw request bytes; the status and body of the answer."""
    import http.client
    import socket

    with socket.create_connection(srv.server_address[:2], timeout=10) as sock:
        sock.sendall(head)
        r = http.client.HTTPResponse(sock)
        r.begin()
        return r.status, r.read()


def test_oversized_and_chunked_bodies_are_refused_unread(server: tuple[EmulatorServer, Emulator]):
    srv, emu = server
    head = b"POST /v3/push HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n{"
    status, body = raw_request(srv, head)
    assert (status, json.loads(body)["error"]["code"]) == (400, 1005)
    head = b"POST /v3/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    head += b"1\r\n{\r\n0\r\n\r\n"
    status, body = raw_request(srv, head)
    assert (status, json.loads(body)["error"]["code"]) == (400, 1002)
    assert emu.store.message_count() == 0


def test_sms_supplement_from_the_sdk(server: tuple[EmulatorServer, Emulator]):
    _, emu = server
    d = client().create_device()
    d.set_devicemobile("a2", jpush.device_mobile("13800000002"))
    p = make_push(client(), jpush.audience(jpush.tag("深圳")))
    p.smsmessage = jpush.smsmessage(120, 1, {"code": "42"})
    msg_id = p.send().payload["msg_id"]
    r = emu.handle("GET", f"/_emulator/messages/{msg_id}", {})
    sms = [b for b in r.payload["batches"] if b["channel"] == "sms"]
    assert sms == [
        {"channel": "sms", "platform": "android", "release_offset": 120, "size": 1, "ids": ["a2"]}
    ]
