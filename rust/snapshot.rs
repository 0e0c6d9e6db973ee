//! Saving and loading a whole registry to one file.
//!
//! Format: `MAGIC`, a `u32` format version, a `u64` payload length, the payload, and the CRC-32
//! of the payload. Every integer is little-endian; bitmaps use the portable roaring format.
//! A file is written to a temporary sibling, fsynced, renamed over the target and the directory
//! fsynced, so a crash leaves either the old file or the new one. A file whose length or
//! checksum is wrong, or whose content does not decode to a consistent registry, is refused
//! before anything is built from it.

use crate::error::{Error, Result};
use crate::expr::AudienceSpec;
// The tables a load allocates once at their final size go on huge pages, as a bulk load's do:
// a request's string look-ups walk them (measured on the narrow request at 10M: 0.30 ms of
// look-ups after a snapshot load in 4 KiB pages, 0.17 ms after `load_arrays`).
use crate::huge;
use crate::intern::Interner;
use crate::registry::{AbTest, Platform, Registry, Segment, Vendor, BUCKETS, END, NONE};
use crate::rid::{RidStore, SLOT};
use croaring::{Bitmap, Portable};
use rayon::prelude::*;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"REACHSN\x01";
/// 2: registration IDs as packed slots plus a spill arena (`rid`), no alias chain stored.
const VERSION: u32 = 2;
const HEADER: usize = 8 + 4 + 8;

/// Little-endian encoder of snapshot payloads (also used by `ums::snapshot`).
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub(crate) fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        for x in v {
            self.u32(*x);
        }
    }
    pub(crate) fn bitmap(&mut self, b: &Bitmap) {
        let n = b.get_serialized_size_in_bytes::<Portable>();
        self.u64(n as u64);
        let _ = b.serialize_into_vec::<Portable>(&mut self.0);
    }
    pub(crate) fn bitmaps(&mut self, v: &[Bitmap]) {
        self.u64(v.len() as u64);
        v.iter().for_each(|b| self.bitmap(b));
    }
    pub(crate) fn interner(&mut self, i: &Interner) {
        let (arena, ends) = i.parts();
        self.bytes(arena);
        self.u32s(ends);
    }
    fn rids(&mut self, r: &RidStore) {
        let (slots, spill, ends) = r.parts();
        self.bytes(slots);
        self.bytes(spill);
        self.u32s(ends);
    }
    fn json(&mut self, spec: &AudienceSpec) {
        self.bytes(&serde_json::to_vec(spec).expect("an audience serializes"));
    }
}

/// Decoder of snapshot payloads: every read is bounds-checked (also used by `ums::snapshot`).
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

pub(crate) fn bad(m: impl Into<String>) -> Error {
    Error::Snapshot(m.into())
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(bad("unexpected end of data"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or_else(|| bad("bad length"))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
    pub(crate) fn str(&mut self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| bad("string is not UTF-8"))
    }
    pub(crate) fn u32s(&mut self) -> Result<Vec<u32>> {
        let n = self.u64()? as usize;
        let raw = self.take(n.checked_mul(4).ok_or_else(|| bad("bad length"))?)?;
        let values = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")));
        Ok(huge::collected(n, values))
    }
    pub(crate) fn bitmap(&mut self, capacity: usize) -> Result<Bitmap> {
        bitmap_from(self.bytes()?, capacity)
    }
    fn bitmaps(&mut self, want: Option<usize>, capacity: usize) -> Result<Vec<Bitmap>> {
        let n = self.u64()? as usize;
        if want.is_some_and(|w| w != n) || n > self.0.len() {
            return Err(bad("unexpected number of bitmaps"));
        }
        (0..n).map(|_| self.bitmap(capacity)).collect()
    }
    /// An interner's raw parts; `build` indexes them (the slow part, run in parallel).
    pub(crate) fn interner(&mut self) -> Result<(Vec<u8>, Vec<u32>)> {
        let raw = self.bytes()?;
        let mut arena = huge::with_capacity(raw.len());
        arena.extend_from_slice(raw);
        let ends = self.u32s()?;
        Ok((arena, ends))
    }
    /// The serialized bitmaps of a list, to decode in parallel with `bitmaps_from`.
    fn raw_bitmaps(&mut self) -> Result<Vec<&'a [u8]>> {
        let n = self.u64()? as usize;
        if n > self.0.len() {
            return Err(bad("unexpected number of bitmaps"));
        }
        (0..n).map(|_| self.bytes()).collect()
    }
    /// A registration ID store's raw parts; `from_parts` indexes them.
    fn rids(&mut self) -> Result<(&'a [u8], Vec<u8>, Vec<u32>)> {
        let slots = self.bytes()?;
        let spill = self.bytes()?.to_vec();
        let ends = self.u32s()?;
        Ok((slots, spill, ends))
    }
    fn json(&mut self) -> Result<AudienceSpec> {
        serde_json::from_slice(self.bytes()?).map_err(|e| bad(format!("bad audience: {e}")))
    }
}

