//! Membership tests of many ascending ids against one bitmap, read straight from its
//! containers.
//!
//! Each id's container is found from its key alone (`key_index`), or taken from the id before
//! when both have the same key (no load then: a dense id list, say the 3,167 ids of `and5` at
//! 1M over 16 keys, finds 16 containers, not 3,167), and the arrays of `LANES` ids are then
//! searched together (`search_lanes`), branch-free. Why: a test is a chain of
//! dependent loads (the key, the container header, one array element per level of the
//! search), and the CPU only overlaps the chains of different ids when nothing ties them
//! together; what is left is mostly instructions (at 10M devices a second pass of the narrow
//! request's filters over the same ids, its data just fetched, cost as much as the first), so
//! the lanes share their search steps. Measured on the narrow request (`benches/README.md`):
//! walking each id's key forward from the previous id's (a chain through every id) and one
//! binary search per id took about a fifth longer in all, a lane-wise binary search with its
//! own span per lane about a tenth; CRoaring's bulk probe (`roaring_bitmap_contains_bulk`) was
//! slower still. Prefetching the next lanes' headers gained nothing, and prefetching the lines
//! of each array, interpolating the position in an array, or scanning it with vector compares
//! were slower.

use crate::containers::{Container, Containers};
use croaring::Bitmap;

/// Ids whose containers are found, then whose arrays are searched, together (measured at
/// 10M devices: 12 and 16 alike, 8 about 2% slower, 4 about 10%).
const LANES: usize = 16;

/// What a lane searches when its id needs no array search: one value (the answer is unused).
static NO_ARRAY: [u16; 1] = [0];

/// Whether `c` holds the low bits `v`.
fn holds(c: Container<'_>, v: u16) -> bool {
    match c {
        Container::Bitset(w, _) => w[usize::from(v) / 64] >> (v % 64) & 1 == 1,
        Container::Array(a) => a.binary_search(&v).is_ok(),
        Container::Run(r) => {
            let i = r.partition_point(|run| run.value <= v);
            i > 0 && v - r[i - 1].value <= r[i - 1].length
        }
    }
}

/// The index of the last key `<= k` of ascending, distinct, non-empty `keys` (0 if none is).
///
/// Found from `k` alone, not from the previous id's index, so that the tests of several ids do
/// not wait on each other. Distinct keys bound the index: at most `k - keys[0]`, at least
/// `n - 1 - (keys[n - 1] - k)`: one candidate when every key in between is present (a tag
/// held across the whole id range), few when few are missing; a branch-free binary search
/// covers the span.
fn key_index(keys: &[u16], k: u16) -> usize {
    let n = keys.len();
    let (first, last, k) = (
        usize::from(keys[0]),
        usize::from(keys[n - 1]),
        usize::from(k),
    );
    let hi = (n - 1).min(k.saturating_sub(first));
    let lo = (n - 1).saturating_sub(last.saturating_sub(k)).min(hi);
    let (mut base, mut len) = (lo, hi - lo + 1);
    while len > 1 {
        let half = len / 2;
        let up = usize::from(keys[base + half]) <= k;
        base = std::hint::select_unpredictable(up, base + half, base);
        len -= half;
    }
    base
}

