//! A compact map from user ids to one `u32` each, laid out for gathers over ascending users.
//!
//! Invariants:
//! - the users holding a *slot* are the set bits of `words[w].bits`; `words[w].rank` is the
//!   number of set bits in `words[..w]`, and a slot holder's value is `words[w].base` plus
//!   `offs[rank]` (its rank among the slot holders): the values sit in user order, as offsets
//!   from their word's base in the narrowest width (1, 2 or 4 bytes) that holds every word's
//!   offsets, plus 16 bytes per 64 users of the id space for the index;
//! - the largest offset of the width (`Offset::HOLE`) marks a slot holding `NONE` (its user was
//!   removed: the slot stays so that setting the user again is O(1)); with 4-byte offsets every
//!   base is 0, so that any value fits;
//! - the last word of `words` is non-zero (or `words` is empty);
//! - a user is in at most one of the slots and `late`; `late` never holds `NONE`.
//!
//! Users set in ascending order (new users, the bulk loads) are appended in O(1); a user set
//! below the last slot holder goes to `late`, and when `late` outgrows a share of the slots
//! the whole column is laid out again, so a set costs amortised O(1). A value that its word's
//! offsets cannot reach re-bases the word (at most 64 offsets) or widens every offset (at most
//! twice in a column's life between re-layouts).
//!
//! Why offsets: IDs interned in user order (as the bulk loads and imports do) lie close
//! together within 64 users, and a gather over a dense audience reads nearly every cache line
//! of a column: 1-byte offsets are a quarter of that memory (and of the column's size), and 8
//! of them are widened at once (`PextOffs`).

use super::NONE;
use crate::index::prefetch;
use std::collections::HashMap;
use std::mem::MaybeUninit;

/// `late` may hold this many users, plus one per `LATE_SHARE` slots, before a re-layout
/// (few under test, so that the property tests re-lay).
const LATE_MIN: usize = if cfg!(test) { 4 } else { 64 };
const LATE_SHARE: usize = 16;

/// 64 users of the id space: which hold a slot, the slots of the users before them, and the
/// base their offsets are added to (one cache line serves a rank).
#[derive(Clone, Copy, Debug)]
pub struct Word {
    pub bits: u64,
    rank: u32,
    base: u32,
}

impl Word {
    /// The slots of this word's holders.
    fn slots(self) -> std::ops::Range<usize> {
        self.rank as usize..self.rank as usize + self.bits.count_ones() as usize
    }
}

/// An unsigned width of offsets.
trait Offset: Copy + Into<u32> {
    /// The largest offset: a hole.
    const HOLE: u32;
    /// `o` (at most `HOLE`) in this width.
    fn of(o: u32) -> Self;

    /// Write `base` plus `offs[r]` for each set bit `r` of `ranks` to `out` from place `k`,
    /// ascending by `r`; returns the place after them. Made for `PextOffs`.
    #[inline(always)]
    fn gather_ranks(
        offs: &[Self],
        mut ranks: u64,
        base: u32,
        out: &mut [MaybeUninit<u32>],
        mut k: usize,
    ) -> usize {
        while ranks != 0 {
            let off: u32 = offs[ranks.trailing_zeros() as usize].into();
            out[k].write(base + off);
            k += 1;
            ranks &= ranks - 1;
        }
        k
    }
}

macro_rules! offset {
    ($t:ty) => {
        const HOLE: u32 = <$t>::MAX as u32;
        #[inline(always)]
        fn of(o: u32) -> Self {
            debug_assert!(o <= Self::HOLE);
            o as $t
        }
    };
}

impl Offset for u8 {
    offset!(u8);

