//! The device JSON Lines import format (DESIGN.md, "Stable contracts") parsed into columns.
//!
//! The input is cut into a few byte ranges per core, parsed in parallel; a range owns the lines
//! that start in it. Each range is read by the thread that parses it, a small block at a time
//! (the file is never in memory whole: at 10M lines, holding it cost more in fresh pages than
//! parsing it), and the strings of its lines are copied into the chunk's columns. Each line is
//! read first by a scanner for the common shape (an object of the known fields whose strings
//! have no escapes or control characters), which borrows every string from the block and
//! allocates nothing. The scanner decides nothing on its own: any line it does not recognise,
//! every malformed line included, is read again by serde_json, so the accepted language and the
//! error messages are serde_json's. Both readers produce a `Line`, checked in one place
//! (`Chunk::push`).

use crate::error::{Error, Result};
use crate::intern::Interner;
use crate::load::{load_error, Columns};
use crate::registry::{check_key, Platform, Registry, Vendor};
use rayon::prelude::*;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The device lines of one slice of the input, in columns (row `i` is the slice's `i`-th
/// device line). The columns own their strings: the input is read a block at a time.
pub(crate) struct Chunk {
    pub cols: Columns<'static>,
    /// The chunk's distinct tags (`cols.tag_ids` index them), so that the registry's tag
    /// index is searched once per distinct tag, not once per membership.
    pub tag_names: TagNames,
}

/// The distinct tags of a chunk, in first-seen order.
///
/// The names are copied into one small arena (`names`): a look-up touches a few kilobytes
/// that stay in cache, not the scattered lines where the names first came. In front of it, a
/// table of the short names (1 to 15 bytes: nearly every tag) holds each name's bytes and
/// length in two words, so that the look-up per membership is a multiply and a two-word
/// compare in one slot, where the interner hashes, probes and calls memcmp on the arena.
#[derive(Default)]
pub(crate) struct TagNames {
    pub names: Interner,
    /// Open addressing, linear probing, a power of two of slots at most three quarters full;
    /// `[0, 0]` marks an empty slot. 16 bytes a slot (10,000 tags take 256 KiB) so that the
    /// table stays in a core's cache beside the input block.
    short: Vec<[u64; 2]>,
    /// The chunk-local id of the name in the same slot of `short`.
    short_ids: Vec<u32>,
    short_len: usize,
}

/// The longest name the short table holds (its length takes the last byte of the key).
const MAX_SHORT: usize = 15;

/// The key of a name of 1 to `MAX_SHORT` bytes: its bytes little-endian in two zeroed words,
/// the length in the top byte, so two names are equal exactly when their keys are.
///
/// Built from overlapping whole-word loads of the name (no byte-wise copy, whose narrow stores
/// would stall the wide loads that follow).
#[inline]
fn short_key(name: &[u8]) -> [u64; 2] {
    let n = name.len();
    debug_assert!((1..=MAX_SHORT).contains(&n));
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let half = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes")));
    // The bytes from `at` on of a load ending at the name's end, moved to the low end.
    let tail = |x: u64, width: usize, from: usize| x.checked_shr(8 * (width - from) as u32);
    let (lo, hi) = if n >= 8 {
        (
            word(&name[..8]),
            tail(word(&name[n - 8..]), 16, n).unwrap_or(0),
        )
    } else if n >= 4 {
        let rest = tail(half(&name[n - 4..]), 8, n).unwrap_or(0);
        (half(&name[..4]) | rest << 32, 0)
    } else {
        let lo = name.iter().rev().fold(0, |acc, &b| acc << 8 | u64::from(b));
        (lo, 0)
    };
    [lo, hi | (n as u64) << 56]
}

/// The slot to probe first for `key` in a table of `len` (a power of two) slots.
fn short_home(key: [u64; 2], len: usize) -> usize {
    let mixed = key[0] ^ key[1].rotate_left(29);
    // Fibonacci hashing: the top bits of the product depend on every bit of the key.
    (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - len.trailing_zeros())) as usize
}

impl TagNames {
    /// Start fetching the slot of each short name of `tags` (a line's tags are looked up one
    /// after another: their cache misses overlap instead of adding up).
    #[inline]
    fn prefetch(&self, tags: &[Cow<str>]) {
        if self.short.is_empty() {
            return;
        }
        for t in tags.iter().filter(|t| (1..=MAX_SHORT).contains(&t.len())) {
            let i = short_home(short_key(t.as_bytes()), self.short.len());
            crate::index::prefetch(&self.short[i]);
            crate::index::prefetch(&self.short_ids[i]);
        }
    }

