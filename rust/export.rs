//! A bitmap's ids written out as one ascending `u32` array (what `Resolution.ids()` hands to
//! numpy), on all cores when the result is large.
//!
//! CRoaring's `roaring_bitmap_to_uint32_array` writes container after container on one core;
//! at millions of ids that is memory-bound work that a second core halves. Here the containers
//! are cut into ranges of about equal cardinality, each range written by one thread at its own
//! offset (a prefix sum of the container cardinalities), with CRoaring's own bitset kernel
//! (`bitset_extract_setbits_avx2` where the CPU has AVX2) and plain loops for arrays and runs.
//!
//! Invariant: `write` fills `out` exactly (`out.len() == b.cardinality()`), in ascending order.

use crate::containers::{Container, Containers, BITSET_WORDS};
use croaring::Bitmap;

/// Ids from which the export is split over the cores: below it, waking a second thread
/// (tens of microseconds) costs more than it saves.
pub const PARALLEL_FROM: u64 = 1 << 20;

/// The ids of `b`, ascending.
pub fn to_vec(b: &Bitmap) -> Vec<u32> {
    let n = b.cardinality() as usize;
    let mut out = Vec::with_capacity(n);
    write(b, out.spare_capacity_mut());
    // SAFETY: `write` initialised all `n` values.
    unsafe { out.set_len(n) };
    out
}

/// Write the ids of `b` into `out`, which holds exactly `b.cardinality()` values.
pub fn write(b: &Bitmap, out: &mut [std::mem::MaybeUninit<u32>]) {
    if (out.len() as u64) < PARALLEL_FROM || rayon::current_num_threads() < 2 {
        write_range(b, 0..Containers::new(b).keys().len(), out);
        return;
    }
    let c = Containers::new(b);
    let n = c.keys().len();
    // The container where the second half of the ids starts.
    let half = out.len() / 2;
    let (mut split, mut before) = (0, 0);
    while split < n {
        let next = before + c.get(split).cardinality();
        if next > half {
            break;
        }
        (split, before) = (split + 1, next);
    }
    let (lo, hi) = out.split_at_mut(before);
    rayon::join(
        || write_range(b, 0..split, lo),
        || write_range(b, split..n, hi),
    );
}

/// Write the values of containers `range` of `b`, in order, into `out` (exactly as many).
fn write_range(b: &Bitmap, range: std::ops::Range<usize>, out: &mut [std::mem::MaybeUninit<u32>]) {
    // Each thread reads the containers through its own view (the view holds raw pointers).
    let c = Containers::new(b);
    let keys = c.keys();
    let mut at = 0;
    for i in range {
        let base = u32::from(keys[i]) << 16;
        let container = c.get(i);
        let dst = &mut out[at..at + container.cardinality()];
        match container {
            Container::Array(a) => {
                for (o, &v) in dst.iter_mut().zip(a) {
                    o.write(base | u32::from(v));
                }
            }
            Container::Bitset(words, _) => {
                let written = extract(words, dst, base);
                assert_eq!(
                    written,
                    dst.len(),
                    "a bitset container's cardinality is its set bits"
                );
            }
            Container::Run(runs) => {
                let values = runs.iter().flat_map(|r| {
                    let start = base | u32::from(r.value);
                    start..=start + u32::from(r.length)
                });
                for (o, v) in dst.iter_mut().zip(values) {
                    o.write(v);
                }
            }
        }
        at += dst.len();
    }
    assert_eq!(
        at,
        out.len(),
        "the containers' values fill the range exactly"
    );
}

/// The set bits of a bitset container, as `base | bit`, into `dst` (room for all of them);
/// returns how many were written.
fn extract(words: &[u64], dst: &mut [std::mem::MaybeUninit<u32>], base: u32) -> usize {
    debug_assert_eq!(words.len(), BITSET_WORDS);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let out = dst.as_mut_ptr() as *mut u32;
        // SAFETY: `words` holds `BITSET_WORDS` words; `out` has room for `dst.len()` values,
        // the capacity passed, which the kernel never writes past; the CPU has AVX2.
        return unsafe {
            croaring_sys::bitset_extract_setbits_avx2(
                words.as_ptr(),
                words.len(),
                out,
                dst.len(),
                base,
            )
        };
    }
    extract_portable(words, dst, base)
}

