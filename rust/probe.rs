//! Membership tests of many ascending ids against one bitmap.
//!
//! CRoaring's bulk probe (`roaring_bitmap_contains_bulk`) remembers the last container, so
//! consecutive ids of one container skip the container search. Measured against a batched
//! version that fetched every id's container header and search lines before testing any
//! (to overlap the cache misses), it was as fast at 10M devices and faster at 1M: the
//! processor already overlaps the independent misses of consecutive probes.

use croaring::Bitmap;

/// Membership tests of ascending ids against one bitmap.
struct Probe<'b> {
    bitmap: &'b Bitmap,
    ctx: croaring_sys::roaring_bulk_context_t,
}

impl<'b> Probe<'b> {
    fn new(bitmap: &'b Bitmap) -> Self {
        // SAFETY: a zeroed context is the documented initial state.
        Probe {
            bitmap,
            ctx: unsafe { std::mem::zeroed() },
        }
    }

    fn contains(&mut self, id: u32) -> bool {
        // SAFETY: `Bitmap` is `repr(transparent)` over `roaring_bitmap_t` (croaring documents
        // this to allow views), and the bitmap is borrowed, so not modified, for the probe's
        // life, which the context requires.
        unsafe {
            let raw = self.bitmap as *const Bitmap as *const croaring_sys::roaring_bitmap_t;
            croaring_sys::roaring_bitmap_contains_bulk(raw, &mut self.ctx, id)
        }
    }
}

/// Keep the ids of ascending `ids` whose membership in `b` is `want`.
pub fn retain_members(ids: &mut Vec<u32>, b: &Bitmap, want: bool) {
    let mut p = Probe::new(b);
    ids.retain(|&d| p.contains(d) == want);
}

/// Keep the ids of ascending `ids` that are in any of `bms`; returns the membership tests
/// made. Each id is tested against the bitmaps in order until one holds it (pass the largest
/// first: most ids are found, and stop being tested, early).
pub fn retain_in_any(ids: &mut Vec<u32>, bms: &[&Bitmap]) -> usize {
    let mut probes: Vec<Probe> = bms.iter().map(|b| Probe::new(b)).collect();
    let mut tests = 0;
    ids.retain(|&d| {
        probes.iter_mut().any(|p| {
            tests += 1;
            p.contains(d)
        })
    });
    tests
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agree_with_contains(
            a in proptest::collection::vec(0u32..400_000, 0..300),
            b in proptest::collection::vec(0u32..400_000, 0..300),
            probes in proptest::collection::vec(0u32..500_000, 0..400),
        ) {
            let (a, b) = (Bitmap::of(&a), Bitmap::of(&b));
            let mut ids = probes;
            ids.sort_unstable();
            ids.dedup();
            for want in [true, false] {
                let mut got = ids.clone();
                retain_members(&mut got, &a, want);
                let expect: Vec<u32> = ids.iter().copied().filter(|&d| a.contains(d) == want).collect();
                prop_assert_eq!(got, expect);
            }
            let mut got = ids.clone();
            retain_in_any(&mut got, &[&a, &b]);
            let expect: Vec<u32> =
                ids.iter().copied().filter(|&d| a.contains(d) || b.contains(d)).collect();
            prop_assert_eq!(got, expect);
        }
    }
}
