"""A plain-Python-sets model of a UMS registry and template-send resolution.

Written from the seed's rules as DESIGN.md and ``rust/ums/resolve.rs``'s module doc state them,
not from the core: every channel's IDs are computed user by user with Python sets and dicts,
so that it is obviously right. The UMS property tests compare the compiled core against it.

Send strategies and delivery (``rust/ums/stages.rs``'s module doc): an ID delivers unless it is
undeliverable; an app channel routed through a JPush app sends only its IDs that are live devices
there on the platforms, and such an ID delivers when its device is online. A user is delivered by
a stage when one of its IDs selected on the stage's channel (before any list) was delivered.
Stage 1 is the strategy's first channel; stage k sends the channel's reached users that no
earlier stage delivered to, with their IDs.

Time (``time_to_live``): a routed app ID sent at ``at`` seconds after the send also delivers
when its device came online at a time ``t`` with ``at <= t <= at + time_to_live`` (never for
``time_to_live`` 0); seen from a later stage at offset ``o``, only if also ``t < o``. A stage's
own ``delivered`` is seen at the end of its ``time_to_live``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

OWN = ("app", "wechatoa", "wechatmp", "alipay_life", "wechatwk", "wechatwk_linkedcorp")
OWN_ELSE_GLOBAL = ("sms", "email")
GLOBAL_ONLY = ("dingtalk_cc",)


@dataclass
class User:
    tags: dict[str, set[str]]  # scope -> tags
    bindings: dict[str, dict[str, list[str]]]  # scope -> type -> IDs (first occurrence order)


@dataclass
class ChannelAnswer:
    ids: set[str]
    reached: set[str]
    per_user: dict[str, set[str]] = field(default_factory=dict)  # reached user -> its IDs sent


@dataclass
class StageAnswer:
    stage: int
    key: str
    delay: int
    offset: int
    ids: set[str]
    users: set[str]
    delivered_ids: set[str]
    delivered: set[str]


Devices = Mapping[str, tuple[str, bool]]
"""A JPush app's live devices: registration ID -> (platform, online)."""


@dataclass
class Answer:
    channels: list[ChannelAnswer]
    audience: set[str]
    unreachable: set[str]


