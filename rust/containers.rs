//! Read-only, container-level access to a CRoaring bitmap.
//!
//! croaring-rs has no container-level API, so this reads CRoaring's structures directly: the
//! `roaring_array_t` of a `roaring_bitmap_t` (bound by croaring-sys, and what croaring-rs's
//! own frozen views rely on) and the container structs below, which mirror the public header
//! of the bundled CRoaring (`roaring.h` of croaring-sys 5.2: `array_container_s`,
//! `bitset_container_s`, `run_container_s`, `shared_container_s` and the type codes 1 to 4).
//! Cargo.lock pins that version; the tests read every kind of container back and compare it
//! with croaring's own answers, so a change of layout fails them.
//!
//! Everything here borrows the bitmap: no container can change or be freed while a
//! `Containers` or a `Container` of it lives.

use croaring::Bitmap;
use croaring_sys::roaring_bitmap_t;
use std::ffi::c_void;

const BITSET_TYPE: u8 = 1;
const ARRAY_TYPE: u8 = 2;
const RUN_TYPE: u8 = 3;
const SHARED_TYPE: u8 = 4;

/// Words of a bitset container (65,536 bits).
pub const BITSET_WORDS: usize = 1024;

#[repr(C)]
struct ArrayContainer {
    cardinality: i32,
    capacity: i32,
    array: *const u16,
}

/// A bitset container's `cardinality` when it is not known (after lazy operations).
const UNKNOWN_CARDINALITY: i32 = -1;

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

#[repr(C)]
struct SharedContainer {
    container: *const c_void,
    typecode: u8,
}

/// One run of a run container: the values `value..=value + length`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub value: u16,
    pub length: u16,
}

/// One container: the low 16 bits of the ids of one key.
#[derive(Debug, Clone, Copy)]
pub enum Container<'b> {
    /// Ascending values.
    Array(&'b [u16]),
    /// `BITSET_WORDS` words, bit `v % 64` of word `v / 64` set for value `v`; and the count of
    /// set bits if the header knows it.
    Bitset(&'b [u64], Option<u32>),
    /// Ascending, disjoint runs.
    Run(&'b [Run]),
}

/// The `roaring_bitmap_t` behind a `Bitmap`.
pub fn raw(b: &Bitmap) -> &roaring_bitmap_t {
    // SAFETY: `Bitmap` is `repr(transparent)` over `roaring_bitmap_t` (croaring relies on it
    // for its own views).
    unsafe { &*(b as *const Bitmap as *const roaring_bitmap_t) }
}

/// The container keys of a bitmap, ascending.
pub fn keys(b: &Bitmap) -> &[u16] {
    Containers::new(b).keys
}

/// The containers of one borrowed bitmap, by index (the index of their key in `keys`).
pub struct Containers<'b> {
    keys: &'b [u16],
    types: &'b [u8],
    ptrs: &'b [*const c_void],
}

/// A slice of `len` items at `ptr`; empty for a null or zero-length one.
///
/// # Safety
/// A non-null `ptr` with `len > 0` must point to `len` initialised items that live, unchanged,
/// for `'b`.
unsafe fn slice<'b, T>(ptr: *const T, len: i32) -> &'b [T] {
    if ptr.is_null() || len <= 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len as usize)
    }
}

impl<'b> Containers<'b> {
    pub fn new(b: &'b Bitmap) -> Self {
        let ra = &raw(b).high_low_container;
        // SAFETY: the three arrays hold `size` initialised entries, and the borrow of `b`
        // keeps them unchanged.
        unsafe {
            Containers {
                keys: slice(ra.keys, ra.size),
                types: slice(ra.typecodes, ra.size),
                ptrs: slice(ra.containers as *const *const c_void, ra.size),
            }
        }
    }

    /// The keys, ascending.
    pub fn keys(&self) -> &'b [u16] {
        self.keys
    }

    /// Start fetching the header of container `i` (what `get` reads first).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        crate::index::prefetch(self.ptrs[i]);
    }

    /// Container `i` (`i < keys().len()`).
    #[inline]
    pub fn get(&self, i: usize) -> Container<'b> {
        let (mut ptr, mut code) = (self.ptrs[i], self.types[i]);
        // SAFETY: CRoaring stores at index `i` a container of type `types[i]`, a shared one
        // wrapping a container of another type; each points to its own initialised values,
        // all borrowed with the bitmap.
        unsafe {
            if code == SHARED_TYPE {
                let shared = &*(ptr as *const SharedContainer);
                (ptr, code) = (shared.container, shared.typecode);
            }
            match code {
                BITSET_TYPE => {
                    let c = &*(ptr as *const BitsetContainer);
                    let known =
                        (c.cardinality != UNKNOWN_CARDINALITY).then_some(c.cardinality as u32);
                    Container::Bitset(slice(c.words, BITSET_WORDS as i32), known)
                }
                ARRAY_TYPE => {
                    let c = &*(ptr as *const ArrayContainer);
                    Container::Array(slice(c.array, c.cardinality))
                }
                RUN_TYPE => {
                    let c = &*(ptr as *const RunContainer);
                    Container::Run(slice(c.runs, c.n_runs))
                }
                other => unreachable!("CRoaring container type {other}"),
            }
        }
    }
}

/// Containers whose values `approx_cardinality` counts, at most.
const SAMPLED: usize = 16;

/// The cardinality of `b`, exact up to `SAMPLED` containers, else estimated from `SAMPLED`
/// containers spread evenly over its keys (scaled by the number of containers). Reads a few
/// container headers instead of every one (`Bitmap::cardinality` reads all, a cache miss
/// each): for ordering operands, where a rough size is enough.
pub fn approx_cardinality(b: &Bitmap) -> u64 {
    let c = Containers::new(b);
    let n = c.keys().len();
    let step = n.div_ceil(SAMPLED).max(1);
    let (mut sum, mut seen) = (0u64, 0u64);
    for i in (0..n).step_by(step) {
        sum += c.get(i).cardinality() as u64;
        seen += 1;
    }
    (sum * n as u64).checked_div(seen).unwrap_or(0)
}