    /// With 64 offsets to read and room for 8 places past the last written: 8 ranks at a
    /// time, without a branch per rank (a per-rank loop mispredicts its exit once a word).
    #[inline(always)]
    fn gather_ranks(
        offs: &[u8],
        ranks: u64,
        base: u32,
        out: &mut [MaybeUninit<u32>],
        k: usize,
    ) -> usize {
        #[cfg(target_arch = "x86_64")]
        if offs.len() >= 64 && out.len() >= k + ranks.count_ones() as usize + 8 {
            // SAFETY: `offs` has the 64 bytes read and `out` the places written (checked
            // just above); a `PextOffs` is made only when the CPU has AVX2 (`Offs::pext`).
            return k + unsafe { compress8(offs.as_ptr(), ranks, base, out[k..].as_mut_ptr()) };
        }
        let mut k = k;
        let mut ranks = ranks;
        while ranks != 0 {
            out[k].write(base + u32::from(offs[ranks.trailing_zeros() as usize]));
            k += 1;
            ranks &= ranks - 1;
        }
        k
    }
}

impl Offset for u16 {
    offset!(u16);
}

impl Offset for u32 {
    offset!(u32);
}

/// Per 8-bit mask, the byte shuffle that packs the mask's bytes first (the rest zeroed).
#[cfg(target_arch = "x86_64")]
static PACK8: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let (mut v, mut n, mut b) = (0x8080_8080_8080_8080u64, 0, 0);
        while b < 8 {
            if m >> b & 1 == 1 {
                v = v & !(0xFF << (8 * n)) | (b as u64) << (8 * n);
                n += 1;
            }
            b += 1;
        }
        t[m] = v;
        m += 1;
    }
    t
};

/// Write `base` plus `offs[r]` for each set bit `r` of `ranks` to `out`, ascending; returns
/// how many. Per 8 ranks: one shuffle packs the selected offsets, one widening add writes 8
/// places (those past the selected ones are overwritten next or left past the end).
///
/// # Safety
/// The CPU has AVX2; `offs` can be read for 64 bytes; `out` can be written for
/// `ranks.count_ones() + 8` places.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn compress8(
    offs: *const u8,
    mut ranks: u64,
    base: u32,
    out: *mut MaybeUninit<u32>,
) -> usize {
    use std::arch::x86_64::*;
    let base = _mm256_set1_epi32(base as i32);
    let (mut k, mut p) = (0, offs);
    while ranks != 0 {
        let m = (ranks & 0xFF) as usize;
        let src = _mm_loadl_epi64(p.cast());
        let packed = _mm_shuffle_epi8(src, _mm_cvtsi64_si128(PACK8[m] as i64));
        let wide = _mm256_add_epi32(_mm256_cvtepu8_epi32(packed), base);
        _mm256_storeu_si256(out.add(k).cast(), wide);
        k += m.count_ones() as usize;
        ranks >>= 8;
        p = p.add(8);
    }
    k
}

/// The offsets of every slot, in one width.
#[derive(Clone, Debug)]
enum Offsets {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Default for Offsets {
    fn default() -> Self {
        Offsets::U8(Vec::new())
    }
}

/// A column's offsets borrowed in one width (`Column::offsets`).
#[derive(Clone, Copy)]
pub struct Offs<'a, T>(&'a [T]);

/// A column's offsets in whichever width they have.
pub enum Width<'a> {
    U8(Offs<'a, u8>),
    U16(Offs<'a, u16>),
    U32(Offs<'a, u32>),
}

/// `$body` with `$g` bound to the `Offs` of column `$col`, whatever its width: the body is
/// compiled once per width, so that a per-word gather in it is inlined (and a caller's
/// target features, POPCNT, BMI2, AVX2, reach it).
macro_rules! by_width {
    ($col:expr, $g:ident => $body:expr) => {
        match $col.offsets() {
            $crate::ums::column::Width::U8($g) => $body,
            $crate::ums::column::Width::U16($g) => $body,
            $crate::ums::column::Width::U32($g) => $body,
        }
    };
}
pub(crate) use by_width;

/// Gathers of one word's values.
pub trait GatherWord: Copy {
    /// Write the values of the users `sel` (slot holders of `word`, a word of the column's
    /// `words()`, none of them a hole) to `out` from place `k`, ascending by user; returns the
    /// place after them.
    fn gather_word(self, word: Word, sel: u64, out: &mut [MaybeUninit<u32>], k: usize) -> usize;
}

impl<T: Offset> GatherWord for Offs<'_, T> {
    #[inline(always)]
    fn gather_word(self, word: Word, sel: u64, out: &mut [MaybeUninit<u32>], k: usize) -> usize {
        debug_assert_eq!(sel & !word.bits, 0, "a selected user holds no slot");
        gather_word_in(self.0, word, sel, out, k)
    }
}

/// `Offs` that find the selected users' slots with BMI2's PEXT: one instruction gives their
/// ranks among the word's slot holders (a bit each), instead of a POPCNT per selected user.
#[derive(Clone, Copy)]
pub struct PextOffs<'a, T>(&'a [T]);