    /// The chunk-local index of tag `t`, added (after checking it) if new.
    #[inline]
    fn index(&mut self, t: &str) -> Result<u32> {
        if t.is_empty() || t.len() > MAX_SHORT {
            return self.add(t);
        }
        let key = short_key(t.as_bytes());
        if self.short.is_empty() {
            self.short = vec![[0, 0]; 1024];
            self.short_ids = vec![0; 1024];
        }
        let mask = self.short.len() - 1;
        let mut i = short_home(key, self.short.len());
        loop {
            let slot = self.short[i];
            if slot == key {
                return Ok(self.short_ids[i]);
            }
            if slot == [0, 0] {
                break;
            }
            i = (i + 1) & mask;
        }
        let id = self.add(t)?;
        self.short[i] = key;
        self.short_ids[i] = id;
        self.short_len += 1;
        if self.short_len * 4 > self.short.len() * 3 {
            let n = 2 * self.short.len();
            let old = std::mem::replace(&mut self.short, vec![[0, 0]; n]);
            let old_ids = std::mem::replace(&mut self.short_ids, vec![0; n]);
            for (key, id) in old.into_iter().zip(old_ids).filter(|(k, _)| *k != [0, 0]) {
                let mut i = short_home(key, n);
                while self.short[i] != [0, 0] {
                    i = (i + 1) & (n - 1);
                }
                self.short[i] = key;
                self.short_ids[i] = id;
            }
        }
        Ok(id)
    }

    fn add(&mut self, t: &str) -> Result<u32> {
        if let Some(id) = self.names.lookup(t) {
            return Ok(id);
        }
        check_key("tag", t)?;
        Ok(self.names.intern(t).0)
    }
}

/// The fields of a device object.
#[derive(Clone, Copy)]
enum Field {
    Rid,
    Platform,
    Vendor,
    Tags,
    Alias,
    Mobile,
    Online,
}

/// The field names, for serde's "expected one of" message.
const FIELDS: &[&str] = &[
    "registration_id",
    "platform",
    "vendor",
    "tags",
    "alias",
    "mobile",
    "online",
];

impl Field {
    fn of(key: &str) -> Option<Field> {
        // On bytes of known lengths, the compiler compares words instead of calling memcmp.
        Some(match key.as_bytes() {
            b"registration_id" => Field::Rid,
            b"platform" => Field::Platform,
            b"vendor" => Field::Vendor,
            b"tags" => Field::Tags,
            b"alias" => Field::Alias,
            b"mobile" => Field::Mobile,
            b"online" => Field::Online,
            _ => return None,
        })
    }
}

/// The length of the run of bytes at the start of `b` that may stand in a string as they are
/// (no quote, backslash or control character), or `None` if none of those bytes follows.
/// Eight bytes at a time: a byte's high bit is set in `x - 0x01..01 & !x & 0x80..80` exactly
/// when it is zero, except above a zero byte, so the lowest flag is exact.
fn plain_run(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = 0;
    while i + 8 <= b.len() {
        let x = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        // Bytes below 0x20 are those whose top three bits are zero.
        let stop = zero(x ^ (ONES * b'"' as u64))
            | zero(x ^ (ONES * b'\\' as u64))
            | zero(x & (ONES * 0xe0));
        if stop != 0 {
            return Some(i + stop.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| i + p)
}

/// One line's values as read, before `Chunk::push` checks them; its tags are read into a
/// buffer the caller reuses from line to line.
#[derive(Default)]
struct Line<'a> {
    rid: Option<Cow<'a, str>>,
    platform: Option<Cow<'a, str>>,
    vendor: Option<Cow<'a, str>>,
    alias: Option<Cow<'a, str>>,
    mobile: Option<Cow<'a, str>>,
    online: bool,
    /// One bit per `Field` already read.
    seen: u8,
}

impl Line<'_> {
    /// Note that `f` was read; false if it had been already (a repeated field).
    fn first(&mut self, f: Field) -> bool {
        let bit = 1 << f as u8;
        let new = self.seen & bit == 0;
        self.seen |= bit;
        new
    }
}

fn missing(field: &str) -> Error {
    Error::invalid(format!("missing field `{field}`"))
}

