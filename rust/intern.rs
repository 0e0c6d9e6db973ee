//! String interning into dense `u32` ids.
//!
//! Invariants:
//! - ids are dense, assigned in first-seen order from 0, and never reused or changed;
//! - all strings live in one contiguous arena (`arena`), string `i` spans
//!   `ends[i-1]..ends[i]` (with `ends[-1] = 0`): no per-string heap allocation;
//! - the hash index (`IdIndex`) stores only ids; hashes are recomputed from the arena when it
//!   grows.

use crate::index::{prefetch, IdIndex};
use hashbrown::DefaultHashBuilder;
use rayon::prelude::*;
use std::hash::BuildHasher;

/// Maximum total bytes of interned strings (ends are `u32`).
pub const MAX_ARENA: usize = u32::MAX as usize;

/// # Examples
///
/// ```
/// let mut i = reach::intern::Interner::new();
/// assert_eq!(i.intern("深圳"), (0, true));
/// assert_eq!(i.intern("深圳"), (0, false));
/// assert_eq!(i.lookup("深圳"), Some(0));
/// assert_eq!(i.get(0), "深圳");
/// ```
#[derive(Default, Clone)]
pub struct Interner {
    arena: Vec<u8>,
    ends: Vec<u32>,
    index: IdIndex,
    hasher: DefaultHashBuilder,
}

/// The bytes of string `id` of an arena: `ends[id-1]..ends[id]`.
fn span<'a>(arena: &'a [u8], ends: &[u32], id: u32) -> &'a [u8] {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &arena[start..ends[i] as usize]
}

