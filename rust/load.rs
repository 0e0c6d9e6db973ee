//! Bulk loading: the JSON Lines import format of DESIGN.md and columnar (numpy) arrays.
//!
//! Both paths validate everything first, then apply: a refused load changes nothing. New
//! devices get ascending ids, so their memberships are gathered per bitmap and added in one
//! sorted batch each instead of one insertion per membership.

use crate::error::{Error, Result};
use crate::huge;
use crate::jsonl;
use crate::registry::{bucket_of, check_key, Platform, Registry, Vendor, BUCKETS, NONE};
use rayon::prelude::*;
use std::borrow::Cow;

/// One column of strings: row `i` is `bytes[start..start + len]` for `spans[i] == (start, len)`.
/// An empty string stands for a missing value (no key may be empty: `check_key`).
///
/// Invariant: every span lies in `bytes` and is valid UTF-8. Owned (a JSON Lines slice copies
/// its strings in, so the file need not stay in memory) or borrowed (numpy arrays).
pub struct Strs<'a> {
    bytes: Cow<'a, [u8]>,
    spans: Vec<(u32, u32)>,
}

impl Strs<'_> {
    /// An owned column with room for `rows` strings of `bytes` bytes in all (`huge`).
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        Strs {
            bytes: Cow::Owned(huge::with_capacity(bytes)),
            spans: huge::with_capacity(rows),
        }
    }

    /// Whether `extra` more bytes fit (spans are `u32`).
    fn fits(&self, extra: usize) -> bool {
        u32::try_from(self.bytes.len() + extra).is_ok()
    }

    /// Append `s` (empty for a missing value) to an owned column that `fits` it.
    fn push(&mut self, s: &str) {
        let bytes = self.bytes.to_mut();
        let start = bytes.len() as u32;
        // Grown by copying into a fresh allocation, not by moving huge pages (`huge`).
        huge::reserve(bytes, s.len());
        bytes.extend_from_slice(s.as_bytes());
        self.spans.push((start, s.len() as u32));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Row `i`.
    pub fn get(&self, i: usize) -> &str {
        let (start, len) = self.spans[i];
        let b = &self.bytes[start as usize..(start + len) as usize];
        // SAFETY: every span is valid UTF-8 (the type's invariant: `push` appends a `&str`,
        // `from_spans` checks each span).
        unsafe { std::str::from_utf8_unchecked(b) }
    }

    /// Row `i` of an optional column.
    pub fn opt(&self, i: usize) -> Option<&str> {
        Some(self.get(i)).filter(|s| !s.is_empty())
    }

    /// Total bytes of the strings.
    fn total_bytes(&self) -> usize {
        self.spans.iter().map(|&(_, len)| len as usize).sum()
    }
}

impl<'a> Strs<'a> {
    /// Borrow `bytes` cut at `offsets` (`n + 1` of them), checking every span.
    fn from_spans(what: &str, bytes: &'a [u8], offsets: &[u64], n: usize) -> Result<Self> {
        if offsets.len() != n + 1 {
            return Err(row_err(
                0,
                format!("{what} offsets must have {} entries", n + 1),
            ));
        }
        if u32::try_from(bytes.len()).is_err() {
            return Err(row_err(
                0,
                format!("{what} bytes exceed 4 GiB: load in parts"),
            ));
        }
        let spans = (0..n)
            .map(|i| {
                let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
                let raw = bytes
                    .get(a..b)
                    .ok_or_else(|| row_err(i, format!("{what} offsets out of range")))?;
                std::str::from_utf8(raw).map_err(|_| row_err(i, format!("{what} is not UTF-8")))?;
                Ok((a as u32, (b - a) as u32))
            })
            .collect::<Result<_>>()?;
        Ok(Strs {
            bytes: Cow::Borrowed(bytes),
            spans,
        })
    }

    /// `n` missing values.
    fn none(n: usize) -> Self {
        Strs {
            bytes: Cow::Borrowed(&[]),
            spans: vec![(0, 0); n],
        }
    }
}

