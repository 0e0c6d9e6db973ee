"""The UMS registry and template-send resolution against the plain-sets model (``ums_model``),
one test per refusal, and the UMS import files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

from reach import LoadError
from reach.imports import import_directory
from reach.ums import CHANNEL_TYPES, UmsError, UmsRegistry
from ums_model import UmsModel

KEYS = ("c0", "c1", "c2", "c3", "c4")
SCOPES = ("all", *KEYS, "elsewhere")  # "elsewhere": a channel key with no channel
USERS = tuple(f"u{i}" for i in range(8))
TAGS = ("t0", "t1", "标签")
IDS = tuple(f"i{i}" for i in range(10))

user_tags = st.dictionaries(st.sampled_from(SCOPES), st.lists(st.sampled_from(TAGS), max_size=3))
user_bindings = st.dictionaries(
    st.sampled_from(SCOPES),
    st.dictionaries(
        st.sampled_from(CHANNEL_TYPES), st.lists(st.sampled_from(IDS), max_size=3), max_size=3
    ),
    max_size=4,
)
user = st.tuples(st.sampled_from(USERS), user_tags, user_bindings)
subset = st.lists(st.sampled_from((*USERS, "nobody")), unique=True, max_size=5)


@st.composite
def world(draw: st.DrawFn) -> dict[str, Any]:
    """Channels, users (some replaced, some deleted), a segment, two lists."""
    return {
        "types": draw(st.lists(st.sampled_from(CHANNEL_TYPES), min_size=5, max_size=5)),
        "users": draw(st.lists(user, max_size=12)),
        "deleted": draw(st.lists(st.sampled_from(USERS), max_size=2)),
        "segment": draw(subset),
        "lists": {
            n: (draw(subset), draw(st.lists(st.sampled_from(IDS), unique=True, max_size=4)))
            for n in (1, 2)
        },
    }


@st.composite
def send(draw: st.DrawFn) -> dict[str, Any]:
    """A template (its channels) and a send over it."""
    channels = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=5, unique=True))
    kind = draw(st.sampled_from(("broadcast", "tag", "userid", "segment", "custom")))
    body: dict[str, Any] = {"template_id": 1, "template_para": {}, "app_para": {"platform": "all"}}
    if kind == "tag":
        body["aud_tag"] = draw(st.lists(st.sampled_from((*TAGS, "t9")), min_size=1, max_size=3))
    elif kind == "userid":
        body["aud_userid"] = draw(subset.filter(bool))
    elif kind == "segment":
        body["aud_segment"] = ["s0"]
    elif kind == "custom":
        per_type = draw(
            st.dictionaries(
                st.sampled_from(CHANNEL_TYPES),
                st.lists(st.sampled_from((*IDS, "x1", "x2")), min_size=1, max_size=4),
                min_size=1,
            )
        )
        body.update({f"aud_{t}": [{"data": ids}] for t, ids in per_type.items()})
    option = draw(st.sampled_from(({}, {"black_id": 1}, {"white_id": 2})))
    if option:
        body["option"] = option
    return {"channels": channels, "body": body, "broadcast": kind == "broadcast"}


def build(w: dict[str, Any]) -> tuple[UmsRegistry, UmsModel]:
    reg, model = UmsRegistry(), UmsModel()
    for key, kind in zip(KEYS, w["types"], strict=True):
        reg.add_channel(key, kind)
        model.channels[key] = kind
    for userid, tags, bindings in w["users"]:
        reg.upsert_user(userid, tags, bindings)
        model.upsert_user(userid, tags, bindings)
    for userid in w["deleted"]:
        assert reg.delete_user(userid) == (userid in model.users)
        model.users.pop(userid, None)
    reg.add_segment("s0", w["segment"])
    model.segments["s0"] = set(w["segment"])
    for n, (users, ids) in w["lists"].items():
        reg.add_list(n, users, ids)
        model.lists[n] = (set(users), set(ids))
    return reg, model


def targets(body: dict[str, Any]) -> dict[str, Any]:
    """The model's ``resolve`` arguments for a send body's target and lists."""
    custom = None
    if any(k.removeprefix("aud_") in CHANNEL_TYPES for k in body):
        custom = {t: body[f"aud_{t}"][0]["data"] for t in CHANNEL_TYPES if f"aud_{t}" in body}
    option = body.get("option", {})
    return {
        "tags": body.get("aud_tag", ()),
        "userids": body.get("aud_userid", ()),
        "segment": body.get("aud_segment", [None])[0],
        "custom": custom,
        "black": option.get("black_id"),
        "white": option.get("white_id"),
    }


@given(world(), send())
def test_resolution_matches_the_model(w: dict[str, Any], s: dict[str, Any]) -> None:
    reg, model = build(w)
    for userid in USERS:
        assert reg.user(userid) == (model.record(userid) if userid in model.users else None)
    channels = s["channels"]
    reg.add_template(
        {"template_id": 1, "channels": channels, "content": dict.fromkeys(channels, "hi")}
    )
    body = s["body"]
    res = reg.resolve(body, broadcast=s["broadcast"])
    want = model.resolve(
        channels,
        broadcast=s["broadcast"],
        **targets(body),
    )
    assert [c.key for c in res.channels] == channels
    for got, exp in zip(res.channels, want.channels, strict=True):
        ids = got.ids
        assert ids.dtype == np.uint32 and np.all(np.diff(ids.astype(np.int64)) > 0)
        assert got.type == model.channels[got.key]
        assert set(got.channel_ids()) == exp.ids and len(got) == len(exp.ids)
        assert got.reached == len(exp.reached)
    assert res.audience == len(want.audience)
    assert set(res.unreachable_userids()) == want.unreachable
    assert reg.userids(res.unreachable()) == res.unreachable_userids()
    steps = res.explain()
    assert steps[-1] == {
        "channel": None,
        "step": "unreachable",
        "unit": "users",
        "count": len(want.unreachable),
    }
    assert len(res) == sum(len(c.ids) for c in want.channels)


@given(
    world(),
    send(),
    st.permutations(("unreachable", "userids", "explain", "delivered")),
    st.lists(user, max_size=3),
    st.lists(st.sampled_from(USERS), max_size=3),
)
def test_the_unreachable_users_are_those_of_the_send_as_resolved(
    w: dict[str, Any],
    s: dict[str, Any],
    order: list[str],
    later_users: list[tuple[str, Any, Any]],
    later_deleted: list[str],
) -> None:
    """The unreachable users, the whole send's counts and ``delivered`` are computed on first
    use (``rust/ums/resolve.rs``): in any order, and after the registry changed, they answer
    for the send as it was resolved."""
    reg, model = build(w)
    channels = s["channels"]
    reg.add_template(
        {"template_id": 1, "channels": channels, "content": dict.fromkeys(channels, "hi")}
    )
    res = reg.resolve(s["body"], broadcast=s["broadcast"])
    want = model.resolve(channels, broadcast=s["broadcast"], **targets(s["body"]))
    for userid, tags, bindings in later_users:
        reg.upsert_user(userid, tags, bindings)
    for userid in later_deleted:
        reg.delete_user(userid)
    reached = len(want.audience) - len(want.unreachable)
    for what in order:
        if what == "unreachable":
            assert len(res.unreachable()) == len(want.unreachable)
        elif what == "userids":
            assert set(res.unreachable_userids()) == want.unreachable
        elif what == "explain":
            assert [(x["step"], x["count"]) for x in res.explain() if x["channel"] is None] == [
                ("audience", len(want.audience)),
                ("reached", reached),
                ("unreachable", len(want.unreachable)),
            ]
        else:
            assert res.delivered == reached  # nothing undeliverable: every user reached
    assert res.audience == len(want.audience)


# ---- refusals: one test per code -----------------------------------------------------------


@pytest.fixture
def reg() -> UmsRegistry:
    r = UmsRegistry()
    r.add_channel("app1", "app")
    r.add_channel("sms1", "sms")
    r.add_template(
        {
            "template_id": 1,
            "channels": ["sms1"],
            "content": {"sms1": {"text": "Hi {{user}}, {{code}}", "max_length": 16}},
        }
    )
    r.add_template(
        {
            "template_id": 2,
            "channels": ["app1", "sms1"],
            "content": {"app1": "{{user}}", "sms1": "x"},
        }
    )
    r.upsert_user("u1", {"all": ["vip"]}, {"all": {"sms": ["139"]}, "app1": {"app": ["r1"]}})
    return r


PARA = {"user": "joe", "code": "42"}


def code_of(reg: UmsRegistry, body: dict[str, Any], **kw: Any) -> int:
    with pytest.raises(UmsError) as e:
        reg.resolve({"template_id": 1, "template_para": PARA, **body}, **kw)
    return e.value.code


def test_a_send_fills_and_resolves(reg: UmsRegistry) -> None:
    res = reg.resolve({"aud_userid": ["u1"], "template_id": 1, "template_para": PARA})
    assert [(c.key, c.type, c.channel_ids()) for c in res.channels] == [("sms1", "sms", ["139"])]
    assert reg.templates[1].fill(PARA) == {"sms1": "Hi joe, 42"}
    res = reg.resolve(
        {"template_id": 2, "template_para": PARA, "app_para": {"platform": "all"}}, broadcast=True
    )
    assert [c.channel_ids() for c in res.channels] == [["r1"], ["139"]]
    assert res.explain()[0] == {"channel": "app1", "step": "audience", "unit": "users", "count": 1}


def test_unknown_template(reg: UmsRegistry) -> None:
    assert code_of(reg, {"template_id": 9, "aud_tag": ["vip"]}) == 1015031


def test_unknown_segment(reg: UmsRegistry) -> None:
    assert code_of(reg, {"aud_segment": ["s9"]}) == 1015012


@pytest.mark.parametrize("option", [{"black_id": 5}, {"white_id": 5}])
def test_unknown_list(reg: UmsRegistry, option: dict[str, int]) -> None:
    assert code_of(reg, {"aud_tag": ["vip"], "option": option}) == 1015013


def test_unknown_or_mismatched_rule(reg: UmsRegistry) -> None:
    assert code_of(reg, {"aud_tag": ["vip"], "rule_id": 5}) == 1015014
    reg.add_rule(
        {"rule_id": 5, "stages": [{"channel_key": "app1"}, {"channel_key": "sms1", "delay": 60}]}
    )
    assert code_of(reg, {"aud_tag": ["vip"], "rule_id": 5}) == 1015014
    assert reg.rules[5].stages == (("app1", 0), ("sms1", 60))


def test_unknown_channel(reg: UmsRegistry) -> None:
    with pytest.raises(UmsError) as e:
        reg.add_template({"template_id": 3, "channels": ["nope"], "content": {"nope": "x"}})
    assert e.value.code == 1015015
    with pytest.raises(UmsError) as e:
        reg.add_rule({"rule_id": 3, "stages": [{"channel_key": "nope"}]})
    assert e.value.code == 1015015
    with pytest.raises(UmsError) as e:  # the core checks too
        reg._core.resolve(["nope"], broadcast=True)
    assert e.value.code == 1015015


def test_missing_variable(reg: UmsRegistry) -> None:
    with pytest.raises(UmsError) as e:
        reg.resolve({"template_id": 1, "template_para": {"user": "joe"}, "aud_tag": ["vip"]})
    assert e.value.code == 1015016 and "sms1" in e.value.message and "code" in e.value.message


def test_too_long(reg: UmsRegistry) -> None:
    assert (
        code_of(reg, {"template_para": {"user": "josephine", "code": "123"}, "aud_tag": ["v"]})
        == 1015017
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.upsert_user("u-1"),
        lambda r: r.upsert_user("x" * 65),
        lambda r: r.upsert_user("u2", {"all": ["a b"]}),
        lambda r: r.upsert_user("u2", {"all": ["标" * 14]}),
        lambda r: r.upsert_user("u2", bindings={"all": {"fax": ["1"]}}),
        lambda r: r.upsert_user("u2", bindings={"all": {"sms": [""]}}),
        # several users are all or nothing: u2 is not applied either
        lambda r: r.upsert_users([("u2", None, None), ("u 3", None, None)]),
        lambda r: r.upsert_users([("u2", None, None), ("u3", None, {"all": {"fax": ["1"]}})]),
        lambda r: r.add_channel("all", "sms"),
        lambda r: r.add_channel("c9", "fax"),
        lambda r: r.add_segment("s", ["bad user"]),
        lambda r: r.add_list(1, [], [""]),
        lambda r: r.add_template({"template_id": 4, "channels": ["sms1"], "content": {}}),
        lambda r: r.add_rule({"rule_id": 4, "stages": []}),
    ],
)
def test_bad_records_change_nothing(reg: UmsRegistry, change: Any) -> None:
    before = (len(reg), reg.user("u1"), reg.channels(), set(reg.templates), set(reg.rules))
    with pytest.raises(UmsError) as e:
        change(reg)
    assert e.value.code == 1015018
    assert (len(reg), reg.user("u1"), reg.channels(), set(reg.templates), set(reg.rules)) == before


def test_app_para_required(reg: UmsRegistry) -> None:
    assert code_of(reg, {"template_id": 2, "aud_tag": ["vip"]}) == 1015019


# ---- bulk paths and import files -----------------------------------------------------------


def test_bulk_arrays_match_upserts() -> None:
    reg = UmsRegistry()
    reg.add_channel("sms1", "sms")
    names = [b"a1", b"b2", b"c3"]
    offsets = np.cumsum([0, *map(len, names)]).astype(np.uint64)
    ids = reg._core.add_users(np.frombuffer(b"".join(names), np.uint8), offsets)
    assert ids.tolist() == [0, 1, 2]
    reg._core.add_tag_users("vip", "sms1", bytes(BitMap([0, 2, 7]).serialize()))
    phones = [b"p0", b"p2", b"p2b"]
    reg._core.bind_arrays(
        "sms",
        "all",
        np.array([0, 2, 2], np.uint32),
        np.frombuffer(b"".join(phones), np.uint8),
        np.cumsum([0, *map(len, phones)]).astype(np.uint64),
    )
    assert reg.user("c3") == {
        "userid": "c3",
        "tags": {"sms1": ["vip"]},
        "bindings": {"all": {"sms": ["p2", "p2b"]}},
    }
    with pytest.raises(UmsError):
        reg._core.bind_arrays(
            "sms",
            "all",
            np.array([9], np.uint32),
            np.frombuffer(b"x", np.uint8),
            np.array([0, 1], np.uint64),
        )


def write(root: Path, name: str, lines: list[object]) -> None:
    (root / name).write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")


def test_import_directory(tmp_path: Path) -> None:
    write(tmp_path, "channels.jsonl", [{"channel_key": "sms1", "type": "sms"}])
    write(
        tmp_path,
        "users.jsonl",
        [
            {"userid": "u1", "tags": {"all": ["vip"]}, "bindings": {"all": {"sms": ["139"]}}},
            {"userid": "u2", "tags": {"sms1": ["vip"]}},
        ],
    )
    write(tmp_path, "segments.jsonl", [{"segment": "s", "userids": ["u1"]}])
    write(tmp_path, "lists.jsonl", [{"list_id": 3, "userids": ["u2"], "ids": ["139"]}])
    write(
        tmp_path,
        "templates.jsonl",
        [
            {
                "template_id": 1,
                "channels": ["sms1"],
                "content": {"sms1": {"text": "hi", "max_length": 70}},
            }
        ],
    )
    write(tmp_path, "rules.jsonl", [{"rule_id": 1, "stages": [{"channel_key": "sms1"}]}])
    reg = UmsRegistry()
    counts = import_directory(reg, tmp_path)
    assert counts == {
        "channels.jsonl": 1,
        "users.jsonl": 2,
        "segments.jsonl": 1,
        "lists.jsonl": 1,
        "templates.jsonl": 1,
        "rules.jsonl": 1,
    }
    res = reg.resolve({"aud_segment": ["s"], "template_id": 1, "template_para": {}, "rule_id": 1})
    assert [c.channel_ids() for c in res.channels] == [["139"]]


@pytest.mark.parametrize(
    ("name", "lines", "bad_line"),
    [
        ("users.jsonl", [{"userid": "u1"}, {"userid": "u 2"}], 2),
        (
            "channels.jsonl",
            [{"channel_key": "a", "type": "sms"}, {"channel_key": "b", "type": "x"}],
            2,
        ),
        ("lists.jsonl", [{"list_id": 1}, {"list_id": "2"}], 2),
        (
            "segments.jsonl",
            [{"segment": "s", "userids": ["ok"]}, {"segment": "t", "userids": ["n o"]}],
            2,
        ),
        ("templates.jsonl", [{"template_id": 1, "channels": ["zz"], "content": {"zz": "x"}}], 1),
        ("rules.jsonl", [{"rule_id": 1, "stages": [{"channel_key": "zz"}]}], 1),
    ],
)
def test_import_files_are_all_or_nothing(
    tmp_path: Path, name: str, lines: list[object], bad_line: int
) -> None:
    write(tmp_path, name, lines)
    reg = UmsRegistry()
    with pytest.raises(LoadError, match=f"line {bad_line}"):
        import_directory(reg, tmp_path)
    assert len(reg) == 0 and reg.channels() == {} and not reg.templates and not reg.rules
    assert reg._core.add_segment("probe", []) == 0