impl<'a, T> Offs<'a, T> {
    /// These offsets gathered through PEXT (and AVX2 shuffles for 1-byte offsets), if the CPU
    /// has BMI2 and AVX2 (the gathers are fast only when inlined into a function compiled
    /// with them: `#[target_feature(enable = "bmi2,avx2")]`).
    #[inline(always)]
    pub fn pext(self) -> Option<PextOffs<'a, T>> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("avx2")
        {
            return Some(PextOffs(self.0));
        }
        None
    }
}

impl<T: Offset> GatherWord for PextOffs<'_, T> {
    #[inline(always)]
    fn gather_word(self, word: Word, sel: u64, out: &mut [MaybeUninit<u32>], k: usize) -> usize {
        debug_assert_eq!(sel & !word.bits, 0, "a selected user holds no slot");
        if sel == word.bits {
            return gather_word_in(self.0, word, sel, out, k);
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: a `PextOffs` is made only when the CPU has BMI2 (`Offs::pext`).
            let ranks = unsafe { std::arch::x86_64::_pext_u64(sel, word.bits) };
            T::gather_ranks(&self.0[word.rank as usize..], ranks, word.base, out, k)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("made only on x86_64 (`Offs::pext`)")
    }
}

/// `$body` with `$v` bound to the offsets vector of `$offs`, whatever its width.
macro_rules! with_offsets {
    ($offs:expr, $v:ident => $body:expr) => {
        match $offs {
            Offsets::U8($v) => $body,
            Offsets::U16($v) => $body,
            Offsets::U32($v) => $body,
        }
    };
}

/// The value at slot `i` of a word with base `base` (`NONE` for a hole).
#[inline(always)]
fn value_in<T: Offset>(offs: &[T], base: u32, i: usize) -> u32 {
    match offs[i].into() {
        o if o == T::HOLE => NONE,
        o => base + o,
    }
}

/// Write the values of the slot holders `sel` of `word` to `out` from place `k`; returns the
/// place after them. Every selected slot holds a value (no hole).
#[inline(always)]
fn gather_word_in<T: Offset>(
    offs: &[T],
    word: Word,
    sel: u64,
    out: &mut [MaybeUninit<u32>],
    mut k: usize,
) -> usize {
    let (rank, base) = (word.rank as usize, word.base);
    if sel == word.bits {
        let n = sel.count_ones() as usize;
        for (o, &v) in out[k..k + n].iter_mut().zip(&offs[rank..rank + n]) {
            o.write(base + v.into());
        }
        return k + n;
    }
    let mut b = sel;
    while b != 0 {
        let low = b & b.wrapping_neg();
        let off: u32 = offs[rank + (word.bits & (low - 1)).count_ones() as usize].into();
        out[k].write(base + off);
        k += 1;
        b ^= low;
    }
    k
}

/// Re-base the slots `slots` (with base `base`) so that `v` can be written to slot `at`
/// among them: the new base is the least value present or `v`. Returns the new base, or
/// `None` (nothing changed) when the values' span does not fit the width.
fn rebase_in<T: Offset>(
    offs: &mut [T],
    base: u32,
    slots: std::ops::Range<usize>,
    at: usize,
    v: u32,
) -> Option<u32> {
    let present = || {
        slots
            .clone()
            .filter(move |&i| i != at)
            .map(|i| value_in(offs, base, i))
            .filter(|&x| x != NONE)
    };
    let lo = present().min().unwrap_or(v).min(v);
    let hi = present().max().unwrap_or(v).max(v);
    if hi - lo >= T::HOLE {
        return None;
    }
    for i in slots {
        let x = if i == at { v } else { value_in(offs, base, i) };
        offs[i] = T::of(if x == NONE { T::HOLE } else { x - lo });
    }
    Some(lo)
}