/// Devices in columns: one part of a load (a slice of a JSON Lines file, or numpy arrays).
/// Row `i`'s tags are `tag_ids[tag_indptr[i]..tag_indptr[i + 1]]`, indices into the part's
/// own list of tag names (`Registry::apply_columns` is given the registry id of each).
pub struct Columns<'a> {
    pub rid: Strs<'a>,
    pub platform: Vec<Platform>,
    pub vendor: Vec<Option<Vendor>>,
    pub tag_indptr: Vec<usize>,
    pub tag_ids: Vec<u32>,
    pub alias: Strs<'a>,
    pub mobile: Strs<'a>,
    pub online: Vec<bool>,
}

impl Columns<'_> {
    /// Empty owned columns with room for at most `rows` rows (they never grow past that),
    /// about `tags` tag memberships and `rid_bytes` and `alias_bytes` bytes of those strings.
    pub(crate) fn with_capacity(
        rows: usize,
        tags: usize,
        rid_bytes: usize,
        alias_bytes: usize,
    ) -> Self {
        let mut tag_indptr = huge::with_capacity(rows + 1);
        tag_indptr.push(0);
        Columns {
            rid: Strs::with_capacity(rows, rid_bytes),
            platform: huge::with_capacity(rows),
            vendor: huge::with_capacity(rows),
            tag_indptr,
            tag_ids: huge::with_capacity(tags),
            alias: Strs::with_capacity(rows, alias_bytes),
            mobile: Strs::with_capacity(rows, 0),
            online: huge::with_capacity(rows),
        }
    }

    /// Append tag `t` (an index into the part's tag names) to the row being built.
    pub(crate) fn push_tag(&mut self, t: u32) {
        huge::reserve(&mut self.tag_ids, 1);
        self.tag_ids.push(t);
    }

    /// Append a checked row (its tags pushed already); false, and nothing appended, if a string
    /// column would pass 4 GiB.
    pub(crate) fn push(
        &mut self,
        rid: &str,
        platform: Platform,
        vendor: Option<Vendor>,
        alias: Option<&str>,
        mobile: Option<&str>,
        online: bool,
    ) -> bool {
        let (a, m) = (alias.unwrap_or(""), mobile.unwrap_or(""));
        if !(self.rid.fits(rid.len()) && self.alias.fits(a.len()) && self.mobile.fits(m.len())) {
            return false;
        }
        self.rid.push(rid);
        self.alias.push(a);
        self.mobile.push(m);
        self.platform.push(platform);
        self.vendor.push(vendor);
        self.tag_indptr.push(self.tag_ids.len());
        self.online.push(online);
        true
    }

    pub fn len(&self) -> usize {
        self.rid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rid.is_empty()
    }

    /// The part's tag indices of row `i`.
    fn tags(&self, i: usize) -> &[u32] {
        &self.tag_ids[self.tag_indptr[i]..self.tag_indptr[i + 1]]
    }
}

/// A refusal of a bulk load at `line`, with the message of `e` (without its code).
pub(crate) fn load_error(line: usize, e: Error) -> Error {
    let message = match e {
        Error::Invalid { message, .. } => message,
        other => other.to_string(),
    };
    Error::Load { line, message }
}

/// One part of a load and the registry tag id of each of its tag indices.
type Part<'c, 'a> = (&'c Columns<'a>, Vec<u32>);

/// Rows `rows` of part `part` (the unit of parallel work).
struct Rows {
    part: usize,
    rows: std::ops::Range<usize>,
}

/// A JSON Lines input read and checked, not yet applied: parsing needs no registry, so a
/// caller that shares one parses before it takes the write lock.
pub struct ParsedJsonl(Vec<jsonl::Chunk>);

impl ParsedJsonl {
    /// Parse JSON Lines device records (blank lines are skipped).
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        Ok(ParsedJsonl(jsonl::parse(&data)?))
    }

    /// Parse a file, read a block at a time by the threads that parse it (the file is never
    /// in memory whole).
    #[cfg(unix)]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        Ok(ParsedJsonl(jsonl::parse(&jsonl::FileSource::open(path)?)?))
    }

    /// Parse a file (read whole: positioned reads from several threads are a Unix API).
    #[cfg(not(unix))]
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        Self::from_bytes(&std::fs::read(path)?)
    }
}

impl Registry {
    /// Load JSON Lines device records (blank lines are skipped); returns the number loaded.
    /// A repeated registration ID is an upsert: the last line wins.
    pub fn load_jsonl(&mut self, data: &[u8]) -> Result<usize> {
        self.apply_jsonl(ParsedJsonl::from_bytes(data)?)
    }

