//! A dense hash index from keys to the dense `u32` ids of a store (the interners).
//!
//! The index holds no keys and no hashes, only one `u32` per slot: open addressing with linear
//! probing over a table of any size (not a power of two), at most `MAX_LOAD` full. Each used
//! slot packs the id into its low bits (`id_mask`) and the same bits of the key's hash into the
//! rest (a fingerprint), so a look-up compares the stored key (a cache miss in the store) only for slots whose
//! fingerprint matches: about once per hit and rarely on a miss. At 10M ids this costs
//! 5 bytes per id, against 8 for a hashbrown table of `u32` (power-of-two buckets plus a
//! control byte each).
//!
//! Invariants:
//! - `slots.len() == 0` or `len <= max_entries() < slots.len()`, and every indexed id is
//!   `< max_entries() <= id_mask`, so an encoded slot is never `EMPTY`;
//! - an id sits in the first slot of its probe sequence (from `home(h)`, wrapping) that was
//!   empty when it was inserted; nothing is ever removed (ids are never reused).

/// An empty slot.
const EMPTY: u32 = u32::MAX;
/// Most slots in use, as a fraction (numerator / denominator).
const MAX_LOAD: (usize, usize) = (4, 5);
const MIN_SLOTS: usize = 16;

#[derive(Default, Clone)]
pub struct IdIndex {
    slots: Vec<u32>,
    /// The id bits of a slot; the others hold the fingerprint (the same bits of the hash).
    id_mask: u32,
    len: usize,
}

/// Hint the CPU to fetch the cache line of `p` (a no-op off x86-64).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The id mask of a table holding up to `max_entries` ids: the fewest low bits that hold
/// every id below `max_entries` and still leave `EMPTY` unused (an id is below the mask).
fn mask_for(max_entries: usize) -> u32 {
    let bits = u32::BITS - (max_entries as u32).leading_zeros();
    ((1u64 << bits) - 1) as u32
}

impl IdIndex {
    /// Number of ids indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many ids fit before the table must grow.
    fn max_entries(&self) -> usize {
        self.slots.len() * MAX_LOAD.0 / MAX_LOAD.1
    }

    /// The first slot of `h`'s probe sequence: the high bits of `h` scaled to the table (the
    /// fingerprint takes low bits, so the two are independent).
    fn home(&self, h: u64) -> usize {
        ((h as u128 * self.slots.len() as u128) >> 64) as usize
    }

