//! Registration IDs interned into dense device ids, stored packed when they look like JPush's.
//!
//! JPush registration IDs are lowercase hex strings, usually 19 characters long. Such an ID is
//! kept as half a byte per character in a fixed 10-byte slot (`SLOT`), so the store needs no
//! offsets and 10 bytes per device instead of 19 + 4. Any other ID (shorter than 5 or longer
//! than 19 characters, upper case, not hex, ...) is "spilled": its slot points into a plain
//! arena of such strings.
//!
//! Invariants:
//! - ids are dense, assigned in first-seen order from 0, and never reused or changed;
//! - slot `id` is canonical: either *packed*, the high nibble of byte 0 is `len - MIN_PACKED`
//!   and the next `len` nibbles are the hex digits, every later nibble zero; or *spilled*,
//!   byte 0 is `SPILLED << 4`, bytes 1..5 are the little-endian index of the string in the
//!   spill arena, the rest zero. Spilled strings appear in the arena in id order, and a
//!   string is spilled exactly when `pack` refuses it, so every ID has one representation;
//! - the index hashes the packed slot of a packed ID and the UTF-8 bytes of a spilled one.

use crate::index::{prefetch, IdIndex};
use crate::intern::MAX_ARENA;
use hashbrown::DefaultHashBuilder;
use rayon::prelude::*;
use std::hash::BuildHasher;
use std::ops::Deref;

/// Bytes per device: a length nibble and up to 19 hex nibbles.
pub const SLOT: usize = 10;
/// Packed lengths are `MIN_PACKED..=MAX_PACKED`, coded as `len - MIN_PACKED` in one nibble.
pub const MIN_PACKED: usize = 5;
pub const MAX_PACKED: usize = 2 * SLOT - 1;
/// The length code of a spilled slot (one past the last packed length).
const SPILLED: u8 = (MAX_PACKED - MIN_PACKED + 1) as u8;

type Slot = [u8; SLOT];

/// The nibble of each lowercase hex digit; `0xff` for every other byte.
const NIBBLE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut c = 0;
    while c < 16 {
        t[b"0123456789abcdef"[c] as usize] = c as u8;
        c += 1;
    }
    t
};

/// The packed slot of `s`, if it is a lowercase hex string of a packable length.
pub fn pack(s: &str) -> Option<Slot> {
    let b = s.as_bytes();
    if !(MIN_PACKED..=MAX_PACKED).contains(&b.len()) {
        return None;
    }
    // The nibbles, most significant first: the length code, then one per character; no
    // branch per character (a table look-up and an OR collecting any invalid byte).
    let mut acc = (b.len() - MIN_PACKED) as u128;
    let mut bad = 0u8;
    for &c in b {
        let v = NIBBLE[c as usize];
        bad |= v;
        acc = (acc << 4) | (v & 0xf) as u128;
    }
    if bad & 0xf0 != 0 {
        return None;
    }
    // Left-align the 1 + len nibbles in the slot's 2 * SLOT nibbles (zeros after).
    acc <<= 4 * (2 * SLOT - 1 - b.len());
    Some(
        acc.to_be_bytes()[16 - SLOT..]
            .try_into()
            .expect("SLOT bytes"),
    )
}

fn spilled_slot(index: u32) -> Slot {
    let mut slot = [0u8; SLOT];
    slot[0] = SPILLED << 4;
    slot[1..5].copy_from_slice(&index.to_le_bytes());
    slot
}

/// A registration ID read back from the store: decoded into a small buffer, or borrowed.
pub enum Rid<'a> {
    Packed { buf: [u8; MAX_PACKED], len: u8 },
    Spilled(&'a str),
}

impl Deref for Rid<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            // SAFETY: a packed buffer holds lowercase hex digits only (ASCII).
            Rid::Packed { buf, len } => unsafe {
                std::str::from_utf8_unchecked(&buf[..*len as usize])
            },
            Rid::Spilled(s) => s,
        }
    }
}

/// A key as the index sees it.
enum Key<'a> {
    Packed(Slot),
    Spilled(&'a str),
}

