//! The device JSON Lines import format (DESIGN.md, "Stable contracts") parsed into columns.
//!
//! The input is cut at line ends into a few slices per core, parsed in parallel. Each line is
//! read first by a scanner for the common shape (an object of the known fields whose strings
//! have no escapes or control characters), which borrows every string from the input and
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
/// device line).
#[derive(Default)]
pub(crate) struct Chunk<'a> {
    pub cols: Columns<'a>,
    /// The chunk's distinct tags (`cols.tag_ids` index them), so that the registry's tag
    /// index is searched once per distinct tag, not once per membership.
    pub tag_names: TagNames,
}

/// The distinct tags of a chunk, in first-seen order.
///
/// The names are copied into one small arena (`names`): a look-up touches a few kilobytes
/// that stay in cache, not the scattered lines where the names first came. In front of it, a
/// table of the short names (1 to 16 bytes: nearly every tag) holds each name's bytes in two
/// words, so that the look-up per membership is a multiply and a two-word compare in one
/// slot, where the interner hashes, probes and calls memcmp on the arena.
#[derive(Default)]
pub(crate) struct TagNames {
    pub names: Interner,
    /// Open addressing, linear probing, at most three quarters full (10,000 tags take 384 KiB,
    /// which stays in a core's cache); `len == 0` marks an empty slot.
    short: Vec<ShortTag>,
    short_len: usize,
}

#[derive(Clone, Copy, Default)]
struct ShortTag {
    words: [u64; 2],
    len: u32,
    id: u32,
}

impl ShortTag {
    /// The slot of a name of 1 to 16 bytes (its bytes little-endian in two zeroed words, so
    /// two names of one length are equal exactly when their words are).
    fn of(name: &[u8]) -> Self {
        let mut words = [0u64; 2];
        for (k, &b) in name.iter().enumerate() {
            words[k / 8] |= u64::from(b) << (8 * (k % 8));
        }
        ShortTag {
            words,
            len: name.len() as u32,
            id: 0,
        }
    }

