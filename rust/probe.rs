//! Membership of many sorted ids in one bitmap, with the cache misses of different ids
//! overlapped.
//!
//! Why not one `roaring_bitmap_contains` per id: at 10M devices a tag's containers are spread
//! over megabytes, so every test waits for two or three cache misses in a row (the container
//! header, then the lines its search reads), about 30 ns. Here every id's container is found
//! first (the key array is small and stays cached), then every header is fetched, then the
//! lines each id's search will start from, and only then are the ids tested, so the misses
//! of a batch overlap instead of adding up.
//!
//! This reads CRoaring's container structs (`roaring.h`: `array_container_s`,
//! `bitset_container_s`, `run_container_s`, `shared_container_s` and the type codes), which
//! croaring-sys does not export; the test below checks every container type against
//! `Bitmap::contains`.

use crate::index::prefetch;
use croaring::Bitmap;
use std::ffi::c_void;

const BITSET: u8 = 1;
const ARRAY: u8 = 2;
const RUN: u8 = 3;
const SHARED: u8 = 4;

#[repr(C)]
struct ArrayContainer {
    cardinality: i32,
    capacity: i32,
    array: *const u16,
}

#[repr(C)]
struct BitsetContainer {
    cardinality: i32,
    words: *const u64,
}

#[repr(C)]
struct RunContainer {
    n_runs: i32,
    capacity: i32,
    runs: *const Run,
}

/// `rle16_t`: the values `value..=value + length`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Run {
    value: u16,
    length: u16,
}

#[repr(C)]
struct SharedContainer {
    container: *const c_void,
    typecode: u8,
}

/// A container resolved to its data: what a search reads.
#[derive(Clone, Copy)]
enum Data {
    Absent,
    Array(*const u16, usize),
    Bitset(*const u64),
    Runs(*const Run, usize),
}

/// The containers of `b` in key order: keys, and (type code, struct pointer) per key.
///
/// # Safety
/// `b` must stay borrowed (unmodified) while the returned slices are used.
unsafe fn parts(b: &Bitmap) -> (&[u16], &[*mut c_void], &[u8]) {
    // SAFETY: `Bitmap` is `repr(transparent)` over `roaring_bitmap_t` (croaring documents
    // this), and the arrays hold `size` entries.
    let raw = b as *const Bitmap as *const croaring_sys::roaring_bitmap_t;
    let ra = &(*raw).high_low_container;
    let n = ra.size as usize;
    if n == 0 {
        return (&[], &[], &[]);
    }
    (
        std::slice::from_raw_parts(ra.keys, n),
        std::slice::from_raw_parts(ra.containers as *const *mut c_void, n),
        std::slice::from_raw_parts(ra.typecodes, n),
    )
}

/// The data of a container (a shared container is unwrapped).
///
/// # Safety
/// `c` is a live container of type `typecode`.
unsafe fn data(mut c: *const c_void, mut typecode: u8) -> Data {
    if typecode == SHARED {
        let s = &*(c as *const SharedContainer);
        c = s.container;
        typecode = s.typecode;
    }
    match typecode {
        ARRAY => {
            let a = &*(c as *const ArrayContainer);
            Data::Array(a.array, a.cardinality as usize)
        }
        BITSET => Data::Bitset((*(c as *const BitsetContainer)).words),
        RUN => {
            let r = &*(c as *const RunContainer);
            Data::Runs(r.runs, r.n_runs as usize)
        }
        _ => unreachable!("unknown CRoaring container type {typecode}"),
    }
}

/// Where in a sorted array of `n` roughly uniform values `x` should be.
fn guess(x: u16, n: usize) -> usize {
    (x as usize * n) >> 16
}

/// Elements on each side of the guessed position searched first (one cache line in all).
const WINDOW: usize = 16;

/// Whether sorted `a` holds `x`. Tag members are spread about uniformly, so `x` is almost
/// always within `WINDOW` of where a uniform spread would put it (the line that was
/// prefetched): search there, else the whole array. The searches are branch-free (a
/// conditional move per halving): the comparisons of random ids are unpredictable, and a
/// mispredicted branch costs more than the whole search of a cached line.
fn array_contains(a: &[u16], x: u16) -> bool {
    let n = a.len();
    if n == 0 {
        return false;
    }
    let g = guess(x, n);
    let (lo, hi) = (g.saturating_sub(WINDOW), (g + WINDOW).min(n - 1));
    if a[lo] <= x && x <= a[hi] {
        branchless_contains(&a[lo..=hi], x)
    } else {
        branchless_contains(a, x)
    }
}

/// Binary search of non-empty sorted `a` without data-dependent branches.
fn branchless_contains(a: &[u16], x: u16) -> bool {
    let mut base = 0;
    let mut n = a.len();
    while n > 1 {
        let half = n / 2;
        // SAFETY: base + half < base + n <= a.len() (n halves, base only moves within it).
        let v = unsafe { *a.get_unchecked(base + half) };
        // A multiply, not a branch: the compiler keeps it a data dependency.
        base += half * usize::from(v <= x);
        n -= half;
    }
    a[base] == x
}

fn runs_contain(runs: &[Run], x: u16) -> bool {
    let i = runs.partition_point(|r| r.value <= x);
    i > 0 && x as u32 <= runs[i - 1].value as u32 + runs[i - 1].length as u32
}

