//! A channel of a dense audience resolved in one walk over the audience's words (steps 3 and 5
//! of `resolve`'s module doc, without a list).
//!
//! Per word of 64 users, the audience's bits AND the slot bits of a binding's first-ID column
//! (exactly the users bound there when the column is `exact`) select the users whose IDs are
//! gathered; their extra IDs follow from the extra-ID column's slot bits the same way. No
//! intersection bitmap is built, no bitset copy of one is made, and the users reached are
//! written as words (`Reached`, a bitmap only on first use): the bitmap path costs a roaring
//! intersection per binding (an array container per key for the sparse bindings), a bitset
//! copy of each dense one and a bitmap per channel.

use super::column::{by_width, GatherWord, Word};
use super::resolve::{distinct, ordered_runs, Reached};
use super::{Bindings, ChannelType, Selection, UmsRegistry, GLOBAL};
use crate::chunked::Chunk;
use crate::containers::{Container, Containers, BITSET_WORDS};
use croaring::Bitmap;
use std::mem::MaybeUninit;

/// IDs of room beyond those expected (none under test, so that the tests grow the answer).
const ROOM_MARGIN: usize = if cfg!(test) { 0 } else { 1024 };

/// One binding's share of a channel: the users of the audience bound in `b` and not bound in
/// `not` (an own-else-global channel's global share leaves out the users of its own binding).
struct Part<'a> {
    b: &'a Bindings,
    not: Option<&'a Bindings>,
}

impl Part<'_> {
    /// Whether the slot bits of the columns read are exactly the users bound.
    fn walkable(&self) -> bool {
        self.b.first.exact()
            && (self.b.multi.is_empty() || self.b.extra_at.exact())
            && self.not.is_none_or(|n| n.first.exact())
    }

    /// Call `v.word(w, sel, word)` for every word `w` of users (ascending) where `sel`, the
    /// users of `a` in this share, is not empty; `word` is the first-ID column's word `w`.
    #[inline(always)]
    fn walk(&self, a: &Bitmap, v: &mut impl Visit) {
        let words = self.b.first.words();
        let not = self.not.map_or(&[][..], |n| n.first.words());
        let containers = Containers::new(a);
        let mut scratch: Option<Chunk> = None;
        for (i, &k) in containers.keys().iter().enumerate() {
            let base = usize::from(k) * BITSET_WORDS;
            if base >= words.len() {
                break;
            }
            let aw: &[u64] = match containers.get(i) {
                Container::Bitset(w, _) => w,
                c => {
                    let chunk = scratch.get_or_insert_with(Chunk::new);
                    chunk.clear();
                    chunk.or(&c);
                    &chunk.words[..]
                }
            };
            let ws = &words[base..(base + BITSET_WORDS).min(words.len())];
            let nw = not.get(base..).unwrap_or(&[]);
            for (j, (&x, &word)) in aw.iter().zip(ws).enumerate() {
                let mut sel = x & word.bits;
                if let Some(n) = nw.get(j) {
                    sel &= !n.bits;
                }
                if sel != 0 {
                    v.word(base + j, sel, word);
                }
            }
        }
    }

    /// Append the first IDs of the share to `out`, in user order; mark its users in `reached`
    /// and return how many there are.
    #[inline(always)]
    fn gather_first(&self, a: &Bitmap, out: &mut Vec<u32>, reached: &mut [u64]) -> u64 {
        by_width!(self.b.first, g => match g.pext() {
            Some(g) => self.gather_first_with(g, a, out, reached),
            None => self.gather_first_with(g, a, out, reached),
        })
    }

    #[inline(always)]
    fn gather_first_with(
        &self,
        g: impl GatherWord,
        a: &Bitmap,
        out: &mut Vec<u32>,
        reached: &mut [u64],
    ) -> u64 {
        let mut v = FirstIds {
            g,
            out,
            reached,
            n: 0,
        };
        self.walk(a, &mut v);
        v.n
    }

    /// Append the extra IDs of the share to `out`, in user order.
    #[inline(always)]
    fn gather_extras(&self, a: &Bitmap, out: &mut Vec<u32>) {
        if self.b.multi.is_empty() {
            return;
        }
        by_width!(self.b.extra_at, g => match g.pext() {
            Some(g) => self.gather_extras_with(g, a, out),
            None => self.gather_extras_with(g, a, out),
        })
    }

    #[inline(always)]
    fn gather_extras_with(&self, g: impl GatherWord, a: &Bitmap, out: &mut Vec<u32>) {
        let starts = [MaybeUninit::uninit(); 72];
        self.walk(
            a,
            &mut ExtraIds {
                g,
                b: self.b,
                starts,
                out,
            },
        );
    }
}