pub(crate) fn build(parts: (Vec<u8>, Vec<u32>)) -> Result<Interner> {
    Interner::from_parts(parts.0, parts.1).map_err(bad)
}

pub(crate) fn bitmap_from(raw: &[u8], capacity: usize) -> Result<Bitmap> {
    let b = Bitmap::try_deserialize::<Portable>(raw).ok_or_else(|| bad("bad bitmap"))?;
    if b.maximum().is_some_and(|m| m as usize >= capacity) {
        return Err(bad("bitmap refers to an unknown device"));
    }
    Ok(b)
}

/// Encode a registry.
pub fn encode(reg: &Registry) -> Vec<u8> {
    let mut w = Writer::default();
    w.rids(&reg.devices);
    for b in [&reg.live, &reg.online, &reg.has_mobile] {
        w.bitmap(b);
    }
    w.bitmaps(&reg.platforms);
    w.bitmaps(&reg.vendors);
    w.bitmaps(&reg.buckets);
    w.interner(&reg.tags);
    w.bitmaps(&reg.tag_bitmaps);
    w.interner(&reg.aliases);
    w.u32s(&reg.alias_column());
    let mut mobiles: Vec<_> = reg.mobiles.iter().collect();
    mobiles.sort_unstable_by_key(|(d, _)| **d);
    w.u64(mobiles.len() as u64);
    for (d, m) in mobiles {
        w.u32(*d);
        w.bytes(m.as_bytes());
    }
    let mut segments: Vec<_> = reg.segments.iter().collect();
    segments.sort_unstable_by_key(|(n, _)| n.as_str());
    w.u64(segments.len() as u64);
    for (name, s) in segments {
        w.bytes(name.as_bytes());
        match s {
            Segment::Static(b) => {
                w.u32(0);
                w.bitmap(b);
            }
            Segment::Dynamic(a) => {
                w.u32(1);
                w.json(a);
            }
        }
    }
    let mut tests: Vec<_> = reg.abtests.iter().collect();
    tests.sort_unstable_by_key(|(n, _)| n.as_str());
    w.u64(tests.len() as u64);
    for (name, t) in tests {
        w.bytes(name.as_bytes());
        w.json(&t.base);
        w.u64(t.groups.len() as u64);
        for (g, lo, hi) in &t.groups {
            w.bytes(g.as_bytes());
            w.u32(*lo as u32);
            w.u32(*hi as u32);
        }
    }
    frame(MAGIC, VERSION, &w.0)
}

/// A file of `payload`: `magic`, `version`, the payload's length, the payload, its CRC-32.
pub(crate) fn frame(magic: &[u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out
}

/// The payload of a `frame`d file, refused unless its magic, version, length and checksum hold.
pub(crate) fn unframe<'a>(data: &'a [u8], magic: &[u8; 8], version: u32) -> Result<&'a [u8]> {
    if data.len() < HEADER + 4 || &data[..8] != magic {
        return Err(bad("not a reach snapshot (of this kind)"));
    }
    let mut head = Reader(&data[8..HEADER]);
    let found = head.u32()?;
    if found != version {
        return Err(bad(format!("format version {found}, expected {version}")));
    }
    let len = head.u64()?;
    if len != (data.len() - HEADER - 4) as u64 {
        return Err(bad("truncated or padded file"));
    }
    let payload = &data[HEADER..data.len() - 4];
    let crc = u32::from_le_bytes(data[data.len() - 4..].try_into().expect("4 bytes"));
    if crc32fast::hash(payload) != crc {
        return Err(bad("checksum mismatch"));
    }
    Ok(payload)
}

