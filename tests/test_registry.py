"""The registry's Python API: bulk loads, refusals that change nothing, snapshots, interop,
batches, explain, and mutations racing with resolutions on other threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from reach import PLATFORMS, VENDORS, LoadError, PushError, Registry, SnapshotError

PUSH = {"platform": "all", "notification": {"alert": "hi"}}


def small() -> Registry:
    reg = Registry()
    reg.upsert("a1", "android", vendor="hms", tags=["深圳", "vip"], alias="u1", online=True)
    reg.upsert("a2", "android", tags=["深圳"], alias="u1")
    reg.upsert("i1", "ios", tags=["北京", "vip"], alias="u2", mobile="13800000000")
    reg.upsert("w1", "winphone", tags=["北京"])
    return reg


def snapshot_of(reg: Registry) -> dict[str, object]:
    rids = ["a1", "a2", "i1", "w1", "new"]
    return {
        "devices": [reg.device(r) for r in rids],
        "len": len(reg),
        "tags": sorted(reg.tags()),
    }


def test_resolve_push_object_and_batches() -> None:
    reg = small()
    res = reg.resolve({**PUSH, "audience": {"tag": ["深圳", "北京"], "tag_not": ["vip"]}})
    assert res.registration_ids() == ["a2", "w1"]
    assert res.ids().dtype == np.uint32
    assert res.ids().tolist() == [1, 3]
    batches = res.batches(max_size=1)
    assert [(b.platform, b.vendor, len(b)) for b in batches] == [
        ("android", None, 1),
        ("winphone", None, 1),
    ]
    res = reg.resolve({**PUSH, "audience": "all", "options": {"apns_production": False}})
    by = {(b.platform, b.vendor): b for b in res.batches()}
    assert by[("ios", None)].apns_production is False  # the push's option
    assert [
        b.apns_production for b in res.batches(apns_production=True) if b.platform == "ios"
    ] == [True]
    default = reg.resolve({**PUSH, "audience": "all"}).batches()
    assert [b.apns_production for b in default if b.platform == "ios"] == [True]
    assert by[("android", "hms")].registration_ids() == ["a1"]
    assert by[("android", None)].apns_production is None


def test_no_target_is_1011_and_unknown_segment_1003() -> None:
    reg = small()
    with pytest.raises(PushError) as e:
        reg.resolve({**PUSH, "audience": {"alias": ["nobody"]}})
    assert (e.value.code, e.value.http_status) == (1011, 400)
    with pytest.raises(PushError) as e:
        reg.resolve({**PUSH, "audience": {"segment": ["nope"]}})
    assert e.value.code == 1003
    with pytest.raises(PushError) as e:
        reg.resolve({**PUSH, "audience": {"abtest": ["nope"]}})
    assert e.value.code == 1003


def test_explain_counts_every_step() -> None:
    reg = small()
    res = reg.resolve_audience({"tag": ["深圳", "北京"], "tag_and": ["vip"]}, ["android", "ios"])
    steps = res.explain()
    assert [s["step"] for s in steps] == ["start", "and_any", "and_any"]
    assert steps[0]["operand"] == 'tag_and "vip"'
    assert steps[0]["result"] == 2
    assert steps[-1]["result"] == len(res) == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.upsert("new", "symbian"),
        lambda r: r.upsert("new", "ios", vendor="hms"),
        lambda r: r.upsert("new", "android", vendor="nokia"),
        lambda r: r.upsert("", "android"),
        lambda r: r.upsert("new", "android", tags=["ok", ""]),
        lambda r: r.upsert("new", "android", alias="x" * 300),
        lambda r: r.add_tags("missing", ["t"]),
        lambda r: r.add_tags("a1", ["t", ""]),
        lambda r: r.set_alias("missing", "u"),
        lambda r: r.set_online("missing", True),
        lambda r: r.set_mobile("missing", "1"),
        lambda r: r.add_abtest("t", "all", {"a": 60, "b": 50}),
        lambda r: r.add_abtest("t", "all", {}),
        lambda r: r.add_segment("s", audience={"segment": ["x"]}),
        lambda r: r.add_segment("s", bitmap=b"not a bitmap"),
        lambda r: r.set_tag_members("t", b"\x00\x01"),
    ],
)
def test_refusals_raise_push_error_and_change_nothing(call: object) -> None:
    reg = small()
    before = snapshot_of(reg)
    with pytest.raises(PushError) as e:
        call(reg)  # type: ignore[operator]
    assert e.value.code == 1003
    assert snapshot_of(reg) == before


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def test_jsonl_load_and_refusal(tmp_path: Path) -> None:
    reg = Registry()
    rows: list[dict[str, object]] = [
        {"registration_id": "r1", "platform": "android", "vendor": "oppo", "tags": ["深圳"]},
        {"registration_id": "r2", "platform": "ios", "alias": "u", "online": True},
    ]
    assert reg.load_jsonl(write_jsonl(tmp_path / "d.jsonl", rows)) == 2
    assert reg.device("r1") == {
        "registration_id": "r1",
        "platform": "android",
        "vendor": "oppo",
        "tags": ["深圳"],
        "alias": None,
        "mobile": None,
        "online": False,
    }
    bad = [*rows, {"registration_id": "r3", "platform": "ios", "tags": "not-a-list"}]
    with pytest.raises(LoadError, match="line 3"):
        reg.load_jsonl(write_jsonl(tmp_path / "bad.jsonl", bad))
    assert reg.device("r3") is None
    assert len(reg) == 2
    with pytest.raises(OSError):
        reg.load_jsonl(tmp_path / "missing.jsonl")


def test_numpy_load_matches_upserts() -> None:
    rids = [f"r{i}" for i in range(6)]
    rid_bytes = np.frombuffer("".join(rids).encode(), dtype=np.uint8)
    rid_offsets = np.cumsum([0, *(len(r) for r in rids)]).astype(np.uint64)
    platform = np.array([0, 0, 1, 2, 5, 0], dtype=np.uint8)
    vendor = np.array([1, 0, 0, 0, 0, 7], dtype=np.uint8)
    tag_indptr = np.array([0, 2, 2, 3, 3, 3, 4], dtype=np.uint64)
    tag_indices = np.array([0, 1, 1, 0], dtype=np.uint32)
    aliases = ["u1", "", "u1", "", "u2", ""]
    alias_bytes = np.frombuffer("".join(aliases).encode(), dtype=np.uint8)
    alias_offsets = np.cumsum([0, *(len(a) for a in aliases)]).astype(np.uint64)
    online = np.array([True, False, False, True, False, False])
    reg = Registry()
    n = reg.load_arrays(
        rid_bytes=rid_bytes,
        rid_offsets=rid_offsets,
        platform=platform,
        vendor=vendor,
        tag_names=["x", "深圳"],
        tag_indptr=tag_indptr,
        tag_indices=tag_indices,
        alias_bytes=alias_bytes,
        alias_offsets=alias_offsets,
        online=online,
    )
    assert n == 6
    want = Registry()
    tags = [["x", "深圳"], [], ["深圳"], [], [], ["x"]]
    for i, r in enumerate(rids):
        v = VENDORS[vendor[i] - 1] if vendor[i] else None
        want.upsert(r, PLATFORMS[platform[i]], v, tags[i], aliases[i] or None, None, online[i])
    for r in rids:
        assert reg.device(r) == want.device(r)
    bad_platform = np.array([0, 0, 1, 2, 9, 0], dtype=np.uint8)
    tags_before = sorted(reg.tags())
    with pytest.raises(LoadError):
        reg.load_arrays(rid_bytes=rid_bytes, rid_offsets=rid_offsets, platform=bad_platform)
    with pytest.raises(LoadError):
        reg.load_arrays(
            rid_bytes=rid_bytes,
            rid_offsets=rid_offsets,
            platform=platform,
            tag_names=["fresh", ""],
            tag_indptr=tag_indptr,
            tag_indices=tag_indices,
        )
    assert len(reg) == 6
    assert sorted(reg.tags()) == tags_before
    assert reg.resolve_audience({"tag": ["fresh"]}).registration_ids() == []


def test_large_results_export_the_same_ids_as_the_model() -> None:
    # Over 1M ids the export is split over the cores (rust/export.rs): every id, in order, once.
    n = 1_300_000
    rng = np.random.default_rng(7)
    rid_bytes = np.frombuffer("".join(f"d{i:07d}" for i in range(n)).encode(), dtype=np.uint8)
    platform = rng.choice(np.array([0, 1, 2], dtype=np.uint8), size=n, p=[0.7, 0.28, 0.02])
    # Tag "t": a dense stretch (bitset and run containers) and random members (arrays).
    tagged = rng.random(n) < 0.02
    tagged[200_000:1_250_000] = True
    tag_indptr = np.concatenate([[0], np.cumsum(tagged)]).astype(np.uint64)
    reg = Registry()
    reg.load_arrays(
        rid_bytes=rid_bytes,
        rid_offsets=np.arange(n + 1, dtype=np.uint64) * 8,
        platform=platform,
        tag_names=["t"],
        tag_indptr=tag_indptr,
        tag_indices=np.zeros(int(tagged.sum()), dtype=np.uint32),
    )
    gone = [3, 640_000, 1_249_999]
    for d in gone:
        assert reg.delete(f"d{d:07d}")
    live = np.ones(n, dtype=bool)
    live[gone] = False
    cases = [
        ({"tag": ["t"]}, "all", tagged & live),
        ("all", ["android", "ios"], (platform != 2) & live),
        ({"tag_not": ["t"]}, "all", ~tagged & live),
    ]
    for audience, plat, want in cases:
        got = reg.resolve_audience(audience, platform=plat).ids()
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, np.flatnonzero(want).astype(np.uint32))


def test_snapshot_round_trip_and_corruption(tmp_path: Path) -> None:
    reg = small()
    reg.delete("w1")
    reg.add_segment("s", registration_ids=["a1", "i1"])
    reg.add_segment("d", audience={"tag": ["北京"]})
    reg.add_abtest("ab", "all", {"x": 50, "y": 50})
    path = tmp_path / "reg.snap"
    reg.save(path)
    back = Registry.load(path)
    assert snapshot_of(back) == snapshot_of(reg)
    for aud in ({"segment": ["s"]}, {"segment": ["d"]}, {"abtest": ["ab:x"]}, "all"):
        assert back.resolve_audience(aud).registration_ids() == (
            reg.resolve_audience(aud).registration_ids()
        )
    data = path.read_bytes()
    for broken in (data[: len(data) // 2], data[:-1], data[:10], b"", b"garbage" * 10):
        path.write_bytes(broken)
        with pytest.raises(SnapshotError):
            Registry.load(path)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(SnapshotError, match="checksum"):
        Registry.load(path)


# Registration IDs the core packs into 10-byte slots (lowercase hex, 5 to 19 characters) and
# ones it keeps as strings (rust/rid.rs), side by side in one registry.
PACKED_RIDS = ("1507bfd3f7c466c3b57", "00000", "abcdef0123456789abc", "0000000000000000000")
SPILLED_RIDS = ("1507BFD3F7C466C3B57", "1507bfd3f7c466c3b57a", "abcd", "0", "rid_1", "深圳rid")


def test_packed_and_spilled_registration_ids_mix(tmp_path: Path) -> None:
    reg = Registry()
    rids = [r for pair in zip(PACKED_RIDS, SPILLED_RIDS, strict=False) for r in pair]
    rids += SPILLED_RIDS[len(PACKED_RIDS) :]
    for i, rid in enumerate(rids):
        assert reg.upsert(rid, "android", tags=["t"], alias=f"u{i % 3}") == i
    path = tmp_path / "reg.snap"
    reg.save(path)
    for r in (reg, Registry.load(path)):
        assert [r.device_id(rid) for rid in rids] == list(range(len(rids)))
        assert r.resolve_audience({"tag": ["t"]}).registration_ids() == rids
        want = [rids[0], rids[3], rids[5]]  # packed, too long to pack, too short to pack
        got = r.resolve_audience({"registration_id": [*want, "1507bfd3f7c466c3b58", "ABCD"]})
        assert sorted(got.registration_ids()) == sorted(want)
        assert r.device(rids[1]) == {**(r.device(rids[1]) or {}), "registration_id": rids[1]}
    assert reg.delete(PACKED_RIDS[0]) and reg.delete(SPILLED_RIDS[0])
    assert reg.device_id(PACKED_RIDS[0]) is None
    assert reg.upsert(SPILLED_RIDS[0], "ios") == rids.index(SPILLED_RIDS[0])


def test_pyroaring_interop() -> None:
    pyroaring = pytest.importorskip("pyroaring")
    reg = small()
    res = reg.resolve_audience({"tag": ["vip"]})
    bm = pyroaring.BitMap.deserialize(res.to_bytes())
    assert list(bm) == res.ids().tolist() == [0, 2]
    assert list(pyroaring.BitMap.deserialize(reg.tag_members("深圳"))) == [0, 1]
    reg.set_tag_members("picked", pyroaring.BitMap([1, 3, 99]))
    # Ids that are not live devices are dropped.
    assert reg.resolve_audience({"tag": ["picked"]}).registration_ids() == ["a2", "w1"]
    reg.add_segment("seg", bitmap=pyroaring.BitMap([0, 3]))
    assert reg.resolve_audience({"segment": ["seg"]}).registration_ids() == ["a1", "w1"]


def test_readers_never_see_a_half_applied_update() -> None:
    """One device moves between two tag sets while other threads resolve: every resolution
    sees it in exactly one of them."""
    reg = Registry()
    for i in range(2000):
        reg.upsert(f"d{i}", "android", tags=["a"] if i % 2 else ["b"])
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                seen.append(len(reg.resolve_audience({"tag": ["a", "b"]})))
                seen.append(reg.count_audience({"tag_and": ["a", "b"]}))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(3000):
        rid = f"d{i % 2000}"
        reg.upsert(rid, "android", tags=["a"] if i % 3 else ["b"])
    stop.set()
    for t in readers:
        t.join()
    assert not errors
    assert seen and set(seen) <= {2000, 0}


@pytest.mark.parametrize(
    ("push", "code"),
    [
        ({"audience": "all", "notification": {"alert": "x"}}, 1002),
        ({"platform": "all", "audience": {"tag": []}, "notification": {"alert": "x"}}, 1003),
        (
            {"platform": "all", "audience": {"tag": ["a" * 41]}, "notification": {"alert": "x"}},
            1003,
        ),
        ({"platform": "all", "audience": "all", "notification": {"alert": "x"}, "bad": 1}, 1009),
        (
            {
                "platform": "all",
                "audience": "all",
                "notification": {"android": {"alert": "x" * 4000}},
            },
            1005,
        ),
        (
            {
                "platform": "all",
                "audience": {"segment": ["missing"]},
                "message": {"msg_content": "m"},
            },
            1003,
        ),
    ],
)
def test_refused_pushes_leave_the_registry_as_it_was(push: dict[str, object], code: int) -> None:
    reg = small()
    before = snapshot_of(reg)
    with pytest.raises(PushError) as e:
        reg.resolve(push)
    assert e.value.code == code
    assert snapshot_of(reg) == before


def test_cli_demo_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reach.cli import main

    assert main(["demo", "--devices", "2000"]) == 0
    assert "reaches" in capsys.readouterr().out
    rows: list[dict[str, object]] = [
        {"registration_id": "r1", "platform": "android", "tags": ["深圳"]},
        {"registration_id": "r2", "platform": "ios"},
    ]
    snap = tmp_path / "out.snap"
    assert (
        main(["import", str(write_jsonl(tmp_path / "d.jsonl", rows)), "--snapshot", str(snap)]) == 0
    )
    assert Registry.load(snap).resolve_audience({"tag": ["深圳"]}).registration_ids() == ["r1"]


def test_import_directory_with_segments(tmp_path: Path) -> None:
    from reach.cli import main
    from reach.imports import import_directory

    d = tmp_path / "import"
    d.mkdir()
    devices: list[dict[str, object]] = [
        {"registration_id": "r1", "platform": "android", "tags": ["深圳"]},
        {"registration_id": "r2", "platform": "ios", "tags": ["北京"]},
        {"registration_id": "r3", "platform": "ios", "tags": ["深圳"]},
    ]
    write_jsonl(d / "devices.jsonl", devices)
    segments: list[dict[str, object]] = [
        {"segment": "static", "registration_ids": ["r1", "r2"]},
        {"segment": "dynamic", "audience": {"tag": ["深圳"]}},
    ]
    write_jsonl(d / "segments.jsonl", segments)
    reg = Registry()
    assert import_directory(reg, d) == {"devices.jsonl": 3, "segments.jsonl": 2}
    got = reg.resolve_audience({"segment": ["static"], "tag": ["深圳"]}).registration_ids()
    assert got == ["r1"]
    assert sorted(reg.resolve_audience({"segment": ["dynamic"]}).registration_ids()) == ["r1", "r3"]
    snap = tmp_path / "dir.snap"
    assert main(["import", str(d), "--snapshot", str(snap)]) == 0
    assert len(Registry.load(snap).resolve_audience({"segment": ["static"]})) == 2
    # a bad line refuses the whole file, naming the line; no segment of it is defined
    write_jsonl(d / "segments.jsonl", [*segments, {"segment": "bad", "audience": {"tag": []}}])
    fresh = Registry()
    with pytest.raises(LoadError, match="line 3"):
        import_directory(fresh, d)
    with pytest.raises(PushError):
        fresh.resolve_audience({"segment": ["static"]})
    with pytest.raises(LoadError, match="not a directory"):
        import_directory(fresh, d / "devices.jsonl")


def jsonl_rows(n: int, seed: int) -> list[dict[str, object]]:
    """Device lines with every field, shared aliases, CJK tags and repeated registration IDs."""
    import random

    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        platform = rng.choice(["android", "ios", "winphone"])
        row: dict[str, object] = {"registration_id": f"{rng.randrange(n * 4 // 5):019x}"}
        row["platform"] = platform
        if platform == "android" and rng.random() < 0.7:
            row["vendor"] = rng.choice(VENDORS)
        if rng.random() < 0.9:
            row["tags"] = [
                rng.choice(["深圳", "vip", 'q"t', f"t{i % 97}", "x" * 20]) for _ in range(3)
            ]
        if rng.random() < 0.8:
            row["alias"] = f"user_{rng.randrange(n // 2)}"
        if rng.random() < 0.1:
            row["mobile"] = f"138{rng.randrange(10**8):08d}"
        if rng.random() < 0.5:
            row["online"] = rng.random() < 0.5
        rows.append(row)
    return rows


def expected_devices(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    """What a load makes of ``rows``: the last line of each registration ID, as ``device()``."""
    want: dict[str, dict[str, object]] = {}
    for r in rows:
        tags = r.get("tags", [])
        assert isinstance(tags, list)
        want[str(r["registration_id"])] = {
            "registration_id": r["registration_id"],
            "platform": r["platform"],
            "vendor": r.get("vendor"),
            "tags": sorted(set(tags)),
            "alias": r.get("alias"),
            "mobile": r.get("mobile"),
            "online": r.get("online", False),
        }
    return want


def test_jsonl_large_file_every_field_and_repeats(tmp_path: Path) -> None:
    # Several megabytes: read in many blocks by several ranges, lines cut at every boundary.
    rows = jsonl_rows(40_000, seed=7)
    lines = [json.dumps(r, ensure_ascii=i % 3 == 0) for i, r in enumerate(rows)]
    for i in range(0, len(lines), 997):
        lines[i] = " " + lines[i].replace(":", " : ") + " \r"  # whitespace: the serde path
    text = "\n\n".join(lines[:100]) + "\n" + "\n".join(lines[100:])  # blank lines, no final \n
    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size > 4 << 20
    reg = Registry()
    assert reg.load_jsonl(path) == len(rows)
    want = expected_devices(rows)
    assert len(reg) == len(want)
    for rid, dev in want.items():
        got = reg.device(rid)
        assert got is not None
        assert {**got, "tags": sorted(got["tags"])} == dev, rid
    # A bad line near the end refuses the whole file, naming it; nothing changes.
    before = {rid: reg.device(rid) for rid in list(want)[:500]}
    tags_before = sorted(reg.tags())
    bad = [*lines[:39_000], '{"registration_id":"zz","platform":"ios","tags":[1]}', *lines[39_000:]]
    bad_path = tmp_path / "bad.jsonl"
    bad_path.write_text("\n".join(bad) + "\n", encoding="utf-8")
    with pytest.raises(LoadError, match="line 39001"):
        reg.load_jsonl(bad_path)
    assert len(reg) == len(want)
    assert reg.device("zz") is None
    assert sorted(reg.tags()) == tags_before
    assert {rid: reg.device(rid) for rid in before} == before
