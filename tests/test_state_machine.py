"""A stateful test: random interleavings of registry mutations and resolves against the model.

Upserts (new devices, replacements, revivals of deleted ones), tag and alias edits, online and
mobile flags, deletions, segments (static, dynamic, bitmap) and A/B tests, with every resolve
checked against ``model.Model`` and a snapshot round trip that carries on with the loaded registry.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from model import Model
from reach import Registry
from reach._core import (
    CHUNKING_DEFAULT,
    SMALL_THRESHOLD_DEFAULT,
    _set_chunking,
    _set_small_threshold,
)
from test_properties import (
    BASE_ALIASES,
    BASE_TAGS,
    CHUNKINGS,
    MOBILES,
    SMALL_THRESHOLDS,
    UNKNOWN_RIDS,
    ab_groups,
    audiences,
    base62,
    check_batches,
    check_resolution,
    device_attrs,
    platform_filters,
    rid_numbers,
)

TAGS = BASE_TAGS[:10]  # a small pool, so that tags are shared and edits collide
ALIASES = BASE_ALIASES[:4]

# Small spaces, so that some upserts repeat; base62 IDs are spilled, short and JPush-shaped hex
# ones packed (see rust/rid.rs).
new_rids = st.one_of(
    rid_numbers.map(lambda n: "r" + base62(n % 62**3)),
    rid_numbers.map(lambda n: f"{n % 4096:05x}"),
    rid_numbers.map(lambda n: f"{n % 4096:019x}"),
)
attrs = device_attrs(TAGS, ALIASES)
tag_lists = st.lists(st.sampled_from(TAGS), min_size=1, max_size=3, unique=True)

try:
    import pyroaring

    HAVE_PYROARING = True
except ImportError:  # pragma: no cover - pyroaring is a dev dependency
    HAVE_PYROARING = False


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reg = Registry()
        self.model = Model()
        self.n_segments = 0
        self.n_abtests = 0
        self.tmp = tempfile.mkdtemp(prefix="reach-sm-")

    @initialize(threshold=st.sampled_from(SMALL_THRESHOLDS), chunking=st.sampled_from(CHUNKINGS))
    def choose_evaluator_path(self, threshold: int, chunking: tuple[int, int]) -> None:
        _set_small_threshold(threshold)
        _set_chunking(*chunking)

    def teardown(self) -> None:
        _set_small_threshold(SMALL_THRESHOLD_DEFAULT)
        _set_chunking(*CHUNKING_DEFAULT)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------------------------

    def live(self) -> list[str]:
        return sorted(self.model.live())

    def deleted(self) -> list[str]:
        return sorted(set(self.model.devices) - self.model.live())

    def has_live(self) -> bool:
        return bool(self.model.live())

    def has_deleted(self) -> bool:
        return len(self.model.devices) > len(self.model)

    def segment_names(self) -> list[str]:
        return sorted(self.model.segments)

    def abtest_specs(self) -> list[str]:
        specs = []
        for name, test in sorted(self.model.abtests.items()):
            specs += [name, *(f"{name}:{group}" for group, _ in test.groups)]
        return specs

    def audiences(self, nested: bool = True) -> st.SearchStrategy[Any]:
        """Audiences over the current names; ``nested=False`` leaves out segments and A/B tests."""
        return audiences(
            TAGS,
            ALIASES,
            sorted(self.model.devices),
            segments=self.segment_names() if nested else (),
            abtests=self.abtest_specs() if nested else (),
        )

    def upsert(self, rid: str, a: dict[str, Any]) -> None:
        assert self.reg.upsert(rid, **a) == self.model.upsert(rid, **a)
        assert self.reg.device(rid) == self.model.device(rid)

    # ---- devices ---------------------------------------------------------------------------

    @initialize(devices=st.lists(st.tuples(new_rids, attrs), max_size=25))
    def initial_devices(self, devices: list[tuple[str, dict[str, Any]]]) -> None:
        for rid, a in devices:
            self.upsert(rid, a)

    @rule(devices=st.lists(st.tuples(new_rids, attrs), min_size=1, max_size=4))
    def upsert_new(self, devices: list[tuple[str, dict[str, Any]]]) -> None:
        # A name already used (live or deleted) makes this a replacement or a revival.
        for rid, a in devices:
            self.upsert(rid, a)

    @precondition(has_live)
    @rule(data=st.data(), a=attrs)
    def replace(self, data: st.DataObject, a: dict[str, Any]) -> None:
        self.upsert(data.draw(st.sampled_from(self.live())), a)

    @precondition(has_deleted)
    @rule(data=st.data(), a=attrs)
    def revive(self, data: st.DataObject, a: dict[str, Any]) -> None:
        self.upsert(data.draw(st.sampled_from(self.deleted())), a)

    @precondition(has_live)
    @rule(data=st.data(), tags=tag_lists)
    def add_tags(self, data: st.DataObject, tags: list[str]) -> None:
        rid = data.draw(st.sampled_from(self.live()))
        self.reg.add_tags(rid, tags)
        self.model.add_tags(rid, tags)

    @precondition(has_live)
    @rule(data=st.data(), tags=tag_lists)
    def remove_tags(self, data: st.DataObject, tags: list[str]) -> None:
        rid = data.draw(st.sampled_from(self.live()))
        held = sorted(self.model.devices[rid].tags)
        take_held: bool = bool(held) and data.draw(st.booleans())
        if take_held:  # remove tags the device holds (else maybe ones it does not)
            tags = data.draw(st.lists(st.sampled_from(held), min_size=1, unique=True))
        self.reg.remove_tags(rid, tags)
        self.model.remove_tags(rid, tags)

    @precondition(has_live)
    @rule(data=st.data(), alias=st.sampled_from((None, *ALIASES)))
    def set_alias(self, data: st.DataObject, alias: str | None) -> None:
        rid = data.draw(st.sampled_from(self.live()))
        self.reg.set_alias(rid, alias)
        self.model.set_alias(rid, alias)

    @precondition(has_live)
    @rule(data=st.data(), online=st.booleans())
    def set_online(self, data: st.DataObject, online: bool) -> None:
        rid = data.draw(st.sampled_from(self.live()))
        self.reg.set_online(rid, online)
        self.model.set_online(rid, online)

    @precondition(has_live)
    @rule(data=st.data(), mobile=st.sampled_from(MOBILES))
    def set_mobile(self, data: st.DataObject, mobile: str | None) -> None:
        rid = data.draw(st.sampled_from(self.live()))
        self.reg.set_mobile(rid, mobile)
        self.model.set_mobile(rid, mobile)

    @precondition(has_live)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(self.live()))
        assert self.reg.delete(rid) is True
        self.model.delete(rid)
        assert self.reg.device(rid) is None

    @rule(data=st.data())
    def delete_again_or_unknown(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from((*self.deleted(), *UNKNOWN_RIDS)))
        assert self.reg.delete(rid) is False

    # ---- segments and A/B tests --------------------------------------------------------------

    def new_segment_name(self) -> str:
        self.n_segments += 1
        return f"seg{self.n_segments}"

    @rule(data=st.data())
    def add_static_segment(self, data: st.DataObject) -> None:
        # Members: live devices and strangers (unknown ids are ignored).
        pool = (*self.live(), *UNKNOWN_RIDS)
        members = data.draw(st.lists(st.sampled_from(pool), max_size=10))
        name = self.new_segment_name()
        self.reg.add_segment(name, registration_ids=members)
        self.model.add_static_segment(name, members)

    @rule(data=st.data())
    def add_dynamic_segment(self, data: st.DataObject) -> None:
        audience = data.draw(self.audiences(nested=False))
        name = self.new_segment_name()
        self.reg.add_segment(name, audience=audience)
        self.model.add_dynamic_segment(name, audience)

    @precondition(lambda self: HAVE_PYROARING and self.model.by_id)
    @rule(data=st.data(), as_bytes=st.booleans())
    def add_bitmap_segment(self, data: st.DataObject, as_bytes: bool) -> None:
        n_ids = len(self.model.by_id)
        ids = data.draw(st.sets(st.integers(0, n_ids - 1), max_size=n_ids))
        bitmap = pyroaring.BitMap(ids)
        name = self.new_segment_name()
        self.reg.add_segment(name, bitmap=bitmap.serialize() if as_bytes else bitmap)
        self.model.add_bitmap_segment(name, ids)

    @precondition(lambda self: self.n_abtests < 3)
    @rule(data=st.data(), groups=ab_groups())
    def add_abtest(self, data: st.DataObject, groups: dict[str, int]) -> None:
        base = data.draw(self.audiences(nested=False))
        self.n_abtests += 1
        name = f"ab{self.n_abtests}"
        self.reg.add_abtest(name, base, groups=groups)
        self.model.add_abtest(name, base, groups)

    # ---- queries ---------------------------------------------------------------------------

    @rule(data=st.data())
    def resolve(self, data: st.DataObject) -> None:
        audience = data.draw(self.audiences())
        platform = data.draw(platform_filters)
        res = check_resolution(self.reg, self.model, audience, platform)
        if data.draw(st.booleans()):
            check_batches(self.model, res, data.draw(st.integers(1, 8)), data.draw(st.booleans()))
        steps = res.explain()
        assert steps[-1]["result"] == len(res)

    @rule()
    def snapshot_round_trip(self) -> None:
        path = str(Path(self.tmp) / "registry.snapshot")
        self.reg.save(path)
        loaded = Registry.load(path)
        for rid in self.model.devices:
            assert loaded.device(rid) == self.reg.device(rid)
        assert (
            loaded.resolve_audience("all").to_bytes() == self.reg.resolve_audience("all").to_bytes()
        )
        self.reg = loaded  # carry on mutating the loaded registry

    @invariant()
    def devices_agree(self) -> None:
        assert len(self.reg) == len(self.model)
        for rid in self.model.devices:
            assert self.reg.device(rid) == self.model.device(rid), rid


RegistryMachine.TestCase.settings = settings(
    settings(),  # the loaded profile (tests/conftest.py)
    stateful_step_count=50,
    deadline=None,
)
TestRegistryMachine = RegistryMachine.TestCase