#[derive(Default, Clone, Debug)]
pub struct Column {
    words: Vec<Word>,
    offs: Offsets,
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
    /// The slot of `u` and its word, if it holds one.
    #[inline]
    fn slot(&self, u: u32) -> Option<(usize, Word)> {
        let w = (u >> 6) as usize;
        let word = *self.words.get(w)?;
        let bit = 1u64 << (u & 63);
        (word.bits & bit != 0).then(|| {
            (
                word.rank as usize + (word.bits & (bit - 1)).count_ones() as usize,
                word,
            )
        })
    }

    /// The value at slot `i` of `word` (`NONE` for a hole).
    #[inline]
    fn value(&self, word: Word, i: usize) -> u32 {
        with_offsets!(&self.offs, v => value_in(v, word.base, i))
    }

    /// How many slots there are.
    fn slot_count(&self) -> usize {
        with_offsets!(&self.offs, v => v.len())
    }

    /// The value of `u` (`NONE` if it has none).
    #[inline]
    pub fn get(&self, u: u32) -> u32 {
        match self.slot(u) {
            Some((i, word)) => self.value(word, i),
            None if self.late.is_empty() => NONE,
            None => self.late.get(&u).copied().unwrap_or(NONE),
        }
    }

    /// The values of `users` (any order; `NONE` for those without), looked up in passes
    /// that prefetch first the index words, then the offsets, so that the cache misses of
    /// different users overlap (a small send's lookups are nearly all misses).
    pub fn get_many(&self, users: &[u32]) -> Vec<u32> {
        for &u in users {
            if let Some(w) = self.words.get((u >> 6) as usize) {
                prefetch(w);
            }
        }
        let slots: Vec<Option<(usize, Word)>> = users.iter().map(|&u| self.slot(u)).collect();
        with_offsets!(&self.offs, v => {
            for &(i, _) in slots.iter().flatten() {
                prefetch(&v[i]);
            }
        });
        users
            .iter()
            .zip(slots)
            .map(|(&u, slot)| match slot {
                Some((i, word)) => self.value(word, i),
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
            with_offsets!(&self.offs, v => out.extend(users.iter().map(|&u| {
                let word = self.words[(u >> 6) as usize];
                let below = word.bits & ((1u64 << (u & 63)) - 1);
                value_in(v, word.base, word.rank as usize + below.count_ones() as usize)
            })));
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
    /// per selected user, and all are written (checked). A word of `sel` equal to the slot
    /// word (every slot holder of those 64 users selected) is one pass over its offsets.
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
        with_offsets!(&self.offs, v => {
            for (w, &bits) in sel.iter().enumerate() {
                if bits != 0 {
                    k = gather_word_in(v, self.words[w], bits, out, k);
                }
            }
        });
        assert_eq!(k, out.len(), "every place of `out` is written");
    }

    /// The offsets in their width, for a walk that picks the width once (`by_width!`) and
    /// then calls `GatherWord::gather_word` per word.
    pub fn offsets(&self) -> Width<'_> {
        match &self.offs {
            Offsets::U8(v) => Width::U8(Offs(v)),
            Offsets::U16(v) => Width::U16(Offs(v)),
            Offsets::U32(v) => Width::U32(Offs(v)),
        }
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
        if let Some((i, word)) = self.slot(u) {
            let old = self.value(word, i);
            self.unordered |= old != v;
            self.holes -= usize::from(old == NONE);
            self.put((u >> 6) as usize, i, v);
            self.widen(v);
        } else if self.above_all(u) {
            self.append(u, v);
        } else {
            self.late.insert(u, v);
            self.widen(v);
            if self.late.len() > LATE_MIN + self.slot_count() / LATE_SHARE {
                self.relayout();
            }
        }
    }

    /// Write `v` (`NONE` for a hole) to slot `i` of word `w`, re-basing the word or widening
    /// every offset when the word's offsets cannot reach it.
    fn put(&mut self, w: usize, i: usize, v: u32) {
        loop {
            let base = self.words[w].base;
            let slots = self.words[w].slots();
            let done = with_offsets!(&mut self.offs, offs => {
                let h = offset_hole(offs);
                if v == NONE || (v >= base && v - base < h) {
                    offs[i] = Offset::of(if v == NONE { h } else { v - base });
                    true
                } else if let Some(b) = rebase_in(offs, base, slots, i, v) {
                    self.words[w].base = b;
                    true
                } else {
                    false
                }
            });
            if done {
                return;
            }
            self.widen_offsets();
        }
    }

    /// Every offset one width wider (4-byte offsets with every base 0).
    fn widen_offsets(&mut self) {
        fn values<T: Offset>(words: &[Word], offs: &[T]) -> Vec<u32> {
            let mut out = Vec::with_capacity(offs.len());
            for word in words {
                out.extend(word.slots().map(|i| value_in(offs, word.base, i)));
            }
            out
        }
        self.offs = match &self.offs {
            Offsets::U8(v) => Offsets::U16(
                v.iter()
                    .map(|&o| {
                        if u32::from(o) == u8::HOLE {
                            u16::MAX
                        } else {
                            o.into()
                        }
                    })
                    .collect(),
            ),
            Offsets::U16(v) => {
                let vals = values(&self.words, v);
                self.words.iter_mut().for_each(|w| w.base = 0);
                Offsets::U32(vals)
            }
            Offsets::U32(_) => unreachable!("every value fits 4-byte offsets from base 0"),
        };
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
            let rank = self.slot_count() as u32;
            self.words.resize(
                w + 1,
                Word {
                    bits: 0,
                    rank,
                    base: 0,
                },
            );
        }
        self.words[w].bits |= 1 << (u & 63);
        let i = with_offsets!(&mut self.offs, offs => {
            offs.push(Offset::of(offset_hole(offs)));
            offs.len() - 1
        });
        self.put(w, i, v);
    }