/// `out[i]` = whether `b` holds `ids[i]`, for ascending `ids`.
pub fn contains_many(b: &Bitmap, ids: &[u32], out: &mut Vec<bool>) {
    out.clear();
    // SAFETY: `b` is borrowed for the whole function.
    let (keys, containers, types) = unsafe { parts(b) };
    // 1. Each id's container (ids and keys both ascend: one merge).
    let mut at: Vec<usize> = Vec::with_capacity(ids.len());
    let mut k = 0;
    for &id in ids {
        let key = (id >> 16) as u16;
        while k < keys.len() && keys[k] < key {
            k += 1;
        }
        at.push(if k < keys.len() && keys[k] == key {
            k
        } else {
            usize::MAX
        });
    }
    // 2. Fetch the headers.
    let mut last = usize::MAX;
    for &c in &at {
        if c != last && c != usize::MAX {
            prefetch(containers[c] as *const u8);
            last = c;
        }
    }
    // 3. Read the headers, fetch the line each search starts from.
    let mut resolved: Vec<Data> = Vec::with_capacity(ids.len());
    let mut last = (usize::MAX, Data::Absent);
    for (&c, &id) in at.iter().zip(ids) {
        if c != last.0 {
            last = (
                c,
                if c == usize::MAX {
                    Data::Absent
                } else {
                    // SAFETY: a container of `b` with its own type code.
                    unsafe { data(containers[c], types[c]) }
                },
            );
        }
        let x = id as u16;
        match last.1 {
            Data::Array(p, n) if n > 0 => {
                let g = guess(x, n);
                prefetch(p.wrapping_add(g.saturating_sub(WINDOW)));
                prefetch(p.wrapping_add((g + WINDOW).min(n - 1)));
            }
            Data::Bitset(w) => prefetch(w.wrapping_add(x as usize / 64)),
            Data::Runs(r, _) => prefetch(r),
            _ => {}
        }
        resolved.push(last.1);
    }
    // 4. Test.
    out.extend(resolved.iter().zip(ids).map(|(d, &id)| {
        let x = id as u16;
        // SAFETY: the pointers and lengths come from live containers of `b`.
        unsafe {
            match *d {
                Data::Absent => false,
                Data::Array(p, n) => array_contains(std::slice::from_raw_parts(p, n), x),
                Data::Bitset(w) => *w.add(x as usize / 64) >> (x % 64) & 1 == 1,
                Data::Runs(r, n) => runs_contain(std::slice::from_raw_parts(r, n), x),
            }
        }
    }));
}

/// Keep the ids of ascending `ids` whose membership in `b` is `want`.
pub fn retain_members(ids: &mut Vec<u32>, b: &Bitmap, want: bool) {
    let mut member = Vec::new();
    contains_many(b, ids, &mut member);
    let mut m = member.into_iter();
    ids.retain(|_| m.next() == Some(want));
}

/// Keep the ids of ascending `ids` that are in any of `bms`; returns the membership tests
/// made. Each bitmap is tested only with the ids no earlier one holds (pass the largest
/// first: most ids are found, and stop being tested, early).
pub fn retain_in_any(ids: &mut Vec<u32>, bms: &[&Bitmap]) -> usize {
    let mut hit = vec![false; ids.len()];
    let mut pending: Vec<usize> = (0..ids.len()).collect();
    let (mut batch, mut member) = (Vec::new(), Vec::new());
    let mut tests = 0;
    for b in bms {
        if pending.is_empty() {
            break;
        }
        batch.clear();
        batch.extend(pending.iter().map(|&i| ids[i]));
        tests += batch.len();
        contains_many(b, &batch, &mut member);
        let mut m = member.iter();
        pending.retain(|&i| {
            let found = m.next() == Some(&true);
            hit[i] |= found;
            !found
        });
    }
    let mut h = hit.into_iter();
    ids.retain(|_| h.next() == Some(true));
    tests
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_contains_on_every_container_type(
            sparse in proptest::collection::vec(0u32..400_000, 0..300),
            dense_start in 0u32..200_000,
            run_start in 0u32..300_000,
            probes in proptest::collection::vec(0u32..500_000, 0..400),
        ) {
            let mut b = Bitmap::of(&sparse);
            // A bitset container (5000 scattered values in one chunk) and a run.
            b.add_many(&(0..5000).map(|i| (dense_start & !0xffff) + i * 13 % 65536).collect::<Vec<_>>());
            b.add_range(run_start..run_start + 3000);
            let mut runs = b.clone();
            runs.run_optimize();
            let mut ids = probes;
            ids.sort_unstable();
            ids.dedup();
            for bm in [&b, &runs] {
                let mut got = Vec::new();
                contains_many(bm, &ids, &mut got);
                let want: Vec<bool> = ids.iter().map(|&d| bm.contains(d)).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn array_search_finds_every_value_and_no_other() {
        let a: Vec<u16> = (0..300u16).map(|i| i * 200 + (i % 7)).collect();
        for x in 0..=u16::MAX {
            assert_eq!(array_contains(&a, x), a.binary_search(&x).is_ok(), "{x}");
        }
        assert!(!array_contains(&[], 5));
    }
}