    /// The slot to probe first in a table of `mask + 1` (a power of two) slots.
    fn home(&self, mask: usize) -> usize {
        let mixed = self.words[0] ^ self.words[1].rotate_left(29) ^ u64::from(self.len);
        // Fibonacci hashing: the top bits of the product depend on every bit of the key.
        let bits = mask.count_ones();
        (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }
}

impl TagNames {
    /// The chunk-local index of tag `t`, added (after checking it) if new.
    fn index(&mut self, t: &str) -> Result<u32> {
        if t.is_empty() || t.len() > 16 {
            return self.add(t);
        }
        let mut key = ShortTag::of(t.as_bytes());
        if self.short.is_empty() {
            self.short = vec![ShortTag::default(); 1024];
        }
        let mask = self.short.len() - 1;
        let mut i = key.home(mask);
        loop {
            let slot = self.short[i];
            if slot.len == 0 {
                break;
            }
            if slot.len == key.len && slot.words == key.words {
                return Ok(slot.id);
            }
            i = (i + 1) & mask;
        }
        key.id = self.add(t)?;
        self.short[i] = key;
        self.short_len += 1;
        if self.short_len * 4 > self.short.len() * 3 {
            let old = std::mem::replace(&mut self.short, vec![ShortTag::default(); 2 * (mask + 1)]);
            let mask = self.short.len() - 1;
            for slot in old.into_iter().filter(|s| s.len != 0) {
                let mut i = slot.home(mask);
                while self.short[i].len != 0 {
                    i = (i + 1) & mask;
                }
                self.short[i] = slot;
            }
        }
        Ok(key.id)
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

impl<'a> Chunk<'a> {
    /// Check one line's values and append them as a row; drains `tags`.
    fn push(&mut self, line: Line<'a>, tags: &mut Vec<Cow<'a, str>>) -> Result<()> {
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
        for t in tags.drain(..) {
            let local = self.tag_names.index(&t)?;
            self.cols.tag_ids.push(local);
        }
        let c = &mut self.cols;
        c.rid.push(rid);
        c.platform.push(platform);
        c.vendor.push(vendor);
        c.tag_indptr.push(c.tag_ids.len());
        c.alias.push(line.alias);
        c.mobile.push(line.mobile);
        c.online.push(line.online);
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

/// A slice of whole lines parsed, and how many lines it holds (blank ones included), so that
/// the lines of later slices can be numbered.
type Parsed<'a> = (usize, std::result::Result<Chunk<'a>, (usize, Error)>);

/// Bytes of JSON Lines input parsed so far by every load of this process: only ever grows, so
/// a progress display reads it before a load and while it runs. Counts a refused slice's bytes
/// up to its bad line.
pub static PARSED_BYTES: AtomicU64 = AtomicU64::new(0);
/// How often (in lines) a slice adds to `PARSED_BYTES`: rarely enough to cost nothing.
const PROGRESS_LINES: usize = 1 << 14;

/// Parse a slice of whole lines; a refusal carries the 0-based line within the slice.
fn parse_slice(data: &[u8]) -> Parsed<'_> {
    let mut c = Chunk::default();
    let mut tags = Vec::new();
    let mut start = 0;
    let mut lines = 0;
    let mut reported = 0;
    for end in memchr::memchr_iter(b'\n', data).chain([data.len()]) {
        if lines % PROGRESS_LINES == 0 {
            PARSED_BYTES.fetch_add((start - reported) as u64, Ordering::Relaxed);
            reported = start;
        }
        let i = lines;
        let raw = &data[start..end];
        start = end + 1;
        lines += 1;
        if is_blank(raw) {
            continue;
        }
        tags.clear();
        let line = match std::str::from_utf8(raw)
            .ok()
            .and_then(|s| scan(s, &mut tags))
        {
            Some(line) => line,
            None => {
                tags.clear();
                match serde_line(raw, &mut tags) {
                    Ok(line) => line,
                    Err(m) => return (lines, Err((i, Error::invalid(m)))),
                }
            }
        };
        if let Err(e) = c.push(line, &mut tags) {
            return (lines, Err((i, e)));
        }
    }
    PARSED_BYTES.fetch_add((data.len() - reported) as u64, Ordering::Relaxed);
    // The last "line" is what follows the last newline: part of this slice only at the end
    // of the input (slices other than the last end with a newline, so it is empty there).
    (lines - 1, Ok(c))
}

/// Cut `data` into about `n` slices of whole lines (each but the last ends with a newline).
fn slices(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..=n {
        let target = (data.len() / n * k).max(start);
        let end = match memchr::memchr(b'\n', &data[target..]) {
            Some(p) if k < n => target + p + 1,
            _ => data.len(),
        };
        out.push(&data[start..end]);
        start = end;
        if end == data.len() {
            break;
        }
    }
    out
}

/// Parse JSON Lines device records into one chunk per slice, in input order. Blank lines are
/// skipped; the first bad line (1-based) refuses the whole input.
pub(crate) fn parse(data: &[u8]) -> Result<Vec<Chunk<'_>>> {
    // A few slices per core balance the cores; each slice costs a look-up per distinct tag
    // when merged, so not many more.
    const MIN_SLICE: usize = 1 << 20;
    let n = (rayon::current_num_threads() * 4).min(data.len() / MIN_SLICE + 1);
    let parsed: Vec<Parsed> = slices(data, n).into_par_iter().map(parse_slice).collect();
    let mut before = 0;
    let mut chunks = Vec::with_capacity(parsed.len());
    for (lines, chunk) in parsed {
        match chunk {
            Ok(c) => chunks.push(c),
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
    fn slices_cut_at_line_ends_and_number_lines() {
        let data = b"{\"registration_id\":\"a\",\"platform\":\"ios\"}\n\n{\"registration_id\":\"b\",\"platform\":\"ios\"}\n{\"registration_id\":\"c\",\"platform\":\"x\"}";
        for n in 1..8 {
            let parts = slices(data, n);
            assert_eq!(parts.concat(), data.to_vec());
            assert!(parts[..parts.len() - 1].iter().all(|p| p.ends_with(b"\n")));
            let lines: usize = parts.iter().map(|p| parse_slice(p).0).sum();
            assert_eq!(lines, 4);
        }
        let e = parse(data).err().unwrap();
        assert_eq!(e.to_string(), "line 4: unknown platform \"x\"");
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
