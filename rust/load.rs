//! Bulk loading: the JSON Lines import format of DESIGN.md and columnar (numpy) arrays.
//!
//! Both paths validate everything first, then apply: a refused load changes nothing. New
//! devices get ascending ids, so their memberships are gathered per bitmap and added in one
//! sorted batch each instead of one insertion per membership.

use crate::error::{Error, Result};
use crate::registry::{bucket_of, check_key, Platform, Registry, Vendor, BUCKETS, NONE};
use hashbrown::HashMap;
use rayon::prelude::*;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// Devices in columns; row `i`'s tags are `tag_ids[tag_indptr[i]..tag_indptr[i + 1]]`
/// (registry tag ids).
pub struct Columns<'a> {
    pub rid: Vec<&'a str>,
    pub platform: Vec<Platform>,
    pub vendor: Vec<Option<Vendor>>,
    pub tag_indptr: Vec<usize>,
    pub tag_ids: Vec<u32>,
    pub alias: Vec<Option<&'a str>>,
    pub mobile: Vec<Option<&'a str>>,
    pub online: Vec<bool>,
}

/// A JSON string, borrowed from the input unless it has escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The device lines of one slice of a JSON Lines file, in columns: no allocation per line
/// beyond strings with escapes (a chunk is parsed on its own thread).
#[derive(Default)]
struct Chunk<'a> {
    rid: Vec<Cow<'a, str>>,
    platform: Vec<Platform>,
    vendor: Vec<Option<Vendor>>,
    /// Each membership as an index into `tag_names` (the chunk's distinct tags), so that the
    /// registry's tag index is searched once per distinct tag, not once per membership.
    tags: Vec<u32>,
    tag_ends: Vec<usize>,
    tag_names: Vec<Cow<'a, str>>,
    tag_index: HashMap<Cow<'a, str>, u32>,
    alias: Vec<Option<Cow<'a, str>>>,
    mobile: Vec<Option<Cow<'a, str>>>,
    online: Vec<bool>,
}

/// Deserializes one line's object into the chunk's columns.
struct LineSeed<'c, 'a>(&'c mut Chunk<'a>);

/// Appends a JSON array of tag strings to the chunk's tag column.
struct TagsSeed<'c, 'a>(&'c mut Chunk<'a>);

impl<'de> DeserializeSeed<'de> for TagsSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of tag strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let c = self.0;
        while let Some(Str(t)) = seq.next_element()? {
            let local = match c.tag_index.get(&t) {
                Some(&l) => l,
                None => {
                    check_key("tag", &t).map_err(de::Error::custom)?;
                    let l = c.tag_names.len() as u32;
                    c.tag_names.push(t.clone());
                    c.tag_index.insert(t, l);
                    l
                }
            };
            c.tags.push(local);
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a device object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let c = self.0;
        let (mut rid, mut platform, mut vendor, mut alias, mut mobile, mut online) =
            (None, None, None, None, None, None);
        let mut seen_tags = false;
        while let Some(Str(key)) = map.next_key()? {
            let dup = match key.as_ref() {
                "registration_id" => rid.replace(map.next_value::<Str>()?.0).is_some(),
                "platform" => platform.replace(map.next_value::<Str>()?.0).is_some(),
                "vendor" => vendor.replace(map.next_value::<Option<Str>>()?).is_some(),
                "alias" => alias.replace(map.next_value::<Option<Str>>()?).is_some(),
                "mobile" => mobile.replace(map.next_value::<Option<Str>>()?).is_some(),
                "online" => online.replace(map.next_value::<bool>()?).is_some(),
                "tags" => {
                    map.next_value_seed(TagsSeed(&mut *c))?;
                    std::mem::replace(&mut seen_tags, true)
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            };
            if dup {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
        }
        let rid = rid.ok_or_else(|| de::Error::missing_field("registration_id"))?;
        let platform = platform.ok_or_else(|| de::Error::missing_field("platform"))?;
        let platform = Platform::parse(&platform).map_err(de::Error::custom)?;
        let vendor = match vendor.flatten() {
            Some(Str(v)) => Some(Vendor::parse(&v).map_err(de::Error::custom)?),
            None => None,
        };
        let alias = alias.flatten().map(|s| s.0);
        let mobile = mobile.flatten().map(|s| s.0);
        Registry::check_record(
            &rid,
            platform,
            vendor,
            &[], // each distinct tag was checked when first seen
            alias.as_deref(),
            mobile.as_deref(),
        )
        .map_err(de::Error::custom)?;
        c.rid.push(rid);
        c.platform.push(platform);
        c.vendor.push(vendor);
        c.tag_ends.push(c.tags.len());
        c.alias.push(alias);
        c.mobile.push(mobile);
        c.online.push(online.unwrap_or(false));
        Ok(())
    }
}

const FIELDS: &[&str] = &[
    "registration_id",
    "platform",
    "vendor",
    "tags",
    "alias",
    "mobile",
    "online",
];

/// Parse numbered lines into one chunk; an error names its line (1-based).
fn parse_chunk<'a>(lines: &[(usize, &'a [u8])]) -> Result<Chunk<'a>> {
    let mut c = Chunk::default();
    for &(i, line) in lines {
        let mut de = serde_json::Deserializer::from_slice(line);
        LineSeed(&mut c)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| Error::Load {
                line: i + 1,
                message: clean(e.to_string()),
            })?;
    }
    Ok(c)
}