/// Binary searches of `LANES` arrays at once: lane `j` looks for `v[j]` in the `len[j]`
/// values at `ptr[j]`. Each lane's cursor takes the same steps, halving from a power of two
/// that spans the longest array: a step is taken when it lands (clamped to the lane's last
/// value) on a value `<= v[j]`, so the cursor ends on the last such value, or on the first
/// value when none is. Branch-free (the direction at each level is a coin toss), and the
/// steps are shared, so a lane costs a few instructions a level.
///
/// # Safety
/// `ptr[j]` must point to `len[j] >= 1` readable values, and `maxlen` be the largest `len[j]`.
#[inline(always)]
unsafe fn search_lanes(
    ptr: &[*const u16; LANES],
    len: &[usize; LANES],
    v: &[u16; LANES],
    maxlen: usize,
) -> [bool; LANES] {
    let mut cur = *ptr;
    let last: [*const u16; LANES] = std::array::from_fn(|j| ptr[j].wrapping_add(len[j] - 1));
    // The first step is the largest power of two below `maxlen`: the steps sum to at least
    // `maxlen - 1`, the farthest any cursor goes.
    let levels = usize::BITS - (maxlen - 1).leading_zeros();
    let mut step = (1usize << levels) >> 1;
    while step > 0 {
        for j in 0..LANES {
            let next = cur[j].wrapping_add(step);
            let at = std::hint::select_unpredictable(next > last[j], last[j], next);
            // SAFETY: `at` lies between `cur[j]` and `last[j]`, in the lane's array.
            let up = unsafe { *at } <= v[j];
            cur[j] = std::hint::select_unpredictable(up, at, cur[j]);
        }
        step >>= 1;
    }
    // SAFETY: every cursor lies in its lane's array.
    std::array::from_fn(|j| unsafe { *cur[j] } == v[j])
}

/// Call `each(id, member)` for every id of ascending `ids`, in order, with its membership in
/// `b`: `LANES` ids at a time, their containers found first, then their arrays searched
/// together. Bitset and run containers are answered on the spot.
#[inline(always)]
fn test_members(ids: &[u32], b: &Bitmap, mut each: impl FnMut(u32, bool)) {
    let c = Containers::new(b);
    let keys = c.keys();
    if keys.is_empty() {
        ids.iter().for_each(|&id| each(id, false));
        return;
    }
    // The container of the last key looked up (ascending ids of one key are consecutive: a
    // dense id list finds its container once per key, not once per id).
    let mut last: Option<(u16, Option<Container>)> = None;
    for chunk in ids.chunks(LANES) {
        let mut ptr = [NO_ARRAY.as_ptr(); LANES];
        let mut len = [1usize; LANES];
        let mut v = [0u16; LANES];
        // Per lane: the answer, or `None` until its array is searched.
        let mut known = [Some(false); LANES];
        let mut maxlen = 1;
        for (j, &id) in chunk.iter().enumerate() {
            let k = (id >> 16) as u16;
            let container = match last {
                Some((lk, found)) if lk == k => found,
                _ => {
                    let at = key_index(keys, k);
                    let found = (keys[at] == k).then(|| c.get(at));
                    last = Some((k, found));
                    found
                }
            };
            match container {
                Some(Container::Array(a)) if !a.is_empty() => {
                    (ptr[j], len[j], v[j]) = (a.as_ptr(), a.len(), id as u16);
                    known[j] = None;
                    maxlen = maxlen.max(a.len());
                }
                Some(other) => known[j] = Some(holds(other, id as u16)),
                None => {}
            }
        }
        // SAFETY: every lane points to `len` >= 1 values, of a non-empty array container
        // borrowed with `b` or of `NO_ARRAY`; `maxlen` is the largest `len`.
        let found = unsafe { search_lanes(&ptr, &len, &v, maxlen) };
        for (j, &id) in chunk.iter().enumerate() {
            each(id, known[j].unwrap_or(found[j]));
        }
    }
}

/// Keep the ids of ascending `ids` whose membership in `b` is `want`.
pub fn retain_members(ids: &mut Vec<u32>, b: &Bitmap, want: bool) {
    // Written without a branch on the answer (`w` advances when the id is kept).
    let mut out = vec![0u32; ids.len()];
    let mut w = 0;
    test_members(ids, b, |id, hit| {
        out[w] = id;
        w += usize::from(hit == want);
    });
    out.truncate(w);
    *ids = out;
}

