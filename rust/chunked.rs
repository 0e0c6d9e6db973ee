//! Chunk-by-chunk evaluation: a compiled audience evaluated separately over ranges of
//! container keys (a key is the high 16 bits of an id, so one key holds 65,536 ids), in
//! parallel.
//!
//! Every operand of one range lives in the same few containers of each bitmap, so the plan
//! of `eval` run over one range keeps its intermediates to the range's size (they stay in
//! cache) and the ranges share nothing, so they run on all cores. The results of the ranges
//! hold disjoint, ascending keys and are joined at the end.
//!
//! A range of a bitmap is a `KeyRange`: a `roaring_bitmap_t` header that points into the
//! bitmap's own key, type and container arrays at the range's first key (nothing is copied).
//! croaring-rs has no container-level API; this uses only the public layout of CRoaring's
//! `roaring_bitmap_t`, which croaring-rs's own frozen views rely on too.
//!
//! Off by default (see `RANGES_PER_CORE_DEFAULT` for the measurements); `set_chunking` turns
//! it on.

use crate::containers::{keys, raw};
use crate::eval;
use crate::expr::{Expr, Operand, Term};
use croaring::Bitmap;
use croaring_sys::{roaring_array_t, roaring_bitmap_t};
use rayon::prelude::*;
use std::marker::PhantomData;
use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicU64, Ordering};

/// The containers of a bitmap whose keys are in a range, as a read-only bitmap.
///
/// Invariant: `raw` describes a prefix-free sub-array of the borrowed bitmap's arrays
/// (`size` entries from some index), so every CRoaring function that only reads its argument
/// sees a valid bitmap; nothing may write through it or free it, which `Deref` to `&Bitmap`
/// (never `&mut`) and the absence of `Drop` ensure.
#[repr(transparent)]
struct KeyRange<'b> {
    raw: roaring_bitmap_t,
    _borrow: PhantomData<&'b Bitmap>,
}

/// `roaring_bitmap_s.high_low_container.flags`: containers shared copy-on-write. A view must
/// not have it, or a copy made from the view would turn the bitmap's containers into shared
/// ones (CRoaring changes the source of a copy-on-write copy).
const ROARING_FLAG_COW: u8 = 1;

impl<'b> KeyRange<'b> {
    fn new(b: &'b Bitmap, range: &Range<u32>) -> Self {
        let ks = keys(b);
        let start = ks.partition_point(|&k| u32::from(k) < range.start);
        let end = ks.partition_point(|&k| u32::from(k) < range.end);
        let ra = &raw(b).high_low_container;
        let size = (end - start) as i32;
        KeyRange {
            raw: roaring_bitmap_t {
                high_low_container: roaring_array_t {
                    size,
                    allocation_size: size,
                    // In bounds (`start <= size`); wrapping: an empty bitmap's arrays are null.
                    containers: ra.containers.wrapping_add(start),
                    keys: ra.keys.wrapping_add(start),
                    typecodes: ra.typecodes.wrapping_add(start),
                    flags: ra.flags & !ROARING_FLAG_COW,
                },
            },
            _borrow: PhantomData,
        }
    }
}

impl Deref for KeyRange<'_> {
    type Target = Bitmap;
    fn deref(&self) -> &Bitmap {
        // SAFETY: `repr(transparent)` over the same `roaring_bitmap_t` as `Bitmap`; see the
        // type's invariant for why reading through it is sound.
        unsafe { &*(self as *const KeyRange as *const Bitmap) }
    }
}

/// Every bitmap of `expr`, positive terms then negative, in term order (id lists have none).
fn bitmaps<'e>(expr: &'e Expr<'_>) -> impl Iterator<Item = &'e Bitmap> {
    expr.positive.iter().chain(&expr.negative).flat_map(
        |t| -> Box<dyn Iterator<Item = &'e Bitmap>> {
            match &t.operand {
                Operand::One(b) => Box::new(std::iter::once(*b)),
                Operand::AnyOf(v) | Operand::Disjoint(v) => Box::new(v.iter().copied()),
                Operand::Owned(b) => Box::new(std::iter::once(b)),
                Operand::Ids(_) => Box::new(std::iter::empty()),
            }
        },
    )
}

/// The container key of id `x`.
fn key_of(x: u32) -> u16 {
    (x >> 16) as u16
}

/// `expr` over the keys `range`: its bitmaps replaced by `views`, which are those of
/// `bitmaps(expr)` in order, and its id lists cut to the ids of those keys.
fn restrict<'v>(expr: &Expr<'_>, views: &'v [KeyRange<'_>], range: &Range<u32>) -> Expr<'v> {
    let mut next = views.iter().map(|v| &**v);
    let mut term = |t: &Term| {
        let mut take = || next.next().expect("one view per bitmap");
        let operand = match &t.operand {
            Operand::One(_) | Operand::Owned(_) => Operand::One(take()),
            Operand::AnyOf(v) => Operand::AnyOf(v.iter().map(|_| take()).collect()),
            Operand::Disjoint(v) => Operand::Disjoint(v.iter().map(|_| take()).collect()),
            Operand::Ids(v) => {
                let lo = v.partition_point(|&x| u32::from(key_of(x)) < range.start);
                let hi = v.partition_point(|&x| u32::from(key_of(x)) < range.end);
                Operand::Ids(v[lo..hi].to_vec())
            }
        };
        Term {
            label: String::new(),
            operand,
        }
    };
    let positive = expr.positive.iter().map(&mut term).collect();
    let negative = expr.negative.iter().map(&mut term).collect();
    Expr { positive, negative }
}