/// serde_json appends the position within the line; the line number says enough.
fn clean(m: String) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_owned(),
        None => m,
    }
}

fn load_error(line: usize, e: Error) -> Error {
    let message = match e {
        Error::Invalid { message, .. } => message,
        other => other.to_string(),
    };
    Error::Load { line, message }
}

impl Registry {
    /// Load JSON Lines device records (blank lines are skipped); returns the number loaded.
    /// A repeated registration ID is an upsert: the last line wins.
    pub fn load_jsonl(&mut self, data: &[u8]) -> Result<usize> {
        const CHUNK: usize = 16 * 1024;
        let mut lines: Vec<(usize, &[u8])> = Vec::with_capacity(data.len() / 128);
        let mut start = 0;
        for (i, end) in memchr::memchr_iter(b'\n', data)
            .chain([data.len()])
            .enumerate()
        {
            let line = &data[start..end];
            start = end + 1;
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                lines.push((i, line));
            }
        }
        let chunks: Vec<Chunk> = lines
            .par_chunks(CHUNK)
            .map(parse_chunk)
            .collect::<Result<_>>()?;
        let n = lines.len();
        let mut cols = Columns {
            rid: Vec::with_capacity(n),
            platform: Vec::with_capacity(n),
            vendor: Vec::with_capacity(n),
            tag_indptr: Vec::with_capacity(n + 1),
            tag_ids: Vec::new(),
            alias: Vec::with_capacity(n),
            mobile: Vec::with_capacity(n),
            online: Vec::with_capacity(n),
        };
        cols.tag_indptr.push(0);
        for c in &chunks {
            cols.rid.extend(c.rid.iter().map(|r| r.as_ref()));
            cols.platform.extend_from_slice(&c.platform);
            cols.vendor.extend_from_slice(&c.vendor);
            cols.alias.extend(c.alias.iter().map(|a| a.as_deref()));
            cols.mobile.extend(c.mobile.iter().map(|m| m.as_deref()));
            cols.online.extend_from_slice(&c.online);
            let global: Vec<u32> = c.tag_names.iter().map(|t| self.intern_tag(t)).collect();
            let base = cols.tag_ids.len();
            cols.tag_ids
                .extend(c.tags.iter().map(|&l| global[l as usize]));
            cols.tag_indptr.extend(c.tag_ends.iter().map(|e| base + e));
        }
        self.apply_columns(&cols)
    }

    /// Load devices from columnar arrays (numpy); all or nothing. Returns the number of rows.
    pub fn load_arrays(&mut self, a: Arrays) -> Result<usize> {
        let names = a.tag_names;
        let mut cols = Columns::from_arrays(a)?;
        let global: Vec<u32> = names.iter().map(|t| self.intern_tag(t)).collect();
        for t in &mut cols.tag_ids {
            *t = global[*t as usize];
        }
        self.apply_columns(&cols)
    }

    /// Apply validated columns; returns the number of rows.
    pub fn apply_columns(&mut self, cols: &Columns) -> Result<usize> {
        let n = cols.rid.len();
        let bytes: usize = cols.rid.iter().map(|r| r.len()).sum();
        if !self.fits(n, bytes) {
            return Err(Error::invalid("registry is full"));
        }
        let first_new = self.devices.len() as u32;
        self.devices.reserve(n);
        let mut acc = Pending::new(self.tag_bitmaps.len());
        let hashes: Vec<u64> = cols.rid.par_iter().map(|r| self.devices.hash(r)).collect();
        let alias_hashes: Vec<Option<u64>> = cols
            .alias
            .par_iter()
            .map(|a| a.map(|a| self.aliases.hash(a)))
            .collect();
        // Registration IDs and aliases are interned into separate tables: one core each.
        let (interned, alias_ids) = {
            let Registry {
                devices,
                aliases,
                alias_head,
                ..
            } = &mut *self;
            rayon::join(
                || {
                    const AHEAD: usize = 16;
                    let ids = cols.rid.iter().zip(&hashes).enumerate();
                    ids.map(|(i, (r, &h))| {
                        if let Some(&next) = hashes.get(i + AHEAD) {
                            devices.prefetch(next);
                        }
                        devices.intern_hashed(h, r)
                    })
                    .collect::<Vec<_>>()
                },
                || {
                    const AHEAD: usize = 16;
                    let mut out = Vec::with_capacity(cols.alias.len());
                    for (i, (a, h)) in cols.alias.iter().zip(&alias_hashes).enumerate() {
                        if let Some(&Some(next)) = alias_hashes.get(i + AHEAD) {
                            aliases.prefetch(next);
                        }
                        out.push(a.zip(*h).map(|(a, h)| {
                            let (id, new) = aliases.intern_hashed(h, a);
                            if new {
                                alias_head.push(NONE);
                            }
                            id
                        }));
                    }
                    out
                },
            )
        };
        self.alias_next.resize(self.devices.len(), NONE);
        for (i, (&rid, &(d, new))) in cols.rid.iter().zip(&interned).enumerate() {
            let tags = &cols.tag_ids[cols.tag_indptr[i]..cols.tag_indptr[i + 1]];
            let (p, v, alias, mobile, online) = (
                cols.platform[i],
                cols.vendor[i],
                cols.alias[i],
                cols.mobile[i],
                cols.online[i],
            );
            if !new {
                if d >= first_new {
                    // Seen earlier in this load: its memberships must be in place first.
                    acc.flush(self);
                }
                self.replace(d, p, v, tags, alias, mobile, online);
                continue;
            }
            acc.buckets[bucket_of(rid)].push(d);
            acc.live.push(d);
            acc.platforms[p as usize].push(d);
            if let Some(v) = v {
                acc.vendors[v as usize].push(d);
            }
            for &t in tags {
                acc.tags[t as usize].push(d);
            }
            if online {
                acc.online.push(d);
            }
            if let Some(a) = alias_ids[i] {
                self.attach_alias_id(d, a);
            }
            if let Some(m) = mobile {
                self.mobiles.insert(d, m.into());
                acc.mobile.push(d);
            }
        }
        acc.flush(self);
        self.settle();
        Ok(n)
    }
}