    /// `load_jsonl` of a file.
    pub fn load_jsonl_file(&mut self, path: &std::path::Path) -> Result<usize> {
        self.apply_jsonl(ParsedJsonl::from_file(path)?)
    }

    /// Apply a parsed input; returns the number of devices loaded.
    pub fn apply_jsonl(&mut self, parsed: ParsedJsonl) -> Result<usize> {
        let parts: Vec<Part> = parsed
            .0
            .iter()
            .map(|c| {
                let names = &c.tag_names.names;
                let ids = (0..names.len() as u32).map(|l| self.intern_tag(names.get(l)));
                (&c.cols, ids.collect())
            })
            .collect();
        self.apply_columns(&parts)
    }

    /// Load devices from columnar arrays (numpy); all or nothing. Returns the number of rows.
    pub fn load_arrays(&mut self, a: Arrays) -> Result<usize> {
        let names = a.tag_names;
        let cols = Columns::from_arrays(a)?;
        let ids = names.iter().map(|t| self.intern_tag(t)).collect();
        self.apply_columns(&[(&cols, ids)])
    }

    /// Apply validated columns, part after part as if one; returns the number of rows.
    pub fn apply_columns(&mut self, parts: &[Part]) -> Result<usize> {
        let n: usize = parts.iter().map(|(c, _)| c.len()).sum();
        let bytes: usize = parts.iter().map(|(c, _)| c.rid.total_bytes()).sum();
        if !self.fits(n, bytes) {
            return Err(Error::invalid("registry is full"));
        }
        self.devices.reserve(n);
        // Hashes on all cores.
        let hashes: Vec<(Vec<u64>, Vec<Option<u64>>)> = parts
            .iter()
            .map(|(c, _)| {
                let mut rid = huge::with_capacity(c.len());
                let mut alias = huge::with_capacity(c.len());
                let rows = || (0..c.len()).into_par_iter();
                rows()
                    .map(|i| self.devices.hash(c.rid.get(i)))
                    .collect_into_vec(&mut rid);
                rows()
                    .map(|i| Some(self.aliases.hash(c.alias.opt(i)?)))
                    .collect_into_vec(&mut alias);
                (rid, alias)
            })
            .collect();
        let (new_aliases, alias_bytes) = self.new_aliases(parts, &hashes);
        self.aliases.reserve(new_aliases, alias_bytes);
        huge::reserve(&mut self.alias_head, new_aliases);
        // A row that created its device (the first line of a new registration ID) only adds
        // memberships: they are gathered range of rows by range of rows once the registration
        // IDs are interned.
        let tags = self.tag_bitmaps.len();
        let per_range = (n / (4 * rayon::current_num_threads())).max(1 << 16);
        let ranges: Vec<Rows> = (0..parts.len())
            .flat_map(|part| {
                let len = parts[part].0.len();
                (0..len).step_by(per_range).map(move |lo| Rows {
                    part,
                    rows: lo..(lo + per_range).min(len),
                })
            })
            .collect();
        // Registration IDs and aliases are interned into separate tables, one core each; the
        // aliases take longer (more look-ups that hit), so the gathering follows the
        // registration IDs on their core, and spreads to both when the aliases are done.
        let ((interned, pending), alias_ids) = {
            let Registry {
                devices,
                aliases,
                alias_head,
                ..
            } = &mut *self;
            rayon::join(
                || {
                    // Each part's index slots are prefetched a few keys ahead.
                    const AHEAD: usize = 16;
                    let interned: Vec<Vec<(u32, bool)>> = parts
                        .iter()
                        .zip(&hashes)
                        .map(|((c, _), (h, _))| {
                            let mut out = huge::with_capacity(c.len());
                            out.extend(h.iter().enumerate().map(|(i, &hr)| {
                                if let Some(&next) = h.get(i + AHEAD) {
                                    devices.prefetch(next);
                                }
                                devices.intern_hashed(hr, c.rid.get(i))
                            }));
                            out
                        })
                        .collect();
                    let pending = ranges
                        .par_iter()
                        .map(|r| Pending::gather(&parts[r.part], &interned[r.part], &r.rows, tags))
                        .collect::<Vec<_>>();
                    (interned, pending)
                },
                || {
                    const AHEAD: usize = 16;
                    let rows = parts.iter().zip(&hashes);
                    rows.map(|((c, _), (_, h))| {
                        let mut out = huge::with_capacity(c.len());
                        for (i, ha) in h.iter().enumerate() {
                            if let Some(&Some(next)) = h.get(i + AHEAD) {
                                aliases.prefetch(next);
                            }
                            out.push(c.alias.opt(i).zip(*ha).map(|(a, ha)| {
                                let (id, new) = aliases.intern_hashed(ha, a);
                                if new {
                                    alias_head.push(NONE);
                                }
                                id
                            }));
                        }
                        out
                    })
                    .collect::<Vec<Vec<_>>>()
                },
            )
        };
        let grown = self.devices.len() - self.alias_next.len();
        huge::reserve(&mut self.alias_next, grown);
        self.alias_next.resize(self.devices.len(), NONE);
        for (((c, _), ids), alias_ids) in parts.iter().zip(&interned).zip(&alias_ids) {
            for (i, &(d, new)) in ids.iter().enumerate() {
                if !new {
                    continue;
                }
                if let Some(a) = alias_ids[i] {
                    self.attach_alias_id(d, a);
                }
                if let Some(m) = c.mobile.opt(i) {
                    self.mobiles.insert(d, m.into());
                }
            }
        }
        Pending::flush(&pending, self);
        // Every other row replaces a device that existed before the load or came earlier in
        // it, in input order (so the last line wins), after the new devices are in place.
        for ((c, tag_ids), ids) in parts.iter().zip(&interned) {
            for (i, &(d, new)) in ids.iter().enumerate() {
                if !new {
                    let tags: Vec<u32> = c.tags(i).iter().map(|&t| tag_ids[t as usize]).collect();
                    let (alias, mobile) = (c.alias.opt(i), c.mobile.opt(i));
                    let (p, v, online) = (c.platform[i], c.vendor[i], c.online[i]);
                    self.replace(d, p, v, &tags, alias, mobile, online);
                }
            }
        }
        // Trim the tables grown by this load (`Registry::settle`).
        self.settle();
        Ok(n)
    }
}

