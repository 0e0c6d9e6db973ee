"""Property tests: the compiled registry against the plain-sets model in ``model.py``.

Random registries (1..300 devices over every platform and Android vendor, CJK and special-character
tags, shared aliases, deleted devices) and random audiences over the same names, plus names nobody
holds. Every resolution must equal the model's exactly: the same registration ids, the same dense
device ids, batches that partition it, and the same answer after a snapshot round trip.
"""

from __future__ import annotations

import string
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model import PLATFORMS, VENDORS, Audience, Model, Platform, bucket, fnv1a64
from reach import PushError, Registry
from reach._core import (
    CHUNKING_DEFAULT,
    SMALL_THRESHOLD_DEFAULT,
    _set_chunking,
    _set_small_threshold,
)

#: Thresholds of the evaluator's id-list mode to run under: always bitmaps, a tiny one so a
#: run switches mid-plan, and the default (id lists throughout on registries this small).
SMALL_THRESHOLDS = (0, 8, SMALL_THRESHOLD_DEFAULT)
#: Chunk-by-chunk evaluation (``_set_chunking``): the default (never on registries this
#: small), forced for every audience (one key per range), and off.
CHUNKINGS = (CHUNKING_DEFAULT, (1, 0), (0, CHUNKING_DEFAULT[1]))


@pytest.fixture(autouse=True)
def _default_small_threshold() -> Iterator[None]:
    """The switches are process-wide: put the defaults back so that later tests see them."""
    yield
    _set_small_threshold(SMALL_THRESHOLD_DEFAULT)
    _set_chunking(*CHUNKING_DEFAULT)


# ---- names --------------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
SPECIAL = "@!#$&*+=.|"
CJK = "深圳北京上海广州杭州成都女男老用户会员"
TAG_CHARS = ALNUM + "_" + SPECIAL + CJK

BASE_TAGS: tuple[str, ...] = (
    "深圳",
    "北京",
    "女",
    "男",
    "vip",
    "VIP",
    "Vip",
    "tag_1",
    "a@b.c",
    "x!y#z",
    "$&*",
    "+=.|",
    "上海|VIP",
    "深圳@2024",
    "a" * 40,  # exactly 40 UTF-8 bytes
    "深" * 13 + "x",  # 13 * 3 + 1 = 40 bytes
    "1",
    "_",
)
UNKNOWN_TAGS: tuple[str, ...] = ("nobody", "无人", "ghost|tag", "VIP!")
BASE_ALIASES: tuple[str, ...] = ("alice", "bob", "张三", "李四", "u@x.com", "#42", "A")
UNKNOWN_ALIASES: tuple[str, ...] = ("mallory", "王五")
UNKNOWN_RIDS: tuple[str, ...] = ("0unknown0", "ZZZZZZZZZZZZ", "1a0018970a9e4b4c2c6")
MOBILES: tuple[str | None, ...] = (None, None, "13800138000", "+8613912345678", "10086")

#: Tags and aliases drawn from the allowed characters (<= 13 characters, so <= 39 bytes).
name_text = st.text(alphabet=TAG_CHARS, min_size=1, max_size=13)

# Android devices draw a vendor channel (None = the vendor's own connection); others have none.
VENDOR_CHOICES: tuple[str | None, ...] = (*VENDORS, None)