/// Memberships of new devices not yet in their bitmaps (each list ascending).
struct Pending {
    live: Vec<u32>,
    online: Vec<u32>,
    mobile: Vec<u32>,
    platforms: Vec<Vec<u32>>,
    vendors: Vec<Vec<u32>>,
    buckets: Vec<Vec<u32>>,
    tags: Vec<Vec<u32>>,
}

impl Pending {
    fn new(tags: usize) -> Self {
        Pending {
            live: Vec::new(),
            online: Vec::new(),
            mobile: Vec::new(),
            platforms: vec![Vec::new(); Platform::ALL.len()],
            vendors: vec![Vec::new(); Vendor::ALL.len()],
            buckets: vec![Vec::new(); BUCKETS],
            tags: vec![Vec::new(); tags],
        }
    }

    fn flush(&mut self, reg: &mut Registry) {
        let put = |b: &mut croaring::Bitmap, v: &mut Vec<u32>| {
            if !v.is_empty() {
                b.add_many(v);
                v.clear();
            }
        };
        put(&mut reg.live, &mut self.live);
        put(&mut reg.online, &mut self.online);
        put(&mut reg.has_mobile, &mut self.mobile);
        let groups = [
            (&mut reg.platforms, &mut self.platforms),
            (&mut reg.vendors, &mut self.vendors),
            (&mut reg.buckets, &mut self.buckets),
            (&mut reg.tag_bitmaps, &mut self.tags),
        ];
        for (bms, pending) in groups {
            // Bitmaps are independent: fill them on every core.
            bms.par_iter_mut()
                .zip(pending.par_iter_mut())
                .for_each(|(b, v)| put(b, v));
        }
    }
}