/// The keys the result can have: those of every positive term's span (the result is inside
/// each positive term).
fn span(expr: &Expr<'_>) -> Range<u32> {
    let mut lo = 0u32;
    let mut hi = u32::from(u16::MAX) + 1;
    for t in &expr.positive {
        let (first, last) = match &t.operand {
            Operand::One(b) => (keys(b).first().copied(), keys(b).last().copied()),
            Operand::Owned(b) => (keys(b).first().copied(), keys(b).last().copied()),
            Operand::AnyOf(v) | Operand::Disjoint(v) => (
                v.iter().filter_map(|b| keys(b).first().copied()).min(),
                v.iter().filter_map(|b| keys(b).last().copied()).max(),
            ),
            Operand::Ids(v) => (v.first().map(|&x| key_of(x)), v.last().map(|&x| key_of(x))),
        };
        match (first, last) {
            (Some(f), Some(l)) => {
                lo = lo.max(f.into());
                hi = hi.min(u32::from(l) + 1);
            }
            _ => return 0..0,
        }
    }
    lo..hi.max(lo)
}

/// How many ranges to cut the keys into per core (0 = never chunk), and the smallest first
/// operand worth it: process-wide, set by `set_chunking`.
static RANGES_PER_CORE: AtomicU64 = AtomicU64::new(RANGES_PER_CORE_DEFAULT);
static MIN_IDS: AtomicU64 = AtomicU64::new(MIN_IDS_DEFAULT);

/// Off out of the box. Measured on the 2-core development machine (benches/README.md,
/// "Chunked evaluation"): on one core a split evaluation costs what the whole one costs
/// (CRoaring already walks the operands container by container, and whole intermediates of
/// 10M devices stay in cache), so all it brings is the second core; that made the wide, or20
/// and and5 requests ~30% faster when the second core was idle, and up to 30% slower when
/// other work held it. Turned on, about 8 ranges per core measured best: the cores even out
/// (ranges differ in work) while each range still spans several containers (a range costs a
/// plan and a join).
pub const RANGES_PER_CORE_DEFAULT: u64 = 0;
/// Below a quarter million ids in its smallest positive operand, an audience is evaluated
/// whole (the id-list path of `eval` is faster than any split).
pub const MIN_IDS_DEFAULT: u64 = 1 << 18;
/// The fewest keys (containers of 65,536 ids) a range spans.
const MIN_KEYS: u32 = 4;

/// Set the chunking: `ranges_per_core` ranges of keys per core (0 turns chunking off) for
/// audiences whose smallest positive operand has at least `min_ids` ids. `min_ids == 0` splits
/// every audience over two keys or more, one key per range at the least, whether it pays or
/// not (for tests).
pub fn set_chunking(ranges_per_core: u64, min_ids: u64) {
    RANGES_PER_CORE.store(ranges_per_core, Ordering::Relaxed);
    MIN_IDS.store(min_ids, Ordering::Relaxed);
}

/// The key ranges to evaluate `expr` over, or `None` when it is better evaluated whole.
///
/// Chunking pays where the work is: intersections and unions of several large bitmaps (the
/// split puts every core on them). An audience of one or two positive bitmaps (a broadcast
/// with platforms, one tag minus others) costs one or two kernel calls whole, running in place;
/// split, it pays a plan per range and a copy of the result when the ranges are joined.
pub fn ranges(expr: &Expr<'_>) -> Option<Vec<Range<u32>>> {
    let per_core = RANGES_PER_CORE.load(Ordering::Relaxed) as usize;
    let min_ids = MIN_IDS.load(Ordering::Relaxed);
    let forced = min_ids == 0;
    let positive_bitmaps: usize = expr
        .positive
        .iter()
        .map(|t| match &t.operand {
            Operand::AnyOf(v) | Operand::Disjoint(v) => v.len(),
            Operand::One(_) | Operand::Owned(_) | Operand::Ids(_) => 1,
        })
        .sum();
    if per_core == 0 || (positive_bitmaps < 3 && !forced) {
        return None;
    }
    let smallest = expr.positive.iter().map(|t| t.operand.estimate()).min()?;
    if smallest < min_ids {
        return None;
    }
    let span = span(expr);
    let keys = span.len() as u32;
    let min_keys = if forced { 1 } else { MIN_KEYS };
    let n = (per_core * rayon::current_num_threads()).min((keys / min_keys) as usize) as u32;
    if n < 2 {
        return None;
    }
    let step = keys.div_ceil(n);
    Some(
        (0..n)
            .map(|i| span.start + i * step..(span.start + (i + 1) * step).min(span.end))
            .filter(|r| !r.is_empty())
            .collect(),
    )
}