impl Chunk {
    /// Check one line's values and append them as a row; drains `tags`.
    fn push(&mut self, line: Line, tags: &mut Vec<Cow<str>>) -> Result<()> {
        let rid = line.rid.ok_or_else(|| missing("registration_id"))?;
        let platform = Platform::parse(&line.platform.ok_or_else(|| missing("platform"))?)?;
        let vendor = line.vendor.map(|v| Vendor::parse(&v)).transpose()?;
        Registry::check_record(
            &rid,
            platform,
            vendor,
            &[], // each distinct tag is checked below, when the chunk first sees it
            line.alias.as_deref(),
            line.mobile.as_deref(),
        )?;
        self.tag_names.prefetch(tags);
        for t in tags.drain(..) {
            let local = self.tag_names.index(&t)?;
            self.cols.push_tag(local);
        }
        let (alias, mobile) = (line.alias.as_deref(), line.mobile.as_deref());
        if !self
            .cols
            .push(&rid, platform, vendor, alias, mobile, line.online)
        {
            return Err(Error::invalid(
                "too many bytes of strings in one part of the input",
            ));
        }
        Ok(())
    }
}

/// A position in one line, for the scanner. Every method skips JSON whitespace first and
/// returns `None` (or false) for anything outside the common shape.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        let b = self.s.as_bytes();
        while matches!(b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Consume `word` (a punctuation byte or a literal) if it comes next.
    fn eat(&mut self, word: &str) -> bool {
        self.ws();
        let hit = self.s.as_bytes()[self.i..].starts_with(word.as_bytes());
        if hit {
            self.i += word.len();
        }
        hit
    }

    fn expect(&mut self, word: &str) -> Option<()> {
        self.eat(word).then_some(())
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.expect("\"")?;
        let start = self.i;
        let b = self.s.as_bytes();
        let len = plain_run(&b[start..])?;
        self.i = start + len + 1;
        if b[start + len] != b'"' {
            return None;
        }
        // Both ends are next to an ASCII quote, so on character boundaries.
        self.s.get(start..start + len)
    }

    /// A string or `null`.
    fn nullable(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.eat("null") {
            return Some(None);
        }
        self.string().map(|s| Some(Cow::Borrowed(s)))
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.eat("true") {
            Some(true)
        } else if self.eat("false") {
            Some(false)
        } else {
            None
        }
    }

    /// Whether only whitespace is left.
    fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.s.len()
    }
}

/// Read a line of the common shape (see the module doc); `None` hands it to serde_json, and
/// then whatever was pushed to `tags` must be dropped.
fn scan<'a>(s: &'a str, tags: &mut Vec<Cow<'a, str>>) -> Option<Line<'a>> {
    let mut c = Cursor { s, i: 0 };
    let mut line = Line::default();
    c.expect("{")?;
    loop {
        let key = c.string()?;
        c.expect(":")?;
        let f = Field::of(key)?;
        if !line.first(f) {
            return None;
        }
        match f {
            Field::Rid => line.rid = Some(c.string()?.into()),
            Field::Platform => line.platform = Some(c.string()?.into()),
            Field::Vendor => line.vendor = c.nullable()?,
            Field::Alias => line.alias = c.nullable()?,
            Field::Mobile => line.mobile = c.nullable()?,
            Field::Online => line.online = c.boolean()?,
            Field::Tags => {
                c.expect("[")?;
                if !c.eat("]") {
                    loop {
                        tags.push(c.string()?.into());
                        if c.eat("]") {
                            break;
                        }
                        c.expect(",")?;
                    }
                }
            }
        }
        if c.eat("}") {
            break;
        }
        c.expect(",")?;
    }
    c.at_end().then_some(line)
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

/// Reads one line's object with serde_json, its tags into the buffer.
struct LineSeed<'t, 'a>(&'t mut Vec<Cow<'a, str>>);

/// Appends a JSON array of tag strings to the buffer.
struct TagsSeed<'t, 'a>(&'t mut Vec<Cow<'a, str>>);

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
        while let Some(Str(t)) = seq.next_element()? {
            self.0.push(t);
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_, 'de> {
    type Value = Line<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Line<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, 'de> {
    type Value = Line<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a device object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Line<'de>, A::Error> {
        let mut line = Line::default();
        let nullable = |v: Option<Str<'de>>| v.map(|s| s.0);
        while let Some(Str(key)) = map.next_key()? {
            let f = Field::of(&key).ok_or_else(|| de::Error::unknown_field(&key, FIELDS))?;
            if !line.first(f) {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            match f {
                Field::Rid => line.rid = Some(map.next_value::<Str>()?.0),
                Field::Platform => line.platform = Some(map.next_value::<Str>()?.0),
                Field::Vendor => line.vendor = nullable(map.next_value()?),
                Field::Alias => line.alias = nullable(map.next_value()?),
                Field::Mobile => line.mobile = nullable(map.next_value()?),
                Field::Online => line.online = map.next_value()?,
                Field::Tags => map.next_value_seed(TagsSeed(&mut *self.0))?,
            }
        }
        Ok(line)
    }
}

/// Read one line with serde_json; the error message without serde's position (the line
/// number says enough).
fn serde_line<'a>(
    raw: &'a [u8],
    tags: &mut Vec<Cow<'a, str>>,
) -> std::result::Result<Line<'a>, String> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let line = LineSeed(tags).deserialize(&mut de);
    line.and_then(|l| de.end().map(|()| l)).map_err(|e| {
        let m = e.to_string();
        match m.rfind(" at line ") {
            Some(i) => m[..i].to_owned(),
            None => m,
        }
    })
}