/// What a walk does with each word of selected users. The walk calls `word` in its inner
/// loop; the impls are `inline(always)` (not closures, which the compiler may leave out of
/// line and so without the POPCNT of `walk_popcnt`).
trait Visit {
    fn word(&mut self, w: usize, sel: u64, word: Word);
}

/// Gathers the first IDs of the selected users and marks them reached.
struct FirstIds<'a, G> {
    g: G,
    out: &'a mut Vec<u32>,
    reached: &'a mut [u64],
    n: u64,
}

impl<G: GatherWord> Visit for FirstIds<'_, G> {
    #[inline(always)]
    fn word(&mut self, w: usize, sel: u64, word: Word) {
        self.reached[w] |= sel;
        self.n += u64::from(sel.count_ones());
        let out = &mut *self.out;
        // Room for a word's 64 values and the 8 places a vector gather may write past them.
        if out.capacity() - out.len() < 72 {
            out.reserve(out.len() / 2 + 72);
        }
        let m = self.g.gather_word(word, sel, out.spare_capacity_mut(), 0);
        // SAFETY: `gather_word` wrote the first `m` places after the length (a place past
        // the room would have panicked on its bounds check).
        unsafe { out.set_len(out.len() + m) };
    }
}

/// Gathers the extra IDs of the selected users (`g`: the extra-ID column's offsets).
struct ExtraIds<'a, G> {
    g: G,
    b: &'a Bindings,
    starts: [MaybeUninit<u32>; 72],
    out: &'a mut Vec<u32>,
}

impl<G: GatherWord> Visit for ExtraIds<'_, G> {
    #[inline(always)]
    fn word(&mut self, w: usize, sel: u64, _: Word) {
        let Some(&word) = self.b.extra_at.words().get(w) else {
            return;
        };
        let sel = sel & word.bits;
        if sel != 0 {
            let n = self.g.gather_word(word, sel, &mut self.starts, 0);
            for s in &self.starts[..n] {
                // SAFETY: `gather_word` wrote the first `n` places.
                match self.b.extras_from(unsafe { s.assume_init() }) {
                    // Most users have one extra ID: no copy call for it.
                    &[one] => self.out.push(one),
                    more => self.out.extend_from_slice(more),
                }
            }
        }
    }
}

impl UmsRegistry {
    /// Steps 3 and 5 of `resolve`'s module doc over a dense audience `a` and no list, by one
    /// walk of `a`'s words per binding and run of IDs: the distinct IDs, the users reached and
    /// how many users are bound. `None` when a binding's columns are not `exact` (a user bound
    /// out of order or removed since the last re-layout): the bitmap path answers then.
    pub(super) fn walk_channel(
        &self,
        key: &str,
        ty: ChannelType,
        a: &Bitmap,
    ) -> Option<(Vec<u32>, Reached, u64)> {
        let own = self.scope(key).and_then(|s| self.bindings.get(&(ty, s)));
        let global = self.bindings.get(&(ty, GLOBAL));
        let parts: Vec<Part> = match ty.selection() {
            Selection::Own => share(own, None).into_iter().collect(),
            Selection::Global => share(global, None).into_iter().collect(),
            Selection::OwnElseGlobal => share(own, None)
                .into_iter()
                .chain(share(global, own))
                .collect(),
        };
        if !parts.iter().all(Part::walkable) {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("popcnt") && has!("bmi2") && has!("avx2") {
                // SAFETY: the CPU has POPCNT, BMI2 and AVX2, checked just above.
                return Some(unsafe { walk_bmi2(&parts, a) });
            }
            if has!("popcnt") {
                // SAFETY: the CPU has POPCNT, checked just above.
                return Some(unsafe { walk_popcnt(&parts, a) });
            }
        }
        Some(walk(&parts, a))
    }
}

/// The share of binding `b` (if any) leaving out the users bound in `not`.
fn share<'a>(b: Option<&'a Bindings>, not: Option<&'a Bindings>) -> Option<Part<'a>> {
    b.map(|b| Part { b, not })
}

/// `walk` compiled with POPCNT, BMI2 and AVX2 (the ranks of a word's selected users by one
/// PEXT, 1-byte offsets widened 8 at a time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt,bmi2,avx2")]
fn walk_bmi2(parts: &[Part], a: &Bitmap) -> (Vec<u32>, Reached, u64) {
    walk(parts, a)
}