/// # Examples
///
/// ```
/// let mut r = reach::rid::RidStore::new();
/// assert_eq!(r.intern("1507bfd3f7c466c3b57"), (0, true)); // packed
/// assert_eq!(r.intern("ABC"), (1, true)); // spilled
/// assert_eq!(r.lookup("1507bfd3f7c466c3b57"), Some(0));
/// assert_eq!(&*r.get(1), "ABC");
/// ```
#[derive(Default, Clone)]
pub struct RidStore {
    slots: Vec<Slot>,
    spill: Vec<u8>,
    spill_ends: Vec<u32>,
    index: IdIndex,
    hasher: DefaultHashBuilder,
}

/// The string bytes of spilled entry `k`.
fn spill_span<'a>(spill: &'a [u8], ends: &[u32], k: u32) -> &'a [u8] {
    let k = k as usize;
    let start = if k == 0 { 0 } else { ends[k - 1] as usize };
    &spill[start..ends[k] as usize]
}

fn spill_index(slot: &Slot) -> Option<u32> {
    (slot[0] >> 4 == SPILLED).then(|| u32::from_le_bytes(slot[1..5].try_into().expect("4")))
}

/// The hash of a stored id (the index calls it when it grows).
fn rehash<'a>(
    slots: &'a [Slot],
    spill: &'a [u8],
    ends: &'a [u32],
    hasher: &'a DefaultHashBuilder,
) -> impl Fn(u32) -> u64 + 'a {
    move |id| {
        let slot = &slots[id as usize];
        match spill_index(slot) {
            Some(k) => hasher.hash_one(spill_span(spill, ends, k)),
            None => hasher.hash_one(slot),
        }
    }
}