/// Whether a line holds nothing but whitespace (skipped).
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

/// Where the input of a load comes from: positioned reads of a known length, so that every
/// slice is read by the thread that parses it, a block at a time, into a buffer that stays in
/// cache (the input is never held in memory whole).
pub(crate) trait Source: Sync {
    /// The input's length in bytes (fixed when the load starts).
    fn size(&self) -> usize;
    /// Fill `buf` from offset `at` (`at + buf.len() <= size()`).
    fn read_exact_at(&self, buf: &mut [u8], at: usize) -> Result<()>;
}

impl Source for &[u8] {
    fn size(&self) -> usize {
        self.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], at: usize) -> Result<()> {
        buf.copy_from_slice(&self[at..at + buf.len()]);
        Ok(())
    }
}

/// A file as its length when opened (positioned reads from several threads are a Unix API).
#[cfg(unix)]
pub(crate) struct FileSource {
    file: std::fs::File,
    len: usize,
}

#[cfg(unix)]
impl FileSource {
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| Error::Io("file too large".into()))?;
        Ok(FileSource { file, len })
    }
}

#[cfg(unix)]
impl Source for FileSource {
    fn size(&self) -> usize {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], at: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, at as u64).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Io("the file shrank while it was being loaded".into())
            } else {
                e.into()
            }
        })
    }
}

/// A slice parsed, and how many lines start in it (blank ones included), so that the lines of
/// later slices can be numbered.
type Parsed = (usize, std::result::Result<Chunk, (usize, Error)>);

/// Bytes of JSON Lines input parsed so far by every load of this process: only ever grows, so
/// a progress display reads it before a load and while it runs. Counts a refused slice's bytes
/// up to its bad line's block.
pub static PARSED_BYTES: AtomicU64 = AtomicU64::new(0);

/// The shortest device line, `{"registration_id":"x","platform":"ios"}` and its newline: at
/// most `len / MIN_LINE + 1` lines of devices start in `len` bytes.
const MIN_LINE: usize = 41;
/// Bytes read at a time by a slice (grown for a longer line): small enough to stay in cache.
const BLOCK: usize = 128 << 10;