/// Raw columnar input (numpy arrays), validated into `Columns` by `Columns::from_arrays`.
pub struct Arrays<'a> {
    pub rid_bytes: &'a [u8],
    pub rid_offsets: &'a [u64],
    pub platform: &'a [u8],
    pub vendor: Option<&'a [u8]>,
    pub tag_names: &'a [String],
    pub tag_indptr: Option<&'a [u64]>,
    pub tag_indices: Option<&'a [u32]>,
    pub alias_bytes: Option<&'a [u8]>,
    pub alias_offsets: Option<&'a [u64]>,
    pub online: Option<&'a [bool]>,
}

fn row_err(row: usize, m: impl Into<String>) -> Error {
    Error::Load {
        line: row,
        message: m.into(),
    }
}

/// Cut `bytes` into `offsets.len() - 1` strings; an empty span is `None` when `optional`.
fn spans<'a>(what: &str, bytes: &'a [u8], offsets: &[u64], n: usize) -> Result<Vec<&'a str>> {
    if offsets.len() != n + 1 {
        return Err(row_err(
            0,
            format!("{what} offsets must have {} entries", n + 1),
        ));
    }
    (0..n)
        .map(|i| {
            let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
            let raw = bytes
                .get(a..b)
                .ok_or_else(|| row_err(i, format!("{what} offsets out of range")))?;
            std::str::from_utf8(raw).map_err(|_| row_err(i, format!("{what} is not UTF-8")))
        })
        .collect()
}