/// Evaluate `expr` range by range (`ranges` ascending and disjoint, covering every key the
/// result can have), in parallel, with `eval`'s plan in each.
///
/// # Examples
///
/// ```
/// use reach::{chunked, eval, expr, AudienceSpec, Platform, Registry};
///
/// let mut reg = Registry::new();
/// reg.upsert("a", Platform::Android, None, &["深圳", "vip"], None, None, false).unwrap();
/// reg.upsert("b", Platform::Ios, None, &["深圳"], None, None, false).unwrap();
/// let spec = AudienceSpec { tag: vec!["深圳".into()], tag_not: vec!["vip".into()], ..Default::default() };
/// let e = expr::compile(&reg, &spec, None).unwrap();
/// // Ids 0..65,536 have key 0: one range here; a large registry has many.
/// assert_eq!(chunked::evaluate(&e, &[0..1]).to_vec(), vec![1]);
/// assert_eq!(eval::naive(e).to_vec(), vec![1]);
/// ```
pub fn evaluate(expr: &Expr<'_>, ranges: &[Range<u32>]) -> Bitmap {
    let parts: Vec<Bitmap> = ranges
        .par_iter()
        .map(|r| {
            let views: Vec<KeyRange> = bitmaps(expr).map(|b| KeyRange::new(b, r)).collect();
            eval::evaluate_whole(restrict(expr, &views, r), None)
        })
        .collect();
    // Each part's keys follow the previous part's: CRoaring appends them.
    let mut out = Bitmap::new();
    for p in &parts {
        out.or_inplace(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ids spread over 16 keys, dense in some containers and sparse in others.
    fn bitmap() -> impl Strategy<Value = Bitmap> {
        proptest::collection::vec((0u32..16, 0u32..65_536, 1u32..3000), 0..12).prop_map(|runs| {
            let mut b = Bitmap::new();
            for (key, at, len) in runs {
                let lo = (key << 16) + at;
                if len > 1500 {
                    b.add_range(lo..(lo + len * 20).min((key + 1) << 16));
                } else {
                    b.add_many(
                        &(0..len)
                            .map(|i| lo.wrapping_add(i * 37))
                            .collect::<Vec<_>>(),
                    );
                }
            }
            b
        })
    }

    fn term(operand: Operand<'_>) -> Term<'_> {
        Term {
            label: String::new(),
            operand,
        }
    }

    proptest! {
        #[test]
        fn ranges_agree_with_the_whole(
            singles in proptest::collection::vec(bitmap(), 1..4),
            any in proptest::collection::vec(bitmap(), 0..5),
            not in proptest::collection::vec(bitmap(), 0..4),
            ids in proptest::option::of(proptest::collection::btree_set(0u32..16 << 16, 0..300)),
            cuts in 2u32..20,
            small_at in prop_oneof![Just(0u64), Just(64), Just(eval::SMALL)],
        ) {
            eval::set_small_threshold(small_at);
            let build = || {
                let mut positive: Vec<Term> =
                    singles.iter().map(|b| term(Operand::One(b))).collect();
                if !any.is_empty() {
                    positive.push(term(Operand::AnyOf(any.iter().collect())));
                }
                if let Some(ids) = &ids {
                    positive.push(term(Operand::Ids(ids.iter().copied().collect())));
                }
                let negative = not.iter().map(|b| term(Operand::One(b))).collect();
                Expr { positive, negative }
            };
            let want = eval::naive(build());
            let e = build();
            let span = span(&e);
            let step = span.len().div_ceil(cuts as usize).max(1) as u32;
            let ranges: Vec<Range<u32>> = (span.start..span.end)
                .step_by(step as usize)
                .map(|k| k..(k + step).min(span.end))
                .collect();
            let got = evaluate(&e, &ranges);
            prop_assert_eq!(got.to_vec(), want.to_vec());
            let covered: u64 = ranges.iter().map(|r| KeyRange::new(&want, r).cardinality()).sum();
            prop_assert_eq!(covered, want.cardinality(), "the span holds the whole result");
        }
    }

    #[test]
    fn a_key_range_reads_as_its_part_of_the_bitmap() {
        let b = Bitmap::of(&[1, 70_000, 70_001, 200_000, 300_000]);
        assert_eq!(
            KeyRange::new(&b, &(1..4)).to_vec(),
            vec![70_000, 70_001, 200_000]
        );
        assert!(KeyRange::new(&b, &(5..9)).is_empty());
        assert!(KeyRange::new(&Bitmap::new(), &(0..9)).is_empty());
        let copy: Bitmap = KeyRange::new(&b, &(0..2)).clone();
        assert_eq!(copy.to_vec(), vec![1, 70_000, 70_001]);
        assert_eq!(b.cardinality(), 5, "the source is untouched");
    }
}