    /// Start fetching the first slot of `h` (batched look-ups issue these ahead of the reads).
    #[inline]
    pub fn prefetch(&self, h: u64) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.home(h)]);
        }
    }

    /// The ids whose slot fingerprint matches `h`, in probe order (a superset of the id of the
    /// key hashed to `h`, if it is indexed).
    pub fn candidates(&self, h: u64) -> Candidates<'_> {
        Candidates {
            index: self,
            pos: if self.slots.is_empty() {
                0
            } else {
                self.home(h)
            },
            fp: h as u32 & !self.id_mask,
            left: self.slots.len(),
        }
    }

    /// The id of the key hashed to `h` for which `eq` holds.
    pub fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.candidates(h).find(|&id| eq(id))
    }

    /// Index `id` (not indexed yet) under `h`; `rehash` gives the hash of any indexed id, for
    /// when the table grows.
    pub fn insert_unique(&mut self, h: u64, id: u32, rehash: impl Fn(u32) -> u64) {
        if self.len + 1 > self.max_entries() || id as usize >= self.max_entries() {
            let want = (self.len + 1)
                .max(id as usize + 1)
                .max(self.max_entries() * 2);
            self.rebuild(want, &rehash);
        }
        self.put(h, id);
    }

    /// Make room for ids up to `len + extra - 1` without growing again.
    pub fn reserve(&mut self, extra: usize, rehash: impl Fn(u32) -> u64) {
        let want = self.len + extra;
        if want > self.max_entries() {
            self.rebuild(want, &rehash);
        }
    }

    fn put(&mut self, h: u64, id: u32) {
        debug_assert!(id < self.id_mask);
        let n = self.slots.len();
        let mut pos = self.home(h);
        while self.slots[pos] != EMPTY {
            pos += 1;
            if pos == n {
                pos = 0;
            }
        }
        self.slots[pos] = (h as u32 & !self.id_mask) | id;
        self.len += 1;
    }

    /// A new table for at least `entries` ids, holding the current ones.
    fn rebuild(&mut self, entries: usize, rehash: &dyn Fn(u32) -> u64) {
        let slots = (entries * MAX_LOAD.1).div_ceil(MAX_LOAD.0).max(MIN_SLOTS);
        assert!(slots < u32::MAX as usize, "hash index overflow");
        let old = std::mem::replace(&mut self.slots, crate::huge::filled(slots, EMPTY));
        let mask = mask_for(self.max_entries());
        let old_mask = std::mem::replace(&mut self.id_mask, mask);
        let ids: Vec<u32> = old
            .iter()
            .filter(|&&s| s != EMPTY)
            .map(|&s| s & old_mask)
            .collect();
        let hashes: Vec<u64> = ids.iter().map(|&id| rehash(id)).collect();
        self.len = 0;
        self.put_many(&hashes, &ids);
    }

    /// Index ids `0..hashes.len()` into an empty table (room reserved), refusing a repeated
    /// key: `same(a, b)` says whether ids `a` and `b` hold the same key; the error is the first
    /// id whose key an earlier id holds. Slots are prefetched a few ids ahead (snapshot loads).
    pub fn index_all(
        &mut self,
        hashes: &[u64],
        same: impl Fn(u32, u32) -> bool,
    ) -> Result<(), u32> {
        const AHEAD: usize = 16;
        assert!(
            self.len == 0 && hashes.len() <= self.max_entries(),
            "reserve first"
        );
        for (id, &h) in hashes.iter().enumerate() {
            if let Some(&next) = hashes.get(id + AHEAD) {
                self.prefetch(next);
            }
            let id = id as u32;
            if self.find(h, |other| same(other, id)).is_some() {
                return Err(id);
            }
            self.put(h, id);
        }
        Ok(())
    }

    /// Index many ids at once (none indexed yet, room reserved), prefetching a few ahead.
    pub fn put_many(&mut self, hashes: &[u64], ids: &[u32]) {
        const AHEAD: usize = 16;
        assert!(self.len + ids.len() <= self.max_entries(), "reserve first");
        for (i, (&h, &id)) in hashes.iter().zip(ids).enumerate() {
            if let Some(&next) = hashes.get(i + AHEAD) {
                self.prefetch(next);
            }
            self.put(h, id);
        }
    }

    /// Look up many keys at once: the id of each key of `hashes` for which `eq(i, id)` holds.
    ///
    /// Why batched: at millions of ids every look-up misses the cache two or three times in a
    /// row (the slot, then the stored key). Here each level is fetched for every key before
    /// any is read, so the misses of different keys overlap instead of adding up: first the
    /// slots, then, for each key's first candidate, every `stages` prefetch in turn (e.g. the
    /// key's offset, then its bytes), and only then the comparisons.
    pub fn find_many(
        &self,
        hashes: &[u64],
        stages: &[&dyn Fn(u32)],
        mut eq: impl FnMut(usize, u32) -> bool,
    ) -> Vec<Option<u32>> {
        for &h in hashes {
            self.prefetch(h);
        }
        let mut probes: Vec<(Candidates, Option<u32>)> = hashes
            .iter()
            .map(|&h| {
                let mut c = self.candidates(h);
                let first = c.next();
                (c, first)
            })
            .collect();
        for stage in stages {
            for (_, first) in &probes {
                if let Some(id) = *first {
                    stage(id);
                }
            }
        }
        probes
            .iter_mut()
            .enumerate()
            .map(|(i, (rest, first))| {
                let first = (*first)?;
                if eq(i, first) {
                    return Some(first);
                }
                rest.find(|&id| eq(i, id))
            })
            .collect()
    }

    /// Heap bytes used.
    pub fn memory_usage(&self) -> usize {
        self.slots.capacity() * 4
    }
}

/// The fingerprint-matching ids of one probe sequence (see `IdIndex::candidates`).
pub struct Candidates<'i> {
    index: &'i IdIndex,
    pos: usize,
    fp: u32,
    left: usize,
}

impl Iterator for Candidates<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let slots = &self.index.slots;
        let id_mask = self.index.id_mask;
        while self.left > 0 {
            let s = slots[self.pos];
            if s == EMPTY {
                self.left = 0;
                return None;
            }
            self.left -= 1;
            self.pos += 1;
            if self.pos == slots.len() {
                self.pos = 0;
            }
            if s & !id_mask == self.fp {
                return Some(s & id_mask);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A weak hash on purpose: many collisions and equal fingerprints.
    fn h(k: u32) -> u64 {
        (k as u64 % 37).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    proptest! {
        #[test]
        fn finds_exactly_what_was_inserted(n in 0u32..3000, reserve in 0usize..5000) {
            let mut ix = IdIndex::default();
            ix.reserve(reserve, h);
            let key = |id: u32| id * 7 + 1;
            for id in 0..n {
                ix.insert_unique(h(key(id)), id, |i| h(key(i)));
            }
            prop_assert_eq!(ix.len(), n as usize);
            for id in 0..n {
                prop_assert_eq!(ix.find(h(key(id)), |c| key(c) == key(id)), Some(id));
            }
            for k in [0u32, 2, 3, 100_000] {
                prop_assert_eq!(ix.find(h(k), |c| key(c) == k), None);
            }
        }
    }
}
