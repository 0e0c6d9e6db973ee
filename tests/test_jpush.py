"""Tests of reach.jpush: every validation rule of the JPush v3 push object, its boundaries, the
seed's own examples, and a fuzz test that nothing but PushError ever escapes."""

from __future__ import annotations

import doctest
import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reach.jpush
from reach.errors import PushError
from reach.jpush import (
    PLATFORMS,
    Audience,
    Notification,
    Options,
    PushRequest,
    SmsMessage,
    parse_audience,
    parse_options,
    parse_platform,
    parse_push,
)

CJK = "深"  # U+6DF1: 3 UTF-8 bytes


def refused(code: int, parse: Callable[[Any], object], obj: object) -> PushError:
    """Run ``parse(obj)``, expect a PushError with ``code``; check its HTTP status too."""
    with pytest.raises(PushError) as info:
        parse(obj)
    err = info.value
    assert err.code == code, err.message
    assert err.http_status == {1002: 400, 1003: 400, 1005: 400, 1009: 400}[code]
    assert isinstance(err, ValueError)
    return err


def push(**overrides: Any) -> dict[str, Any]:
    """A valid push object with some top-level keys replaced (None removes a key)."""
    obj: dict[str, Any] = {
        "platform": "all",
        "audience": "all",
        "notification": {"alert": "hello"},
    }
    obj.update(overrides)
    return {k: v for k, v in obj.items() if v is not None}


def note(**platform_objects: Any) -> dict[str, Any]:
    return push(notification=platform_objects)


def notification_of(obj: dict[str, Any]) -> Notification:
    """The parsed notification of a push that must have one."""
    n = parse_push(obj).notification
    assert n is not None
    return n


def check_fields(platform: str, key: str, attr: str, good: list[object], bad: list[object]) -> None:
    """Each good value of ``notification.<platform>.<key>`` parses into the field ``attr``;
    each bad one is refused with 1003 and a message naming the field."""
    for value in good:
        parsed = getattr(notification_of(note(alert="a", **{platform: {key: value}})), platform)
        assert getattr(parsed, attr) == value
    for value in bad:
        err = refused(1003, parse_push, note(alert="a", **{platform: {key: value}}))
        assert f"notification.{platform}.{key}" in err.message


def json_bytes(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def test_doctests() -> None:
    result = doctest.testmod(reach.jpush)
    assert result.attempted >= 5
    assert result.failed == 0


# --- audience ---------------------------------------------------------------------------------


def test_audience_all() -> None:
    assert parse_audience("all") == Audience(all=True)
    assert parse_audience("all").tag == ()


@pytest.mark.parametrize("value", ["ALL", "", 5, None, True, ["all"], 1.5])
def test_audience_neither_all_nor_object(value: object) -> None:
    refused(1003, parse_audience, value)


@pytest.mark.parametrize("key", ["all", "tags", "registration_ids", ""])
def test_audience_unknown_key(key: str) -> None:
    err = refused(1009, parse_audience, {"tag": ["a"], key: ["b"]})
    assert repr(key) in err.message


@pytest.mark.parametrize("value", ["a", None, 3, {"a": 1}, True])
def test_audience_value_not_array(value: object) -> None:
    err = refused(1003, parse_audience, {"alias": value})
    assert "audience.alias" in err.message


@pytest.mark.parametrize("item", [1, None, ["a"], {"a": "b"}, True])
def test_audience_element_not_string(item: object) -> None:
    err = refused(1003, parse_audience, {"tag": ["ok", item]})
    assert "audience.tag[1]" in err.message


@pytest.mark.parametrize("name", ["tag", "tag_and", "tag_not", "alias", "registration_id"])
def test_audience_empty_string_is_null_value(name: str) -> None:
    err = refused(1003, parse_audience, {name: [""]})
    assert "has a null value" in err.message


@pytest.mark.parametrize(
    "obj", [{}, {"tag": []}, {"tag": [], "alias": [], "segment": [], "abtest": []}]
)
def test_audience_with_no_type_present(obj: dict[str, Any]) -> None:
    refused(1003, parse_audience, obj)


def test_audience_empty_array_means_absent() -> None:
    got = parse_audience({"tag": [], "alias": ["a"]})
    assert got == Audience(alias=("a",))


def test_audience_duplicates_removed_in_first_seen_order() -> None:
    got = parse_audience({"tag": ["b", "a", "b", "c", "a"], "registration_id": ["x", "x"]})
    assert got.tag == ("b", "a", "c")
    assert got.registration_id == ("x",)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.sampled_from(["a", "b", "深圳", "user_1", "x" * 40, "Ab9"]), max_size=30),
    as_tuple=st.booleans(),
)
def test_audience_values_are_the_distinct_ones_in_first_seen_order(
    values: list[str], as_tuple: bool
) -> None:
    # Equal strings as distinct objects, so that repeats are found by value, not identity.
    sent = [("" + v + "!")[:-1] for v in values]
    arr: list[str] | tuple[str, ...] = tuple(sent) if as_tuple else sent
    want = tuple(dict.fromkeys(values))
    for name in ("tag", "alias"):
        if len(arr) > (20 if name == "tag" else 1000) or not arr:
            continue
        assert getattr(parse_audience({name: arr}), name) == want
    assert arr == (tuple(sent) if as_tuple else sent), "the input is left as it was"