/// Parse the lines that start at offsets `range` of `src` (a line starts at 0 and after each
/// newline; the last may run past `range.end`); a refusal carries the 0-based line within the
/// slice.
fn parse_range(src: &dyn Source, range: std::ops::Range<usize>) -> Parsed {
    let fail = |e: Error| (0, Err((0, e)));
    let len = src.size();
    // Room for as many rows as the slice could hold (only the memory written is backed); the
    // string and tag columns start at the sizes of the usual lines and grow if need be.
    let span = range.len();
    let mut c = Chunk {
        cols: Columns::with_capacity(span / MIN_LINE + 1, span / 16, span / 8, span / 16),
        tag_names: TagNames::default(),
    };
    let mut buf = vec![0u8; BLOCK];
    // The first line starting in the range: at its start, or after the first newline from
    // the byte before it.
    let mut start = range.start;
    if start > 0 {
        start -= 1;
        loop {
            if start >= len {
                return (0, Ok(c));
            }
            let n = buf.len().min(len - start);
            if let Err(e) = src.read_exact_at(&mut buf[..n], start) {
                return fail(e);
            }
            if let Some(p) = memchr::memchr(b'\n', &buf[..n]) {
                start += p + 1;
                break;
            }
            start += n;
        }
    }
    // `buf[..filled]` holds the input from `start`, the start of the next line.
    let mut filled = 0;
    let mut lines = 0;
    while start < range.end && start < len {
        let end = len.min(start + buf.len());
        if start + filled < end {
            if let Err(e) = src.read_exact_at(&mut buf[filled..end - start], start + filled) {
                return fail(e);
            }
            filled = end - start;
        }
        let at_eof = end == len;
        let mut off = 0;
        {
            // The tags of a line borrow the buffer until its next refill.
            let mut tags = Vec::new();
            while start + off < range.end && off < filled {
                let rest = &buf[off..filled];
                let (raw, next) = match memchr::memchr(b'\n', rest) {
                    Some(p) => (&rest[..p], off + p + 1),
                    None if at_eof => (rest, filled),
                    None => break,
                };
                let i = lines;
                lines += 1;
                off = next;
                if is_blank(raw) {
                    continue;
                }
                if let Err(e) = parse_line(&mut c, raw, &mut tags) {
                    PARSED_BYTES.fetch_add(off as u64, Ordering::Relaxed);
                    return (lines, Err((i, e)));
                }
            }
        }
        PARSED_BYTES.fetch_add(off as u64, Ordering::Relaxed);
        if off == 0 && start + filled < len && filled == buf.len() {
            // A line longer than the buffer.
            buf.resize(2 * buf.len(), 0);
        }
        buf.copy_within(off..filled, 0);
        filled -= off;
        start += off;
    }
    (lines, Ok(c))
}

/// Read one non-blank line into the chunk: the scanner first, serde_json if it declines.
fn parse_line<'a>(c: &mut Chunk, raw: &'a [u8], tags: &mut Vec<Cow<'a, str>>) -> Result<()> {
    tags.clear();
    let line = match std::str::from_utf8(raw).ok().and_then(|s| scan(s, tags)) {
        Some(line) => line,
        None => {
            tags.clear();
            serde_line(raw, tags).map_err(Error::invalid)?
        }
    };
    c.push(line, tags)
}

