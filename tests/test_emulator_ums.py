"""The emulator's UMS side: template sends, user management, inspection, errors in UMS's shape,
and users uploaded through the API surviving a restart (import files + journal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu import APP, call, error_code, register
from reach.emulator import AppConfig, Emulator, Store
from test_emulator_fuzz import json_values

UMS = AppConfig("c0ffeec0ffeec0ffeec0ffee", "ums-secret")


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


@pytest.fixture
def import_dir(tmp_path: Path) -> Path:
    d = tmp_path / "import"
    d.mkdir()
    write(d / "channels.jsonl", [{"channel_key": "sms1", "type": "sms"},
                                 {"channel_key": "wx1", "type": "wechatoa"}])  # fmt: skip
    write(
        d / "users.jsonl",
        [
            {"userid": "u1", "tags": {"all": ["vip"]},
             "bindings": {"all": {"sms": ["139"]}, "wx1": {"wechatoa": ["o1"]}}},
            {"userid": "u2", "tags": {"sms1": ["vip"]}, "bindings": {"sms1": {"sms": ["138"]}}},
            {"userid": "u3", "tags": {"all": ["new"]}, "bindings": {"all": {"sms": ["137"]}}},
        ],
    )  # fmt: skip
    write(d / "lists.jsonl", [{"list_id": 9, "userids": ["u2"]}])
    write(
        d / "templates.jsonl",
        [{"template_id": 7, "channels": ["sms1", "wx1"],
          "content": {"sms1": {"text": "Hi {{name}}", "max_length": 70}, "wx1": "Hello {{name}}"}}],
    )  # fmt: skip
    return d


def open_ums(tmp_path: Path, import_dir: Path) -> Emulator:
    return Emulator(Store(tmp_path / "store"), [APP], ums=[UMS], ums_import=import_dir)


def send(emu: Emulator, body: dict[str, Any], api: str = "sent", app: AppConfig = UMS) -> Any:
    return call(emu, "POST", f"/v1/template/{api}", body, app=app)


def batches(emu: Emulator, msgid: str) -> dict[str, Any]:
    r = call(emu, "GET", f"/_emulator/messages/{msgid}", app=None)
    assert r.status == 200, r.payload
    return dict(r.payload)


BODY: dict[str, Any] = {"aud_tag": ["vip"], "template_id": 7, "template_para": {"name": "Ann"}}


def test_tag_send_by_the_seed_rules(tmp_path: Path, import_dir: Path):
    emu = open_ums(tmp_path, import_dir)
    body = {**BODY, "option": {"sendno": "s-1", "owner": "admin", "priority": 2},
            "callback": {"url": "https://cb.example", "params": {"k": 1}}}  # fmt: skip
    r = send(emu, body)
    assert r.status == 200 and r.payload["code"] == 0 and r.payload["sendno"] == "s-1"
    m = batches(emu, r.payload["msgid"])
    got = {(b["channel"], b["type"], b["stage"]): b["ids"] for b in m["batches"]}
    # sms1: u2 has vip bound to sms1, so sms1 does not fall back to the global vip (u1)
    assert got == {("sms1", "sms", 1): ["138"], ("wx1", "wechatoa", 1): ["o1"]}
    assert (m["owner"], m["priority"], m["callback"]) == ("admin", 2, body["callback"])
    r = send(emu, {**BODY, "option": {"black_id": 9}})
    got = {b["channel"]: b["ids"] for b in batches(emu, r.payload["msgid"])["batches"]}
    assert got == {"wx1": ["o1"]}  # u2 black-listed: sms1 reaches nobody


def test_broadcast(tmp_path: Path, import_dir: Path):
    emu = open_ums(tmp_path, import_dir)
    body = {k: v for k, v in BODY.items() if k != "aud_tag"}
    r = send(emu, body, api="broadcast")
    got = {b["channel"]: sorted(b["ids"]) for b in batches(emu, r.payload["msgid"])["batches"]}
    assert got == {"sms1": ["137", "138", "139"], "wx1": ["o1"]}


def ums_code(r: Any) -> int:
    assert set(r.payload) == {"code", "message"}
    return int(r.payload["code"])


def test_refusals_in_the_ums_shape(tmp_path: Path, import_dir: Path):
    emu = open_ums(tmp_path, import_dir)
    assert ums_code(r := send(emu, {**BODY, "template_id": 8})) == 1015031 and r.status == 400
    assert ums_code(r := send(emu, BODY, app=AppConfig(UMS.appkey, "x"))) == 1015020
    assert r.status == 401
    assert ums_code(send(emu, BODY, app=APP)) == 1015020  # a JPush key on a UMS API
    assert error_code(call(emu, "GET", "/v3/push/cid", app=UMS)) == 1008  # and the other way
    assert ums_code(call(emu, "GET", "/v1/template/sent", app=UMS)) == 1015021
    assert ums_code(call(emu, "POST", "/v1/template/sent", raw=b"{", app=UMS)) == 1015002
    assert ums_code(call(emu, "POST", "/v1/template/sent", raw=b" " * (2 << 20), app=UMS)) == (
        1015022
    )
    assert ums_code(send(emu, {**BODY, "template_para": {}})) == 1015016
    assert ums_code(send(emu, {**BODY, "aud_tag": ["a b"]})) == 1015004
    assert emu.store.message_count() == 0


def test_user_management_survives_a_restart(tmp_path: Path, import_dir: Path):
    emu = open_ums(tmp_path, import_dir)
    user = {"userid": "u9", "tags": {"all": ["vip"]}, "bindings": {"wx1": {"wechatoa": ["o9"]}}}
    assert call(emu, "POST", "/v1/users", [user], app=UMS).payload == {"code": 0, "uploaded": 1}
    assert call(emu, "DELETE", "/v1/users/u1", app=UMS).payload == {"code": 0}
    bad = {"userid": "u8", "bindings": {"all": {"fax": ["1"]}}}
    assert ums_code(call(emu, "POST", "/v1/users", bad, app=UMS)) == 1015018
    assert ums_code(call(emu, "GET", "/v1/users/u8", app=UMS)) == 1015018
    # an upload of several users is all or nothing: a refused one changes nothing
    good = {"userid": "u7", "bindings": {"all": {"sms": ["107"]}}}
    assert ums_code(call(emu, "POST", "/v1/users", [good, bad], app=UMS)) == 1015018
    assert ums_code(call(emu, "GET", "/v1/users/u7", app=UMS)) == 1015018
    assert call(emu, "GET", "/v1/users/u9", app=UMS).payload["data"]["userid"] == "u9"

    def reached(e: Emulator) -> dict[str, list[str]]:
        r = send(e, BODY)
        return {b["channel"]: b["ids"] for b in batches(e, r.payload["msgid"])["batches"]}

    want = reached(emu)
    assert want == {"sms1": ["138"], "wx1": ["o9"]}
    emu.store.close()
    assert reached(open_ums(tmp_path, import_dir)) == want


@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "aud_tag": st.lists(st.sampled_from(["vip", "new", "a b", ""]), max_size=3)
            | json_values,
            "aud_userid": st.lists(st.sampled_from(["u1", "u9", "用户"]), max_size=3) | json_values,
            "aud_sms": st.just([{"data": ["139"]}]) | json_values,
            "template_id": st.sampled_from([7, 8, "7", None]),
            "template_para": st.sampled_from([{"name": "A"}, {}, []]) | json_values,
            "option": st.sampled_from([{"black_id": 9}, {"white_id": 1}, {"priority": 5}])
            | json_values,
            "rule_id": json_values,
        },
    )
    | json_values,
    api=st.sampled_from(["sent", "broadcast"]),
)
def test_fuzzed_sends_answer_in_the_ums_shape(ums_emu: Emulator, body: object, api: str) -> None:
    before = ums_emu.store.message_count()
    r = send(ums_emu, body, api=api)  # type: ignore[arg-type]
    assert r.status in (200, 400)
    if r.status == 400:
        assert ums_code(r) != 1000 and ums_emu.store.message_count() == before


@pytest.fixture(scope="module")
def ums_emu(tmp_path_factory: pytest.TempPathFactory) -> Emulator:
    root = tmp_path_factory.mktemp("ums")
    d = root / "import"
    d.mkdir()
    write(d / "channels.jsonl", [{"channel_key": "sms1", "type": "sms"}])
    write(d / "users.jsonl", [{"userid": "u1", "tags": {"all": ["vip"]},
                               "bindings": {"all": {"sms": ["139"]}}}])  # fmt: skip
    write(d / "lists.jsonl", [{"list_id": 9, "userids": ["u1"]}])
    write(d / "templates.jsonl", [{"template_id": 7, "channels": ["sms1"],
                                   "content": {"sms1": "Hi {{name}}"}}])  # fmt: skip
    return open_ums(root, d)


def test_reach_serve_with_a_ums_account(tmp_path: Path, import_dir: Path):
    import base64
    import http.client
    import signal

    from reach.emulator.server import spawn

    args = ["--app", f"{APP.appkey}:{APP.secret}", "--ums", f"{UMS.appkey}:{UMS.secret}"]
    proc, port = spawn([*args, "--import", str(import_dir), "--store", str(tmp_path / "s")])
    try:
        token = base64.b64encode(f"{UMS.appkey}:{UMS.secret}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST", "/v1/template/sent", json.dumps(BODY), {"Authorization": f"Basic {token}"}
        )
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["code"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


# ---- send strategies, delivery, app routing, snapshots ---------------------------------------


@pytest.fixture
def staged_dir(import_dir: Path) -> Path:
    """``import_dir`` plus an app channel of the JPush app ``APP``, a three-stage strategy and
    an undeliverable phone."""
    write(import_dir / "channels.jsonl", [
        {"channel_key": "sms1", "type": "sms"}, {"channel_key": "wx1", "type": "wechatoa"},
        {"channel_key": "push", "type": "app", "appkey": APP.appkey}])  # fmt: skip
    write(import_dir / "users.jsonl", [
        {"userid": "u1", "tags": {"all": ["vip"]},
         "bindings": {"push": {"app": ["1a0018970aa"]}, "all": {"sms": ["139"]}}},
        {"userid": "u2", "tags": {"all": ["vip"]},
         "bindings": {"push": {"app": ["1a0018970ab"]}, "all": {"sms": ["138"]},
                      "wx1": {"wechatoa": ["o2"]}}},
        {"userid": "u3", "tags": {"all": ["vip"]}, "bindings": {"all": {"sms": ["137"]}}},
    ])  # fmt: skip
    content = {"push": "Hi", "sms1": "Hi", "wx1": "Hi"}
    template = {"template_id": 8, "channels": ["push", "sms1", "wx1"], "content": content}
    write(import_dir / "templates.jsonl", [template])
    write(import_dir / "rules.jsonl", [{"rule_id": 3, "stages": [
        {"channel_key": "push"}, {"channel_key": "sms1", "delay": 120},
        {"channel_key": "wx1", "delay": 600}]}])  # fmt: skip
    write(import_dir / "undeliverable.jsonl", [{"id": "138"}])
    return import_dir


STAGED: dict[str, Any] = {
    "aud_tag": ["vip"],
    "template_id": 8,
    "template_para": {},
    "app_para": {"platform": "all", "time_to_live": 600},
    "rule_id": 3,
}


def test_stages_deliver_and_route_through_the_jpush_app(tmp_path: Path, staged_dir: Path):
    emu = open_ums(tmp_path, staged_dir)
    online = {"registration_id": "1a0018970aa", "platform": "android", "vendor": "xiaomi"}
    register(emu, online | {"online": True}, {"registration_id": "1a0018970ab", "platform": "ios"})
    r = send(emu, STAGED)
    assert r.payload["code"] == 0, r.payload
    m = batches(emu, r.payload["msgid"])
    got = [(b["stage"], b["channel"], b["type"], b.get("platform"), b.get("vendor"),
            b["delay"], b["release_offset"], sorted(b["ids"])) for b in m["batches"]]  # fmt: skip
    assert got == [
        (1, "push", "app", "android", "xiaomi", 0, 0, ["1a0018970aa"]),  # u1: online, delivered
        (1, "push", "app", "ios", None, 0, 0, ["1a0018970ab"]),  # u2: offline
        (2, "sms1", "sms", None, None, 120, 120, ["137", "138"]),  # u2's 138 is undeliverable
        (3, "wx1", "wechatoa", None, None, 600, 720, ["o2"]),
    ]
    assert m["batches"][1]["apns_production"] is True and m["time_to_live"] == 600
    assert [(s["stage"], s["users"], s["delivered"]) for s in m["stages"]] == [
        (1, 2, 1),
        (2, 2, 1),
        (3, 1, 1),
    ]
    assert (m["rule_id"], m["delivered"], m["unreachable"]) == (3, 3, 0)
    r = send(emu, {**STAGED, "app_para": {"platform": "android"}})
    m = batches(emu, r.payload["msgid"])
    assert [(b["stage"], sorted(b["ids"])) for b in m["batches"]] == [
        (1, ["1a0018970aa"]),
        (2, ["137", "138"]),  # u2 has no android device: not reached on push
        (3, ["o2"]),
    ]


def test_undeliverable_endpoint(tmp_path: Path, staged_dir: Path):
    emu = open_ums(tmp_path, staged_dir)
    path = "/_emulator/ums/undeliverable"
    assert call(emu, "GET", path, app=UMS).payload == {"code": 0, "ids": ["138"]}
    r = call(emu, "POST", path, {"add": ["137"], "remove": ["138"]}, app=UMS)
    assert r.payload == {"code": 0, "ids": ["137"]}
    for bad in ({}, {"add": "137"}, {"add": [""]}, {"drop": []}, [], {"add": ["x"] * 1001}):
        assert ums_code(call(emu, "POST", path, bad, app=UMS)) == 1015018
    assert ums_code(call(emu, "POST", path, raw=b"{", app=UMS)) == 1015002
    assert ums_code(call(emu, "GET", path, app=APP)) == 1015020  # a JPush key
    assert ums_code(call(emu, "GET", path, app=None)) == 1015020
    assert ums_code(call(emu, "DELETE", path, app=UMS)) == 1015021
    assert call(emu, "GET", path, app=UMS).payload["ids"] == ["137"]  # refusals changed nothing
    emu.store.close()
    emu = open_ums(tmp_path, staged_dir)
    assert call(emu, "GET", path, app=UMS).payload["ids"] == ["137"]


def state(emu: Emulator) -> Any:
    """Everything a UMS account answers: its users, undeliverable IDs and a staged send."""
    reg = emu.ums[UMS.appkey].registry
    users = {u: reg.user(u) for u in ("u1", "u2", "u3", "u9", "u10")}
    res = reg.resolve(STAGED)
    stages = [(s.stage, s.channel.channel_ids(), s.delivered) for s in res.stages]
    return users, reg.undeliverable(), reg.templates, reg.rules, reg.channel_apps, stages


def test_restart_from_the_snapshot_and_the_journal_tail(tmp_path: Path, staged_dir: Path):
    emu = Emulator(Store(tmp_path / "store"), [APP], ums=[UMS], ums_import=staged_dir,
                   checkpoint_every=3)  # fmt: skip
    changes = [
        ("POST", "/v1/users", {"userid": "u9", "tags": {"all": ["vip"]},
                               "bindings": {"all": {"sms": ["100"]}}}),
        ("DELETE", "/v1/users/u1", None),
        ("POST", "/_emulator/ums/undeliverable", {"add": ["100"]}),  # a checkpoint here
        ("POST", "/v1/users", [{"userid": "u10", "tags": {"wx1": ["vip"]},
                                "bindings": {"wx1": {"wechatoa": ["o10"]}}}]),
        ("POST", "/_emulator/ums/undeliverable", {"remove": ["138"]}),  # the journal tail
    ]  # fmt: skip
    for method, path, body in changes:
        assert call(emu, method, path, body, app=UMS).payload["code"] == 0
    owner = emu.ums[UMS.appkey].owner
    assert emu.store.journal_length(owner) == 2
    want = state(emu)
    emu.store.close()
    for f in staged_dir.iterdir():  # the snapshot holds the import: the files are not read again
        f.unlink()
    again = Emulator(Store(tmp_path / "store"), [APP], ums=[UMS], ums_import=staged_dir)
    assert state(again) == want
    again.checkpoint()
    assert again.store.journal_length(owner) == 0
    again.store.close()
    assert state(Emulator(Store(tmp_path / "store"), [APP], ums=[UMS])) == want


def test_an_app_channel_of_an_unknown_app_is_refused_at_start(tmp_path: Path, import_dir: Path):
    with (import_dir / "channels.jsonl").open("a") as f:
        f.write(json.dumps({"channel_key": "p", "type": "app", "appkey": "nope"}) + "\n")
    with pytest.raises(ValueError, match="nope"):
        open_ums(tmp_path, import_dir)


def test_reach_serve_refuses_an_unknown_channel_app(
    tmp_path: Path, import_dir: Path, capsys: pytest.CaptureFixture[str]
):
    from reach.cli import main

    with (import_dir / "channels.jsonl").open("a") as f:
        f.write(json.dumps({"channel_key": "p", "type": "app", "appkey": "nope"}) + "\n")
    args = ["serve", "--app", f"{APP.appkey}:{APP.secret}", "--ums", f"{UMS.appkey}:{UMS.secret}"]
    args += ["--import", str(import_dir), "--store", str(tmp_path / "s"), "--port", "0"]
    assert main(args) == 2
    assert "nope" in capsys.readouterr().err


# ---- time_to_live: later stages are fixed when released --------------------------------------


def staged_stages(emu: Emulator, msgid: str) -> list[tuple[int, bool, list[str]]]:
    """(stage, final, IDs) of every stage of a message, as the inspection shows it now."""
    m = batches(emu, msgid)
    ids: dict[int, list[str]] = {}
    for b in m["batches"]:
        ids.setdefault(b["stage"], []).extend(b["ids"])
    return [(s["stage"], s["final"], sorted(ids.get(s["stage"], []))) for s in m["stages"]]


def test_later_stages_honour_time_to_live(tmp_path: Path, staged_dir: Path):
    """Stages: push (app, at 0), sms1 (at 120), wx1 (at 720). u1's device is online; u2's
    (1a0018970ab) comes online 60 s after the send; u2's phone 138 is undeliverable."""
    from emu import Clock

    clock = Clock()
    emu = Emulator(Store(tmp_path / "store"), [APP], ums=[UMS], ums_import=staged_dir,
                   clock=clock)  # fmt: skip
    online = {"registration_id": "1a0018970aa", "platform": "android", "online": True}
    register(emu, online, {"registration_id": "1a0018970ab", "platform": "ios"})
    sent = {ttl: send(emu, {**STAGED, "app_para": {"platform": "all", "time_to_live": ttl}})
            for ttl in (600, 30, 0)}  # fmt: skip
    msg = {ttl: r.payload["msgid"] for ttl, r in sent.items()}
    # before stage 2's release time it is provisional: resolved as at the send
    assert staged_stages(emu, msg[600]) == [
        (1, True, ["1a0018970aa", "1a0018970ab"]),
        (2, False, ["137", "138"]),
        (3, False, ["o2"]),
    ]
    clock.now += 60
    path = "/_emulator/devices/1a0018970ab/online"
    assert call(emu, "POST", path, {"online": True}).status == 200
    clock.now += 60  # stage 2 is released
    # u2 received the app push (online at +60, within time_to_live 600): not retried by SMS,
    # and not by WeChat either
    assert staged_stages(emu, msg[600]) == [
        (1, True, ["1a0018970aa", "1a0018970ab"]),
        (2, True, ["137"]),
        (3, False, []),
    ]
    for ttl in (30, 0):  # came online after time_to_live, or time_to_live 0: retried
        assert staged_stages(emu, msg[ttl])[1:] == [(2, True, ["137", "138"]), (3, False, ["o2"])]
    # a fixed stage keeps its batches when the account changes; later ones follow the change
    und = "/_emulator/ums/undeliverable"
    assert call(emu, "POST", und, {"add": ["137"]}, app=UMS).payload["code"] == 0
    clock.now += 600  # stage 3 is released: u3's SMS (137) did not deliver, but u3 has no WeChat
    m = batches(emu, msg[600])
    assert staged_stages(emu, msg[600])[1:] == [(2, True, ["137"]), (3, True, [])]
    assert "pending" not in m and all(s["final"] for s in m["stages"])
    # a device that comes online after a stage went out does not stop it
    assert call(emu, "POST", path, {"online": False}).status == 200
    late = send(emu, STAGED).payload["msgid"]
    clock.now += 130
    assert call(emu, "POST", path, {"online": True}).status == 200
    clock.now += 100
    assert staged_stages(emu, late)[1:] == [(2, True, ["137", "138"]), (3, False, [])]
    # fixed stages are stored: a restart shows them as they were
    want = {k: staged_stages(emu, k) for k in (*msg.values(), late)}
    emu.store.close()
    again = Emulator(Store(tmp_path / "store"), [APP], ums=[UMS], clock=clock)
    assert {k: staged_stages(again, k) for k in want} == want
