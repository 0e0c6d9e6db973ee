"""A stateful hypothesis test of the UMS registry: random sequences of user uploads and
deletions, lists, segments, send strategies, undeliverable IDs, device status, snapshot
reloads and sends (with stages, delivery and app routing), each checked against the plain-sets
model (``ums_model``); every refusal must leave the state as it was."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reach import Registry
from reach.ums import UmsError, UmsRegistry
from test_ums_registry import IDS, TAGS, USERS, user_bindings, user_tags
from ums_model import UmsModel

CHANNELS = {"c0": "app", "c1": "sms", "c2": "wechatoa", "c3": "email", "c4": "dingtalk_cc"}
DEVICES = ("i0", "i1", "i2", "i3")  # JPush devices of the app channel c0's app
PLATFORM = {"i0": "android", "i1": "ios", "i2": "android", "i3": "web"}
userids = st.sampled_from(USERS)
id_lists = st.lists(st.sampled_from(IDS), unique=True, max_size=4)


class UmsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reg = UmsRegistry()
        self.model = UmsModel()
        self.jpush = Registry()
        self.online: dict[str, bool] = {}  # the live JPush devices
        self.platform = dict(PLATFORM)
        self.dir = tempfile.TemporaryDirectory()

    def teardown(self) -> None:
        self.dir.cleanup()

    @initialize()
    def channels_and_templates(self) -> None:
        for key, kind in CHANNELS.items():
            self.reg.add_channel(key, kind)
            self.model.channels[key] = kind
        for tid, keys in ((1, list(CHANNELS)), (2, ["c1", "c2", "c4"])):
            content = dict.fromkeys(keys, "Hi {{name}}")
            self.reg.add_template({"template_id": tid, "channels": keys, "content": content})
        for rid in DEVICES:
            self.jpush.upsert(rid, PLATFORM[rid])
            self.online[rid] = False

    def state(self) -> Any:
        """Everything a refusal must leave as it was."""
        users = {u: self.reg.user(u) for u in USERS}
        return users, self.reg.undeliverable(), dict(self.reg.rules), self.reg.channels()

    # --- changes ---------------------------------------------------------------------------

    @rule(userid=userids, tags=user_tags, bindings=user_bindings)
    def upsert_user(self, userid: str, tags: Any, bindings: Any) -> None:
        self.reg.upsert_user(userid, tags, bindings)
        self.model.upsert_user(userid, tags, bindings)

    @rule(
        userid=userids,
        keys=st.lists(st.sampled_from(list(CHANNELS)), unique=True, max_size=4),
        ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=2),
        tag=st.sampled_from(TAGS),
    )
    def upsert_reachable_user(self, userid: str, keys: list[str], ids: list[str], tag: str) -> None:
        """A user bound on channels' own keys (DingTalk: globally): random bindings rarely
        reach anyone, and stages need users reached on several channels."""
        bindings = {k: {CHANNELS[k]: ids} for k in keys if k != "c4"}
        if "c4" in keys:
            bindings["all"] = {"dingtalk_cc": ids}
        tags = {"all": [tag]}
        self.reg.upsert_user(userid, tags, bindings)
        self.model.upsert_user(userid, tags, bindings)

    @rule(userid=st.sampled_from(("u-1", "x" * 65)), tags=user_tags)
    def refused_user(self, userid: str, tags: Any) -> None:
        before = self.state()
        try:
            self.reg.upsert_user(userid, tags)
        except UmsError as e:
            assert e.code == 1015018
        else:
            raise AssertionError("a bad userid was accepted")
        assert self.state() == before

    @rule(userid=userids)
    def delete_user(self, userid: str) -> None:
        assert self.reg.delete_user(userid) == (self.model.users.pop(userid, None) is not None)

    @rule(list_id=st.sampled_from((1, 2)), users=st.lists(userids, unique=True), ids=id_lists)
    def add_list(self, list_id: int, users: list[str], ids: list[str]) -> None:
        self.reg.add_list(list_id, users, ids)
        self.model.lists[list_id] = (set(users), set(ids))

    @rule(users=st.lists(st.sampled_from((*USERS, "ghost")), unique=True, max_size=5))
    def add_segment(self, users: list[str]) -> None:
        self.reg.add_segment("s0", users)
        self.model.segments["s0"] = set(users)

    @rule(add=id_lists, remove=id_lists, bad=st.booleans())
    def set_undeliverable(self, add: list[str], remove: list[str], bad: bool) -> None:
        before = self.state()
        if bad:
            try:
                self.reg.set_undeliverable([*add, ""], remove)
            except UmsError as e:
                assert e.code == 1015018
            else:
                raise AssertionError("an empty ID was accepted")
            assert self.state() == before
            return
        self.reg.set_undeliverable(add, remove)
        self.model.undeliverable = (self.model.undeliverable | set(add)) - set(remove)

    @rule(data=st.data(), rule_id=st.sampled_from((1, 2)), template=st.sampled_from((1, 2)))
    def add_rule(self, data: st.DataObject, rule_id: int, template: int) -> None:
        keys = data.draw(st.permutations(self.reg.templates[template].channels))
        delays = data.draw(st.lists(st.integers(0, 600), min_size=len(keys), max_size=len(keys)))
        stages = [{"channel_key": k, "delay": d} for k, d in zip(keys, delays, strict=True)]
        self.reg.add_rule({"rule_id": rule_id, "stages": stages})

    @rule()
    def refused_rule(self) -> None:
        before = self.state()
        try:
            self.reg.add_rule({"rule_id": 3, "stages": [{"channel_key": "c9"}]})
        except UmsError as e:
            assert e.code == 1015015
        else:
            raise AssertionError("a strategy over an unknown channel was accepted")
        assert self.state() == before

    @rule(rid=st.sampled_from(DEVICES), online=st.booleans())
    def set_online(self, rid: str, online: bool) -> None:
        if rid in self.online:
            self.jpush.set_online(rid, online)
            self.online[rid] = online

    # JPush devices come and go between sends: the app routing's cached look-ups
    # (rust/ums/app.rs, DeviceMap) must follow. Any UMS ID may become a device.
    @rule(rid=st.sampled_from(IDS), platform=st.sampled_from(("android", "ios", "web")))
    def register_device(self, rid: str, platform: str) -> None:
        self.jpush.upsert(rid, platform)
        self.platform[rid] = platform
        self.online[rid] = False

    @rule(rid=st.sampled_from(IDS))
    def delete_device(self, rid: str) -> None:
        assert self.jpush.delete(rid) == (rid in self.online)
        self.online.pop(rid, None)

    @rule()
    def snapshot_and_reload(self) -> None:
        path = Path(self.dir.name) / "ums.snap"
        self.reg.save(path)
        self.reg = UmsRegistry.load(path)

    # --- sends -----------------------------------------------------------------------------

    @rule(
        template=st.sampled_from((1, 2)),
        kind=st.sampled_from(("broadcast", "tag", "userid", "segment")),
        tags=st.lists(st.sampled_from(TAGS), min_size=1, max_size=2),
        users=st.lists(userids, min_size=1, max_size=4),
        option=st.sampled_from(({}, {"black_id": 1}, {"white_id": 2})),
        rule_id=st.sampled_from((None, 1, 2)),
        routed=st.booleans(),
        platforms=st.sampled_from((None, ["android"], ["ios", "web"])),
    )
    def send(
        self,
        template: int,
        kind: str,
        tags: list[str],
        users: list[str],
        option: dict[str, int],
        rule_id: int | None,
        routed: bool,
        platforms: list[str] | None,
    ) -> None:
        body: dict[str, Any] = {
            "template_id": template,
            "template_para": {"name": "Ann"},
            "app_para": {"platform": platforms or "all"},
            "option": option,
        }
        if kind == "tag":
            body["aud_tag"] = tags
        elif kind == "userid":
            body["aud_userid"] = users
        elif kind == "segment":
            body["aud_segment"] = ["s0"]
        strategy = self.reg.rules.get(rule_id) if rule_id is not None else None
        if rule_id is not None:
            body["rule_id"] = rule_id
        channels = list(self.reg.templates[template].channels)
        refusal = None  # checked in this order: the strategy, the list, the segment
        if rule_id is not None and (strategy is None or set(strategy.channels) != set(channels)):
            refusal = 1015014
        elif option and next(iter(option.values())) not in self.model.lists:
            refusal = 1015013
        elif kind == "segment" and "s0" not in self.model.segments:
            refusal = 1015012
        before = self.state()
        devices = {"c0": self.jpush} if routed else None
        try:
            res = self.reg.resolve(body, broadcast=kind == "broadcast", devices=devices)
        except UmsError as e:
            assert e.code == refusal, e
            assert self.state() == before
            return
        assert refusal is None
        apps = {}
        if routed and "c0" in channels:
            apps["c0"] = {r: (self.platform[r], on) for r, on in self.online.items()}
        want = self.model.resolve(
            channels,
            broadcast=kind == "broadcast",
            tags=body.get("aud_tag", ()),
            userids=body.get("aud_userid", ()),
            segment=body.get("aud_segment", [None])[0],
            black=option.get("black_id"),
            white=option.get("white_id"),
            apps=apps,
            platforms=platforms,
        )
        for got, exp in zip(res.channels, want.channels, strict=True):
            assert set(got.channel_ids()) == exp.ids
            assert got.reached == len(exp.reached)
        assert set(res.unreachable_userids()) == want.unreachable
        stages = self.model.stages(channels, want, strategy.stages if strategy else None, apps)
        got_stages = [
            (s.stage, s.channel.key, s.offset, set(s.channel.channel_ids()), s.delivered)
            for s in res.stages
        ]
        assert got_stages == [(s.stage, s.key, s.offset, s.ids, len(s.delivered)) for s in stages]
        assert self.state() == before

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def users_match(self) -> None:
        for userid in USERS:
            want = self.model.record(userid) if userid in self.model.users else None
            assert self.reg.user(userid) == want
        assert set(self.reg.undeliverable()) == self.model.undeliverable
        assert len(self.reg) == len(self.model.users)

    @precondition(lambda self: bool(self.model.users))
    @invariant()
    def ids_are_distinct(self) -> None:
        res = self.reg.resolve({"template_id": 2, "template_para": {"name": "x"}}, broadcast=True)
        for c in res.channels:
            assert len(set(c.ids.tolist())) == len(c)


TestUmsStateMachine = UmsMachine.TestCase
TestUmsStateMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
