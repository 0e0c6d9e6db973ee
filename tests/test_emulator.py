"""The emulator's API, in process: auth, errors, push, cid, grouppush, device API, report,
inspection, rate limits, and the durable store (reopen = what was acknowledged)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emu import (
    APP,
    GROUP,
    OTHER,
    Clock,
    basic,
    call,
    error_code,
    open_emulator,
    push_body,
    register,
)
from reach.emulator import AppConfig, Emulator, GroupConfig, Store

DEVICES = [
    {"registration_id": "a1", "platform": "android", "vendor": "xiaomi", "tags": ["深圳", "vip"],
     "alias": "u1", "mobile": "13800000001"},
    {"registration_id": "a2", "platform": "android", "tags": ["深圳"], "alias": "u1",
     "online": True},
    {"registration_id": "i1", "platform": "ios", "tags": ["深圳", "北京"], "alias": "u2",
     "online": True, "mobile": "13800000003"},
    {"registration_id": "w1", "platform": "winphone", "tags": ["北京"]},
]  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emu(tmp_path: Path, clock: Clock) -> Emulator:
    e = open_emulator(tmp_path / "store", clock)
    register(e, *DEVICES)
    register(e, {"registration_id": "o1", "platform": "android", "tags": ["深圳"]}, app=OTHER)
    return e


def batches(emu: Emulator, msg_id: str) -> list[dict[str, object]]:
    r = call(emu, "GET", f"/_emulator/messages/{msg_id}", app=None)
    assert r.status == 200, r.payload
    return list(r.payload["batches"])


def devices_of(emu: Emulator, msg_id: str) -> set[str]:
    return {rid for b in batches(emu, msg_id) if b["channel"] != "sms" for rid in b["ids"]}


# --- auth and the error shape -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 1004),
        ({"Authorization": "Bearer abc"}, 1004),
        ({"Authorization": "Basic !!!"}, 1004),
        (basic(APP.appkey, "wrong"), 1004),
        (basic("unknownkey", "x"), 1008),
    ],
)
def test_bad_auth_is_refused_and_sends_nothing(emu: Emulator, headers: dict[str, str], code: int):
    before = emu.store.message_count()
    r = emu.handle("POST", "/v3/push", headers, b'{"platform":"all","audience":"all"}')
    assert error_code(r) == code
    assert emu.store.message_count() == before


def test_wrong_method_unknown_path_oversized_and_malformed(emu: Emulator):
    assert error_code(call(emu, "GET", "/v3/push")) == 1001
    assert error_code(call(emu, "DELETE", "/v3/devices/a1")) == 1001
    assert error_code(call(emu, "GET", "/v3/nothing")) == 1003
    assert error_code(call(emu, "POST", "/v3/push", raw=b"{" * 10)) == 1003
    assert error_code(call(emu, "POST", "/v3/push", raw=b"\xff\xfe")) == 1003
    assert error_code(call(emu, "POST", "/v3/push", raw=b"[" * 100_000)) == 1003
    assert error_code(call(emu, "POST", "/v3/push", raw=b" " * (2 << 20))) == 1005
    assert emu.store.message_count() == 0


# --- push, validate, cid ------------------------------------------------------------------------


def test_push_answers_sendno_and_msg_id_and_records_batches(emu: Emulator):
    r = call(emu, "POST", "/v3/push", push_body({"tag": ["深圳"]}, options={"sendno": 42}))
    assert r.status == 200
    assert r.payload["sendno"] == "42" and r.payload["msg_id"].isdigit()
    got = batches(emu, r.payload["msg_id"])
    assert {(b["channel"], b.get("vendor"), b.get("apns_production")) for b in got} == {
        ("android", "xiaomi", None),
        ("android", None, None),
        ("ios", None, True),
    }
    assert devices_of(emu, r.payload["msg_id"]) == {"a1", "a2", "i1"}


def test_push_platform_filter_and_apns_environment(emu: Emulator):
    body = push_body({"tag": ["深圳", "北京"]}, platform=["ios", "winphone"])
    body["options"] = {"apns_production": False}
    r = call(emu, "POST", "/v3/push", body)
    got = batches(emu, r.payload["msg_id"])
    assert {b["channel"]: b["ids"] for b in got} == {"ios": ["i1"], "winphone": ["w1"]}
    assert next(b for b in got if b["channel"] == "ios")["apns_production"] is False


def test_no_target_is_1011_for_push_and_validate(emu: Emulator):
    for path in ("/v3/push", "/v3/push/validate"):
        r = call(emu, "POST", path, push_body({"alias": ["nobody"]}))
        assert error_code(r) == 1011
    assert emu.store.message_count() == 0


def test_validate_resolves_but_sends_nothing(emu: Emulator):
    r = call(emu, "POST", "/v3/push/validate", push_body({"tag": ["北京"]}, options={"sendno": 7}))
    assert r.status == 200 and r.payload["sendno"] == "7"
    assert emu.store.message_count() == 0
    assert error_code(call(emu, "POST", "/v3/push/validate", push_body({"tag": ["a b"]}))) == 1003


def test_a_key_reaches_its_own_app_only(emu: Emulator):
    r = call(emu, "POST", "/v3/push", push_body({"registration_id": ["o1"]}))
    assert error_code(r) == 1011
    r = call(emu, "POST", "/v3/push", push_body({"registration_id": ["o1"]}), app=OTHER)
    assert devices_of(emu, r.payload["msg_id"]) == {"o1"}


def test_cid_list_and_limits(emu: Emulator):
    r = call(emu, "GET", "/v3/push/cid?count=3&type=schedule")
    cids = r.payload["cidlist"]
    assert len(cids) == 3 and len(set(cids)) == 3
    assert all(re.fullmatch(re.escape(APP.appkey) + r"-[0-9a-f-]{36}", c) for c in cids)
    assert len(call(emu, "GET", "/v3/push/cid").payload["cidlist"]) == 1
    for bad in ("count=0", "count=1001", "count=x", "type=other"):
        assert error_code(call(emu, "GET", f"/v3/push/cid?{bad}")) == 1003


def test_cid_makes_a_retry_answer_the_first_push(emu: Emulator, clock: Clock):
    cid = call(emu, "GET", "/v3/push/cid").payload["cidlist"][0]
    first = call(emu, "POST", "/v3/push", push_body({"tag": ["北京"]}, cid=cid))
    again = call(emu, "POST", "/v3/push", push_body({"tag": ["深圳"]}, cid=cid))
    assert again.payload == first.payload and emu.store.message_count() == 1
    clock.now += 86400 + 1  # a cid is valid for one day
    later = call(emu, "POST", "/v3/push", push_body({"tag": ["北京"]}, cid=cid))
    assert later.payload["msg_id"] != first.payload["msg_id"]
    other_app_cid = f"{OTHER.appkey}-{cid.split('-', 1)[1]}"
    assert error_code(call(emu, "POST", "/v3/push", push_body(cid=other_app_cid))) == 1003
    assert error_code(call(emu, "POST", "/v3/push", push_body(cid="made-up"))) == 1003


def test_override_msg_id_must_be_a_message_of_the_last_day(emu: Emulator, clock: Clock):
    first = call(emu, "POST", "/v3/push", push_body()).payload["msg_id"]
    ok = call(emu, "POST", "/v3/push", push_body(options={"override_msg_id": int(first)}))
    assert ok.status == 200
    assert call(emu, "GET", f"/_emulator/messages/{ok.payload['msg_id']}").payload[
        "override_msg_id"
    ] == int(first)
    assert (
        error_code(call(emu, "POST", "/v3/push", push_body(options={"override_msg_id": 5}))) == 1003
    )
    other = call(emu, "POST", "/v3/push", push_body(), app=OTHER).payload["msg_id"]
    r = call(emu, "POST", "/v3/push", push_body(options={"override_msg_id": int(other)}))
    assert error_code(r) == 1003
    clock.now += 86401
    r = call(emu, "POST", "/v3/push", push_body(options={"override_msg_id": int(first)}))
    assert error_code(r) == 1003


def test_big_push_duration_spreads_release_offsets(tmp_path: Path):
    emu = open_emulator(tmp_path / "s", batch_size=2)
    register(emu, *({"registration_id": f"d{i}", "platform": "android"} for i in range(8)))
    r = call(emu, "POST", "/v3/push", push_body(options={"big_push_duration": 2}))
    got = batches(emu, r.payload["msg_id"])
    assert [b["size"] for b in got] == [2, 2, 2, 2]
    assert [b["release_offset"] for b in got] == [0, 30, 60, 90]
    plain = call(emu, "POST", "/v3/push", push_body()).payload["msg_id"]
    assert {b["release_offset"] for b in batches(emu, plain)} == {0}


def test_sms_batches_go_to_offline_devices_with_a_mobile(emu: Emulator):
    body = push_body({"tag": ["深圳"]}, sms_message={"content": "hello", "delay_time": 600})
    r = call(emu, "POST", "/v3/push", body)
    sms = [b for b in batches(emu, r.payload["msg_id"]) if b["channel"] == "sms"]
    # a1 is offline with a mobile (android: after delay_time); i1 is online (no SMS needed)
    assert sms == [{"channel": "sms", "platform": "android", "release_offset": 600, "size": 1,
                    "ids": ["a1"]}]  # fmt: skip


# --- group push ---------------------------------------------------------------------------------


def test_grouppush_reaches_every_app_of_the_group(emu: Emulator):
    g = AppConfig(f"group-{GROUP.key}", GROUP.secret)
    r = call(emu, "POST", "/v3/grouppush", push_body({"tag": ["深圳"]}), app=g)
    assert r.status == 200
    assert set(r.payload) == {"group_msgid", APP.appkey, OTHER.appkey}
    assert devices_of(emu, r.payload[APP.appkey]["msg_id"]) == {"a1", "a2", "i1"}
    assert devices_of(emu, r.payload[OTHER.appkey]["msg_id"]) == {"o1"}
    # an app without targets reports its own 1011; none at all is a 1011 for the call
    r = call(emu, "POST", "/v3/grouppush", push_body({"tag": ["北京"]}), app=g)
    assert r.payload[OTHER.appkey]["error"]["code"] == 1011
    assert error_code(call(emu, "POST", "/v3/grouppush", push_body({"tag": ["x"]}), app=g)) == 1011
    body = push_body(options={"override_msg_id": 1})
    assert error_code(call(emu, "POST", "/v3/grouppush", body, app=g)) == 1003
    assert error_code(call(emu, "POST", "/v3/grouppush", push_body())) == 1004
    assert error_code(call(emu, "POST", "/v3/push", push_body(), app=g)) == 1008
    bad = AppConfig(g.appkey, "wrong")
    assert error_code(call(emu, "POST", "/v3/grouppush", push_body(), app=bad)) == 1004


def test_grouppush_cid_idempotency(emu: Emulator):
    g = AppConfig(f"group-{GROUP.key}", GROUP.secret)
    cid = call(emu, "GET", "/v3/push/cid", app=g).payload["cidlist"][0]
    first = call(emu, "POST", "/v3/grouppush", push_body(cid=cid), app=g)
    count = emu.store.message_count()
    assert call(emu, "POST", "/v3/grouppush", push_body(cid=cid), app=g).payload == first.payload
    assert emu.store.message_count() == count


# --- device API ---------------------------------------------------------------------------------


def test_device_get_and_update(emu: Emulator):
    got = call(emu, "GET", "/v3/devices/a1").payload
    assert sorted(got.pop("tags")) == ["vip", "深圳"]
    assert got == {"alias": "u1", "mobile": "13800000001"}
    body = {"tags": {"add": ["北京"], "remove": ["vip"]}, "alias": "u9", "mobile": "139"}
    assert call(emu, "POST", "/v3/devices/a1", body).status == 200
    got = call(emu, "GET", "/v3/devices/a1").payload
    assert (
        sorted(got["tags"]) == ["北京", "深圳"] and got["alias"] == "u9" and got["mobile"] == "139"
    )
    assert call(emu, "POST", "/v3/devices/a1", {"tags": "", "alias": ""}).status == 200
    assert call(emu, "GET", "/v3/devices/a1").payload == {
        "tags": [],
        "alias": None,
        "mobile": "139",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"tags": {"add": ["bad tag"]}},
        {"tags": {"add": "vip"}},
        {"tags": {"append": ["x"]}},
        {"alias": 5},
        {"mobile": "abc"},
        {"color": "red"},
        [],
    ],
)
def test_bad_device_updates_change_nothing(emu: Emulator, body: object):
    before = call(emu, "GET", "/v3/devices/a1").payload
    assert error_code(call(emu, "POST", "/v3/devices/a1", body)) in (1003, 1009)
    assert call(emu, "GET", "/v3/devices/a1").payload == before


def test_unknown_device(emu: Emulator):
    assert error_code(call(emu, "GET", "/v3/devices/zz9")) == 1003
    assert error_code(call(emu, "POST", "/v3/devices/zz9", {"alias": "x"})) == 1003
    assert error_code(call(emu, "GET", "/v3/devices/o1")) == 1003  # another app's device


def test_device_status(emu: Emulator):
    r = call(emu, "POST", "/v3/devices/status", {"registration_ids": ["a1", "a2"]})
    assert r.payload == {"a1": {"online": False}, "a2": {"online": True}}
    assert error_code(call(emu, "POST", "/v3/devices/status", {"registration_ids": []})) == 1003


def test_tags_api(emu: Emulator):
    assert sorted(call(emu, "GET", "/v3/tags/").payload["tags"]) == ["vip", "北京", "深圳"]
    assert call(emu, "GET", "/v3/tags/北京/registration_ids/i1").payload == {"result": True}
    assert call(emu, "GET", "/v3/tags/北京/registration_ids/a1").payload == {"result": False}
    body = {"registration_ids": {"add": ["a1", "w1"], "remove": ["i1"]}}
    assert call(emu, "POST", "/v3/tags/%E5%8C%97%E4%BA%AC", body).status == 200  # 北京, URL-encoded
    r = call(emu, "POST", "/v3/push/validate", push_body({"tag": ["北京"]}))
    assert r.status == 200
    r = call(emu, "POST", "/v3/push", push_body({"tag": ["北京"]}))
    assert devices_of(emu, r.payload["msg_id"]) == {"a1", "w1"}
    assert call(emu, "DELETE", "/v3/tags/北京?platform=android").status == 200
    r = call(emu, "POST", "/v3/push", push_body({"tag": ["北京"]}))
    assert devices_of(emu, r.payload["msg_id"]) == {"w1"}
    assert call(emu, "DELETE", "/v3/tags/北京").status == 200
    assert "北京" not in call(emu, "GET", "/v3/tags").payload["tags"]
    bad = {"registration_ids": {"add": ["a1", "nobody"]}}
    assert error_code(call(emu, "POST", "/v3/tags/vip", bad)) == 1003
    assert call(emu, "GET", "/v3/tags/vip/registration_ids/a1").payload == {"result": True}


def test_aliases_api(emu: Emulator):
    r = call(emu, "GET", "/v3/aliases/u1")
    assert sorted(r.payload["registration_ids"]) == ["a1", "a2"]
    assert call(emu, "GET", "/v3/aliases/u1?platform=ios").payload == {"registration_ids": []}
    assert call(emu, "DELETE", "/v3/aliases/u1").status == 200
    assert call(emu, "GET", "/v3/aliases/u1").payload == {"registration_ids": []}
    assert call(emu, "GET", "/v3/devices/a2").payload["alias"] is None
    assert error_code(call(emu, "GET", "/v3/aliases/u1?platform=mars")) == 1003


# --- report -------------------------------------------------------------------------------------


def test_received_counts_online_now_and_offline_within_ttl(emu: Emulator, clock: Clock):
    body = push_body({"tag": ["深圳"]}, message={"msg_content": "m"}, options={"time_to_live": 60})
    msg = call(emu, "POST", "/v3/push", body).payload["msg_id"]
    short = call(emu, "POST", "/v3/push", push_body({"tag": ["深圳"]}, options={"time_to_live": 0}))
    report = call(emu, "GET", f"/v3/received?msg_ids={msg}").payload
    counts = {"android_received": 1, "ios_apns_sent": 1, "ios_apns_received": 1}
    counts |= {"ios_msg_received": 1, "wp_received": None}
    assert report == [{"msg_id": int(msg), **counts}]
    clock.now += 30  # a1 comes online within time_to_live: it receives the message
    assert call(emu, "POST", "/_emulator/devices/a1/online", {"online": True}).status == 200
    r = call(emu, "GET", f"/v3/received?msg_ids={msg},{short.payload['msg_id']},77")
    first, second, unknown = r.payload
    assert first["android_received"] == 2
    assert second["android_received"] == 1  # time_to_live 0: online devices only
    assert unknown["android_received"] is None and unknown["msg_id"] == 77
    assert error_code(call(emu, "GET", "/v3/received")) == 1002
    assert error_code(call(emu, "GET", "/v3/received?msg_ids=a,b")) == 1003


def test_received_too_late_is_not_received(emu: Emulator, clock: Clock):
    msg = call(emu, "POST", "/v3/push", push_body({"alias": ["u1"]}, options={"time_to_live": 60}))
    clock.now += 61
    call(emu, "POST", "/_emulator/devices/a1/online", {"online": True})
    r = call(emu, "GET", f"/v3/received?msg_ids={msg.payload['msg_id']}")
    assert r.payload[0]["android_received"] == 1


# --- rate limit ---------------------------------------------------------------------------------


def test_rate_limit_answers_2002_with_headers(tmp_path: Path, clock: Clock):
    emu = open_emulator(tmp_path / "s", clock, rate_limit=3)
    register(emu, {"registration_id": "d1", "platform": "android"})  # 1 call
    replies = [call(emu, "GET", "/v3/push/cid") for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    assert error_code(replies[-1]) == 2002
    assert replies[0].headers["X-Rate-Limit-Limit"] == "3"
    assert replies[0].headers["X-Rate-Limit-Remaining"] == "1"
    assert 1 <= int(replies[-1].headers["X-Rate-Limit-Reset"]) <= 60
    assert call(emu, "GET", "/v3/push/cid", app=OTHER).status == 200  # per app
    clock.now += 60
    assert call(emu, "GET", "/v3/push/cid").status == 200


# --- durability ---------------------------------------------------------------------------------


def snapshot_of(emu: Emulator, app: AppConfig = APP) -> dict[str, object]:
    reg = emu.apps[app.appkey].registry
    return {rid: reg.device(rid) for rid in ("a1", "a2", "i1", "w1", "n1")} | {
        "tags": sorted(reg.tags())
    }


@pytest.mark.parametrize("checkpoint_every", [1, 3, 1000])
def test_reopen_gives_back_exactly_what_was_acknowledged(tmp_path: Path, checkpoint_every: int):
    emu = open_emulator(tmp_path / "s", checkpoint_every=checkpoint_every)
    register(emu, *DEVICES)
    call(emu, "POST", "/v3/devices/a1", {"tags": {"add": ["新"], "remove": ["vip"]}, "alias": "z"})
    call(emu, "POST", "/v3/tags/北京", {"registration_ids": {"add": ["a2"], "remove": ["w1"]}})
    call(emu, "DELETE", "/v3/aliases/u2")
    call(emu, "POST", "/_emulator/devices/w1/online", {"online": True})
    call(emu, "DELETE", "/_emulator/devices/a2")
    register(emu, {"registration_id": "n1", "platform": "ios", "tags": ["vip"]})
    call(emu, "POST", "/v3/devices/n1", {"tags": {"add": "bad"}})  # refused: not journaled
    msg = call(emu, "POST", "/v3/push", push_body({"tag": ["vip"]})).payload["msg_id"]
    want = snapshot_of(emu)
    emu.store.close()
    again = open_emulator(tmp_path / "s")
    assert snapshot_of(again) == want
    assert devices_of(again, msg) == {"n1"}
    assert call(again, "POST", "/v3/push", push_body()).payload["msg_id"] != msg


def test_store_rejects_a_group_of_unknown_apps(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown apps"):
        Emulator(Store(tmp_path), [APP], [GroupConfig("g", "s", ("nope",))])


def test_config_parsing():
    assert AppConfig.parse("k:s:x") == AppConfig("k", "s:x")
    assert GroupConfig.parse("group-g:s=a,b") == GroupConfig("g", "s", ("a", "b"))
    for bad in ("nokey", ":s", "group-x:s"):
        with pytest.raises(ValueError):
            AppConfig.parse(bad)
    with pytest.raises(ValueError):
        GroupConfig.parse("g:s=")


def test_concurrent_pushes_with_one_cid_send_once(emu: Emulator):
    import threading

    cid = call(emu, "GET", "/v3/push/cid").payload["cidlist"][0]
    answers: list[object] = []

    def push() -> None:
        answers.append(call(emu, "POST", "/v3/push", push_body(cid=cid)).payload)

    threads = [threading.Thread(target=push) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert emu.store.message_count() == 1
    assert all(a == answers[0] for a in answers) and len(answers) == 8


def test_import_progress_counts_every_parsed_byte(tmp_path: Path):
    import io
    import json as _json

    from reach import Registry, _core
    from reach.emulator.server import _progress, bar
    from reach.imports import import_directory

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    d = tmp_path / "import"
    d.mkdir()
    rows = [
        {"registration_id": f"r{i}", "platform": "android", "tags": ["t"]} for i in range(40000)
    ]
    (d / "devices.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in rows))
    out = Terminal()
    on_file = _progress(out)
    before = _core._jsonl_progress()
    assert import_directory(Registry(), d, on_file) == {"devices.jsonl": 40000}
    on_file.done()  # type: ignore[attr-defined]
    assert _core._jsonl_progress() - before == (d / "devices.jsonl").stat().st_size
    assert "devices.jsonl: done in" in out.getvalue()
    assert bar(0.5, 10) == "[#####-----]  50%" and bar(2.0, 4) == "[####] 100%"