    /// Remove the value of `u` (if any).
    pub fn remove(&mut self, u: u32) {
        match self.slot(u) {
            Some((i, word)) => {
                self.holes += usize::from(self.value(word, i) != NONE);
                self.put((u >> 6) as usize, i, NONE);
            }
            None => {
                self.late.remove(&u);
            }
        }
    }

    /// Every (user, value) pair, ascending by user.
    pub fn pairs(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(self.slot_count() + self.late.len());
        for (w, &word) in self.words.iter().enumerate() {
            let mut bits = word.bits;
            let mut i = word.rank as usize;
            while bits != 0 {
                let u = (w as u32) << 6 | bits.trailing_zeros();
                match self.value(word, i) {
                    NONE => {}
                    v => out.push((u, v)),
                }
                i += 1;
                bits &= bits - 1;
            }
        }
        out.extend(self.late.iter().map(|(&u, &v)| (u, v)));
        out.sort_unstable();
        out
    }

    /// Lay the column out again: every value in a slot, removed slots dropped, offsets in the
    /// narrowest width that holds them.
    fn relayout(&mut self) {
        let pairs = self.pairs();
        *self = Column::default();
        for (u, v) in pairs {
            self.append(u, v);
        }
    }

    /// Heap bytes (approximate for the hash map).
    pub fn memory_usage(&self) -> usize {
        self.words.capacity() * std::mem::size_of::<Word>()
            + with_offsets!(&self.offs, v => v.capacity() * offset_width(v))
            + self.late.capacity() * 9
    }

    /// The width of the offsets in bytes.
    #[cfg(test)]
    fn width(&self) -> usize {
        with_offsets!(&self.offs, v => offset_width(v))
    }
}

/// The width of `offs`'s offsets in bytes.
fn offset_width<T: Offset>(_: &[T]) -> usize {
    std::mem::size_of::<T>()
}

