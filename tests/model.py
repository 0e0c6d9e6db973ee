"""A plain-Python-sets model of a device registry and JPush audience resolution.

Written from the semantics in DESIGN.md, not from the core: every audience is evaluated by
building Python sets of registration ids, one step at a time, so that it is obviously right.
The property and state-machine tests compare the compiled core against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

PLATFORMS = ("android", "ios", "winphone", "quickapp", "web", "hmos")
VENDORS = ("hms", "honor", "xiaomi", "oppo", "vivo", "meizu", "fcm")

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1

Audience = str | Mapping[str, Sequence[str]]
Platform = str | Sequence[str]


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bit: xor each byte in, then multiply by the prime (wrapping)."""
    h = FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * FNV_PRIME) & MASK64
    return h


def bucket(registration_id: str) -> int:
    """A device's A/B bucket in [0, 100)."""
    return fnv1a64(registration_id.encode("utf-8")) % 100


class UnknownName(KeyError):
    """An audience names a segment, A/B test or A/B group that does not exist (JPush 1003)."""


@dataclass
class Device:
    registration_id: str
    id: int
    platform: str
    vendor: str | None
    tags: set[str]
    alias: str | None
    mobile: str | None
    online: bool
    live: bool = True

    def record(self) -> dict[str, object]:
        """What ``Registry.device`` returns for a live device."""
        return {
            "registration_id": self.registration_id,
            "platform": self.platform,
            "vendor": self.vendor,
            "tags": sorted(self.tags),
            "alias": self.alias,
            "mobile": self.mobile,
            "online": self.online,
        }


@dataclass
class StaticSegment:
    ids: set[int]


@dataclass
class DynamicSegment:
    audience: Audience


@dataclass
class AbTest:
    base: Audience
    groups: list[tuple[str, int]]

    def buckets(self, group: str | None) -> set[int]:
        """The buckets of one group (or of every group when ``group`` is None)."""
        out: set[int] = set()
        start = 0
        for name, percent in self.groups:
            if group is None or name == group:
                out |= set(range(start, start + percent))
            start += percent
        return out