/// Decode a registry, refusing anything corrupt, truncated or inconsistent.
pub fn decode(data: &[u8]) -> Result<Registry> {
    let mut r = Reader(unframe(data, MAGIC, VERSION)?);
    let mut reg = Registry::new();
    let devices = r.rids()?;
    let cap = devices.0.len() / SLOT;
    reg.live = r.bitmap(cap)?;
    reg.online = r.bitmap(cap)?;
    reg.has_mobile = r.bitmap(cap)?;
    reg.platforms = r.bitmaps(Some(Platform::ALL.len()), cap)?;
    reg.vendors = r.bitmaps(Some(Vendor::ALL.len()), cap)?;
    reg.buckets = r.bitmaps(Some(BUCKETS), cap)?;
    let tags = r.interner()?;
    let tag_bitmaps = r.raw_bitmaps()?;
    if tag_bitmaps.len() != tags.1.len() {
        return Err(bad("unexpected number of bitmaps"));
    }
    let aliases = r.interner()?;
    // The slow parts of a load, spread over the cores: indexing the strings, decoding tags.
    let ((devices, aliases), (tags, tag_bitmaps)) = rayon::join(
        || {
            rayon::join(
                || RidStore::from_parts(devices.0, devices.1, devices.2).map_err(bad),
                || build(aliases),
            )
        },
        || {
            let bms: Result<Vec<Bitmap>> = tag_bitmaps
                .par_iter()
                .map(|raw| bitmap_from(raw, cap))
                .collect();
            (build(tags), bms)
        },
    );
    reg.devices = devices?;
    reg.aliases = aliases?;
    reg.tags = tags?;
    reg.tag_bitmaps = tag_bitmaps?;
    let device_alias = r.u32s()?;
    if device_alias.len() != cap || cap >= END as usize || reg.aliases.len() >= (END - 1) as usize {
        return Err(bad("alias column has the wrong length"));
    }
    reg.alias_head = huge::filled(reg.aliases.len(), NONE);
    reg.alias_next = huge::filled(cap, NONE);
    for (d, &a) in device_alias.iter().enumerate() {
        if a != NONE {
            let head = reg
                .alias_head
                .get_mut(a as usize)
                .ok_or_else(|| bad("unknown alias id"))?;
            let old = std::mem::replace(head, d as u32);
            reg.alias_next[d] = if old == NONE { END | a } else { old };
        }
    }
    let n = r.u64()?;
    for _ in 0..n {
        let d = r.u32()?;
        let m = r.str()?;
        if d as usize >= cap {
            return Err(bad("mobile of an unknown device"));
        }
        reg.mobiles.insert(d, m.into());
    }
    let n = r.u64()?;
    for _ in 0..n {
        let name = r.str()?.to_owned();
        let seg = match r.u32()? {
            0 => Segment::Static(r.bitmap(cap)?),
            1 => Segment::Dynamic(r.json()?),
            k => return Err(bad(format!("unknown segment kind {k}"))),
        };
        reg.segments.insert(name, seg);
    }
    let n = r.u64()?;
    for _ in 0..n {
        let name = r.str()?.to_owned();
        let base = r.json()?;
        let g = r.u64()?;
        let mut groups = Vec::new();
        for _ in 0..g {
            let gname = r.str()?.to_owned();
            let (lo, hi) = (r.u32()?, r.u32()?);
            if lo > hi || hi as usize > BUCKETS {
                return Err(bad("bad A/B group range"));
            }
            groups.push((gname, lo as u8, hi as u8));
        }
        reg.abtests.insert(name, AbTest { base, groups });
    }
    if !r.0.is_empty() {
        return Err(bad("trailing data"));
    }
    reg.settle();
    Ok(reg)
}

/// Write `data` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Io(format!("{path:?} is not a file path")))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Save `reg` to `path` (atomically).
pub fn save(reg: &Registry, path: &Path) -> Result<()> {
    write_atomic(path, &encode(reg))
}

/// Load a registry from `path`.
pub fn load(path: &Path) -> Result<Registry> {
    decode(&fs::read(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registry {
        let mut r = Registry::new();
        r.upsert(
            "a",
            Platform::Android,
            Some(Vendor::Vivo),
            &["t", "深圳"],
            Some("u"),
            Some("1"),
            true,
        )
        .unwrap();
        r.upsert("b", Platform::Ios, None, &["t"], Some("u"), None, false)
            .unwrap();
        r.upsert("c", Platform::Web, None, &[], None, None, false)
            .unwrap();
        r.delete("c");
        r.add_static_segment("s", Bitmap::of(&[0, 2])).unwrap();
        r.add_dynamic_segment(
            "d",
            AudienceSpec {
                tag: vec!["t".into()],
                ..Default::default()
            },
        )
        .unwrap();
        r.add_abtest(
            "ab",
            AudienceSpec::all(),
            &[("x".into(), 40), ("y".into(), 60)],
        )
        .unwrap();
        r
    }

    #[test]
    fn round_trip_is_exact() {
        let r = sample();
        let data = encode(&r);
        let s = decode(&data).unwrap();
        assert_eq!(encode(&s), data);
        assert_eq!(s.device("a"), r.device("a"));
        assert_eq!(s.alias_devices("u"), vec![0, 1]);
        assert_eq!(s.device("c"), None);
    }

    #[test]
    fn every_corruption_is_refused() {
        let data = encode(&sample());
        for cut in [0, 7, HEADER, data.len() / 2, data.len() - 1] {
            assert!(
                matches!(decode(&data[..cut]), Err(Error::Snapshot(_))),
                "cut at {cut}"
            );
        }
        for i in (0..data.len()).step_by(7) {
            let mut d = data.clone();
            d[i] ^= 0x5a;
            assert!(matches!(decode(&d), Err(Error::Snapshot(_))), "flip at {i}");
        }
    }

    #[test]
    fn save_is_atomic_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("reg.snap");
        save(&sample(), &p).unwrap();
        save(&sample(), &p).unwrap();
        assert_eq!(load(&p).unwrap().len(), 2);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file is left"
        );
    }
}