/// Re-hashes a stored id from the arena (the index calls it when it grows).
fn rehash<'a>(
    arena: &'a [u8],
    ends: &'a [u32],
    hasher: &'a DefaultHashBuilder,
) -> impl Fn(u32) -> u64 + 'a {
    move |id| hasher.hash_one(span(arena, ends, id))
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The index with the re-hash function it needs to grow (fields borrowed apart).
    fn index_mut(&mut self) -> (&mut IdIndex, impl Fn(u32) -> u64 + '_) {
        let Self {
            arena,
            ends,
            index,
            hasher,
        } = self;
        (index, rehash(arena, ends, hasher))
    }

    /// Number of interned strings (the next id).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The string of `id`. Panics if `id` was never assigned.
    pub fn get(&self, id: u32) -> &str {
        let bytes = span(&self.arena, &self.ends, id);
        // SAFETY: only whole `&str`s are appended to the arena, and `from_parts` checks that
        // every span of a loaded arena is UTF-8, so every span is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The id of `s`, if interned.
    pub fn lookup(&self, s: &str) -> Option<u32> {
        self.lookup_hashed(self.hasher.hash_one(s.as_bytes()), s)
    }

    /// Whether `extra` more bytes still fit the arena.
    pub fn fits(&self, extra: usize) -> bool {
        self.arena.len().saturating_add(extra) <= MAX_ARENA
    }

    /// The id of `s`, interning it if new; the flag says whether it was new.
    /// The caller checks `fits` first: an arena overflow panics.
    pub fn intern(&mut self, s: &str) -> (u32, bool) {
        self.intern_hashed(self.hash(s), s)
    }

    /// The hash `intern` uses for `s` (bulk loads compute these on all cores first).
    pub fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s.as_bytes())
    }

    /// Start fetching what interning a string of hash `h` will read first (bulk loads call it
    /// a few strings ahead).
    pub fn prefetch(&self, h: u64) {
        self.index.prefetch(h);
    }

    /// `intern` with `h == self.hash(s)` already computed.
    pub fn intern_hashed(&mut self, h: u64, s: &str) -> (u32, bool) {
        debug_assert_eq!(h, self.hash(s));
        if let Some(id) = self.lookup_hashed(h, s) {
            return (id, false);
        }
        assert!(self.fits(s.len()), "interner arena overflow");
        let id = self.ends.len() as u32;
        self.arena.extend_from_slice(s.as_bytes());
        self.ends.push(self.arena.len() as u32);
        let (index, rehash) = self.index_mut();
        index.insert_unique(h, id, rehash);
        (id, true)
    }

    fn lookup_hashed(&self, h: u64, s: &str) -> Option<u32> {
        let (arena, ends) = (&self.arena, &self.ends);
        self.index
            .find(h, |id| span(arena, ends, id) == s.as_bytes())
    }

    /// The ids of many strings at once (`IdIndex::find_many`: the cache misses of different
    /// strings overlap), in the order given.
    pub fn lookup_many(&self, keys: &[&str]) -> Vec<Option<u32>> {
        let hashes: Vec<u64> = keys.iter().map(|k| self.hash(k)).collect();
        let (arena, ends) = (&self.arena, &self.ends);
        let end_of = |id: u32| prefetch(&ends[id as usize]);
        let bytes_of = |id: u32| {
            let start = if id == 0 { 0 } else { ends[id as usize - 1] };
            prefetch(arena.as_ptr().wrapping_add(start as usize));
        };
        self.index
            .find_many(&hashes, &[&end_of, &bytes_of], |i, id| {
                span(arena, ends, id) == keys[i].as_bytes()
            })
    }

    /// Reserve room for `n` more strings of about `bytes` bytes in all.
    pub fn reserve(&mut self, n: usize, bytes: usize) {
        crate::huge::reserve(&mut self.arena, bytes);
        crate::huge::reserve(&mut self.ends, n);
        let (index, rehash) = self.index_mut();
        index.reserve(n, rehash);
    }

    /// The raw parts, for snapshots: the arena and the end offsets.
    pub fn parts(&self) -> (&[u8], &[u32]) {
        (&self.arena, &self.ends)
    }

    /// Rebuild from raw parts (a snapshot). Checks that the offsets are monotone, in bounds and
    /// cut the arena at UTF-8 boundaries, and that no string repeats.
    pub fn from_parts(arena: Vec<u8>, ends: Vec<u32>) -> Result<Self, String> {
        // One UTF-8 pass over the whole arena, then every cut on a character boundary.
        let text = std::str::from_utf8(&arena).map_err(|_| "interned string is not UTF-8")?;
        let mut prev = 0u32;
        for &e in &ends {
            if e < prev || e as usize > arena.len() || !text.is_char_boundary(e as usize) {
                return Err("interner offsets out of order or inside a character".into());
            }
            prev = e;
        }
        if prev as usize != arena.len() {
            return Err("interner arena has trailing bytes".into());
        }
        let n = ends.len();
        let mut out = Self {
            arena,
            ends,
            ..Self::default()
        };
        out.index.reserve(n, |_| 0);
        let hashes: Vec<u64> = (0..n as u32)
            .into_par_iter()
            .map(|id| out.hash(out.get(id)))
            .collect();
        let (arena, ends) = (&out.arena, &out.ends);
        let same = |a: u32, b: u32| span(arena, ends, a) == span(arena, ends, b);
        if let Err(id) = out.index.index_all(&hashes, same) {
            return Err(format!("string {:?} interned twice", out.get(id)));
        }
        Ok(out)
    }

    /// Give back the unused capacity of the arena and offsets (bulk loads grow them by
    /// doubling).
    pub fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    /// Heap bytes used (arena, offsets, hash index).
    pub fn memory_usage(&self) -> usize {
        self.arena.capacity() + self.ends.capacity() * 4 + self.index.memory_usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_ids_in_first_seen_order() {
        let mut i = Interner::new();
        assert_eq!(i.intern("b"), (0, true));
        assert_eq!(i.intern("深圳"), (1, true));
        assert_eq!(i.intern("b"), (0, false));
        assert_eq!(i.get(1), "深圳");
        assert_eq!(i.lookup("深圳"), Some(1));
        assert_eq!(i.lookup("x"), None);
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn grows_and_round_trips_parts() {
        let mut i = Interner::new();
        for n in 0..10_000 {
            assert_eq!(i.intern(&format!("rid{n}")).0, n);
        }
        let (a, e) = i.parts();
        let j = Interner::from_parts(a.to_vec(), e.to_vec()).unwrap();
        for n in 0..10_000u32 {
            assert_eq!(j.lookup(&format!("rid{n}")), Some(n));
            assert_eq!(j.get(n), format!("rid{n}"));
        }
    }

    #[test]
    fn lookup_many_equals_lookup() {
        let mut i = Interner::new();
        for n in 0..5_000 {
            i.intern(&format!("u{n}"));
        }
        let keys: Vec<String> = (0..6_000).step_by(3).map(|n| format!("u{n}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let want: Vec<Option<u32>> = keys.iter().map(|k| i.lookup(k)).collect();
        assert_eq!(i.lookup_many(&keys), want);
        assert!(want.iter().any(Option::is_none));
    }

    #[test]
    fn from_parts_refuses_bad_offsets_and_duplicates() {
        assert!(Interner::from_parts(b"ab".to_vec(), vec![2, 1]).is_err());
        assert!(Interner::from_parts(b"ab".to_vec(), vec![1]).is_err());
        assert!(Interner::from_parts(b"aa".to_vec(), vec![1, 2]).is_err());
        assert!(Interner::from_parts(vec![0xff], vec![1]).is_err());
    }
}