def test_audience_all_types_together() -> None:
    got = parse_audience(
        {
            "tag": ["t1"],
            "tag_and": ["t2", "t3"],
            "tag_not": ["t4"],
            "alias": ["al"],
            "registration_id": ["1a0018970a9e2e3b3b0"],
            "segment": ["seg1"],
            "abtest": ["exp:groupA"],
        }
    )
    assert got == Audience(
        all=False,
        tag=("t1",),
        tag_and=("t2", "t3"),
        tag_not=("t4",),
        alias=("al",),
        registration_id=("1a0018970a9e2e3b3b0",),
        segment=("seg1",),
        abtest=("exp:groupA",),
    )
    assert got.to_json() == {
        "tag": ["t1"],
        "tag_and": ["t2", "t3"],
        "tag_not": ["t4"],
        "alias": ["al"],
        "registration_id": ["1a0018970a9e2e3b3b0"],
        "segment": ["seg1"],
        "abtest": ["exp:groupA"],
    }


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("tag", 20),
        ("tag_and", 20),
        ("tag_not", 20),
        ("alias", 1000),
        ("registration_id", 1000),
        ("segment", 1),
        ("abtest", 1),
    ],
)
def test_audience_count_limits(name: str, limit: int) -> None:
    values = [f"v{i}" for i in range(limit + 1)]
    assert len(getattr(parse_audience({name: values[:limit]}), name)) == limit
    err = refused(1003, parse_audience, {name: values})
    assert f"audience.{name}" in err.message
    assert str(limit) in err.message


def test_audience_limit_counts_duplicates() -> None:
    # The array is counted as sent: 21 copies of one tag are over the limit.
    refused(1003, parse_audience, {"tag": ["same"] * 21})


@pytest.mark.parametrize("name", ["tag", "tag_and", "tag_not", "alias"])
def test_name_byte_length_boundaries(name: str) -> None:
    ok = ["a" * 40, CJK * 13, CJK * 13 + "a", "𠀀" * 10]  # 40, 39, 40, 40 bytes
    assert getattr(parse_audience({name: ok}), name) == tuple(ok)
    for bad in ["a" * 41, CJK * 14, "𠀀" * 10 + "a"]:  # 41, 42, 41 bytes
        err = refused(1003, parse_audience, {name: [bad]})
        assert "bytes" in err.message


@pytest.mark.parametrize(
    "good", ["abcXYZ", "0123", "a_b", "@!#$&*+=.|", "深圳", "㐀", "豈", "𠀀", "tag_深圳@1"]
)
def test_name_allowed_characters(good: str) -> None:
    assert parse_audience({"tag": [good], "alias": [good]}).alias == (good,)


@pytest.mark.parametrize(
    "bad",
    ["a b", "a-b", "é", "ａ", "한", "α", "a/b", "a:b", "😀", "a%b", "\u0663", "\ud800", "a\n"],
)
def test_name_refused_characters(bad: str) -> None:
    err = refused(1003, parse_audience, {"alias": ["fine", bad]})
    assert "audience.alias[1]" in err.message


def test_registration_id_rules() -> None:
    assert parse_audience({"registration_id": ["a" * 64]}).registration_id == ("a" * 64,)
    for bad in ["a" * 65, "abc-def", "ab cd", "é1", "１２３", "abc_1"]:
        refused(1003, parse_audience, {"registration_id": [bad]})


def test_segment_is_any_nonempty_string() -> None:
    assert parse_audience({"segment": ["seg-1 x"]}).segment == ("seg-1 x",)
    refused(1003, parse_audience, {"segment": [""]})


@pytest.mark.parametrize("good", ["test", "test:group"])
def test_abtest_accepted(good: str) -> None:
    assert parse_audience({"abtest": [good]}).abtest == (good,)


@pytest.mark.parametrize("bad", ["", ":group", "test:", "a:b:c", ":"])
def test_abtest_refused(bad: str) -> None:
    refused(1003, parse_audience, {"abtest": [bad]})


# --- platform ---------------------------------------------------------------------------------