/// Parse JSON Lines device records into one chunk per slice, in input order. Blank lines are
/// skipped; the first bad line (1-based) refuses the whole input.
pub(crate) fn parse(src: &dyn Source) -> Result<Vec<Chunk>> {
    // A few slices per core balance the cores; each slice costs a look-up per distinct tag
    // when merged, so not many more (but at most 1 GiB each: a slice's strings are indexed
    // by `u32`).
    const MIN_SLICE: usize = 1 << 20;
    const MAX_SLICE: usize = 1 << 30;
    let len = src.size();
    let n = (rayon::current_num_threads() * 4)
        .min(len / MIN_SLICE + 1)
        .max(len / MAX_SLICE + 1);
    let bounds: Vec<usize> = (0..=n)
        .map(|k| len / n * k + if k == n { len % n } else { 0 })
        .collect();
    let parsed: Vec<Parsed> = (0..n)
        .into_par_iter()
        .map(|k| parse_range(src, bounds[k]..bounds[k + 1]))
        .collect();
    let mut before = 0;
    let mut chunks = Vec::with_capacity(parsed.len());
    for (lines, chunk) in parsed {
        match chunk {
            Ok(c) => chunks.push(c),
            Err((_, Error::Io(m))) => return Err(Error::Io(m)),
            Err((i, e)) => return Err(load_error(before + i + 1, e)),
        }
        before += lines;
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json alone makes of a line: the reference the scanner must agree with.
    fn by_serde(raw: &str) -> Option<(Vec<Option<String>>, bool, Vec<String>)> {
        let mut tags = Vec::new();
        let l = serde_line(raw.as_bytes(), &mut tags).ok()?;
        Some(summary(l, tags))
    }

    fn summary(l: Line, tags: Vec<Cow<str>>) -> (Vec<Option<String>>, bool, Vec<String>) {
        let s = |v: Option<Cow<str>>| v.map(String::from);
        let fields = vec![
            s(l.rid),
            s(l.platform),
            s(l.vendor),
            s(l.alias),
            s(l.mobile),
        ];
        (
            fields,
            l.online,
            tags.into_iter().map(String::from).collect(),
        )
    }

    #[test]
    fn scanner_reads_what_serde_reads_or_declines() {
        let lines = [
            r#"{"registration_id":"a","platform":"android","vendor":"hms","tags":["x","深圳"],"alias":"u","online":true}"#,
            r#" { "registration_id" : "a" , "platform" : "ios" , "tags" : [ ] , "mobile" : null } "#,
            r#"{"registration_id":"a","platform":"ios","alias":null,"online":false}"#,
            r#"{"registration_id":"a\"b","platform":"ios"}"#,
            r#"{"registration_id":"a","platform":"ios","tags":["x",]}"#,
            r#"{"registration_id":"a","platform":"ios","online":truex}"#,
            r#"{"registration_id":"a","platform":"ios","online":null}"#,
            r#"{"registration_id":"a","platform":"ios","tags":null}"#,
            r#"{"registration_id":"a","platform":"ios","registration_id":"b"}"#,
            r#"{"registration_id":"a","platform":"ios","colour":1}"#,
            r#"{"registration_id":"a","platform":"ios"} x"#,
            r#"{"registration_id":"a","platform":"ios"}}"#,
            "{\"registration_id\":\"a\tb\",\"platform\":\"ios\"}",
            r#"{}"#,
            r#"{"platform":"ios"}"#,
            r#"{"registration_id":"a","platform":"ios",}"#,
            r#"[]"#,
            r#""#,
        ];
        for raw in lines {
            let mut tags = Vec::new();
            if let Some(l) = scan(raw, &mut tags) {
                assert_eq!(Some(summary(l, tags)), by_serde(raw), "{raw}");
            }
        }
        let mut tags = Vec::new();
        assert!(
            scan(lines[0], &mut tags).is_some(),
            "the common shape is scanned"
        );
        assert!(scan(lines[3], &mut tags).is_none(), "escapes go to serde");
    }

    #[test]
    fn short_keys_hold_the_bytes_and_length() {
        let simple = |name: &[u8]| {
            let mut b = [0u8; 16];
            b[..name.len()].copy_from_slice(name);
            b[15] = name.len() as u8;
            [
                u64::from_le_bytes(b[..8].try_into().unwrap()),
                u64::from_le_bytes(b[8..].try_into().unwrap()),
            ]
        };
        let text = "深圳abcdefghijklmno";
        for start in 0..4 {
            for n in 1..=MAX_SHORT {
                let name = &text.as_bytes()[start..start + n];
                assert_eq!(short_key(name), simple(name), "{name:?}");
            }
        }
    }

    #[test]
    fn tag_names_are_numbered_in_first_seen_order() {
        let mut t = TagNames::default();
        let names: Vec<String> = (0..5000)
            .map(|i| match i % 3 {
                0 => format!("t{i}"),
                1 => format!("long tag name number {i}"),
                _ => format!("深{i}"),
            })
            .collect();
        for round in 0..2 {
            for (i, n) in names.iter().enumerate() {
                assert_eq!(t.index(n).unwrap(), i as u32, "round {round}");
            }
        }
        assert_eq!(t.names.len(), names.len());
        assert!(t.index("").is_err());
    }

    #[test]
    fn ranges_own_the_lines_that_start_in_them() {
        let data: &[u8] = b"{\"registration_id\":\"a\",\"platform\":\"ios\"}\n\n{\"registration_id\":\"b\",\"platform\":\"ios\"}\n{\"registration_id\":\"c\",\"platform\":\"x\"}";
        let good = &data[..data.len() - 38];
        // Every cut of the input in two: each line parsed once, by the part it starts in.
        for cut in 0..=good.len() {
            let (n1, c1) = parse_range(&good, 0..cut);
            let (n2, c2) = parse_range(&good, cut..good.len());
            assert_eq!(n1 + n2, 3, "cut at {cut}");
            let (c1, c2) = (c1.ok().unwrap(), c2.ok().unwrap());
            let rids: Vec<&str> = [&c1, &c2]
                .iter()
                .flat_map(|c| (0..c.cols.len()).map(|i| c.cols.rid.get(i)))
                .collect();
            assert_eq!(rids, ["a", "b"], "cut at {cut}");
        }
        let e = parse(&data).err().unwrap();
        assert_eq!(e.to_string(), "line 4: unknown platform \"x\"");
    }

    #[test]
    fn lines_longer_than_a_block_are_read_whole() {
        let tags: Vec<String> = (0..2 * BLOCK / 5)
            .map(|i| format!("\"t{}\"", i % 5000))
            .collect();
        let long = format!(
            "{{\"registration_id\":\"long\",\"platform\":\"ios\",\"tags\":[{}]}}",
            tags.join(",")
        );
        assert!(long.len() > 2 * BLOCK);
        let data = format!("{long}\n{{\"registration_id\":\"b\",\"platform\":\"ios\"}}\n{long}");
        let mut r = Registry::new();
        assert_eq!(r.load_jsonl(data.as_bytes()).unwrap(), 3);
        assert_eq!(r.device("long").unwrap().tags.len(), 5000);
        assert!(r.device("b").is_some());
    }

    /// A line built from the format's pieces: objects of known and unknown keys with good and
    /// bad values, odd whitespace, escapes, missing or extra punctuation.
    fn line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        use proptest::sample::select;
        let odd_keys = ["colour", "registration\\u005fid", ""];
        let key = select(FIELDS.iter().chain(&odd_keys).copied().collect::<Vec<_>>());
        let value = select(
            &[
                "\"a\"",
                "\"ios\"",
                "\"android\"",
                "\"hms\"",
                "\"深圳\"",
                "\"a\\\"b\"",
                "\"\\u6df1\"",
                "\"a\tb\"",
                "\"\"",
                "null",
                "true",
                "false",
                "1",
                "[]",
                "[\"x\"]",
                "[\"x\",\"深圳\"]",
                "[\"x\",]",
                "[\"x\" \"y\"]",
                "[null]",
                "[\"\\u0000\"]",
                "{}",
                "\"a",
                "nul",
                "truex",
            ][..],
        );
        let gap = select(&["", " ", "\t", "\r", "\u{c}", " \n "][..]);
        let field = (gap.clone(), key, gap.clone(), value, gap.clone())
            .prop_map(|(a, k, b, v, c)| format!("{a}\"{k}\"{b}:{c}{v}"));
        let sep = select(&[",", ",", ",", "", ",,", ";"][..]);
        let end = select(&["}", "}", "} ", "}\r", "", "}}", "} x", "]"][..]);
        (
            select(&["{", "{", " {", "[", ""][..]),
            proptest::collection::vec((field, sep), 0..8),
            end,
        )
            .prop_map(|(open, fields, end)| {
                let mut s = String::from(open);
                let n = fields.len();
                for (k, (f, sep)) in fields.into_iter().enumerate() {
                    s.push_str(&f);
                    if k + 1 < n {
                        s.push_str(sep);
                    }
                }
                s + end
            })
    }

    proptest::proptest! {
        /// The scanner either declines a line or reads exactly what serde_json reads.
        #[test]
        fn scanner_agrees_with_serde(raw in line()) {
            let mut tags = Vec::new();
            if let Some(l) = scan(&raw, &mut tags) {
                proptest::prop_assert_eq!(Some(summary(l, tags)), by_serde(&raw));
            }
        }
    }

    #[test]
    fn slices_of_a_large_input_number_their_lines() {
        // Large enough for several slices, with blank lines and a repeated device.
        let mut data = String::new();
        for i in 0..40_000 {
            data.push_str(&format!(
                "{{\"registration_id\":\"r{}\",\"platform\":\"ios\",\"tags\":[\"t{}\"]}}\n",
                i % 39_999,
                i % 7
            ));
            if i % 1000 == 0 {
                data.push('\n');
            }
        }
        let mut r = Registry::new();
        assert_eq!(r.load_jsonl(data.as_bytes()).unwrap(), 40_000);
        assert_eq!(r.len(), 39_999);
        // r0 is on lines 1 (t0) and 40,040 (t1: 39,999 % 7).
        assert_eq!(
            r.device("r0").unwrap().tags,
            vec!["t1".to_string()],
            "the last line wins"
        );
        // Device line 30,000 (0-based) has 30,000 device lines and 30 blank lines before it.
        let bad = data.replacen(
            "\"r30000\",\"platform\":\"ios\"",
            "\"r30000\",\"platform\":\"x\"",
            1,
        );
        let e = Registry::new().load_jsonl(bad.as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "line 30031: unknown platform \"x\"");
    }
}