impl Registry {
    /// About how many aliases of a load are new, and their bytes, from the aliases whose hash
    /// falls in the lowest 64th of hash values (a sample of distinct aliases, not of rows).
    /// Growing the alias table as it fills re-hashes every alias from the arena at each
    /// doubling, a tenth of a load's work on the core that interns aliases; sized once instead,
    /// it ends as large as growing would have made it, give or take the 2% margin.
    fn new_aliases(
        &self,
        parts: &[Part],
        hashes: &[(Vec<u64>, Vec<Option<u64>>)],
    ) -> (usize, usize) {
        const SAMPLE_BITS: u32 = 6;
        let mut sample: Vec<(u64, &str)> = parts
            .iter()
            .zip(hashes)
            .flat_map(|((c, _), (_, h))| (0..c.len()).map(|i| c.alias.opt(i)).zip(h))
            .filter_map(|(a, h)| Some(((*h)?, a?)))
            .filter(|&(h, _)| h >> (64 - SAMPLE_BITS) == 0)
            .collect();
        sample.sort_unstable();
        sample.dedup();
        let fresh = sample
            .iter()
            .filter(|(_, a)| self.aliases.lookup(a).is_none());
        let (n, bytes) = fresh.fold((0, 0), |(n, b), (_, a)| (n + 1, b + a.len()));
        let scale = |x: usize| (x << SAMPLE_BITS) / 50 * 51;
        (scale(n), scale(bytes))
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
    /// Tag `t`'s members are `tag_members[tag_ends[t - 1]..tag_ends[t]]`: one buffer, sized
    /// by a first counting pass, instead of a growing list per tag.
    tag_members: Vec<u32>,
    tag_ends: Vec<usize>,
}

impl Pending {
    /// The memberships of the rows `rows` of a part that created their device; `ids` are the
    /// part's interned rows.
    fn gather(
        (c, tag_ids): &Part,
        ids: &[(u32, bool)],
        rows: &std::ops::Range<usize>,
        tags: usize,
    ) -> Self {
        let mut p = Pending {
            live: Vec::new(),
            online: Vec::new(),
            mobile: Vec::new(),
            platforms: vec![Vec::new(); Platform::ALL.len()],
            vendors: vec![Vec::new(); Vendor::ALL.len()],
            buckets: vec![Vec::new(); BUCKETS],
            tag_members: Vec::new(),
            tag_ends: vec![0; tags],
        };
        let fresh = || rows.clone().filter(|&i| ids[i].1);
        // Count each tag's members, then place them: `next[t]` is where tag t's next goes.
        for i in fresh() {
            for &t in c.tags(i) {
                p.tag_ends[tag_ids[t as usize] as usize] += 1;
            }
        }
        let mut next = Vec::with_capacity(tags);
        let mut end = 0;
        for e in &mut p.tag_ends {
            next.push(end);
            end += *e;
            *e = end;
        }
        p.tag_members = huge::filled(end, 0);
        for i in fresh() {
            let d = ids[i].0;
            p.live.push(d);
            p.buckets[bucket_of(c.rid.get(i))].push(d);
            p.platforms[c.platform[i] as usize].push(d);
            if let Some(v) = c.vendor[i] {
                p.vendors[v as usize].push(d);
            }
            for &t in c.tags(i) {
                let at = &mut next[tag_ids[t as usize] as usize];
                p.tag_members[*at] = d;
                *at += 1;
            }
            if c.online[i] {
                p.online.push(d);
            }
            if c.mobile.opt(i).is_some() {
                p.mobile.push(d);
            }
        }
        p
    }