impl<'a> Columns<'a> {
    /// Validate arrays into columns; `tag_ids` are indices into `tag_names` until
    /// `Registry::load_arrays` maps them to registry tag ids.
    pub fn from_arrays(a: Arrays<'a>) -> Result<Self> {
        let n = a.platform.len();
        let rid = spans("registration_id", a.rid_bytes, a.rid_offsets, n)?;
        let platform = a
            .platform
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                Platform::from_code(c).ok_or_else(|| row_err(i, format!("bad platform code {c}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let vendor = match a.vendor {
            None => vec![None; n],
            Some(v) if v.len() != n => {
                return Err(row_err(0, "vendor must have one code per device"))
            }
            Some(v) => v
                .iter()
                .enumerate()
                .map(|(i, &c)| match c {
                    0 => Ok(None),
                    c => Vendor::from_code(c - 1)
                        .map(Some)
                        .ok_or_else(|| row_err(i, format!("bad vendor code {c}"))),
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let (tag_indptr, tag_ids) = match (a.tag_indptr, a.tag_indices) {
            (None, None) => (vec![0; n + 1], Vec::new()),
            (Some(p), Some(ix)) => {
                if p.len() != n + 1
                    || p[0] != 0
                    || p[n] as usize != ix.len()
                    || p.windows(2).any(|w| w[0] > w[1])
                {
                    return Err(row_err(
                        0,
                        "tag_indptr must ascend from 0 to len(tag_indices)",
                    ));
                }
                if let Some(&t) = ix.iter().find(|&&t| t as usize >= a.tag_names.len()) {
                    return Err(row_err(0, format!("tag index {t} out of range")));
                }
                for t in a.tag_names {
                    check_key("tag", t).map_err(|e| load_error(0, e))?;
                }
                (p.iter().map(|&x| x as usize).collect(), ix.to_vec())
            }
            _ => return Err(row_err(0, "tag_indptr and tag_indices go together")),
        };
        let alias = match (a.alias_bytes, a.alias_offsets) {
            (None, None) => vec![None; n],
            (Some(b), Some(o)) => spans("alias", b, o, n)?
                .into_iter()
                .map(|s| (!s.is_empty()).then_some(s))
                .collect(),
            _ => return Err(row_err(0, "alias_bytes and alias_offsets go together")),
        };
        let online = match a.online {
            None => vec![false; n],
            Some(o) if o.len() == n => o.to_vec(),
            Some(_) => return Err(row_err(0, "online must have one flag per device")),
        };
        for i in 0..n {
            check_key("registration_id", rid[i]).map_err(|e| load_error(i, e))?;
            if vendor[i].is_some() && platform[i] != Platform::Android {
                return Err(row_err(i, "vendor channel given for a non-Android device"));
            }
            if let Some(al) = alias[i] {
                check_key("alias", al).map_err(|e| load_error(i, e))?;
            }
        }
        Ok(Columns {
            rid,
            platform,
            vendor,
            tag_indptr,
            tag_ids,
            alias,
            mobile: vec![None; n],
            online,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_loads_and_last_line_wins() {
        let mut r = Registry::new();
        let data = br#"{"registration_id":"a","platform":"android","vendor":"hms","tags":["x","\u6df1"],"alias":"u"}

{"registration_id":"b","platform":"ios","online":true,"mobile":"139"}
{"registration_id":"a","platform":"android","tags":["y"]}
"#;
        assert_eq!(r.load_jsonl(data).unwrap(), 3);
        let a = r.device("a").unwrap();
        assert_eq!(a.tags, vec!["y".to_string()]);
        assert_eq!(a.vendor, None);
        assert_eq!(a.alias, None);
        assert!(r.device("b").unwrap().online);
        assert_eq!(r.alias_devices("u"), Vec::<u32>::new());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_bad_line_changes_nothing() {
        let mut r = Registry::new();
        for bad in [
            &br#"{"registration_id":"a","platform":"android"}
{"registration_id":"b","platform":"symbian"}"#[..],
            br#"{"registration_id":"a","platform":"ios","vendor":"hms"}"#,
            br#"{"registration_id":"a","platform":"ios","colour":"red"}"#,
            br#"{"registration_id":"a","platform":"ios""#,
            br#"{"registration_id":"","platform":"ios"}"#,
        ] {
            let e = r.load_jsonl(bad).unwrap_err();
            assert!(matches!(e, Error::Load { .. }), "{e}");
        }
        assert_eq!(r.capacity(), 0);
        assert!(r.tag_names().is_empty());
    }

    #[test]
    fn arrays_load() {
        let mut r = Registry::new();
        let names = ["t".to_string()];
        r.load_arrays(Arrays {
            rid_bytes: b"r1r2r3",
            rid_offsets: &[0, 2, 4, 6],
            platform: &[0, 1, 0],
            vendor: Some(&[1, 0, 0]),
            tag_names: &names,
            tag_indptr: Some(&[0, 1, 1, 2]),
            tag_indices: Some(&[0, 0]),
            alias_bytes: Some(b"uu"),
            alias_offsets: Some(&[0, 1, 1, 2]),
            online: None,
        })
        .unwrap();
        assert_eq!(r.tag_bitmap("t").unwrap().to_vec(), vec![0, 2]);
        assert_eq!(r.alias_devices("u"), vec![0, 2]);
        assert_eq!(r.device("r1").unwrap().vendor, Some(Vendor::Hms));
        let bad = Arrays {
            rid_bytes: b"r1",
            rid_offsets: &[0, 2],
            platform: &[1],
            vendor: Some(&[2]),
            tag_names: &[],
            tag_indptr: None,
            tag_indices: None,
            alias_bytes: None,
            alias_offsets: None,
            online: None,
        };
        assert!(r.load_arrays(bad).is_err());
        assert_eq!(r.capacity(), 3, "a refused load adds nothing");
    }
}
