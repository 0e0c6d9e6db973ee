//! A compact map from user ids to one `u32` each, laid out for gathers over ascending users.
//!
//! Invariants:
//! - the users holding a *slot* are the set bits of `words[w].bits`; `words[w].rank` is the
//!   number of set bits in `words[..w]`, and a slot holder's value is `vals[rank]` (its rank among the slot
//!   holders): the values sit in user order, 4 bytes per slot holder plus 3 bits per user of
//!   the id space for the index;
//! - the last word of `words` is non-zero (or `words` is empty);
//! - a user is in at most one of the slots and `late`; a slot may hold `NONE` (its user was
//!   removed: the slot stays so that setting the user again is O(1)); `late` never holds `NONE`.
//!
//! Users set in ascending order (new users, the bulk loads) are appended in O(1); a user set
//! below the last slot holder goes to `late`, and when `late` outgrows a share of `vals` the
//! whole column is laid out again, so a set costs amortised O(1).

use super::NONE;
use crate::index::prefetch;
use std::collections::HashMap;
use std::mem::MaybeUninit;

/// `late` may hold this many users, plus one per `LATE_SHARE` slots, before a re-layout
/// (few under test, so that the property tests re-lay).
const LATE_MIN: usize = if cfg!(test) { 4 } else { 64 };
const LATE_SHARE: usize = 16;

/// 64 users of the id space: which hold a slot, and the slots of the users before them (one
/// cache line serves a rank).
#[derive(Clone, Copy, Debug)]
pub struct Word {
    pub bits: u64,
    rank: u32,
}

#[derive(Default, Clone, Debug)]
pub struct Column {
    words: Vec<Word>,
    vals: Vec<u32>,
    late: HashMap<u32, u32>,
    /// The least and greatest value ever set (`None` before the first).
    range: Option<(u32, u32)>,
    /// Set when the values in slot order may not be strictly ascending (a value appended
    /// not above every earlier one, or a slot set again); cleared by a re-layout that finds
    /// them ascending.
    unordered: bool,
    /// How many slots hold `NONE`.
    holes: usize,
}

impl Column {
    /// The slot of `u`, if it holds one.
    #[inline]
    fn slot(&self, u: u32) -> Option<usize> {
        let w = (u >> 6) as usize;
        let Word { bits, rank } = *self.words.get(w)?;
        let bit = 1u64 << (u & 63);
        (bits & bit != 0).then(|| rank as usize + (bits & (bit - 1)).count_ones() as usize)
    }

    /// The value of `u` (`NONE` if it has none).
    #[inline]
    pub fn get(&self, u: u32) -> u32 {
        match self.slot(u) {
            Some(i) => self.vals[i],
            None if self.late.is_empty() => NONE,
            None => self.late.get(&u).copied().unwrap_or(NONE),
        }
    }

    /// The values of `users` (any order; `NONE` for those without), looked up in passes
    /// that prefetch first the index words, then the values, so that the cache misses of
    /// different users overlap (a small send's lookups are nearly all misses).
    pub fn get_many(&self, users: &[u32]) -> Vec<u32> {
        for &u in users {
            if let Some(w) = self.words.get((u >> 6) as usize) {
                prefetch(w);
            }
        }
        let slots: Vec<Option<usize>> = users.iter().map(|&u| self.slot(u)).collect();
        for &i in slots.iter().flatten() {
            prefetch(&self.vals[i]);
        }
        users
            .iter()
            .zip(slots)
            .map(|(&u, slot)| match slot {
                Some(i) => self.vals[i],
                None => self.late.get(&u).copied().unwrap_or(NONE),
            })
            .collect()
    }