impl Container<'_> {
    /// How many values the container holds.
    pub fn cardinality(&self) -> usize {
        match self {
            Container::Array(a) => a.len(),
            Container::Bitset(_, Some(n)) => *n as usize,
            Container::Bitset(w, None) => w.iter().map(|x| x.count_ones() as usize).sum(),
            Container::Run(r) => r.iter().map(|r| r.length as usize + 1).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The values of a container, ascending.
    fn values(c: Container) -> Vec<u16> {
        match c {
            Container::Array(a) => a.to_vec(),
            Container::Bitset(w, _) => (0..=u16::MAX)
                .filter(|&v| w[v as usize / 64] >> (v % 64) & 1 == 1)
                .collect(),
            Container::Run(r) => r
                .iter()
                .flat_map(|r| r.value..=r.value + r.length)
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn containers_read_back_the_bitmap(
            sparse in proptest::collection::vec(0u32..400_000, 0..300),
            dense_key in 0u32..6,
            dense_step in 1u32..14,
            run in (0u32..400_000, 0u32..70_000),
            optimize in any::<bool>(),
        ) {
            let mut b = Bitmap::of(&sparse);
            // Over 4,096 values in one key: a bitset container.
            b.add_many(&(0..65_536 / dense_step).map(|i| (dense_key << 16) + i * dense_step).collect::<Vec<_>>());
            b.add_range(run.0..run.0 + run.1);
            if optimize {
                b.run_optimize();
            }
            let c = Containers::new(&b);
            let mut got = Vec::new();
            let mut total = 0;
            for (i, &k) in c.keys().iter().enumerate() {
                let vs = values(c.get(i));
                prop_assert_eq!(vs.len(), c.get(i).cardinality());
                total += vs.len();
                got.extend(vs.into_iter().map(|v| (u32::from(k) << 16) | u32::from(v)));
            }
            prop_assert_eq!(got, b.to_vec());
            prop_assert_eq!(total as u64, b.cardinality());
            prop_assert_eq!(keys(&b).len(), c.keys().len());
            if c.keys().len() <= SAMPLED {
                prop_assert_eq!(approx_cardinality(&b), b.cardinality());
            }
        }
    }

    #[test]
    fn every_kind_and_the_empty_bitmap() {
        assert!(Containers::new(&Bitmap::new()).keys().is_empty());
        let mut b = Bitmap::of(&[1, 2, 3]);
        b.add_range(65_536..65_536 + 20_000);
        b.add_many(&(0..10_000).map(|i| 2 * 65_536 + 2 * i).collect::<Vec<_>>());
        b.run_optimize();
        let c = Containers::new(&b);
        assert!(matches!(c.get(0), Container::Array(&[1, 2, 3])));
        assert!(matches!(
            c.get(1),
            Container::Run(&[Run {
                value: 0,
                length: 19_999
            }])
        ));
        assert!(matches!(c.get(2), Container::Bitset(w, Some(10_000)) if w.len() == BITSET_WORDS));
        assert_eq!(c.get(2).cardinality(), 10_000);
        assert_eq!(approx_cardinality(&b), 30_003);
    }

    #[test]
    fn shared_containers_are_read_through() {
        let mut b = Bitmap::of(&[1, 5, 70_000]);
        b.add_range(200_000..230_000);
        // SAFETY: sets CRoaring's copy-on-write flag (what the inline
        // `roaring_bitmap_set_copy_on_write` does); `b` is exclusively borrowed.
        unsafe {
            (*(&mut b as *mut Bitmap as *mut roaring_bitmap_t))
                .high_low_container
                .flags |= 1;
        }
        // A copy of a copy-on-write bitmap shares its containers (both turn to shared ones).
        let copy = b.clone();
        let ra = &raw(&copy).high_low_container;
        // SAFETY: `size` type codes, borrowed with `copy`.
        let types = unsafe { std::slice::from_raw_parts(ra.typecodes, ra.size as usize) };
        assert!(types.iter().all(|&t| t == SHARED_TYPE));
        let c = Containers::new(&copy);
        let got: Vec<u32> = c
            .keys()
            .iter()
            .enumerate()
            .flat_map(|(i, &k)| {
                values(c.get(i))
                    .into_iter()
                    .map(move |v| (u32::from(k) << 16) | u32::from(v))
            })
            .collect();
        assert_eq!(got, b.to_vec());
    }

    #[test]
    fn approx_cardinality_scales_the_sampled_containers() {
        // 100 keys of 50 values: 16 sampled, every one of 50, scaled to 100 containers.
        let ids: Vec<u32> = (0..100u32)
            .flat_map(|k| (0..50).map(move |i| (k << 16) + i * 7))
            .collect();
        let b = Bitmap::of(&ids);
        assert_eq!(approx_cardinality(&b), 5_000);
        // Containers of 7 keys apart are sampled (keys 0, 7, 14, ...): a full container at key
        // 8 goes unseen, one at key 7 counts for 100 / 15 containers. An estimate, no more.
        let mut b8 = b.clone();
        b8.add_range((8 << 16)..(9 << 16));
        assert_eq!(approx_cardinality(&b8), 5_000);
        let mut b7 = b;
        b7.add_range((7 << 16)..(8 << 16));
        assert_eq!(approx_cardinality(&b7), (14 * 50 + 65_536) * 100 / 15);
        assert_eq!(approx_cardinality(&Bitmap::new()), 0);
    }
}