def test_platform_all_and_lists() -> None:
    assert parse_platform("all") is None
    assert parse_platform(["ios", "android"]) == ("ios", "android")
    assert parse_platform(list(PLATFORMS)) == PLATFORMS
    assert PLATFORMS == ("android", "ios", "winphone", "quickapp", "web", "hmos")


@pytest.mark.parametrize(
    "bad",
    ["android", "ALL", [], ["android", "android"], ["blackberry"], ["Android"], [1], None, {}],
)
def test_platform_refused(bad: object) -> None:
    refused(1003, parse_platform, bad)


# --- options ----------------------------------------------------------------------------------


def test_options_defaults() -> None:
    assert parse_options({}) == Options()
    assert Options() == Options(
        sendno=None,
        time_to_live=86400,
        override_msg_id=None,
        apns_production=True,
        apns_collapse_id=None,
        big_push_duration=None,
    )
    assert parse_push(push()).options == Options()


def test_options_values() -> None:
    got = parse_options(
        {
            "sendno": 18,
            "time_to_live": 0,
            "override_msg_id": 1828256757,
            "apns_production": False,
            "apns_collapse_id": "jiguang_test_201706011100",
            "big_push_duration": 1,
        }
    )
    assert got == Options(18, 0, 1828256757, False, "jiguang_test_201706011100", 1)


def test_sendno_zero_means_none() -> None:
    assert parse_options({"sendno": 0}).sendno is None
    assert parse_push(push(options={"sendno": 0})).sendno == "0"
    assert parse_push(push(options={"sendno": 18})).sendno == "18"


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("sendno", [1, -5, 2**31 - 1], [True, "18", 1.0, None, 2**31]),
        ("time_to_live", [0, 864000], [-1, 864001, False, "60", 60.0]),
        ("override_msg_id", [1, 2**63 - 1], [0, -1, 2**63, True, "1"]),
        ("apns_production", [True, False], [0, 1, "false", None]),
        ("apns_collapse_id", ["a" * 64, CJK * 21 + "a", ""], ["a" * 65, CJK * 22, 5, None]),
        ("big_push_duration", [1, 1400], [0, 1401, -1, True, "10"]),
    ],
)
def test_option_rules(key: str, good: list[object], bad: list[object]) -> None:
    for value in good:
        assert getattr(parse_options({key: value}), key) == value
    for value in bad:
        err = refused(1003, parse_options, {key: value})
        assert f"options.{key}" in err.message


def test_options_unknown_key() -> None:
    refused(1009, parse_options, {"time_to_live": 1, "third_party_channel": {}})


@pytest.mark.parametrize("bad", [[], "x", 1, None])
def test_options_not_object(bad: object) -> None:
    obj = push()
    obj["options"] = bad
    refused(1003, parse_push, obj)


# --- the push object --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, [], "push", 1, True])
def test_push_not_object(bad: object) -> None:
    refused(1003, parse_push, bad)


def test_push_unknown_top_level_key() -> None:
    err = refused(1009, parse_push, push(callback={"url": "x"}))
    assert "'callback'" in err.message


@pytest.mark.parametrize("key", ["platform", "audience"])
def test_push_required_keys(key: str) -> None:
    obj = push()
    del obj[key]
    err = refused(1002, parse_push, obj)
    assert key in err.message


def test_push_needs_notification_or_message() -> None:
    refused(1002, parse_push, push(notification=None))
    sms = {"content": "hi", "delay_time": 0}
    refused(1002, parse_push, push(notification=None, sms_message=sms))
    only_message = parse_push(push(notification=None, message={"msg_content": "m"}))
    assert only_message.notification is None
    assert only_message.message is not None
    assert only_message.message.msg_content == "m"


def test_winphone_takes_no_message() -> None:
    message = {"msg_content": "m"}
    refused(1003, parse_push, push(platform=["winphone"], notification=None, message=message))
    # With a notification the push is fine (the message just does not go to Windows Phone),
    # and a message alone is fine as long as another platform is targeted.
    assert parse_push(push(platform=["winphone"], message=message)).message is not None
    both = push(platform=["winphone", "android"], notification=None, message=message)
    assert parse_push(both).platform == ("winphone", "android")


@pytest.mark.parametrize("bad", [123, "", "x" * 129, None, ["c"]])
def test_cid_refused(bad: object) -> None:
    obj = push()
    obj["cid"] = bad
    refused(1003, parse_push, obj)


def test_cid_accepted() -> None:
    cid = "8103a4c628a0b98974ec1949-711261d4-5f17-4d2f-a855-5e5a8909b26e"
    assert parse_push(push(cid=cid)).cid == cid
    assert parse_push(push(cid="x" * 128)).cid == "x" * 128
    assert parse_push(push()).cid is None