/// Keep the ids of ascending `ids` that are in any of `bms`; returns the membership tests
/// made. Each id is tested against the bitmaps in order until one holds it (pass the largest
/// first: most ids are found, and stop being tested, early): all ids against the first bitmap,
/// those it lacks against the second, and so on.
pub fn retain_in_any(ids: &mut Vec<u32>, bms: &[&Bitmap]) -> usize {
    let mut pending = std::mem::take(ids);
    let mut tests = 0;
    for b in bms {
        if pending.is_empty() {
            break;
        }
        tests += pending.len();
        let mut hits = vec![0u32; pending.len()];
        let mut misses = vec![0u32; pending.len()];
        let (mut h, mut m) = (0, 0);
        test_members(&pending, b, |id, hit| {
            (hits[h], misses[m]) = (id, id);
            h += usize::from(hit);
            m += usize::from(!hit);
        });
        hits.truncate(h);
        misses.truncate(m);
        *ids = if ids.is_empty() {
            hits
        } else {
            crate::eval::merge_sorted(ids, &hits)
        };
        pending = misses;
    }
    tests
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sparse ids, a dense key (a bitset container) and a range (a run once optimized).
    fn bitmap() -> impl Strategy<Value = Bitmap> {
        (
            proptest::collection::vec(0u32..400_000, 0..300),
            proptest::option::of((0u32..6, 1u32..14)),
            proptest::option::of((0u32..400_000, 0u32..70_000)),
            any::<bool>(),
        )
            .prop_map(|(sparse, dense, run, optimize)| {
                let mut b = Bitmap::of(&sparse);
                if let Some((key, step)) = dense {
                    let vs: Vec<u32> = (0..65_536 / step).map(|i| (key << 16) + i * step).collect();
                    b.add_many(&vs);
                }
                if let Some((lo, len)) = run {
                    b.add_range(lo..lo + len);
                }
                if optimize {
                    b.run_optimize();
                }
                b
            })
    }

    proptest! {
        #[test]
        fn agree_with_contains(
            a in bitmap(),
            b in bitmap(),
            probes in proptest::collection::vec(0u32..500_000, 0..400),
            near in proptest::collection::vec(0usize..1000, 0..100),
        ) {
            let mut ids = probes;
            // Members and their neighbours, so that hits and near misses are both tested.
            let members = a.to_vec();
            for k in near {
                if let Some(&m) = members.get(k * members.len() / 1000) {
                    ids.extend([m.saturating_sub(1), m, m + 1]);
                }
            }
            ids.sort_unstable();
            ids.dedup();
            for want in [true, false] {
                let mut got = ids.clone();
                retain_members(&mut got, &a, want);
                let expect: Vec<u32> = ids.iter().copied().filter(|&d| a.contains(d) == want).collect();
                prop_assert_eq!(got, expect);
            }
            let mut got = ids.clone();
            let tests = retain_in_any(&mut got, &[&a, &b]);
            let expect: Vec<u32> =
                ids.iter().copied().filter(|&d| a.contains(d) || b.contains(d)).collect();
            let in_a = ids.iter().filter(|&&d| a.contains(d)).count();
            prop_assert_eq!(got, expect);
            prop_assert_eq!(tests, ids.len() + ids.len() - in_a, "b only tests the ids a lacks");
        }

        #[test]
        fn key_index_finds_the_last_key_not_above(
            mut keys in proptest::collection::vec(any::<u16>(), 1..200),
            dense in proptest::option::of((any::<u16>(), 0u16..300, 0usize..4)),
            k in any::<u16>(),
        ) {
            // Runs of consecutive keys with a few holes: the spans `key_index` narrows to.
            if let Some((start, n, holes)) = dense {
                keys.extend((0..n).filter_map(|i| start.checked_add(i)).filter(|x| x % 7 >= holes as u16));
            }
            keys.sort_unstable();
            keys.dedup();
            let want = keys.partition_point(|&x| x <= k).saturating_sub(1);
            prop_assert_eq!(key_index(&keys, k), want);
            for &x in keys.iter().step_by(7) {
                prop_assert_eq!(keys[key_index(&keys, x)], x);
            }
        }
    }
}
