"""Fuzzing the emulator's bodies: whatever arrives, the answer is the seed's shape with a 4xx
(never a 500 or the internal-error code 1000), and a refused request changes nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu import APP, call, json_values, open_emulator, register
from reach.emulator import Emulator
from reach.errors import JPUSH_HTTP_STATUS

RIDS = ["a1", "a2", "i1"]


PUSH_KEYS = ("platform", "audience", "notification", "message", "sms_message", "options", "cid")
AUDIENCE_KEYS = ("tag", "tag_and", "tag_not", "alias", "registration_id", "segment", "abtest")
names = st.sampled_from(["深圳", "vip", "u1", "a1", "", "a b", "x" * 41, "北京", "seg", "t:g"])
audiences = st.one_of(
    st.just("all"),
    json_values,
    st.dictionaries(
        st.sampled_from(AUDIENCE_KEYS), st.lists(names, max_size=3) | json_values, max_size=3
    ),
)
valid_parts: dict[str, st.SearchStrategy[Any]] = {
    "platform": st.sampled_from(["all", ["android"], ["ios", "winphone"], ["mars"], []]),
    "audience": audiences,
    "notification": st.sampled_from([{"alert": "hi"}, {"android": {"alert": "a"}}, {"ios": {}}]),
    "message": st.sampled_from([{"msg_content": "m"}, {"title": "no content"}]),
    "sms_message": st.sampled_from([{"content": "s", "delay_time": 10}, {"delay_time": -1}]),
    "options": st.dictionaries(
        st.sampled_from(
            [
                "sendno",
                "time_to_live",
                "override_msg_id",
                "apns_production",
                "big_push_duration",
                "apns_collapse_id",
                "bogus",
            ]
        ),
        json_values,
        max_size=3,
    ),
    "cid": st.text(max_size=60),
}
push_bodies = st.fixed_dictionaries(
    {}, optional={k: st.one_of(valid_parts[k], json_values) for k in PUSH_KEYS}
) | st.dictionaries(st.text(max_size=10), json_values, max_size=4)


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Emulator:
    e = open_emulator(Path(tmp_path_factory.mktemp("fuzz")))
    register(
        e,
        {"registration_id": "a1", "platform": "android", "tags": ["深圳", "vip"], "alias": "u1"},
        {"registration_id": "a2", "platform": "android", "tags": ["北京"], "mobile": "1380"},
        {"registration_id": "i1", "platform": "ios", "tags": ["深圳"], "online": True},
    )
    return e


def state(emu: Emulator) -> object:
    reg = emu.apps[APP.appkey].registry
    return [reg.device(r) for r in RIDS], sorted(reg.tags()), len(reg)


def check(emu: Emulator, method: str, path: str, raw: bytes) -> None:
    before, messages = state(emu), emu.store.message_count()
    r = call(emu, method, path, raw=raw)
    assert r.status != 500
    if r.status == 200:
        return
    body = json.loads(r.body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    code = body["error"]["code"]
    assert code != 1000 and r.status == JPUSH_HTTP_STATUS[code] and 400 <= r.status < 500
    assert state(emu) == before and emu.store.message_count() == messages


@given(body=push_bodies, path=st.sampled_from(["/v3/push", "/v3/push/validate"]))
def test_push_bodies(emu: Emulator, body: object, path: str):
    check(emu, "POST", path, json.dumps(body).encode())


@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_raw_bodies(emu: Emulator, raw: bytes):
    check(emu, "POST", "/v3/push", raw)


@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "tags": st.one_of(
                st.just(""),
                st.dictionaries(st.sampled_from(["add", "remove"]), st.lists(names, max_size=3)),
                json_values,
            ),
            "alias": names | json_values,
            "mobile": st.sampled_from(["138", "", None, "abc", 5]),
        },
    )
    | json_values,
    rid=st.sampled_from([*RIDS, "nobody", "bad id", "%E4%B8%AD"]),
)
def test_device_updates(emu: Emulator, body: object, rid: str):
    check(emu, "POST", f"/v3/devices/{rid}", json.dumps(body).encode())


@given(
    body=st.fixed_dictionaries(
        {"registration_ids": st.dictionaries(st.sampled_from(["add", "remove"]), st.lists(
            st.sampled_from([*RIDS, "nobody", ""]) | json_values, max_size=3))}
    ) | json_values,
    tag=names.filter(bool),
)  # fmt: skip
def test_tag_updates(emu: Emulator, body: object, tag: str):
    check(emu, "POST", f"/v3/tags/{tag}", json.dumps(body).encode())


@given(
    path=st.sampled_from(
        ["/v3/received?msg_ids=", "/v3/push/cid?count=", "/v3/push/cid?type=",
         "/_emulator/messages/", "/v3/aliases/", "/v3/devices/", "/v3/tags/",
         "/v3/tags/vip/registration_ids/", "/v3/aliases/u1?platform="]
    ),
    tail=st.text(max_size=30) | st.integers(min_value=0, max_value=10**30).map(str),
)  # fmt: skip
def test_paths_and_queries(emu: Emulator, path: str, tail: str):
    target = path + quote(tail, safe=",=&?/")
    for method in ("GET", "DELETE"):
        before, messages = state(emu), emu.store.message_count()
        r = call(emu, method, target)
        assert r.status != 500, r.payload
        if r.status != 200:
            assert r.payload["error"]["code"] != 1000
            assert state(emu) == before and emu.store.message_count() == messages