def test_targets() -> None:
    assert parse_push(push()).targets("hmos")
    req = parse_push(push(platform=["ios"]))
    assert req.targets("ios")
    assert not req.targets("android")


# --- notification -----------------------------------------------------------------------------


def test_notification_shortcut_fills_platform_alerts() -> None:
    req = parse_push(note(alert="top", android={}, ios={"alert": "own"}, winphone={"title": "t"}))
    n = req.notification
    assert n is not None and n.android is not None and n.ios is not None
    assert n.winphone is not None
    assert (n.alert, n.android.alert, n.ios.alert, n.winphone.alert) == ("top", "top", "own", "top")
    assert n.for_platform("android") == {"alert": "top"}
    assert n.for_platform("web") == {"alert": "top"}
    # An empty platform alert is a real (silent) alert and overrides the shortcut.
    android = notification_of(note(alert="top", android={"alert": ""})).android
    assert android is not None and android.alert == ""


@pytest.mark.parametrize("platform", ["android", "ios", "winphone"])
def test_platform_alert_required_without_shortcut(platform: str) -> None:
    err = refused(1002, parse_push, note(**{platform: {"extras": {}}}))
    assert f"notification.{platform}.alert" in err.message


def test_notification_without_any_alert() -> None:
    refused(1002, parse_push, note())


@pytest.mark.parametrize("bad", [1, None, {"body": "x"}, ["x"]])
def test_notification_shortcut_must_be_string(bad: object) -> None:
    refused(1003, parse_push, note(alert=bad))


@pytest.mark.parametrize("bad", ["hello", [], 1])
def test_notification_not_object(bad: object) -> None:
    refused(1003, parse_push, push(notification=bad))


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ((), "voip"),
        (("android",), "uri_activity"),
        (("ios",), "thread-id"),
        (("ios",), "content_available"),
        (("winphone",), "open_page"),
    ],
)
def test_notification_unknown_keys(path: tuple[str, ...], key: str) -> None:
    notification: dict[str, Any] = {"alert": "a", "android": {}, "ios": {}, "winphone": {}}
    target = notification
    for part in path:
        target = target[part]
    target[key] = 1
    err = refused(1009, parse_push, push(notification=notification))
    assert repr(key) in err.message


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("priority", [-2, 0, 2], [-3, 3, "1", True, 1.0]),
        ("style", [0, 3], [-1, 4, "1"]),
        ("alert_type", [-1, 7], [-2, 8, None]),
        ("builder_id", [0, 3, 2**31 - 1], ["1", 1.5, False, 2**31]),
        ("title", ["", "t"], [1, None, ["t"]]),
        ("category", ["c"], [1]),
        ("big_text", ["b"], [{}]),
        ("big_pic_path", ["http://x/p.png"], [1]),
        ("inbox", [{}, {"k": "v"}], ["x", [], None]),
        ("extras", [{"newsid": 321}], ["x", [1], 1]),
        ("alert", ["", "a"], [None, 1, {"body": "x"}]),
    ],
)
def test_android_fields(key: str, good: list[object], bad: list[object]) -> None:
    check_fields("android", key, key, good, bad)


@pytest.mark.parametrize(
    ("key", "attr", "good", "bad"),
    [
        (
            "badge",
            "badge",
            [0, 1, 99, "+1", "-1", "5", "0"],
            [-1, "abc", "+", "1.5", 1.5, True, "", "٣"],
        ),
        ("sound", "sound", ["default", ""], [1, None, {"name": "x"}]),
        ("content-available", "content_available", [True, False], [1, "true", None]),
        ("mutable-content", "mutable_content", [True], [0, "yes"]),
        ("category", "category", ["c"], [1]),
        ("extras", "extras", [{"newsid": 321}], [[], "x"]),
        ("alert", "alert", ["a", "", {"title": "t", "body": "b"}], [1, None, ["a"]]),
    ],
)
def test_ios_fields(key: str, attr: str, good: list[object], bad: list[object]) -> None:
    check_fields("ios", key, attr, good, bad)


def test_ios_to_json_uses_wire_keys() -> None:
    req = parse_push(note(ios={"alert": "a", "content-available": True, "badge": "+1"}))
    assert req.notification is not None and req.notification.ios is not None
    assert req.notification.ios.to_json() == {
        "alert": "a",
        "badge": "+1",
        "content-available": True,
    }


@pytest.mark.parametrize(
    ("key", "attr", "good", "bad"),
    [
        ("alert", "alert", ["", "w"], [1, {"a": 1}]),
        ("title", "title", ["t"], [1]),
        ("_open_page", "open_page", ["/friends.xaml"], [1, None]),
        ("extras", "extras", [{"k": 1}], ["x"]),
    ],
)
def test_winphone_fields(key: str, attr: str, good: list[object], bad: list[object]) -> None:
    check_fields("winphone", key, attr, good, bad)