/// `extract` without AVX2.
fn extract_portable(words: &[u64], dst: &mut [std::mem::MaybeUninit<u32>], base: u32) -> usize {
    let out = dst.as_mut_ptr() as *mut u32;
    // The portable kernel takes no capacity: it writes one value per set bit.
    let set: usize = words.iter().map(|w| w.count_ones() as usize).sum();
    assert!(set <= dst.len(), "room for every set bit");
    // SAFETY: `words` holds `BITSET_WORDS` words, and `out` has room for all `set` of them.
    unsafe { croaring_sys::bitset_extract_setbits(words.as_ptr(), words.len(), out, base) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arrays, bitsets (dense keys) and runs, over a few keys.
    fn bitmap() -> impl Strategy<Value = Bitmap> {
        (
            proptest::collection::vec(0u32..600_000, 0..400),
            proptest::collection::vec((0u32..9, 1u32..5), 0..3),
            proptest::collection::vec((0u32..600_000, 0u32..140_000), 0..3),
            any::<bool>(),
        )
            .prop_map(|(sparse, dense, runs, optimize)| {
                let mut b = Bitmap::of(&sparse);
                for (key, step) in dense {
                    let vs: Vec<u32> = (0..65_536 / step).map(|i| (key << 16) + i * step).collect();
                    b.add_many(&vs);
                }
                for (lo, len) in runs {
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
        fn agrees_with_croaring(b in bitmap(), cut in 0usize..40) {
            let want = b.to_vec();
            prop_assert_eq!(to_vec(&b), want.clone());
            // The two-range path, cut at every kind of container boundary.
            let c = Containers::new(&b);
            let n = c.keys().len();
            let split = cut.min(n);
            let before: usize = (0..split).map(|i| c.get(i).cardinality()).sum();
            let mut out = vec![std::mem::MaybeUninit::new(0u32); want.len()];
            let (lo, hi) = out.split_at_mut(before);
            write_range(&b, 0..split, lo);
            write_range(&b, split..n, hi);
            // SAFETY: every value was written (write_range asserts it fills its range).
            let got: Vec<u32> = out.into_iter().map(|v| unsafe { v.assume_init() }).collect();
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        #[test]
        fn both_bitset_kernels_write_the_set_bits(
            bits in proptest::collection::vec(0u32..65_536, 0..3000),
            base in 0u32..100,
        ) {
            let mut words = vec![0u64; BITSET_WORDS];
            for &v in &bits {
                words[v as usize / 64] |= 1 << (v % 64);
            }
            let mut want: Vec<u32> = bits.iter().map(|&v| (base << 16) | v).collect();
            want.sort_unstable();
            want.dedup();
            for kernel in [extract, extract_portable] {
                let mut out = vec![std::mem::MaybeUninit::new(0u32); want.len()];
                prop_assert_eq!(kernel(&words, &mut out, base << 16), want.len());
                // SAFETY: the kernel wrote all of them (checked just above).
                let got: Vec<u32> = out.into_iter().map(|v| unsafe { v.assume_init() }).collect();
                prop_assert_eq!(&got, &want);
            }
        }
    }

    #[test]
    fn a_large_bitmap_is_written_on_two_threads_alike() {
        let mut b = Bitmap::new();
        b.add_range(0..(3 << 20));
        b.remove_range(70_000..200_000);
        let sparse: Vec<u32> = (0..100_000).map(|i| (4 << 20) + i * 37).collect();
        b.add_many(&sparse);
        b.run_optimize();
        b.add_many(&[(9 << 20) + 5, (9 << 20) + 65_535]);
        assert!(b.cardinality() >= PARALLEL_FROM);
        assert_eq!(to_vec(&b), b.to_vec());
    }
}