# Hypothesis settings: the profile (tests/conftest.py) sets the example counts; the secondary
# properties run half as many, which keeps the whole file well under a minute.
SETTINGS = settings(deadline=None)
HALF = settings(deadline=None, max_examples=max(10, settings().max_examples // 2))


def base62(n: int) -> str:
    digits = []
    while True:
        n, r = divmod(n, 62)
        digits.append(ALNUM[r])
        if n == 0:
            return "".join(reversed(digits))


def rid_text(n: int) -> str:
    """A registration ID of one of three shapes, so that both of the core's stores are used:
    JPush's 19 lowercase hex digits (packed), hex of any length (packed from 5 to 19 digits,
    spilled otherwise) and base62 (mixed case: spilled)."""
    shape = n % 3
    if shape == 0:
        return f"{n:019x}"[-19:]
    if shape == 1:
        return f"{n:x}"
    return base62(n)


# ---- registries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    registration_id: str
    platform: str
    vendor: str | None
    tags: list[str]
    alias: str | None
    mobile: str | None
    online: bool
    deleted: bool


@dataclass(frozen=True)
class Scenario:
    devices: tuple[DeviceSpec, ...]
    tags: tuple[str, ...]
    aliases: tuple[str, ...]
    # The result size below which the core switches to id lists: drawn so that small
    # registries drive both the bitmap and the id-list paths of the evaluator.
    small_threshold: int = SMALL_THRESHOLD_DEFAULT
    # Chunk-by-chunk evaluation on, forced or off (``_set_chunking``'s arguments).
    chunking: tuple[int, int] = CHUNKING_DEFAULT

    @property
    def rids(self) -> list[str]:
        return [d.registration_id for d in self.devices]


#: (platform, vendor) pairs: Android with every vendor channel or none; other platforms never
#: carry a vendor.
PLATFORM_VENDORS: tuple[tuple[str, str | None], ...] = (
    *(("android", vendor) for vendor in VENDOR_CHOICES),
    *((platform, None) for platform in PLATFORMS if platform != "android"),
)


def device_attrs(tags: Sequence[str], aliases: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments of one ``upsert`` (everything but the registration id).

    Few draws per device (the tags are one bit mask over the pool) keep 300-device registries
    cheap to generate; each draw still shrinks towards a simpler device.
    """

    def make(
        platform_vendor: tuple[str, str | None],
        mask: int,
        alias: str | None,
        mobile: str | None,
        online: bool,
    ) -> dict[str, Any]:
        platform, vendor = platform_vendor
        return {
            "platform": platform,
            "vendor": vendor,
            "tags": [tag for i, tag in enumerate(tags) if mask >> i & 1],
            "alias": alias,
            "mobile": mobile,
            "online": online,
        }

    return st.builds(
        make,
        st.sampled_from(PLATFORM_VENDORS),
        st.integers(0, 2 ** len(tags) - 1),
        st.sampled_from((None, *aliases)),
        st.sampled_from(MOBILES),
        st.booleans(),
    )


#: Random-ish alphanumeric registration ids (one draw each, so large registries stay cheap).
rid_numbers = st.integers(min_value=0, max_value=62**12)


@st.composite
def scenarios(draw: st.DrawFn, max_devices: int = 300) -> Scenario:
    extra_tags = draw(st.lists(name_text, max_size=4))
    tags = tuple(dict.fromkeys(BASE_TAGS + tuple(extra_tags)))
    assume(not set(tags) & set(UNKNOWN_TAGS))
    aliases = tuple(
        dict.fromkeys(BASE_ALIASES[: draw(st.integers(1, len(BASE_ALIASES)))] + tuple(extra_tags))
    )
    assume(not set(aliases) & set(UNKNOWN_ALIASES))
    # One in five devices is deleted after all are registered.
    device = st.tuples(rid_numbers, device_attrs(tags, aliases), st.integers(0, 4))
    # Half the registries are small (quick to shrink), half anywhere up to max_devices.
    n = draw(st.one_of(st.integers(1, 40), st.integers(1, max_devices)))
    seen: set[str] = set(UNKNOWN_RIDS)
    devices = []
    for i in range(n):
        number, attrs, fate = draw(device)
        rid = rid_text(number)
        while rid in seen:
            rid += base62(i)
        seen.add(rid)
        devices.append(DeviceSpec(rid, deleted=fate == 0, **attrs))
    threshold = draw(st.sampled_from(SMALL_THRESHOLDS))
    chunking = draw(st.sampled_from(CHUNKINGS))
    return Scenario(tuple(devices), tags, aliases, threshold, chunking)


def build(sc: Scenario) -> tuple[Registry, Model]:
    """The registry and the model of a scenario; checks upsert's ids and delete's answers."""
    _set_small_threshold(sc.small_threshold)
    _set_chunking(*sc.chunking)
    reg, model = Registry(), Model()
    for d in sc.devices:
        attrs: dict[str, Any] = {
            "vendor": d.vendor,
            "tags": list(d.tags),
            "alias": d.alias,
            "mobile": d.mobile,
            "online": d.online,
        }
        want = model.upsert(d.registration_id, d.platform, **attrs)
        assert reg.upsert(d.registration_id, d.platform, **attrs) == want
    for d in sc.devices:
        if d.deleted:
            assert reg.delete(d.registration_id) is True
            model.delete(d.registration_id)
    assert len(reg) == len(model)
    return reg, model


# ---- audiences ----------------------------------------------------------------------------------


def audiences(
    tags: Sequence[str],
    aliases: Sequence[str],
    rids: Sequence[str],
    segments: Sequence[str] = (),
    abtests: Sequence[str] = (),
) -> st.SearchStrategy[Audience]:
    """Valid JPush audiences over the names (plus names nobody holds)."""
    tag_pool = st.sampled_from((*tags, *UNKNOWN_TAGS))
    alias_pool = st.sampled_from((*aliases, *UNKNOWN_ALIASES))
    rid_pool = st.sampled_from((*rids, *UNKNOWN_RIDS))
    kinds: dict[str, st.SearchStrategy[list[str]]] = {
        "tag": st.lists(tag_pool, min_size=1, max_size=4, unique=True),
        "tag_and": st.lists(tag_pool, min_size=1, max_size=3, unique=True),
        "tag_not": st.lists(tag_pool, min_size=1, max_size=3, unique=True),
        "alias": st.lists(alias_pool, min_size=1, max_size=4, unique=True),
        "registration_id": st.lists(rid_pool, min_size=1, max_size=20, unique=True),
    }
    if segments:
        kinds["segment"] = st.lists(st.sampled_from(segments), min_size=1, max_size=1)
    if abtests:
        kinds["abtest"] = st.lists(st.sampled_from(abtests), min_size=1, max_size=1)

    @st.composite
    def typed(draw: st.DrawFn) -> dict[str, list[str]]:
        chosen = draw(st.lists(st.sampled_from(sorted(kinds)), min_size=1, max_size=4, unique=True))
        audience = {kind: draw(kinds[kind]) for kind in chosen}
        # An empty array means the type is absent.
        absent = [kind for kind in kinds if kind not in audience]
        if absent and draw(st.integers(0, 9)) == 0:
            audience[draw(st.sampled_from(absent))] = []
        return audience

    return st.one_of(st.just("all"), typed())


platform_filters: st.SearchStrategy[Platform] = st.one_of(
    st.just("all"), st.lists(st.sampled_from(PLATFORMS), min_size=1, max_size=6, unique=True)
)


def scenario_audiences(sc: Scenario, **named: Sequence[str]) -> st.SearchStrategy[Audience]:
    return audiences(sc.tags, sc.aliases, sc.rids, **named)


# ---- checks -------------------------------------------------------------------------------------


def check_resolution(reg: Registry, model: Model, audience: Audience, platform: Platform) -> Any:
    """The core's resolution equals the model's: ids, registration ids, length and count."""
    want = model.resolve(audience, platform)
    res = reg.resolve_audience(audience, platform=platform)
    ids = res.ids()
    assert isinstance(ids, np.ndarray)
    assert ids.dtype == np.uint32
    assert ids.tolist() == model.ids(want), (audience, platform)
    assert res.registration_ids() == [model.by_id[i] for i in ids.tolist()]
    assert set(res.registration_ids()) == want
    assert len(res) == len(want)
    assert reg.count_audience(audience, platform=platform) == len(want)
    return res


def check_batches(model: Model, res: Any, max_size: int, apns_production: bool) -> None:
    """Batches partition the resolution; each holds one platform (and Android vendor)."""
    seen: list[int] = []
    for batch in res.batches(max_size=max_size, apns_production=apns_production):
        ids = batch.ids
        assert ids.dtype == np.uint32
        assert 1 <= len(batch) <= max_size
        assert len(batch) == len(ids)
        rids = batch.registration_ids()
        assert rids == [model.by_id[i] for i in ids.tolist()]
        for rid in rids:
            device = model.devices[rid]
            assert device.platform == batch.platform
            assert batch.vendor == (device.vendor if device.platform == "android" else None)
        if batch.platform == "ios":
            assert batch.apns_production is apns_production
        else:
            assert batch.apns_production is None
        seen.extend(ids.tolist())
    assert len(seen) == len(set(seen)), "batches overlap"
    assert sorted(seen) == res.ids().tolist(), "batches do not cover the resolution"


def draw_queries(
    data: st.DataObject, strategy: st.SearchStrategy[Audience], n: int = 4
) -> list[tuple[Audience, Platform]]:
    return [(data.draw(strategy), data.draw(platform_filters)) for _ in range(n)]


# ---- the model itself ---------------------------------------------------------------------------


def test_fnv1a64_reference_vectors() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8
    assert bucket("foobar") == 0x85944171F73967E8 % 100


# ---- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(sc=scenarios(), data=st.data())
def test_resolve_matches_model(sc: Scenario, data: st.DataObject) -> None:
    reg, model = build(sc)
    for audience, platform in draw_queries(data, scenario_audiences(sc), n=6):
        check_resolution(reg, model, audience, platform)


@HALF
@given(sc=scenarios())
def test_device_records_and_len(sc: Scenario) -> None:
    reg, model = build(sc)
    assert len(reg) == len(model)
    for rid in sc.rids:
        assert reg.device(rid) == model.device(rid)
    for rid in UNKNOWN_RIDS:
        assert reg.device(rid) is None
    # Deleting again, or deleting a stranger, reports that nothing live was deleted.
    for d in sc.devices:
        if d.deleted:
            assert reg.delete(d.registration_id) is False
    assert reg.delete(UNKNOWN_RIDS[0]) is False
    assert len(reg) == len(model)


@HALF
@given(sc=scenarios())
def test_all_and_platforms(sc: Scenario) -> None:
    reg, model = build(sc)
    assert set(reg.resolve_audience("all").registration_ids()) == model.live()
    for platform in PLATFORMS:
        check_resolution(reg, model, "all", [platform])


@HALF
@given(
    sc=scenarios(),
    data=st.data(),
    max_size=st.one_of(st.integers(1, 40), st.just(1000)),
    apns_production=st.booleans(),
)
def test_batches_partition(
    sc: Scenario, data: st.DataObject, max_size: int, apns_production: bool
) -> None:
    reg, model = build(sc)
    for audience, platform in draw_queries(data, scenario_audiences(sc), n=3):
        res = check_resolution(reg, model, audience, platform)
        check_batches(model, res, max_size, apns_production)


@HALF
@given(sc=scenarios(), data=st.data())
def test_explain_ends_at_the_result(sc: Scenario, data: st.DataObject) -> None:
    reg, model = build(sc)
    for audience, platform in draw_queries(data, scenario_audiences(sc), n=3):
        res = check_resolution(reg, model, audience, platform)
        steps = res.explain()
        assert steps, "explain() returned no steps"
        for step in steps:
            assert "step" in step
            assert isinstance(step["result"], int)
            assert 0 <= step["result"] <= len(model)
        assert steps[-1]["result"] == len(res)


@HALF
@given(sc=scenarios(), data=st.data())
def test_to_bytes_round_trips_through_pyroaring(sc: Scenario, data: st.DataObject) -> None:
    pyroaring = pytest.importorskip("pyroaring")
    reg, model = build(sc)
    for audience, platform in draw_queries(data, scenario_audiences(sc), n=3):
        res = check_resolution(reg, model, audience, platform)
        bitmap = pyroaring.BitMap.deserialize(res.to_bytes())
        assert list(bitmap) == model.ids(model.resolve(audience, platform))


@HALF
@given(sc=scenarios(), data=st.data())
def test_push_object_resolves_or_raises_1011(sc: Scenario, data: st.DataObject) -> None:
    reg, model = build(sc)
    for audience, platform in draw_queries(data, scenario_audiences(sc), n=3):
        push = {"platform": platform, "audience": audience, "notification": {"alert": "hi"}}
        want = model.resolve(audience, platform)
        if want:
            assert reg.resolve(push).ids().tolist() == model.ids(want)
        else:
            with pytest.raises(PushError) as err:
                reg.resolve(push)
            assert err.value.code == 1011


@HALF
@given(sc=scenarios(), data=st.data())
def test_tag_members(sc: Scenario, data: st.DataObject) -> None:
    pyroaring = pytest.importorskip("pyroaring")
    reg, model = build(sc)
    live = pyroaring.BitMap(model.live_ids())
    for tag in (*sc.tags, *UNKNOWN_TAGS):
        members = pyroaring.BitMap.deserialize(reg.tag_members(tag)) & live
        assert list(members) == model.ids(model.with_tag(tag)), tag

    # set_tag_members replaces the membership of a tag (a known one or a new one).
    n_ids = len(model.by_id)
    tag = data.draw(st.sampled_from((*sc.tags, *UNKNOWN_TAGS)))
    ids = data.draw(st.sets(st.integers(0, n_ids - 1), max_size=n_ids))
    as_bytes = data.draw(st.booleans())
    bitmap = pyroaring.BitMap(ids)
    reg.set_tag_members(tag, bitmap.serialize() if as_bytes else bitmap)
    model.set_tag_members(tag, ids)
    members = pyroaring.BitMap.deserialize(reg.tag_members(tag)) & live
    assert list(members) == model.ids(model.with_tag(tag))
    check_resolution(reg, model, {"tag": [tag]}, "all")
    check_resolution(reg, model, {"tag_not": [tag]}, "all")
    for audience, platform in draw_queries(data, scenario_audiences(sc), n=2):
        check_resolution(reg, model, audience, platform)
    for rid in sc.rids:
        assert reg.device(rid) == model.device(rid), "device() disagrees with set_tag_members"


def add_segments(
    reg: Registry,
    model: Model,
    sc: Scenario,
    data: st.DataObject,
    with_bitmaps: bool,
    spill: bool = False,
) -> list[str]:
    """A static, a dynamic and (with pyroaring) two bitmap segments; returns their names.

    ``spill`` lets the bitmaps name ids past the last device's (no device has them).
    """
    names = []
    members = data.draw(st.lists(st.sampled_from((*sc.rids, *UNKNOWN_RIDS)), max_size=30))
    reg.add_segment("static", registration_ids=members)
    model.add_static_segment("static", members)
    names.append("static")

    audience = data.draw(scenario_audiences(sc))
    reg.add_segment("dynamic", audience=audience)
    model.add_dynamic_segment("dynamic", audience)
    names.append("dynamic")

    if with_bitmaps:
        import pyroaring

        n_ids = len(model.by_id)
        top = n_ids + 2 if spill else n_ids - 1
        for name, as_bytes in (("bitmap", False), ("bitmap_bytes", True)):
            ids = data.draw(st.sets(st.integers(0, top), max_size=n_ids))
            bitmap = pyroaring.BitMap(ids)
            reg.add_segment(name, bitmap=bitmap.serialize() if as_bytes else bitmap)
            model.add_bitmap_segment(name, ids)
            names.append(name)
    return names


def has_pyroaring() -> bool:
    try:
        import pyroaring  # noqa: F401
    except ImportError:
        return False
    return True


@SETTINGS
@given(sc=scenarios(), data=st.data())
def test_segments(sc: Scenario, data: st.DataObject) -> None:
    reg, model = build(sc)
    names = add_segments(reg, model, sc, data, with_bitmaps=has_pyroaring(), spill=True)
    for name in names:
        check_resolution(reg, model, {"segment": [name]}, "all")
    for audience, platform in draw_queries(data, scenario_audiences(sc, segments=names)):
        check_resolution(reg, model, audience, platform)


#: A/B groups: 1..4 named groups whose percentages sum to at most 100.
@st.composite
def ab_groups(draw: st.DrawFn) -> dict[str, int]:
    names = draw(st.lists(st.text(ALNUM, min_size=1, max_size=4), min_size=1, max_size=4))
    groups: dict[str, int] = {}
    left = 100
    for name in dict.fromkeys(names):
        if left == 0:
            break
        share = draw(st.integers(1, left))
        groups[name] = share
        left -= share
    return groups


def add_abtests(reg: Registry, model: Model, sc: Scenario, data: st.DataObject) -> list[str]:
    """Two A/B tests (one over everybody, one over a random audience); returns the specs."""
    specs = []
    for name in ("t", "u"):
        base = "all" if name == "t" else data.draw(scenario_audiences(sc))
        groups = data.draw(ab_groups())
        reg.add_abtest(name, base, groups=groups)
        model.add_abtest(name, base, groups)
        specs += [name, *(f"{name}:{group}" for group in groups)]
    return specs


@SETTINGS
@given(sc=scenarios(), data=st.data())
def test_abtests(sc: Scenario, data: st.DataObject) -> None:
    reg, model = build(sc)
    specs = add_abtests(reg, model, sc, data)
    for spec in specs:
        check_resolution(reg, model, {"abtest": [spec]}, "all")
    for audience, platform in draw_queries(data, scenario_audiences(sc, abtests=specs)):
        check_resolution(reg, model, audience, platform)


@HALF
@given(sc=scenarios(), data=st.data())
def test_snapshot_round_trip(sc: Scenario, data: st.DataObject) -> None:
    reg, model = build(sc)
    segments = add_segments(reg, model, sc, data, with_bitmaps=has_pyroaring())
    abtests = add_abtests(reg, model, sc, data)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "registry.snapshot")
        reg.save(path)
        loaded = Registry.load(path)
    assert len(loaded) == len(reg) == len(model)
    for rid in (*sc.rids, *UNKNOWN_RIDS):
        assert loaded.device(rid) == model.device(rid)
    strategy = scenario_audiences(sc, segments=segments, abtests=abtests)
    for audience, platform in draw_queries(data, strategy):
        before = check_resolution(reg, model, audience, platform)
        after = check_resolution(loaded, model, audience, platform)
        assert after.to_bytes() == before.to_bytes()
    # Interning survives: a deleted device revives with its old id, a new one gets the next id.
    fresh = "fresh0" + base62(len(model.by_id))
    assert loaded.upsert(fresh, "ios") == model.upsert(fresh, "ios")
    for d in sc.devices:
        if d.deleted:
            assert loaded.upsert(d.registration_id, "web") == model.upsert(d.registration_id, "web")
            break
    check_resolution(loaded, model, "all", "all")


# ---- unknown names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "audience",
    [
        {"segment": ["nope"]},
        {"abtest": ["nope"]},
        {"abtest": ["nope:a"]},
        {"tag": ["vip"], "segment": ["nope"]},
        {"abtest": ["t:nogroup"]},
    ],
)
def test_unknown_segment_or_abtest_is_1003(audience: Mapping[str, list[str]]) -> None:
    reg = Registry()
    reg.upsert("rid1", "android", tags=["vip"])
    reg.add_segment("seg", registration_ids=["rid1"])
    reg.add_abtest("t", "all", groups={"a": 50})
    with pytest.raises(PushError) as err:
        reg.resolve_audience(audience)
    assert err.value.code == 1003
    with pytest.raises(PushError) as err:
        reg.count_audience(audience)
    assert err.value.code == 1003


def test_abtest_buckets_worked_example() -> None:
    """Buckets by FNV-1a 64 % 100; the first group takes [0, 30), the second [30, 80)."""
    reg, model = Registry(), Model()
    rids = [f"rid{i}" for i in range(400)]
    for rid in rids:
        reg.upsert(rid, "android")
        model.upsert(rid, "android")
    reg.add_abtest("t", "all", groups={"a": 30, "b": 50})
    want_a = {r for r in rids if bucket(r) < 30}
    want_b = {r for r in rids if 30 <= bucket(r) < 80}
    assert set(reg.resolve_audience({"abtest": ["t:a"]}).registration_ids()) == want_a
    assert set(reg.resolve_audience({"abtest": ["t:b"]}).registration_ids()) == want_b
    assert set(reg.resolve_audience({"abtest": ["t"]}).registration_ids()) == want_a | want_b


# ---- device ids no device has -------------------------------------------------------------------


def test_bitmaps_ignore_ids_no_device_has(tmp_path: Path) -> None:
    """A segment bitmap or tag bitmap naming ids past the last device's: those ids are ignored,
    a device registered later does not inherit them, and the snapshot still loads."""
    pyroaring = pytest.importorskip("pyroaring")
    reg, model = Registry(), Model()
    for rid in ("a", "b"):
        assert reg.upsert(rid, "android") == model.upsert(rid, "android")
    reg.add_segment("s", bitmap=pyroaring.BitMap([1, 2, 7]))
    model.add_bitmap_segment("s", [1, 2, 7])
    reg.set_tag_members("t", pyroaring.BitMap([0, 5]).serialize())
    model.set_tag_members("t", [0, 5])
    assert list(pyroaring.BitMap.deserialize(reg.tag_members("t"))) == [0]
    for rid in ("c", "d"):  # ids 2 and 3
        assert reg.upsert(rid, "ios") == model.upsert(rid, "ios")
    for audience in ({"segment": ["s"]}, {"tag": ["t"]}, {"tag_not": ["t"]}):
        check_resolution(reg, model, audience, "all")
    path = tmp_path / "registry.snapshot"
    reg.save(str(path))
    loaded = Registry.load(str(path))
    for audience in ({"segment": ["s"]}, {"tag": ["t"]}, {"tag_not": ["t"]}):
        check_resolution(loaded, model, audience, "all")


@HALF
@given(sc=scenarios(), data=st.data())
def test_online_and_mobile_restrictions(sc: Scenario, data: st.DataObject) -> None:
    """``online()`` and ``with_mobile()`` keep the devices of the model that are online / have a
    mobile number; ``Registry.registration_ids`` maps ids back in the order given."""
    reg, model = build(sc)
    for audience, platform in draw_queries(data, scenario_audiences(sc), n=3):
        res = check_resolution(reg, model, audience, platform)
        want = model.resolve(audience, platform)
        online = {r for r in want if model.devices[r].online}
        mobile = {r for r in want if model.devices[r].mobile is not None}
        assert set(res.online().registration_ids()) == online
        assert set(res.with_mobile().registration_ids()) == mobile
        ids = res.ids()[::-1]
        assert reg.registration_ids(ids) == [model.by_id[i] for i in ids.tolist()]
    with pytest.raises(ValueError, match="no device has id"):
        reg.registration_ids(np.array([len(model.by_id) + 5], dtype=np.uint32))