@pytest.mark.parametrize("platform", ["android", "ios", "winphone"])
def test_platform_object_not_an_object(platform: str) -> None:
    refused(1003, parse_push, note(alert="a", **{platform: "x"}))


# --- message and sms_message ------------------------------------------------------------------


def test_message_rules() -> None:
    msg = {"msg_content": "m", "title": "t", "content_type": "text", "extras": {"k": "v"}}
    got = parse_push(push(message=msg)).message
    assert got is not None
    assert (got.msg_content, got.title, got.content_type, got.extras) == (
        "m",
        "t",
        "text",
        {"k": "v"},
    )
    assert got.to_json() == msg
    refused(1002, parse_push, push(message={"title": "t"}))
    refused(1003, parse_push, push(message={"msg_content": 1}))
    refused(1003, parse_push, push(message={"msg_content": "m", "extras": "x"}))
    refused(1003, parse_push, push(message="m"))
    err = refused(1009, parse_push, push(message={"msg_content": "m", "msg": "x"}))
    assert "message" in err.message


def sms(content: object = "hi", delay_time: object = 0, **extra: object) -> dict[str, Any]:
    return push(sms_message={"content": content, "delay_time": delay_time, **extra})


def test_sms_boundaries() -> None:
    for content in ["x" * 480, CJK * 480]:
        got = parse_push(sms(content=content, delay_time=86400)).sms_message
        assert got is not None
        assert (got.content, got.delay_time) == (content, 86400)
    assert parse_push(sms(delay_time=0)).sms_message is not None
    for content in ["x" * 481, CJK * 481, ""]:
        err = refused(1003, parse_push, sms(content=content))
        assert "sms_message.content" in err.message
    for delay in [86401, -1, "0", True, 1.0, None]:
        err = refused(1003, parse_push, sms(delay_time=delay))
        assert "sms_message.delay_time" in err.message


def test_sms_required_and_unknown() -> None:
    refused(1002, parse_push, push(sms_message={"delay_time": 0}))
    refused(1002, parse_push, push(sms_message={"content": "c"}))
    refused(1003, parse_push, sms(content=5))
    refused(1003, parse_push, push(sms_message=[]))
    refused(1009, parse_push, sms(template=1))
    refused(1003, parse_push, sms(temp_id=1))  # content or temp_id, not both
    refused(1003, parse_push, sms(signid=1))  # a template field without temp_id


def test_sms_template_form_of_the_official_sdk() -> None:
    import jpush

    body = push(sms_message=jpush.smsmessage(60, 5, {"code": "1234"}, 7, False))
    got = parse_push(body).sms_message
    assert got == SmsMessage(None, 60, 5, {"code": "1234"}, 7, False)
    bare = parse_push(push(sms_message={"delay_time": 0, "temp_id": 9})).sms_message
    assert bare == SmsMessage(None, 0, 9)
    refused(1002, parse_push, push(sms_message={"temp_id": 9}))
    refused(1003, parse_push, push(sms_message={"delay_time": 0, "temp_id": 0}))
    refused(1003, parse_push, push(sms_message={"delay_time": 0, "temp_id": 9, "temp_para": 1}))


# --- body sizes (1005) ------------------------------------------------------------------------

EMPTY_ALERT = len('{"alert":""}')  # 12
EMPTY_MESSAGE = len('{"msg_content":""}')  # 18


def test_android_notification_plus_message_at_4000_bytes() -> None:
    # 30 bytes of JSON around the two strings; the alert is CJK to make bytes != characters.
    alert = CJK * 1000  # 3000 bytes
    content = "m" * (4000 - EMPTY_ALERT - EMPTY_MESSAGE - 3000)
    obj = push(platform=["android"], notification={"android": {"alert": alert}})
    obj["message"] = {"msg_content": content}
    assert json_bytes(obj["notification"]["android"]) + json_bytes(obj["message"]) == 4000
    assert parse_push(obj).message is not None
    obj["message"] = {"msg_content": content + "m"}
    err = refused(1005, parse_push, obj)
    assert "4001" in err.message


def test_android_size_counts_the_shortcut_alert() -> None:
    # No android object: the effective object is {"alert": <shortcut>}.
    ok = push(platform=["android"], notification={"alert": "a" * (4000 - EMPTY_ALERT)})
    assert parse_push(ok).notification is not None
    bad = push(platform=["android"], notification={"alert": "a" * (4001 - EMPTY_ALERT)})
    refused(1005, parse_push, bad)
    # Filled in from the shortcut into an android object, it counts the same.
    filled = push(platform=["android"], notification={"alert": "a" * 3979, "android": {}})
    assert json_bytes({"alert": "a" * 3979}) == 3991
    assert parse_push(filled).notification is not None