/// `walk` compiled with the POPCNT instruction (a rank per selected user).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn walk_popcnt(parts: &[Part], a: &Bitmap) -> (Vec<u32>, Reached, u64) {
    walk(parts, a)
}

/// The IDs of `parts` over `a`: their runs (first IDs, extra IDs of each part) gathered in
/// the order of their ranges when every run is ascending and their ranges are disjoint (as
/// `resolve::gather_distinct`), else gathered and sorted out by `distinct`.
#[inline(always)]
fn walk(parts: &[Part], a: &Bitmap) -> (Vec<u32>, Reached, u64) {
    let keys = a.maximum().map_or(0, |m| (m >> 16) as usize + 1);
    let mut reached = vec![0u64; keys * BITSET_WORDS];
    // Room for the IDs expected if `a` and the bindings were independent, and a margin: the
    // answer is handed over as it is, so room beyond it stays allocated with it (which makes
    // a caller holding answers allocate fresh pages for the next ones).
    let share = a.cardinality() as f64 / (f64::from(a.maximum().unwrap_or(0)) + 1.0);
    let expected: f64 = parts
        .iter()
        .map(|p| share * (p.b.users.cardinality() as f64 + p.b.pool.len() as f64 / 2.0))
        .sum();
    let mut out = Vec::with_capacity((expected * 1.05) as usize + ROOM_MARGIN);
    let ordered = ordered_runs(parts.iter().map(|p| p.b));
    let mut bound = 0;
    let runs: Vec<(usize, bool)> = match &ordered {
        Some(runs) => runs.iter().map(|&(_, i, extras)| (i, extras)).collect(),
        None => (0..parts.len())
            .flat_map(|i| [(i, false), (i, true)])
            .collect(),
    };
    for (i, extras) in runs {
        if extras {
            parts[i].gather_extras(a, &mut out);
        } else {
            bound += parts[i].gather_first(a, &mut out, &mut reached);
        }
    }
    // (A part whose first IDs have no range has no users: nothing to count or mark.)
    let out = if ordered.is_some() {
        out
    } else {
        distinct(out)
    };
    debug_assert!(out.windows(2).all(|w| w[0] < w[1]));
    (out, Reached::of_words(reached, bound), bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ums::tests::{drawn_registry, drawn_user, DRAWN_CHANNELS};

    proptest::proptest! {
        /// The walk gives what the bitmap path gives, whenever it applies (and it applies to
        /// registries whose users were bound in order and never removed).
        #[test]
        fn the_walk_matches_the_bitmap_path(
            users in proptest::collection::vec(
                (0usize..300, proptest::collection::vec((0usize..4, 0usize..3, 0u32..40), 0..4)),
                1..120,
            ),
            in_order in proptest::bool::ANY,
            removed in proptest::collection::vec(0usize..300, 0..3),
            audience in proptest::collection::vec(0u32..300, 0..200),
            spread in 1u32..400,
        ) {
            let mut r = drawn_registry();
            let mut users = users;
            if in_order {
                users.sort_by_key(|u| u.0);
                users.dedup_by_key(|u| u.0);
            }
            // Users far apart (`spread`): several keys, and words without users.
            r.add_users(&(0..300 * spread).map(|i| format!("x{i}")).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            for (u, binds) in &users {
                r.upsert_user(&drawn_user(&format!("x{}", *u as u32 * spread), binds, 5)).unwrap();
            }
            for u in removed {
                r.delete_user(&format!("x{}", u as u32 * spread));
            }
            let mut a: Vec<u32> = audience.into_iter().map(|u| u * spread).filter(|&u| r.live.contains(u)).collect();
            a.sort_unstable();
            a.dedup();
            let a = Bitmap::of(&a);
            for (k, ty) in DRAWN_CHANNELS {
                let mut steps = Vec::new();
                let mut step = |_: &'static str, _: &'static str, n: u64| steps.push(n);
                let (ids, reached) = r.bitmap_channel(k, ty, &a, None, &mut step);
                if let Some((got, walked, bound)) = r.walk_channel(k, ty, &a) {
                    proptest::prop_assert_eq!(&got, &ids);
                    proptest::prop_assert_eq!(walked.bitmap().to_vec(), reached.to_vec());
                    proptest::prop_assert_eq!(walked.count(), reached.cardinality());
                    proptest::prop_assert_eq!(bound, steps[0]);
                } else {
                    proptest::prop_assert!(!in_order || !r.bindings.values().all(|b| b.first.exact()));
                }
            }
        }
    }
}