    /// The members of tag `t`.
    fn tag(&self, t: usize) -> &[u32] {
        let start = if t == 0 { 0 } else { self.tag_ends[t - 1] };
        &self.tag_members[start..self.tag_ends[t]]
    }

    /// Add gathered memberships to the registry's bitmaps. The parts come from consecutive
    /// ranges of rows, so each bitmap receives ascending ids (CRoaring appends them).
    fn flush(parts: &[Pending], reg: &mut Registry) {
        fn put<'p>(b: &mut croaring::Bitmap, lists: impl Iterator<Item = &'p [u32]>) {
            for v in lists {
                b.add_many(v);
            }
        }
        put(&mut reg.live, parts.iter().map(|p| &p.live[..]));
        put(&mut reg.online, parts.iter().map(|p| &p.online[..]));
        put(&mut reg.has_mobile, parts.iter().map(|p| &p.mobile[..]));
        type Group = fn(&Pending, usize) -> &[u32];
        let groups: [(&mut Vec<croaring::Bitmap>, Group); 4] = [
            (&mut reg.platforms, |p, j| &p.platforms[j]),
            (&mut reg.vendors, |p, j| &p.vendors[j]),
            (&mut reg.buckets, |p, j| &p.buckets[j]),
            (&mut reg.tag_bitmaps, Pending::tag),
        ];
        for (bms, group) in groups {
            // Bitmaps are independent: fill them on every core.
            bms.par_iter_mut()
                .enumerate()
                .for_each(|(j, b)| put(b, parts.iter().map(|p| group(p, j))));
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

impl<'a> Columns<'a> {
    /// Validate arrays into columns; `tag_ids` are indices into `tag_names` until
    /// `Registry::load_arrays` maps them to registry tag ids.
    pub fn from_arrays(a: Arrays<'a>) -> Result<Self> {
        let n = a.platform.len();
        let rid = Strs::from_spans("registration_id", a.rid_bytes, a.rid_offsets, n)?;
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
            (None, None) => Strs::none(n),
            (Some(b), Some(o)) => Strs::from_spans("alias", b, o, n)?,
            _ => return Err(row_err(0, "alias_bytes and alias_offsets go together")),
        };
        let online = match a.online {
            None => vec![false; n],
            Some(o) if o.len() == n => o.to_vec(),
            Some(_) => return Err(row_err(0, "online must have one flag per device")),
        };
        for i in 0..n {
            check_key("registration_id", rid.get(i)).map_err(|e| load_error(i, e))?;
            if vendor[i].is_some() && platform[i] != Platform::Android {
                return Err(row_err(i, "vendor channel given for a non-Android device"));
            }
            if let Some(al) = alias.opt(i) {
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
            mobile: Strs::none(n),
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