@pytest.mark.parametrize("platform", ["android", "ios"])
def test_message_only_at_4000_bytes(platform: str) -> None:
    obj = push(platform=[platform], notification=None)
    obj["message"] = {"msg_content": "m" * (4000 - EMPTY_MESSAGE)}
    assert parse_push(obj).message is not None
    obj["message"] = {"msg_content": "m" * (4001 - EMPTY_MESSAGE)}
    refused(1005, parse_push, obj)


def test_ios_notification_at_2000_bytes() -> None:
    # The seed counts `"ios":{...}`: 6 bytes of key and colon plus the object.
    n = 2000 - 6 - EMPTY_ALERT
    assert len('"ios":' + json.dumps({"alert": "a" * n}, separators=(",", ":"))) == 2000
    assert parse_push(note(ios={"alert": "a" * n})).notification is not None
    refused(1005, parse_push, note(ios={"alert": "a" * (n + 1)}))
    # The shortcut alone, sent to iOS, is measured the same way.
    assert parse_push(push(platform=["ios"], notification={"alert": "a" * n})) is not None
    refused(1005, parse_push, push(platform=["ios"], notification={"alert": "a" * (n + 1)}))


def test_winphone_notification_at_1000_bytes() -> None:
    n = 1000 - EMPTY_ALERT
    assert parse_push(note(winphone={"alert": "a" * n})).notification is not None
    err = refused(1005, parse_push, note(winphone={"alert": "a" * (n + 1)}))
    assert "winphone" in err.message


def test_size_checked_only_for_targeted_platforms() -> None:
    big_android = {"alert": "a" * 5000}
    assert parse_push(push(platform=["ios"], notification={"android": big_android})) is not None
    refused(1005, parse_push, push(platform=["android"], notification={"android": big_android}))
    refused(1005, parse_push, push(platform="all", notification={"android": big_android}))
    big_ios = {"alert": "a" * 2500}
    assert parse_push(push(platform=["android"], notification={"ios": big_ios})) is not None


def test_size_counts_utf8_bytes_of_extras() -> None:
    # 1333 CJK characters in extras: 3999 bytes, far over the limit though only 1333 characters.
    extras = {"k": CJK * 1333}
    refused(1005, parse_push, note(android={"alert": "a", "extras": extras}))


# --- Python callers ---------------------------------------------------------------------------


def test_python_callers_may_pass_tuples_and_mappings() -> None:
    # Not JSON, but the Python API (Registry) passes these through.
    assert parse_platform(("ios", "android")) == ("ios", "android")
    aud = parse_audience(MappingProxyType({"tag": ("a", "b"), "alias": ["c"]}))
    assert aud == Audience(tag=("a", "b"), alias=("c",))
    req = parse_push(MappingProxyType(push(notification=MappingProxyType({"alert": "x"}))))
    assert req.notification is not None and req.notification.alert == "x"
    refused(1003, parse_platform, ("ios", "ios"))


# --- the seed's own examples ------------------------------------------------------------------


def test_seed_request_example() -> None:
    body = (
        '{"platform":"all","audience":"all","notification":{"alert":"Hi,JPush !","android":'
        '{"extras":{"android-key1":"android-value1"}},"ios":{"sound":"sound.caf","badge":"+1",'
        '"extras":{"ios-key1":"ios-value1"}}}}'
    )
    req = parse_push(json.loads(body))
    assert req.platform is None and req.audience.all
    n = req.notification
    assert n is not None and n.android is not None and n.ios is not None
    assert n.android.alert == "Hi,JPush !"
    assert n.android.extras == {"android-key1": "android-value1"}
    assert (n.ios.alert, n.ios.sound, n.ios.badge) == ("Hi,JPush !", "sound.caf", "+1")
    assert req.sendno == "0"