    /// Append the values of `users` (ascending, each with a value) to `out`, in that order.
    pub fn gather(&self, users: &[u32], out: &mut Vec<u32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT, checked just above.
            return unsafe { self.gather_popcnt(users, out) };
        }
        self.gather_portable(users, out);
    }

    /// `gather` compiled with the POPCNT instruction (see `gather_bits_popcnt`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn gather_popcnt(&self, users: &[u32], out: &mut Vec<u32>) {
        self.gather_portable(users, out);
    }

    #[inline(always)]
    fn gather_portable(&self, users: &[u32], out: &mut Vec<u32>) {
        if self.late.is_empty() {
            // Every user with a value holds a slot: no presence test, no hash lookup.
            out.extend(users.iter().map(|&u| {
                let w = (u >> 6) as usize;
                let Word { bits, rank } = self.words[w];
                let below = bits & ((1u64 << (u & 63)) - 1);
                self.vals[rank as usize + below.count_ones() as usize]
            }));
        } else {
            out.extend(users.iter().map(|&u| self.get(u)));
        }
    }

    /// Whether every user with a value holds a slot (then `gather_bits` applies).
    pub fn all_slotted(&self) -> bool {
        self.late.is_empty()
    }

    /// Write the values of the users of bitset `sel` (bit `u` of word `u / 64`; each user
    /// holds a slot: `all_slotted`) to `out`, ascending by user; `out` has exactly one place
    /// per selected user, and all are written (checked). A word of `sel` equal to the slot word (every slot holder of those
    /// 64 users selected) is one slice copy.
    pub fn gather_bits(&self, sel: &[u64], out: &mut [MaybeUninit<u32>]) {
        debug_assert!(self.all_slotted());
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT, checked just above.
            return unsafe { self.gather_bits_popcnt(sel, out) };
        }
        self.gather_bits_portable(sel, out);
    }

    /// `gather_bits` compiled with the POPCNT instruction (the portable build counts bits
    /// with a dozen instructions, which is most of the cost of a rank).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn gather_bits_popcnt(&self, sel: &[u64], out: &mut [MaybeUninit<u32>]) {
        self.gather_bits_portable(sel, out);
    }

    #[inline(always)]
    fn gather_bits_portable(&self, sel: &[u64], out: &mut [MaybeUninit<u32>]) {
        let mut k = 0;
        for (w, &bits) in sel.iter().enumerate() {
            if bits != 0 {
                k = self.gather_word(self.words[w], bits, out, k);
            }
        }
        assert_eq!(k, out.len(), "every place of `out` is written");
    }

    /// Write the values of the users `sel` (slot holders of `word`, a word of `words()`) to
    /// `out` from place `k`, ascending by user; returns the place after them. A `sel` equal
    /// to the slot word (every slot holder selected) is one slice copy. Inlined into callers
    /// compiled with POPCNT (see `gather_bits_popcnt`).
    #[inline(always)]
    pub fn gather_word(
        &self,
        word: Word,
        sel: u64,
        out: &mut [MaybeUninit<u32>],
        mut k: usize,
    ) -> usize {
        let base = word.rank as usize;
        debug_assert_eq!(sel & !word.bits, 0, "a selected user holds no slot");
        if sel == word.bits {
            let n = sel.count_ones() as usize;
            for (o, &v) in out[k..k + n].iter_mut().zip(&self.vals[base..base + n]) {
                o.write(v);
            }
            return k + n;
        }
        let mut b = sel;
        while b != 0 {
            let low = b & b.wrapping_neg();
            out[k].write(self.vals[base + (word.bits & (low - 1)).count_ones() as usize]);
            k += 1;
            b ^= low;
        }
        k
    }

    /// The index words: word `w` holds the slot holders among users `64 w .. 64 w + 64`.
    pub fn words(&self) -> &[Word] {
        &self.words
    }

    /// Whether the slot holders are exactly the users with a value (no user in `late`, no
    /// slot holding `NONE`): then `words()` is the set of those users.
    pub fn exact(&self) -> bool {
        self.late.is_empty() && self.holes == 0
    }

    /// Whether `u` is above every slot holder (then it can be appended).
    fn above_all(&self, u: u32) -> bool {
        let w = (u >> 6) as usize;
        match self.words.len() {
            0 => true,
            n if w + 1 > n => true,
            n if w + 1 == n => self.words[w].bits >> (u & 63) == 0,
            _ => false,
        }
    }

    /// Set the value of `u` (`v` is not `NONE`).
    pub fn set(&mut self, u: u32, v: u32) {
        debug_assert_ne!(v, NONE);
        if let Some(i) = self.slot(u) {
            self.unordered |= self.vals[i] != v;
            self.holes -= usize::from(self.vals[i] == NONE);
            self.vals[i] = v;
            self.widen(v);
        } else if self.above_all(u) {
            self.append(u, v);
        } else {
            self.late.insert(u, v);
            self.widen(v);
            if self.late.len() > LATE_MIN + self.vals.len() / LATE_SHARE {
                self.relayout();
            }
        }
    }

    /// Whether a gather of any users emits strictly ascending values (see `unordered`).
    pub fn ascending(&self) -> bool {
        !self.unordered && self.late.is_empty()
    }

    /// The least and greatest value ever set (a bound of every value present).
    pub fn range(&self) -> Option<(u32, u32)> {
        self.range
    }

    fn widen(&mut self, v: u32) {
        self.range = Some(self.range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
    }

    fn append(&mut self, u: u32, v: u32) {
        if self.range.is_some_and(|(_, hi)| v <= hi) {
            self.unordered = true;
        }
        self.widen(v);
        let w = (u >> 6) as usize;
        if self.words.len() <= w {
            let rank = self.vals.len() as u32;
            self.words.resize(w + 1, Word { bits: 0, rank });
        }
        self.words[w].bits |= 1 << (u & 63);
        self.vals.push(v);
    }

    /// Remove the value of `u` (if any).
    pub fn remove(&mut self, u: u32) {
        match self.slot(u) {
            Some(i) => {
                self.holes += usize::from(self.vals[i] != NONE);
                self.vals[i] = NONE;
            }
            None => {
                self.late.remove(&u);
            }
        }
    }

    /// Every (user, value) pair, ascending by user.
    pub fn pairs(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(self.vals.len() + self.late.len());
        let mut i = 0;
        for (w, word) in self.words.iter().enumerate() {
            let mut bits = word.bits;
            while bits != 0 {
                let u = (w as u32) << 6 | bits.trailing_zeros();
                if self.vals[i] != NONE {
                    out.push((u, self.vals[i]));
                }
                i += 1;
                bits &= bits - 1;
            }
        }
        out.extend(self.late.iter().map(|(&u, &v)| (u, v)));
        out.sort_unstable();
        out
    }

    /// Lay the column out again: every value in a slot, removed slots dropped.
    fn relayout(&mut self) {
        let pairs = self.pairs();
        *self = Column::default();
        self.vals.reserve_exact(pairs.len());
        for (u, v) in pairs {
            self.append(u, v);
        }
    }

    /// Heap bytes (approximate for the hash map).
    pub fn memory_usage(&self) -> usize {
        self.words.capacity() * std::mem::size_of::<Word>()
            + self.vals.capacity() * 4
            + self.late.capacity() * 9
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn appends_then_late_then_relayout() {
        let mut c = Column::default();
        c.set(5, 50);
        c.set(70, 700);
        c.set(64, 640); // below 70: late
        assert_eq!(c.late.len(), 1);
        assert_eq!(
            (c.get(5), c.get(64), c.get(70), c.get(6)),
            (50, 640, 700, NONE)
        );
        let mut out = Vec::new();
        c.gather(&[5, 64, 70], &mut out);
        assert_eq!(out, [50, 640, 700]);
        assert!(!c.all_slotted());
        c.remove(5);
        c.set(5, 51); // the slot is reused
        assert!(c.late.len() == 1 && c.vals.len() == 2);
        c.relayout();
        assert!(c.all_slotted() && c.ascending());
        assert_eq!(c.range(), Some((51, 700))); // re-laid: the present values
        assert_eq!(c.pairs(), [(5, 51), (64, 640), (70, 700)]);
        let mut out = [MaybeUninit::uninit(); 3];
        c.gather_bits(&[1 << 5, 1 << 0 | 1 << 6], &mut out);
        assert_eq!(out.map(|v| unsafe { v.assume_init() }), [51, 640, 700]);
    }

    proptest! {
        /// Against a BTreeMap: any sequence of sets and removes, then every read path.
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec((0u32..3000, 0u32..1000, any::<bool>()), 0..600)) {
            let mut c = Column::default();
            let mut m = BTreeMap::new();
            for (u, v, set) in ops {
                if set {
                    c.set(u, v);
                    m.insert(u, v);
                } else {
                    c.remove(u);
                    m.remove(&u);
                }
            }
            let want: Vec<(u32, u32)> = m.iter().map(|(&u, &v)| (u, v)).collect();
            prop_assert_eq!(c.pairs(), want.clone());
            let all: Vec<u32> = (0..3100).collect();
            let many = c.get_many(&all);
            for u in 0..3100 {
                prop_assert_eq!(c.get(u), m.get(&u).copied().unwrap_or(NONE));
                prop_assert_eq!(many[u as usize], c.get(u));
            }
            let users: Vec<u32> = m.keys().copied().collect();
            if c.exact() {
                let slotted: Vec<u32> = c.words().iter().enumerate().flat_map(|(w, word)| {
                    (0..64).filter(move |b| word.bits >> b & 1 == 1).map(move |b| (w * 64 + b) as u32)
                }).collect();
                prop_assert_eq!(&slotted, &users);
            }
            let mut out = Vec::new();
            c.gather(&users, &mut out);
            prop_assert_eq!(&out, &want.iter().map(|p| p.1).collect::<Vec<_>>());
            if c.ascending() {
                prop_assert!(out.windows(2).all(|w| w[0] < w[1]));
            }
            if let (Some((lo, hi)), Some(min), Some(max)) = (c.range(), out.iter().min(), out.iter().max()) {
                prop_assert!(lo <= *min && *max <= hi);
            }
            if c.all_slotted() {
                let mut sel = vec![0u64; 3100 / 64 + 1];
                users.iter().for_each(|&u| sel[(u / 64) as usize] |= 1 << (u % 64));
                let mut bits = Vec::with_capacity(users.len());
                let sel = &sel[..users.last().map_or(0, |&u| u as usize / 64 + 1)];
                c.gather_bits(sel, &mut bits.spare_capacity_mut()[..users.len()]);
                // SAFETY: gather_bits wrote all `users.len()` places (it asserts so).
                unsafe { bits.set_len(users.len()) };
                prop_assert_eq!(bits, out);
            }
        }
    }
}