impl RidStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The index with the re-hash function it needs to grow (fields borrowed apart).
    fn index_mut(&mut self) -> (&mut IdIndex, impl Fn(u32) -> u64 + '_) {
        let Self {
            slots,
            spill,
            spill_ends,
            index,
            hasher,
        } = self;
        (index, rehash(slots, spill, spill_ends, hasher))
    }

    /// Number of interned IDs (the next id).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The registration ID of `id`. Panics if `id` was never assigned.
    pub fn get(&self, id: u32) -> Rid<'_> {
        let slot = &self.slots[id as usize];
        if let Some(k) = spill_index(slot) {
            let bytes = spill_span(&self.spill, &self.spill_ends, k);
            // SAFETY: only whole `&str`s are spilled, and `from_parts` checks loaded ones.
            return Rid::Spilled(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        let len = (slot[0] >> 4) as usize + MIN_PACKED;
        let mut buf = [0u8; MAX_PACKED];
        for (i, c) in buf[..len].iter_mut().enumerate() {
            let n = i + 1;
            let v = (slot[n / 2] >> (if n % 2 == 0 { 4 } else { 0 })) & 0xf;
            *c = b"0123456789abcdef"[v as usize];
        }
        Rid::Packed {
            buf,
            len: len as u8,
        }
    }

    fn key<'a>(&self, s: &'a str) -> (Key<'a>, u64) {
        match pack(s) {
            Some(slot) => (Key::Packed(slot), self.hasher.hash_one(slot)),
            None => (Key::Spilled(s), self.hasher.hash_one(s.as_bytes())),
        }
    }

    /// Whether `id` holds `key`.
    fn holds(&self, id: u32, key: &Key) -> bool {
        let slot = &self.slots[id as usize];
        match key {
            Key::Packed(p) => slot == p,
            Key::Spilled(s) => spill_index(slot)
                .is_some_and(|k| spill_span(&self.spill, &self.spill_ends, k) == s.as_bytes()),
        }
    }

    /// The id of `s`, if interned.
    pub fn lookup(&self, s: &str) -> Option<u32> {
        let (key, h) = self.key(s);
        self.index.find(h, |id| self.holds(id, &key))
    }

    /// The ids of many IDs at once, in the order given (`IdIndex::find_many`).
    pub fn lookup_many(&self, ids: &[&str]) -> Vec<Option<u32>> {
        let (keys, hashes): (Vec<Key>, Vec<u64>) = ids.iter().map(|s| self.key(s)).unzip();
        let slot_of = |id: u32| prefetch(&self.slots[id as usize]);
        self.index
            .find_many(&hashes, &[&slot_of], |i, id| self.holds(id, &keys[i]))
    }

    /// Whether `extra` more bytes of spilled IDs still fit.
    pub fn fits(&self, extra: usize) -> bool {
        self.spill.len().saturating_add(extra) <= MAX_ARENA
    }

    /// The hash `intern_hashed` takes for `s` (bulk loads compute these on all cores first).
    pub fn hash(&self, s: &str) -> u64 {
        self.key(s).1
    }

    /// Start fetching what interning a string of hash `h` will read first (bulk loads call it
    /// a few strings ahead).
    pub fn prefetch(&self, h: u64) {
        self.index.prefetch(h);
    }

    /// The id of `s`, interning it if new; the flag says whether it was new.
    /// The caller checks `fits` first: a spill arena overflow panics.
    pub fn intern(&mut self, s: &str) -> (u32, bool) {
        self.intern_hashed(self.hash(s), s)
    }

    /// `intern` with `h == self.hash(s)` already computed.
    pub fn intern_hashed(&mut self, h: u64, s: &str) -> (u32, bool) {
        debug_assert_eq!(h, self.hash(s));
        let key = match pack(s) {
            Some(slot) => Key::Packed(slot),
            None => Key::Spilled(s),
        };
        if let Some(id) = self.index.find(h, |id| self.holds(id, &key)) {
            return (id, false);
        }
        let id = self.slots.len() as u32;
        self.slots.push(match key {
            Key::Packed(slot) => slot,
            Key::Spilled(s) => {
                assert!(self.fits(s.len()), "registration ID arena overflow");
                self.spill.extend_from_slice(s.as_bytes());
                self.spill_ends.push(self.spill.len() as u32);
                spilled_slot(self.spill_ends.len() as u32 - 1)
            }
        });
        let (index, rehash) = self.index_mut();
        index.insert_unique(h, id, rehash);
        (id, true)
    }

    /// Reserve room for `n` more IDs.
    pub fn reserve(&mut self, n: usize) {
        crate::huge::reserve(&mut self.slots, n);
        let (index, rehash) = self.index_mut();
        index.reserve(n, rehash);
    }

    /// The raw parts, for snapshots: the slots (`SLOT` bytes per id), the spill arena and its
    /// end offsets.
    pub fn parts(&self) -> (&[u8], &[u8], &[u32]) {
        (self.slots.as_flattened(), &self.spill, &self.spill_ends)
    }

    /// Rebuild from raw parts (a snapshot), refusing any that `parts` could not have made:
    /// non-canonical slots, spilled strings out of order, not UTF-8 or packable, repeated IDs.
    pub fn from_parts(slots: &[u8], spill: Vec<u8>, spill_ends: Vec<u32>) -> Result<Self, String> {
        if !slots.len().is_multiple_of(SLOT) {
            return Err("registration ID slots have a partial slot".into());
        }
        let text = std::str::from_utf8(&spill).map_err(|_| "spilled ID is not UTF-8")?;
        let mut prev = 0u32;
        for &e in &spill_ends {
            if e < prev || e as usize > spill.len() || !text.is_char_boundary(e as usize) {
                return Err("spilled ID offsets out of order or inside a character".into());
            }
            prev = e;
        }
        if prev as usize != spill.len() {
            return Err("spilled ID arena has trailing bytes".into());
        }
        let slots: Vec<Slot> = crate::huge::collected(
            slots.len() / SLOT,
            slots
                .chunks_exact(SLOT)
                .map(|c| c.try_into().expect("SLOT bytes")),
        );
        let mut next_spill = 0u32;
        for slot in &slots {
            if let Some(k) = spill_index(slot) {
                if k != next_spill
                    || slot[0] & 0xf != 0
                    || slot[5..].iter().any(|&b| b != 0)
                    || k as usize >= spill_ends.len()
                {
                    return Err("spilled registration ID slot out of order".into());
                }
                let bytes = spill_span(&spill, &spill_ends, k);
                // SAFETY: checked to be UTF-8 and cut at character boundaries above.
                if pack(unsafe { std::str::from_utf8_unchecked(bytes) }).is_some() {
                    return Err("a packable registration ID is spilled".into());
                }
                next_spill += 1;
            } else if !canonical(slot) {
                return Err("registration ID slot is not canonical".into());
            }
        }
        if next_spill as usize != spill_ends.len() {
            return Err("spilled registration IDs without a device".into());
        }
        let mut out = Self {
            slots,
            spill,
            spill_ends,
            ..Self::default()
        };
        let n = out.slots.len();
        out.index.reserve(n, |_| 0);
        let hashes: Vec<u64> = {
            let h = rehash(&out.slots, &out.spill, &out.spill_ends, &out.hasher);
            (0..n as u32).into_par_iter().map(h).collect()
        };
        let slots = &out.slots;
        if let Err(id) = out
            .index
            .index_all(&hashes, |a, b| slots[a as usize] == slots[b as usize])
        {
            return Err(format!(
                "registration ID {:?} interned twice",
                &*out.get(id)
            ));
        }
        Ok(out)
    }

    /// Give back the unused capacity of the slots.
    pub fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
    }

    /// Heap bytes used (slots, spill arena and offsets, hash index).
    pub fn memory_usage(&self) -> usize {
        self.slots.capacity() * SLOT
            + self.spill.capacity()
            + self.spill_ends.capacity() * 4
            + self.index.memory_usage()
    }
}

