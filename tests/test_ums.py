"""The UMS template-send request model: the seed's example parses; every refusal has its code."""

from __future__ import annotations

from typing import Any

import pytest

from reach.ums import (
    AppPara,
    ChannelIds,
    SendOption,
    TemplateSend,
    UmsError,
    _check_userid,
    parse_template_send,
)

SEED_EXAMPLE: dict[str, Any] = {
    "aud_userid": ["user1", "user2"],
    "template_id": 10001,
    "template_para": {"user": "xxx", "url": "xxx"},
    "app_para": {"platform": "ios", "time_to_live": 9999, "apns_production": True},
    "rule_id": 1001,
    "option": {"sendno": "test", "owner": "admin", "black_id": 1234, "priority": 2},
    "callback": {"url": "https://www.jiguang.cn/ums-portal", "params": {"name": "joe", "age": 26}},
}


def test_seed_example_parses():
    t = parse_template_send(SEED_EXAMPLE)
    assert t == TemplateSend(
        template_id=10001,
        template_para={"user": "xxx", "url": "xxx"},
        userids=("user1", "user2"),
        app_para=AppPara(("ios",), 9999, True),
        rule_id=1001,
        option=SendOption("test", "admin", 1234, None, 2),
        callback=SEED_EXAMPLE["callback"],
    )
    assert t.sendno == "test"


def test_targets():
    base = {"template_id": 1, "template_para": {"n": 5}}
    t = parse_template_send({**base, "aud_tag": ["深圳", "vip¥", "深圳"]})
    assert t.tags == ("深圳", "vip¥") and t.template_para == {"n": "5"}
    assert parse_template_send({**base, "aud_segment": ["1000"]}).segment == "1000"
    custom = {
        "aud_app": [{"instance": "app", "data": ["170976fa8a9277fac6e"]}],
        "aud_sms": [{"data": ["18866007790", "18866007790"]}, {"data": ["18866007791"]}],
    }
    t = parse_template_send({**base, **custom})
    assert t.channel_ids == (
        ChannelIds("app", ("170976fa8a9277fac6e",), "app"),
        ChannelIds("sms", ("18866007790", "18866007791")),
    )
    b = parse_template_send(base, broadcast=True)
    assert b.broadcast and not b.tags and b.app_para is None
    assert parse_template_send({**base, "aud_tag": ["t"], "rule_id": 0}).rule_id is None


BASE: dict[str, Any] = {"template_id": 1, "template_para": {}, "aud_tag": ["t"]}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"template_id": None}, 1015001),
        ({"template_para": None}, 1015001),
        ({"aud_tag": None}, 1015001),
        ({"template_id": "1"}, 1015002),
        ({"template_id": True}, 1015002),
        ({"template_para": []}, 1015002),
        ({"template_para": {"a": [1]}}, 1015002),
        ({"color": 1}, 1015003),
        ({"option": {"colour": 1}}, 1015003),
        ({"aud_tag": [f"t{i}" for i in range(21)]}, 1015004),
        ({"aud_tag": ["x" * 41]}, 1015004),
        ({"aud_tag": ["中" * 14]}, 1015004),
        ({"aud_tag": ["a b"]}, 1015004),
        ({"aud_tag": []}, 1015004),
        ({"aud_tag": None, "aud_userid": [f"u{i}" for i in range(1001)]}, 1015005),
        ({"aud_tag": None, "aud_userid": ["u" * 65]}, 1015005),
        ({"aud_tag": None, "aud_userid": ["用户"]}, 1015005),
        ({"aud_tag": None, "aud_segment": ["a", "b"]}, 1015006),
        ({"aud_tag": None, "aud_app": [{"data": []}]}, 1015007),
        ({"aud_tag": None, "aud_app": ["id"]}, 1015007),
        ({"aud_tag": None, "aud_sms": [{"data": [str(i) for i in range(1001)]}]}, 1015007),
        ({"aud_app": [{"data": ["x"]}]}, 1015008),
        ({"aud_userid": ["u"]}, 1015009),
        ({"option": {"black_id": 1, "white_id": 2}}, 1015010),
        ({"option": {"priority": 4}}, 1015010),
        ({"app_para": {"platform": "mars"}}, 1015011),
        ({"app_para": {"time_to_live": 9}}, 1015011),
        ({"app_para": {"platform": "all", "time_to_live": 864001}}, 1015011),
        ({"app_para": {"platform": ["ios"], "apns_production": "yes"}}, 1015011),
    ],
)
def test_each_refusal_has_its_code(change: dict[str, Any], code: int):
    body = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(UmsError) as e:
        parse_template_send(body)
    assert e.value.code == code
    assert e.value.to_json() == {"code": code, "message": e.value.message}


def test_broadcast_takes_no_target():
    with pytest.raises(UmsError) as e:
        parse_template_send(BASE, broadcast=True)
    assert e.value.code == 1015009
    with pytest.raises(UmsError) as e:
        parse_template_send([])
    assert e.value.code == 1015002


@pytest.mark.parametrize(
    "userids",
    [
        ["u1", "u2", "u1", "u3", "u2"],
        ["u1", 2, "u3"],
        ["u1", "", "u3"],
        ["u1", "u" * 65],
        ["u1", "u 2"],
        ["u1", None],
        ["u1", b"u2"],
    ],
)
def test_userids_checked_at_once_as_one_by_one(userids: list[Any]):
    """The all-at-once userid check refuses exactly what the one-by-one rule refuses, with the
    same message, and keeps the first of repeated userids in order."""
    body = {"template_id": 1, "template_para": {}, "aud_userid": userids}
    try:
        got: object = parse_template_send(body).userids
    except UmsError as e:
        got = (e.code, e.message)
    want: object = tuple(dict.fromkeys(userids))
    for i, u in enumerate(userids):
        if not isinstance(u, str) or not u:
            want = (1015005, f"aud_userid[{i}] must be a non-empty string")
            break
        try:
            _check_userid(u, f"aud_userid[{i}]")
        except UmsError as e:
            want = (e.code, e.message)
            break
    assert got == want