def test_seed_full_example() -> None:
    obj = {
        "cid": "8103a4c628a0b98974ec1949-711261d4-5f17-4d2f-a855-5e5a8909b26e",
        "platform": "all",
        "audience": {"tag": ["深圳", "北京"]},
        "notification": {
            "android": {
                "alert": "Hi, JPush!",
                "title": "Send to Android",
                "builder_id": 1,
                "extras": {"newsid": 321},
            },
            "ios": {
                "alert": "Hi, JPush!",
                "sound": "default",
                "badge": "+1",
                "extras": {"newsid": 321},
            },
        },
        "message": {
            "msg_content": "Hi,JPush",
            "content_type": "text",
            "title": "msg",
            "extras": {"key": "value"},
        },
        "sms_message": {"content": "sms msg content", "delay_time": 3600},
        "options": {
            "time_to_live": 60,
            "apns_production": False,
            "apns_collapse_id": "jiguang_test_201706011100",
        },
    }
    req = parse_push(obj)
    assert isinstance(req, PushRequest)
    assert req.audience == Audience(tag=("深圳", "北京"))
    assert req.notification is not None and req.notification.alert is None
    assert req.notification.android is not None
    assert req.notification.android.builder_id == 1
    assert req.message is not None and req.message.content_type == "text"
    assert req.sms_message is not None and req.sms_message.delay_time == 3600
    assert req.options == Options(
        time_to_live=60, apns_production=False, apns_collapse_id="jiguang_test_201706011100"
    )
    assert req.cid == obj["cid"]


def test_seed_broadcast_example() -> None:
    obj = {
        "platform": "all",
        "audience": "all",
        "notification": {"alert": "Hi, JPush!", "android": {}, "ios": {"extras": {"newsid": 321}}},
    }
    n = parse_push(obj).notification
    assert n is not None and n.android is not None and n.ios is not None
    assert n.android.to_json() == {"alert": "Hi, JPush!"}
    assert n.ios.to_json() == {"alert": "Hi, JPush!", "extras": {"newsid": 321}}


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        ({"tag": ["深圳", "广州", "北京"]}, Audience(tag=("深圳", "广州", "北京"))),
        ({"tag_and": ["深圳", "女"]}, Audience(tag_and=("深圳", "女"))),
        ({"alias": ["4314", "892", "4531"]}, Audience(alias=("4314", "892", "4531"))),
        (
            {"registration_id": ["4312kjklfds2", "8914afd2", "45fdsa31"]},
            Audience(registration_id=("4312kjklfds2", "8914afd2", "45fdsa31")),
        ),
        (
            {"tag": ["深圳", "广州"], "tag_and": ["女", "会员"]},
            Audience(tag=("深圳", "广州"), tag_and=("女", "会员")),
        ),
        (
            {"tag": ["tag1", "tag2"], "tag_and": ["tag3", "tag4"], "tag_not": ["tag5", "tag6"]},
            Audience(tag=("tag1", "tag2"), tag_and=("tag3", "tag4"), tag_not=("tag5", "tag6")),
        ),
    ],
)
def test_seed_audience_examples(audience: dict[str, Any], expected: Audience) -> None:
    assert parse_push(push(audience=audience)).audience == expected


def test_seed_platform_object_examples() -> None:
    android = {
        "alert": "hello, JPush!",
        "title": "JPush test",
        "builder_id": 3,
        "style": 1,
        "alert_type": 1,
        "big_text": "big text content",
        "inbox": {"line1": "a"},
        "big_pic_path": "picture url",
        "priority": 0,
        "category": "category str",
        "extras": {"news_id": 134, "my_key": "a value"},
    }
    ios = {
        "alert": "hello, JPush!",
        "sound": "sound.caf",
        "badge": 1,
        "extras": {"news_id": 134, "my_key": "a value"},
    }
    winphone = {
        "alert": "hello, JPush!",
        "title": "Push Test",
        "_open_page": "/friends.xaml",
        "extras": {"news_id": 134, "my_key": "a value"},
    }
    n = parse_push(note(android=android, ios=ios, winphone=winphone)).notification
    assert n is not None and n.android is not None and n.ios is not None
    assert n.winphone is not None
    assert n.android.to_json() == android
    assert n.ios.to_json() == ios
    assert n.winphone.to_json() == winphone
    assert n.winphone.open_page == "/friends.xaml"


def test_seed_grouppush_example() -> None:
    body = (
        '{"platform":["android"],"audience":"all","notification":{"android":{"alert":'
        '"notification content","title":"notification title"}},"message":{"msg_content":'
        '"message content"}}'
    )
    req = parse_push(json.loads(body))
    assert req.platform == ("android",)
    assert req.notification is not None and req.notification.android is not None
    assert req.notification.android.title == "notification title"


# --- fuzz: only PushError ever escapes ---------------------------------------------------------