/// Whether a packed slot has zero nibbles past its length (so equal IDs have equal slots).
fn canonical(slot: &Slot) -> bool {
    let len = (slot[0] >> 4) as usize + MIN_PACKED;
    // Nibbles 1..=len are digits; the rest (len + 1 .. 2 * SLOT) must be zero.
    (len + 1..2 * SLOT).all(|n| (slot[n / 2] >> (if n % 2 == 0 { 4 } else { 0 })) & 0xf == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packs_lowercase_hex_of_5_to_19_characters_only() {
        assert!(pack("1507bfd3f7c466c3b57").is_some());
        assert!(pack("abcde").is_some());
        for s in [
            "abcd",
            "1507bfd3f7c466c3b57a",
            "1507BFD3F7C466C3B57",
            "12345g",
            "深圳12345",
        ] {
            assert!(pack(s).is_none(), "{s}");
        }
    }

    proptest! {
        #[test]
        fn round_trips_packed_spilled_and_mixed(
            ids in proptest::collection::vec(
                prop_oneof![
                    "[0-9a-f]{1,24}",
                    "[0-9a-fA-F]{5,19}",
                    "[A-Za-z0-9]{1,64}",
                    "[0-9a-f]{3}[a-z深]{0,3}",
                ],
                0..300,
            ),
        ) {
            let mut r = RidStore::new();
            let mut seen: Vec<String> = Vec::new();
            for s in &ids {
                let (id, new) = r.intern(s);
                prop_assert_eq!(new, !seen.contains(s));
                if new {
                    seen.push(s.clone());
                }
                prop_assert_eq!(&*r.get(id), s.as_str());
            }
            let keys: Vec<&str> = ids.iter().map(String::as_str).chain(["zz", "0000000"]).collect();
            let want: Vec<Option<u32>> = keys
                .iter()
                .map(|k| seen.iter().position(|s| s == k).map(|p| p as u32))
                .collect();
            prop_assert_eq!(r.lookup_many(&keys), want.clone());
            let one: Vec<Option<u32>> = keys.iter().map(|k| r.lookup(k)).collect();
            prop_assert_eq!(one, want);
            let (slots, spill, ends) = r.parts();
            let back = RidStore::from_parts(slots, spill.to_vec(), ends.to_vec()).unwrap();
            for (i, s) in seen.iter().enumerate() {
                prop_assert_eq!(back.lookup(s), Some(i as u32));
            }
        }
    }

    #[test]
    fn from_parts_refuses_non_canonical_and_repeated_ids() {
        let mut r = RidStore::new();
        r.intern("abcdef");
        r.intern("XYZ");
        let (slots, spill, ends) = r.parts();
        let ok = |s: &[u8]| RidStore::from_parts(s, spill.to_vec(), ends.to_vec()).is_ok();
        assert!(ok(slots));
        let mut bad = slots.to_vec();
        bad[SLOT - 1] = 1; // a nibble past the length
        assert!(!ok(&bad));
        let mut twice = slots[..SLOT].to_vec();
        twice.extend_from_slice(&slots[..SLOT]);
        twice.extend_from_slice(&slots[SLOT..]);
        assert!(!ok(&twice));
        assert!(!ok(&slots[..SLOT])); // the spilled string has no device
        assert!(RidStore::from_parts(slots, b"XYZabcde".to_vec(), vec![3, 8]).is_err());
    }
}