/// The hole offset of `offs`'s width.
#[inline(always)]
fn offset_hole<T: Offset>(_: &[T]) -> u32 {
    T::HOLE
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
        assert!(c.late.len() == 1 && c.slot_count() == 2);
        c.relayout();
        assert!(c.all_slotted() && c.ascending());
        assert_eq!(c.range(), Some((51, 700))); // re-laid: the present values
        assert_eq!(c.pairs(), [(5, 51), (64, 640), (70, 700)]);
        let mut out = [MaybeUninit::uninit(); 3];
        c.gather_bits(&[1 << 5, 1 << 0 | 1 << 6], &mut out);
        assert_eq!(out.map(|v| unsafe { v.assume_init() }), [51, 640, 700]);
    }

    #[test]
    fn offsets_take_the_narrowest_width_that_holds_them() {
        let mut c = Column::default();
        // IDs interned in user order: one byte each.
        (0..1000).for_each(|u| c.set(u, 5_000_000 + 2 * u));
        assert_eq!(c.width(), 1);
        // A value below its word's base re-bases the word (the span still fits a byte).
        c.set(3, 5_000_000 - 100);
        assert_eq!((c.width(), c.get(3), c.get(4)), (1, 4_999_900, 5_000_008));
        // A span beyond a byte widens every offset, once.
        c.set(5, 5_000_000 + 20_000);
        assert_eq!((c.width(), c.get(5), c.get(6)), (2, 5_020_000, 5_000_012));
        // Each word has its own base.
        c.set(1024, 7);
        c.set(1088, 4_000_000_000);
        c.set(1089, 4_000_000_001);
        assert_eq!((c.width(), c.get(1024), c.get(1088)), (2, 7, 4_000_000_000));
        // A hole keeps its place through a widening and reads as none.
        c.remove(10);
        c.set(1089, 1); // the word of 1088: beyond two bytes
        assert_eq!((c.width(), c.get(1088), c.get(1089)), (4, 4_000_000_000, 1));
        assert_eq!(
            (c.get(3), c.get(999), c.get(1024)),
            (4_999_900, 5_000_000 + 2 * 999, 7)
        );
        assert_eq!((c.get(10), c.exact()), (NONE, false));
        // A re-layout narrows again.
        c.remove(1024);
        c.remove(1088);
        c.remove(1089);
        c.remove(5);
        c.remove(3);
        c.relayout();
        assert_eq!(
            (c.width(), c.exact(), c.get(10), c.get(11)),
            (1, true, NONE, 5_000_022)
        );
    }

    proptest! {
        /// Against a BTreeMap: any sequence of sets and removes, then every read path.
        #[test]
        fn behaves_like_a_map(
            ops in prop::collection::vec((0u32..3000, 0u32..1000, any::<bool>()), 0..600),
            // Values spread so that the offsets need 1, 2 or 4 bytes (0: values close to
            // 3 per user, as interned in user order: 1 byte).
            scale in prop::sample::select(vec![0u32, 0, 1, 300, 4_000_000]),
        ) {
            let mut c = Column::default();
            let mut m = BTreeMap::new();
            for (u, v, set) in ops {
                let v = if scale == 0 { 3 * u + v % 3 } else { v * scale };
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
            if c.exact() {
                // Every word's gather, all holders or a part, by rank and by PEXT.
                let mut by_rank = Vec::new();
                let mut by_pext = Vec::new();
                for (w, &word) in c.words().iter().enumerate() {
                    for sel in [word.bits, word.bits & (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)] {
                        let mut out = [MaybeUninit::uninit(); 72];
                        by_width!(c, g => {
                            let n = g.gather_word(word, sel, &mut out, 0);
                            by_rank.extend(out[..n].iter().map(|v| unsafe { v.assume_init() }));
                            if let Some(p) = g.pext() {
                                let n = p.gather_word(word, sel, &mut out, 0);
                                by_pext.extend(out[..n].iter().map(|v| unsafe { v.assume_init() }));
                            }
                        });
                    }
                }
                let want: Vec<u32> = c.words().iter().enumerate().flat_map(|(w, &word)| {
                    let part = word.bits & (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    [word.bits, part].into_iter().flat_map(move |sel| {
                        (0..64).filter(move |b| sel >> b & 1 == 1).map(move |b| (w * 64 + b) as u32)
                    })
                }).map(|u| m[&u]).collect();
                prop_assert_eq!(&by_rank, &want);
                // (Empty when the CPU has no BMI2.)
                prop_assert!(by_pext.is_empty() || by_pext == want);
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
