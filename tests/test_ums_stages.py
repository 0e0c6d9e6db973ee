"""Send strategies, delivery and app routing of UMS template sends against the plain-sets model
(``ums_model``), the refusals they add, and UMS snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reach import Registry, SnapshotError
from reach.ums import UmsError, UmsRegistry
from test_ums_registry import IDS, KEYS, TAGS, USERS, build, send, targets, world
from ums_model import Devices

PLATFORM_FILTERS = (None, ("android",), ("ios", "web"))


@st.composite
def delivery(draw: st.DrawFn, channels: list[str]) -> dict[str, Any]:
    """A send strategy over ``channels`` (or none), undeliverable IDs, and maybe JPush devices
    that the app channels route through, with an ``app_para.platform`` filter."""
    order = draw(st.permutations(channels))
    delays = draw(st.lists(st.integers(0, 900), min_size=len(order), max_size=len(order)))
    devices: Devices = draw(
        st.dictionaries(
            st.sampled_from((*IDS, "x1")),
            st.tuples(st.sampled_from(("android", "ios", "web")), st.booleans()),
            max_size=8,
        )
    )
    came_online = st.lists(
        st.tuples(st.sampled_from((*IDS, "x1")), st.integers(0, 1800).map(float)), max_size=6
    )
    return {
        "came_online": draw(came_online),
        "ttl": draw(st.sampled_from((0, 1, 60, 600, 86400))),
        "rule": list(zip(order, delays, strict=True)) if draw(st.integers(0, 3)) else None,
        "undeliverable": draw(st.lists(st.sampled_from((*IDS, "x2")), unique=True, max_size=5)),
        "devices": devices if draw(st.booleans()) else None,
        "platforms": draw(st.sampled_from(PLATFORM_FILTERS)),
    }


@st.composite
def reachable_users(draw: st.DrawFn, types: list[str]) -> list[tuple[str, Any, Any]]:
    """Users bound on the template channels' own keys and types (and globally), so that most
    channels reach someone and later stages have users to retry: random users rarely are."""
    keys = dict(zip(KEYS, types, strict=True))
    ids = st.lists(st.sampled_from(IDS), min_size=1, max_size=2)
    out = []
    for userid in draw(st.lists(st.sampled_from(USERS), unique=True, max_size=6)):
        own = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3))
        bindings: dict[str, dict[str, list[str]]] = {k: {keys[k]: draw(ids)} for k in own}
        bindings["all"] = {t: draw(ids) for t in draw(st.sets(st.sampled_from(types)))}
        tags = {draw(st.sampled_from(("all", *KEYS))): draw(st.lists(st.sampled_from(TAGS)))}
        out.append((userid, tags, bindings))
    return out


@given(world(), send(), st.data())
def test_stages_match_the_model(w: dict[str, Any], s: dict[str, Any], data: st.DataObject) -> None:
    w = {**w, "users": w["users"] + data.draw(reachable_users(w["types"]))}
    reg, model = build(w)
    channels = s["channels"]
    d = data.draw(delivery(channels))
    reg.add_template(
        {"template_id": 1, "channels": channels, "content": dict.fromkeys(channels, "hi")}
    )
    body = dict(s["body"])
    if d["rule"] is not None:
        stages = [{"channel_key": k, "delay": t} for k, t in d["rule"]]
        reg.add_rule({"rule_id": 5, "stages": stages})
        body["rule_id"] = 5
    platform = list(d["platforms"]) if d["platforms"] is not None else "all"
    body["app_para"] = {"platform": platform, "time_to_live": d["ttl"]}
    reg.set_undeliverable(d["undeliverable"])
    model.undeliverable = set(d["undeliverable"])
    apps: dict[str, Devices] = {}
    jpush = Registry()
    if d["devices"] is not None:
        for rid, (platform, online) in d["devices"].items():
            jpush.upsert(rid, platform, online=online)
        apps = {k: d["devices"] for k in channels if model.channels[k] == "app"}
    came_online = dict.fromkeys(apps, d["came_online"])
    res = reg.resolve(
        body, broadcast=s["broadcast"], devices=dict.fromkeys(apps, jpush), came_online=came_online
    )

    sent = targets(body)
    custom = sent["custom"]
    want = model.resolve(
        channels,
        broadcast=s["broadcast"],
        **sent,
        apps=apps,
        platforms=d["platforms"],
    )
    for got, exp in zip(res.channels, want.channels, strict=True):
        assert set(got.channel_ids()) == exp.ids
        assert got.reached == len(exp.reached)
    assert set(res.unreachable_userids()) == want.unreachable

    rule = d["rule"] if custom is None else None  # the seed: no strategy for custom IDs
    stages = model.stages(channels, want, rule, apps, came_online, d["ttl"])
    assert len(res.stages) == len(stages)
    for got, exp in zip(res.stages, stages, strict=True):
        assert (got.stage, got.channel.key, got.delay, got.offset) == (
            exp.stage,
            exp.key,
            exp.delay,
            exp.offset,
        )
        assert set(got.channel.channel_ids()) == exp.ids
        assert got.channel.reached == len(exp.users)
        assert (got.delivered_ids, got.delivered) == (len(exp.delivered_ids), len(exp.delivered))
        if exp.key in apps:
            assert got.groups is not None
            grouped = [(p, rid) for p, _, _, ids in got.groups for rid in reg.channel_ids(ids)]
            assert sorted(r for _, r in grouped) == sorted(exp.ids)
            assert all(d["devices"][rid][0] == p for p, rid in grouped)
        else:
            assert got.groups is None
    assert res.delivered == len(set().union(*(x.delivered for x in stages)))
    steps = res.explain()
    assert [x["count"] for x in steps if x["step"] == "delivered"] == [
        len(x.delivered) for x in stages
    ]
    assert [x["stage"] for x in steps if x["step"] == "delivered"] == [x.stage for x in stages]
    assert steps[-1]["step"] == "unreachable" and steps[-1]["count"] == len(want.unreachable)


@given(
    online=st.lists(st.booleans(), min_size=4, max_size=4),
    events=st.lists(st.tuples(st.sampled_from(("r0", "r1", "r2", "r3", "p0")), st.integers(0, 12))),
    ttl=st.integers(0, 8),
    order=st.permutations(("app1", "sms1", "app2")),
    delays=st.lists(st.integers(0, 6), min_size=3, max_size=3),
    undeliverable=st.lists(st.sampled_from(("p0", "p1", "p2", "p3")), unique=True),
)
def test_time_to_live_matches_the_model(
    online: list[bool],
    events: list[tuple[str, int]],
    ttl: int,
    order: list[str],
    delays: list[int],
    undeliverable: list[str],
) -> None:
    """Small times, so that events fall on every boundary: at a stage's release, at the end of
    its time_to_live, before and after the stage."""
    from ums_model import UmsModel

    reg, model = UmsRegistry(), UmsModel()
    for key, kind in (("app1", "app"), ("sms1", "sms"), ("app2", "app")):
        reg.add_channel(key, kind)
        model.channels[key] = kind
    channels = ["app1", "sms1", "app2"]
    reg.add_template(
        {"template_id": 1, "channels": channels, "content": dict.fromkeys(channels, "x")}
    )
    rule = list(zip(order, delays, strict=True))
    reg.add_rule({"rule_id": 2, "stages": [{"channel_key": k, "delay": t} for k, t in rule]})
    jpush = Registry()
    devices: dict[str, tuple[str, bool]] = {}
    for i in range(4):
        binds = {"app1": {"app": [f"r{i}"]}, "app2": {"app": [f"r{(i + 1) % 4}"]}}
        binds["all"] = {"sms": [f"p{i}"]}
        reg.upsert_user(f"u{i}", {"all": ["t"]}, binds)
        model.upsert_user(f"u{i}", {"all": ["t"]}, binds)
        jpush.upsert(f"r{i}", "android", online=online[i])
        devices[f"r{i}"] = ("android", online[i])
    reg.set_undeliverable(undeliverable)
    model.undeliverable = set(undeliverable)
    came = [(r, float(t)) for r, t in events]
    body = {"aud_tag": ["t"], "template_id": 1, "template_para": {}, "rule_id": 2,
            "app_para": {"platform": "all", "time_to_live": ttl}}  # fmt: skip
    apps = {"app1": devices, "app2": devices}
    res = reg.resolve(
        body, devices=dict.fromkeys(apps, jpush), came_online=dict.fromkeys(apps, came)
    )
    want = model.stages(channels, model.resolve(channels, tags=["t"], apps=apps), rule, apps,
                        dict.fromkeys(apps, came), ttl)  # fmt: skip
    got = [(x.channel.key, set(x.channel.channel_ids()), x.delivered_ids, x.delivered)
           for x in res.stages]  # fmt: skip
    assert got == [(x.key, x.ids, len(x.delivered_ids), len(x.delivered)) for x in want]
    assert res.delivered == len(set().union(*(x.delivered for x in want)))
    # the devices online at the send can be given instead of read from the registry
    assert {k: reg.channel_ids(v) for k, v in res.app_online.items()} == {
        k: [r for r in sorted(reg.channel_ids(res.channels[channels.index(k)].ids))
            if devices[r][1]] for k in apps
    }  # fmt: skip
    flipped = {k: [r for r in devices if not devices[r][1]] for k in apps}
    routes = dict.fromkeys(apps, jpush)
    res = reg.resolve(body, devices=routes, came_online=dict.fromkeys(apps, came), online=flipped)
    other = {r: (p, not o) for r, (p, o) in devices.items()}
    apps = {"app1": other, "app2": other}
    want = model.stages(channels, model.resolve(channels, tags=["t"], apps=apps), rule, apps,
                        dict.fromkeys(apps, came), ttl)  # fmt: skip
    got = [(x.channel.key, set(x.channel.channel_ids()), x.delivered) for x in res.stages]
    assert got == [(x.key, x.ids, len(x.delivered)) for x in want]


APP_IDS = ("r0", "r1", "r2", "r3", "r4")
app_op = st.one_of(
    st.tuples(st.just("user"), st.sampled_from(("u0", "u1", "u2")),
              st.lists(st.sampled_from(APP_IDS), max_size=3)),
    st.tuples(st.just("device"), st.sampled_from(APP_IDS), st.sampled_from(("android", "ios"))),
    st.tuples(st.just("delete"), st.sampled_from(APP_IDS), st.none()),
    st.tuples(st.just("online"), st.sampled_from(APP_IDS), st.booleans()),
)  # fmt: skip


@given(ops=st.lists(app_op, max_size=25), platform=st.sampled_from(("all", "android")))
def test_app_routing_follows_mutations(ops: list[tuple[str, str, Any]], platform: str) -> None:
    """One UMS registry and one JPush registry, changed between sends: every send routes as a
    fresh look-up would (the routing caches the ID -> device map across sends)."""
    from ums_model import UmsModel

    reg, model, jpush = UmsRegistry(), UmsModel(), Registry()
    reg.add_channel("app1", "app")
    model.channels["app1"] = "app"
    reg.add_template({"template_id": 1, "channels": ["app1"], "content": {"app1": "x"}})
    live: dict[str, tuple[str, bool]] = {}
    body = {"template_id": 1, "template_para": {}, "app_para": {"platform": platform}}
    body["aud_tag"] = ["t"]
    platforms = None if platform == "all" else (platform,)
    for kind, name, arg in ops:
        if kind == "user":
            binds = {"app1": {"app": arg}}
            reg.upsert_user(name, {"all": ["t"]}, binds)
            model.upsert_user(name, {"all": ["t"]}, binds)
        elif kind == "device":
            jpush.upsert(name, arg)
            live[name] = (arg, False)
        elif kind == "delete":
            jpush.delete(name)
            live.pop(name, None)
        elif name in live:
            jpush.set_online(name, arg)
            live[name] = (live[name][0], arg)
        res = reg.resolve(body, devices={"app1": jpush})
        apps = {"app1": dict(live)}
        want = model.resolve(["app1"], tags=["t"], apps=apps, platforms=platforms)
        assert set(res.channels[0].channel_ids()) == want.channels[0].ids
        stage = model.stages(["app1"], want, None, apps)[0]
        assert (res.stages[0].delivered_ids, res.stages[0].delivered) == (
            len(stage.delivered_ids),
            len(stage.delivered),
        )


# ---- worked cases and refusals ---------------------------------------------------------------


@pytest.fixture
def reg() -> UmsRegistry:
    r = UmsRegistry()
    r.add_channel("app1", "app")
    r.add_channel("sms1", "sms")
    r.add_channel("mail", "email")
    r.add_template(
        {
            "template_id": 1,
            "channels": ["app1", "sms1", "mail"],
            "content": {"app1": "Hi", "sms1": "Hi", "mail": "Hi"},
        }
    )
    r.add_rule(
        {
            "rule_id": 7,
            "stages": [
                {"channel_key": "app1"},
                {"channel_key": "sms1", "delay": 300},
                {"channel_key": "mail", "delay": 3600},
            ],
        }
    )
    for i in range(4):
        binds = {"all": {"sms": [f"p{i}"], "email": [f"e{i}@x"]}}
        if i < 3:
            binds["app1"] = {"app": [f"r{i}"]}
        r.upsert_user(f"u{i}", {"all": ["vip"]}, binds)
    return r


BODY: dict[str, Any] = {
    "aud_tag": ["vip"],
    "template_id": 1,
    "template_para": {},
    "app_para": {"platform": "all"},
    "rule_id": 7,
}


def test_each_stage_goes_to_the_undelivered(reg: UmsRegistry) -> None:
    jpush = Registry()
    jpush.upsert("r0", "android", vendor="xiaomi", online=True)
    jpush.upsert("r1", "ios", online=False)  # r2 is no device: not sent
    reg.set_undeliverable(["p1"])
    res = reg.resolve(BODY, devices={"app1": jpush})
    got = [(x.stage, x.offset, x.channel.channel_ids(), x.delivered) for x in res.stages]
    assert got == [
        (1, 0, ["r0", "r1"], 1),  # u0 delivered (online)
        (2, 300, ["p1", "p2", "p3"], 2),  # u1's phone is undeliverable
        (3, 3900, ["e1@x"], 1),
    ]
    assert res.delivered == 4
    groups = res.stages[0].groups
    assert groups is not None
    assert [(p, v, a, reg.channel_ids(ids)) for p, v, a, ids in groups] == [
        ("android", "xiaomi", None, ["r0"]),
        ("ios", None, True, ["r1"]),
    ]
    ios_only = reg.resolve(
        {**BODY, "app_para": {"platform": "ios", "apns_production": False}},
        devices={"app1": jpush},
    )
    assert ios_only.stages[0].channel.channel_ids() == ["r1"]
    assert ios_only.stages[0].groups == [("ios", None, False, ios_only.stages[0].channel.ids)]
    steps = [x for x in res.explain() if x.get("stage") == 2]
    assert [(x["step"], x["count"]) for x in steps] == [
        ("candidates", 4),
        ("users", 3),
        ("ids", 3),
        ("delivered_ids", 2),
        ("delivered", 2),
    ]


def test_without_a_strategy_every_channel_is_stage_1(reg: UmsRegistry) -> None:
    res = reg.resolve({k: v for k, v in BODY.items() if k != "rule_id"})
    assert [(x.stage, x.channel.key, len(x.channel)) for x in res.stages] == [
        (1, "app1", 3),
        (1, "sms1", 4),
        (1, "mail", 4),
    ]
    custom = {**BODY, "aud_sms": [{"data": ["p9"]}]}
    del custom["aud_tag"]
    res = reg.resolve(custom)  # rule_id has no effect on custom channel IDs (the seed)
    assert [x.stage for x in res.stages] == [1, 1, 1]
    assert res.stages[1].channel.channel_ids() == ["p9"] and res.stages[1].delivered_ids == 1


def test_refusals_change_nothing(reg: UmsRegistry) -> None:
    with pytest.raises(UmsError) as e:
        reg.set_undeliverable(["ok", ""])
    assert e.value.code == 1015018 and reg.undeliverable() == []
    with pytest.raises(UmsError) as e:
        reg.add_channel("sms2", "sms", appkey="k")
    assert e.value.code == 1015018 and "sms2" not in reg.channels()
    with pytest.raises(UmsError) as e:  # the core checks a strategy's channels too
        reg._core.resolve(["sms1"], broadcast=True, rule=[("app1", 0)])
    assert e.value.code == 1015014
    reg.set_undeliverable(["p0", "p1"], remove=["p1"])
    assert reg.undeliverable() == ["p0"]


def test_snapshot_round_trip(reg: UmsRegistry, tmp_path: Path) -> None:
    reg.add_channel("app2", "app", appkey="a1b2")
    reg.add_segment("s", ["u1", "ghost"])
    reg.add_list(3, ["u2"], ["p0"])
    reg.set_undeliverable(["p1"])
    reg.delete_user("u3")
    reg.save(tmp_path / "ums.snap")
    back = UmsRegistry.load(tmp_path / "ums.snap")
    assert (back.templates, back.rules, back.channel_apps) == (
        reg.templates,
        reg.rules,
        reg.channel_apps,
    )
    assert back.channels() == reg.channels() and back.undeliverable() == ["p1"]
    for u in ("u0", "u1", "u2", "u3", "ghost"):
        assert back.user(u) == reg.user(u)
    for body in (BODY, {**BODY, "aud_segment": ["s"], "aud_tag": None, "option": {"black_id": 3}}):
        body = {k: v for k, v in body.items() if v is not None}
        a, b = reg.resolve(body), back.resolve(body)
        assert [x.channel.channel_ids() for x in a.stages] == [
            x.channel.channel_ids() for x in b.stages
        ]
        assert a.explain() == b.explain()


def test_corrupt_snapshots_are_refused(reg: UmsRegistry, tmp_path: Path) -> None:
    path = tmp_path / "ums.snap"
    reg.save(path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(SnapshotError):
            UmsRegistry.load(path)
    path.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    with pytest.raises(SnapshotError):
        UmsRegistry.load(path)
    Registry().save(path)  # a device registry's snapshot is not a UMS one
    with pytest.raises(SnapshotError):
        UmsRegistry.load(path)


def test_reach_import_writes_a_ums_snapshot(tmp_path: Path) -> None:
    from reach.cli import main

    (tmp_path / "channels.jsonl").write_text('{"channel_key": "sms1", "type": "sms"}\n')
    (tmp_path / "users.jsonl").write_text('{"userid": "u1", "bindings": {"all": {"sms": ["1"]}}}\n')
    (tmp_path / "undeliverable.jsonl").write_text('{"id": "1"}\n')
    snap, ums = tmp_path / "d.snap", tmp_path / "u.snap"
    assert main(["import", str(tmp_path), "--snapshot", str(snap), "--ums-snapshot", str(ums)]) == 0
    back = UmsRegistry.load(ums)
    assert back.user("u1") is not None and back.undeliverable() == ["1"]
    assert back.channels() == {"sms1": "sms"}