@dataclass
class Model:
    devices: dict[str, Device] = field(default_factory=dict)
    by_id: list[str] = field(default_factory=list)
    segments: dict[str, StaticSegment | DynamicSegment] = field(default_factory=dict)
    abtests: dict[str, AbTest] = field(default_factory=dict)

    # ---- mutations -------------------------------------------------------------------------

    def upsert(
        self,
        registration_id: str,
        platform: str,
        vendor: str | None = None,
        tags: Iterable[str] = (),
        alias: str | None = None,
        mobile: str | None = None,
        online: bool = False,
    ) -> int:
        """Replace every attribute of the device (reviving it if deleted); return its id."""
        old = self.devices.get(registration_id)
        if old is None:
            device_id = len(self.by_id)
            self.by_id.append(registration_id)
        else:
            device_id = old.id
        self.devices[registration_id] = Device(
            registration_id, device_id, platform, vendor, set(tags), alias, mobile, online
        )
        return device_id

    def live_device(self, registration_id: str) -> Device:
        device = self.devices[registration_id]
        assert device.live, f"the model only mutates live devices: {registration_id!r}"
        return device

    def add_tags(self, registration_id: str, tags: Iterable[str]) -> None:
        self.live_device(registration_id).tags |= set(tags)

    def remove_tags(self, registration_id: str, tags: Iterable[str]) -> None:
        self.live_device(registration_id).tags -= set(tags)

    def set_alias(self, registration_id: str, alias: str | None) -> None:
        self.live_device(registration_id).alias = alias

    def set_mobile(self, registration_id: str, mobile: str | None) -> None:
        self.live_device(registration_id).mobile = mobile

    def set_online(self, registration_id: str, online: bool) -> None:
        self.live_device(registration_id).online = online

    def delete(self, registration_id: str) -> bool:
        device = self.devices.get(registration_id)
        if device is None or not device.live:
            return False
        device.live = False
        return True

    def set_tag_members(self, tag: str, ids: Iterable[int]) -> None:
        """The tag is held by exactly the devices ``ids`` (ids with no device are dropped)."""
        members = set(ids)
        for device in self.devices.values():
            if device.id in members:
                device.tags.add(tag)
            else:
                device.tags.discard(tag)

    def add_static_segment(self, name: str, registration_ids: Iterable[str]) -> None:
        """Members are the known devices among ``registration_ids``; unknown ones are ignored."""
        ids = {self.devices[r].id for r in registration_ids if r in self.devices}
        self.segments[name] = StaticSegment(ids)

    def add_bitmap_segment(self, name: str, ids: Iterable[int]) -> None:
        """Members are the given device ids that some device has; the others are ignored
        (as unknown registration ids are), so a device registered later never joins."""
        self.segments[name] = StaticSegment({i for i in ids if 0 <= i < len(self.by_id)})

    def add_dynamic_segment(self, name: str, audience: Audience) -> None:
        self.segments[name] = DynamicSegment(audience)

    def add_abtest(self, name: str, base: Audience, groups: Mapping[str, int]) -> None:
        assert sum(groups.values()) <= 100
        self.abtests[name] = AbTest(base, list(groups.items()))

    # ---- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(1 for d in self.devices.values() if d.live)

    def live(self) -> set[str]:
        return {r for r, d in self.devices.items() if d.live}

    def live_ids(self) -> set[int]:
        return {d.id for d in self.devices.values() if d.live}

    def device(self, registration_id: str) -> dict[str, object] | None:
        device = self.devices.get(registration_id)
        if device is None or not device.live:
            return None
        return device.record()

    def id_of(self, registration_id: str) -> int:
        return self.devices[registration_id].id

    def rids_of(self, ids: Iterable[int]) -> set[str]:
        """Registration ids of the device ids (ids no device was given are dropped)."""
        return {self.by_id[i] for i in ids if 0 <= i < len(self.by_id)}

    def with_tag(self, tag: str) -> set[str]:
        return {r for r in self.live() if tag in self.devices[r].tags}

    def with_alias(self, alias: str) -> set[str]:
        return {r for r in self.live() if self.devices[r].alias == alias}

    def segment_members(self, name: str) -> set[str]:
        if name not in self.segments:
            raise UnknownName(name)
        segment = self.segments[name]
        if isinstance(segment, StaticSegment):
            return self.rids_of(segment.ids) & self.live()
        return self.resolve(segment.audience)

    def abtest_members(self, spec: str) -> set[str]:
        name, _, group = spec.partition(":")
        if name not in self.abtests:
            raise UnknownName(name)
        test = self.abtests[name]
        if group and group not in dict(test.groups):
            raise UnknownName(spec)
        buckets = test.buckets(group or None)
        base = self.resolve(test.base)
        return {r for r in base if bucket(r) in buckets}

    def resolve(self, audience: Audience, platform: Platform = "all") -> set[str]:
        """The registration ids of the live devices the audience reaches on the platforms."""
        result = self.live()
        if audience != "all":
            assert isinstance(audience, Mapping)
            tag = audience.get("tag", [])
            tag_and = audience.get("tag_and", [])
            tag_not = audience.get("tag_not", [])
            alias = audience.get("alias", [])
            rids = audience.get("registration_id", [])
            segment = audience.get("segment", [])
            abtest = audience.get("abtest", [])
            if tag:
                result &= set().union(*(self.with_tag(t) for t in tag))
            for t in tag_and:
                result &= self.with_tag(t)
            if tag_not:
                result -= set().union(*(self.with_tag(t) for t in tag_not))
            if alias:
                result &= set().union(*(self.with_alias(a) for a in alias))
            if rids:
                result &= set(rids)
            if segment:
                result &= set().union(*(self.segment_members(s) for s in segment))
            if abtest:
                result &= set().union(*(self.abtest_members(a) for a in abtest))
        if platform != "all":
            wanted = set(platform)
            result = {r for r in result if self.devices[r].platform in wanted}
        return result & self.live()

    def ids(self, rids: Iterable[str]) -> list[int]:
        """The sorted device ids of registration ids (the order the core returns them in)."""
        return sorted(self.devices[r].id for r in rids)