@dataclass
class UmsModel:
    users: dict[str, User] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    segments: dict[str, set[str]] = field(default_factory=dict)
    lists: dict[int, tuple[set[str], set[str]]] = field(default_factory=dict)
    undeliverable: set[str] = field(default_factory=set)

    def upsert_user(
        self,
        userid: str,
        tags: Mapping[str, Sequence[str]],
        bindings: Mapping[str, Mapping[str, Sequence[str]]],
    ) -> None:
        self.users[userid] = User(
            {s: set(t) for s, t in tags.items() if t},
            {
                s: {ty: list(dict.fromkeys(ids)) for ty, ids in types.items() if ids}
                for s, types in bindings.items()
            },
        )

    def record(self, userid: str) -> dict[str, object]:
        """What ``UmsRegistry.user`` returns."""
        u = self.users[userid]
        return {
            "userid": userid,
            "tags": {s: sorted(t) for s, t in u.tags.items() if t},
            "bindings": {s: dict(types) for s, types in u.bindings.items() if types},
        }

    def _has_tag_bound_to(self, tag: str, key: str) -> bool:
        return any(tag in u.tags.get(key, set()) for u in self.users.values())

    def _tag_audience(self, tags: Sequence[str], key: str) -> set[str]:
        out: set[str] = set()
        for tag in tags:
            scope = key if self._has_tag_bound_to(tag, key) else "all"
            out |= {name for name, u in self.users.items() if tag in u.tags.get(scope, set())}
        return out

    def _ids(self, userid: str, key: str, kind: str) -> list[str]:
        """The IDs of one user on a channel of key ``key`` and type ``kind``."""
        b = self.users[userid].bindings
        own = b.get(key, {}).get(kind, [])
        glob = b.get("all", {}).get(kind, [])
        if kind in OWN:
            return own
        if kind in OWN_ELSE_GLOBAL:
            return own or glob
        return glob

    def resolve(
        self,
        channels: Sequence[str],
        *,
        broadcast: bool = False,
        tags: Sequence[str] = (),
        userids: Sequence[str] = (),
        segment: str | None = None,
        custom: Mapping[str, Sequence[str]] | None = None,
        black: int | None = None,
        white: int | None = None,
        apps: Mapping[str, Devices] | None = None,
        platforms: Sequence[str] | None = None,
    ) -> Answer:
        """``apps``: app channel key -> the devices its IDs are routed through."""
        apps = apps or {}

        def routed(key: str, kind: str, rid: str) -> bool:
            if kind != "app" or key not in apps:
                return True
            device = apps[key].get(rid)
            return device is not None and (platforms is None or device[0] in platforms)

        black_users, black_ids = self.lists[black] if black is not None else (set(), set())
        white_list = self.lists[white] if white is not None else None
        answers: list[ChannelAnswer] = []
        audience: set[str] = set()
        for key in channels:
            kind = self.channels[key]
            if custom is not None:
                given = {r for r in custom.get(kind, ()) if routed(key, kind, r)}
                if white_list is not None:
                    given &= white_list[1]
                answers.append(ChannelAnswer(given - black_ids, set()))
                continue
            if broadcast:
                a = set(self.users)
            elif tags:
                a = self._tag_audience(tags, key)
            elif segment is not None:
                a = self.segments[segment] & set(self.users)
            else:
                a = set(userids) & set(self.users)
            audience |= a
            per_user: dict[str, set[str]] = {}
            for user in a - black_users:
                for rid in self._ids(user, key, kind):
                    listed = white_list is None or user in white_list[0] or rid in white_list[1]
                    if rid not in black_ids and listed and routed(key, kind, rid):
                        per_user.setdefault(user, set()).add(rid)
            ids = set().union(*per_user.values())
            answers.append(ChannelAnswer(ids, set(per_user), per_user))
        reached_any = set().union(*(c.reached for c in answers))
        return Answer(answers, audience, audience - reached_any)

    def stages(
        self,
        channels: Sequence[str],
        answer: Answer,
        rule: Sequence[tuple[str, int]] | None,
        apps: Mapping[str, Devices] | None = None,
        came_online: Mapping[str, Sequence[tuple[str, float]]] | None = None,
        ttl: int = 0,
    ) -> list[StageAnswer]:
        """The stages of a resolved send (``rule``: (channel key, delay); None, or custom
        channel IDs: every channel at once, stage 1). ``came_online``: app channel key ->
        (registration ID, seconds after the send) when its device came online."""
        apps = apps or {}
        came_online = came_online or {}
        kinds = {key: self.channels[key] for key in channels}

        def delivers(key: str, rid: str, at: float, seen: float) -> bool:
            if kinds[key] == "app" and key in apps:
                late = ttl > 0 and any(
                    r == rid and at <= t <= at + ttl and t < seen
                    for r, t in came_online.get(key, ())
                )
                return apps[key][rid][1] or late
            return rid not in self.undeliverable

        def delivered_by(s: StageAnswer, seen: float) -> set[str]:
            ok = {r for r in s.ids if delivers(s.key, r, s.offset, seen)}
            return {u for u in s.users if set(self._ids(u, s.key, kinds[s.key])) & ok}

        def stage(n: int, key: str, delay: int, offset: int, users: set[str]) -> StageAnswer:
            c = answer.channels[list(channels).index(key)]
            ids = set().union(*(c.per_user[u] for u in users)) if users else set()
            if not c.per_user:  # custom channel IDs: no users
                ids = c.ids
            out = StageAnswer(n, key, delay, offset, ids, users, set(), set())
            out.delivered_ids = {r for r in ids if delivers(key, r, offset, float("inf"))}
            out.delivered = delivered_by(out, float("inf"))
            return out

        if rule is None:
            pairs = zip(channels, answer.channels, strict=True)
            return [stage(1, k, 0, 0, set(c.reached)) for k, c in pairs]
        out: list[StageAnswer] = []
        offset = 0
        for n, (key, delay) in enumerate(rule, 1):
            offset += delay
            reached = answer.channels[list(channels).index(key)].reached
            done = set().union(*(delivered_by(s, offset) for s in out))
            out.append(stage(n, key, delay, offset, reached - done))
        return out