# st.text drops surrogates, but JSON can carry lone ones ("\ud800"): join characters instead.
_text = st.lists(
    st.characters() | st.sampled_from(["\ud800", "\udfff", "深", "𠀀", "@", "|"]), max_size=12
).map("".join)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-3, max_value=1500)
    | st.floats()
    | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _mostly(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Plausible values seven times in eight, else any JSON value (to reach the deep rules)."""
    return st.integers(0, 7).flatmap(lambda i: _json if i == 0 else plausible)


def _shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Objects with some of ``fields`` and now and then an unknown key, or any JSON value."""
    known = st.fixed_dictionaries({}, optional={k: _mostly(v) for k, v in fields.items()})
    unknown = st.dictionaries(_text, _json, max_size=1)
    mixed = st.tuples(known, unknown, st.integers(0, 9)).map(
        lambda t: t[0] | t[1] if t[2] == 0 else t[0]
    )
    return _mostly(mixed)


_name = st.text(st.sampled_from("aZ9_@|深𠀀 -é:"), max_size=15) | st.sampled_from(["", "\ud800"])
_names = (
    st.lists(_name | st.integers(-1, 1) | st.none(), max_size=4)
    | st.lists(st.just("t"), min_size=19, max_size=22)
    | st.lists(st.just("深" * 13), min_size=1, max_size=2)
)
_small_int = st.integers(min_value=-3, max_value=90000)
_android_fields = {
    "alert": _text,
    "title": _text,
    "builder_id": _small_int,
    "priority": _small_int,
    "style": _small_int,
    "alert_type": _small_int,
    "inbox": st.dictionaries(_text, _json, max_size=3),
    "extras": st.dictionaries(_text, _json, max_size=3),
}
_ios_fields = {
    "alert": _text | st.dictionaries(_text, _json, max_size=2),
    "badge": _small_int | st.sampled_from(["+1", "-1", "5", "x", "+99999999999"]),
    "sound": _text,
    "content-available": st.booleans(),
    "mutable-content": st.booleans(),
    "extras": st.dictionaries(_text, _json, max_size=3),
}
_winphone_fields = {"alert": _text, "title": _text, "_open_page": _text, "extras": _json}
_SECTIONS: dict[str, st.SearchStrategy[Any]] = {
    "platform": _mostly(st.just("all") | st.lists(st.sampled_from([*PLATFORMS, "bb"]), max_size=4)),
    "audience": st.just("all")
    | _shaped(
        {name: _names for name in ("tag", "tag_and", "tag_not", "alias", "registration_id")}
        | {"segment": st.lists(_text, max_size=2), "abtest": st.lists(_text, max_size=2)}
    ),
    "notification": _shaped(
        {
            "alert": _text,
            "android": _shaped(_android_fields),
            "ios": _shaped(_ios_fields),
            "winphone": _shaped(_winphone_fields),
        }
    ),
    "message": _shaped({"msg_content": _text, "title": _text, "extras": _json}),
    "sms_message": _shaped({"content": _text, "delay_time": _small_int}),
    "options": _shaped(
        {
            "sendno": _small_int,
            "time_to_live": _small_int,
            "override_msg_id": _small_int,
            "apns_production": st.booleans(),
            "apns_collapse_id": _text,
            "big_push_duration": _small_int,
        }
    ),
    "cid": _text,
}
_push = _shaped(_SECTIONS)


def _check_outcome(obj: object) -> None:
    try:
        req = parse_push(obj)
    except PushError as err:
        assert err.code in {1002, 1003, 1005, 1009}
        assert err.http_status == 400
        assert err.message
        return
    # Whatever was accepted satisfies the rules.
    assert isinstance(req, PushRequest)
    assert req.notification is not None or req.message is not None
    aud = req.audience
    assert aud.all or any(
        (aud.tag, aud.tag_and, aud.tag_not, aud.alias, aud.registration_id, aud.segment, aud.abtest)
    )
    assert len(aud.tag) <= 20 and len(aud.alias) <= 1000 and len(aud.segment) <= 1
    for name in (*aud.tag, *aud.tag_and, *aud.tag_not, *aud.alias):
        assert 0 < len(name.encode()) <= 40
    assert 0 <= req.options.time_to_live <= 864000


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_push)
def test_fuzz_push_objects_only_raise_push_error(obj: object) -> None:
    _check_outcome(obj)


_PARTS: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    **{(name,): strategy for name, strategy in _SECTIONS.items()},
    ("notification", "android"): _shaped(_android_fields),
    ("notification", "ios"): _shaped(_ios_fields),
    ("notification", "winphone"): _shaped(_winphone_fields),
}


@pytest.mark.parametrize("path", sorted(_PARTS), ids=".".join)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_one_part_of_a_valid_push_only_raises_push_error(
    path: tuple[str, ...], data: st.DataObject
) -> None:
    # A valid push with one part replaced, so that most inputs reach that part's rules.
    obj = push(notification={"alert": "a"}, message={"msg_content": "m"})
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = data.draw(_PARTS[path])
    _check_outcome(obj)


@settings(max_examples=200)
@given(_json)
def test_fuzz_arbitrary_json_only_raises_push_error(obj: object) -> None:
    _check_outcome(obj)
    _check_outcome(push(audience=obj))
    _check_outcome(push(platform=obj))
