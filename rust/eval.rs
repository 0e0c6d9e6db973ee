//! Evaluating a compiled audience, planned by cost.
//!
//! The plan: start from the smallest positive operand, intersect the other single operands in
//! ascending size, subtract the `tag_not` bitmaps, and intersect the unions (`tag` OR, platform)
//! last. While the running set is small next to a union, the union is never built: the set is
//! probed against each of the union's bitmaps instead, so a request with 1000 aliases touches
//! only the containers those devices fall in, not the millions of members of its tags.
//! Once the running set is down to a few thousand devices (`SMALL`), it is kept as a sorted
//! id list and every further operand is applied by membership tests (`probe`), which cost a
//! few nanoseconds per id instead of an allocation and a merge per container. When the smallest operand is already that small (a push to aliases or
//! registration IDs), the whole plan is such a list (`filter_ids`): the request's own id lists
//! are merged first, and the bitmap filters are ordered by how many ids they drop on a sample.
//!
//! That is the plan for an audience evaluated whole. The planner's first choice is between it
//! and `chunked`, which evaluates an audience of several large operands one container key at
//! a time on all cores (see `chunked::ranges` for the costs).

use crate::chunked;
use crate::containers::approx_cardinality;
use crate::expr::{Expr, Operand, Term};
use crate::probe::{retain_in_any, retain_members};
use croaring::Bitmap;
use std::sync::atomic::{AtomicU64, Ordering};

/// One step of a plan, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `start`, `and`, `and_any` (intersect with a union), `andnot`.
    pub op: &'static str,
    pub operand: String,
    /// The operand's size (an upper bound for a union of overlapping bitmaps).
    pub operand_size: u64,
    /// The size of the running result after the step.
    pub result: u64,
}

/// Below this size the running result is a sorted id list (see the module doc).
pub const SMALL: u64 = 4096;

/// The threshold in force: `SMALL` unless a test moves it to drive both representations
/// over small registries. It only chooses a path, never changes a result.
static SMALL_THRESHOLD: AtomicU64 = AtomicU64::new(SMALL);

/// Set the size below which results become id lists (for tests).
pub fn set_small_threshold(n: u64) {
    SMALL_THRESHOLD.store(n, Ordering::Relaxed);
}

fn small() -> u64 {
    SMALL_THRESHOLD.load(Ordering::Relaxed)
}

/// The running result: borrowed from the registry until an operation makes a new bitmap, so
/// that a plan of one operand copies nothing until asked; a sorted id list once small.
enum Acc<'r> {
    Borrowed(&'r Bitmap),
    Owned(Bitmap),
    Ids(Vec<u32>),
}

impl<'r> Acc<'r> {
    fn len(&self) -> u64 {
        match self {
            Acc::Borrowed(b) => b.cardinality(),
            Acc::Owned(b) => b.cardinality(),
            Acc::Ids(v) => v.len() as u64,
        }
    }

    fn into_owned(self) -> Bitmap {
        match self {
            Acc::Borrowed(b) => b.clone(),
            Acc::Owned(b) => b,
            Acc::Ids(v) => Bitmap::of(&v),
        }
    }

    /// Switch to an id list when small.
    fn compact(self) -> Acc<'r> {
        match self {
            Acc::Owned(b) if b.cardinality() <= small() => Acc::Ids(b.to_vec()),
            Acc::Borrowed(b) if b.cardinality() <= small() => Acc::Ids(b.to_vec()),
            other => other,
        }
    }

    fn and(self, other: &Bitmap) -> Acc<'r> {
        match self {
            Acc::Borrowed(b) => Acc::Owned(b.and(other)),
            Acc::Owned(mut b) => {
                b.and_inplace(other);
                Acc::Owned(b)
            }
            Acc::Ids(mut v) => {
                retain_members(&mut v, other, true);
                Acc::Ids(v)
            }
        }
        .compact()
    }

    fn andnot(self, other: &Bitmap) -> Acc<'r> {
        match self {
            Acc::Borrowed(b) => Acc::Owned(b.andnot(other)),
            Acc::Owned(mut b) => {
                b.andnot_inplace(other);
                Acc::Owned(b)
            }
            Acc::Ids(mut v) => {
                retain_members(&mut v, other, false);
                Acc::Ids(v)
            }
        }
        .compact()
    }
}

fn union(bms: &[&Bitmap]) -> Bitmap {
    match bms {
        [] => Bitmap::new(),
        [one] => (*one).clone(),
        _ => Bitmap::fast_or(bms),
    }
}

fn start(op: Operand<'_>) -> Acc<'_> {
    match op {
        Operand::One(b) => Acc::Borrowed(b),
        Operand::AnyOf(v) | Operand::Disjoint(v) => Acc::Owned(union(&v)),
        Operand::Owned(b) => Acc::Owned(b),
        Operand::Ids(v) if v.len() as u64 <= small() => Acc::Ids(v),
        Operand::Ids(v) => Acc::Owned(Bitmap::of(&v)),
    }
}

/// The ids of sorted, duplicate-free `a` that are in sorted `b` (`a` reused for the result).
/// Why a merge: two id lists (aliases and registration IDs) meet here before any bitmap is
/// probed, so that only the ids in both are tested against the tag bitmaps.
fn intersect_sorted(mut a: Vec<u32>, b: &[u32]) -> Vec<u32> {
    let mut j = 0;
    a.retain(|&x| {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        j < b.len() && b[j] == x
    });
    a
}

/// The ids of ascending `ids` that `b` holds.
fn members(mut ids: Vec<u32>, b: &Bitmap) -> Vec<u32> {
    retain_members(&mut ids, b, true);
    ids
}

/// `acc ∩ ids` for a sorted id list: merged with an id list, probed into a bitmap when the
/// list is small, else intersected as a bitmap.
fn and_ids<'r>(acc: Acc<'r>, ids: Vec<u32>) -> Acc<'r> {
    match acc {
        Acc::Ids(a) => Acc::Ids(intersect_sorted(a, &ids)),
        Acc::Borrowed(b) if ids.len() as u64 <= small() => Acc::Ids(members(ids, b)),
        Acc::Owned(b) if ids.len() as u64 <= small() => Acc::Ids(members(ids, &b)),
        other => other.and(&Bitmap::of(&ids)),
    }
}

/// `acc ∩ (b1 ∪ b2 ∪ ...)`. When `acc` is small next to the union, probe: take from what is
/// left of `acc` the part in each bitmap, largest first, and stop when nothing is left.
fn and_any<'r>(acc: Acc<'r>, bms: &[&Bitmap], union_size: u64) -> Acc<'r> {
    if let [one] = bms {
        return acc.and(one);
    }
    let mut bms = bms.to_vec();
    // Largest first: most ids are found, and stop being tested, early.
    largest_first(&mut bms);
    if let Acc::Ids(mut v) = acc {
        retain_in_any(&mut v, &bms);
        return Acc::Ids(v);
    }
    let n = acc.len();
    if n.saturating_mul(bms.len() as u64) > union_size {
        return acc.and(&union(&bms));
    }
    let mut rest = acc.into_owned();
    let mut out = Bitmap::new();
    for b in bms {
        if rest.is_empty() {
            break;
        }
        let part = rest.and(b);
        if !part.is_empty() {
            rest.andnot_inplace(&part);
            out.or_inplace(&part);
        }
    }
    Acc::Owned(out).compact()
}

fn apply<'r>(acc: Acc<'r>, op: Operand<'r>, size: u64) -> Acc<'r> {
    match op {
        Operand::One(b) => acc.and(b),
        Operand::Owned(b) => acc.and(&b),
        Operand::Ids(v) => and_ids(acc, v),
        Operand::AnyOf(v) | Operand::Disjoint(v) => and_any(acc, &v, size),
    }
}

/// Order the positive terms: smallest first, then the single operands, then the unions.
///
/// Without `exact`, when a single operand is small enough for an id list (`filter_ids`, which
/// orders its filters by sampling and only tests membership in the others), the operands are
/// only roughly sized (`approx`: a few container headers each, where a size reads every
/// container's), and a union of tags not at all (`u64::MAX`).
fn plan(expr: Expr<'_>, exact: bool) -> (Vec<(Term<'_>, u64)>, Vec<Term<'_>>) {
    let is_any = |t: &Term| matches!(t.operand, Operand::AnyOf(_));
    // Id lists first: their sizes are known, where a bitmap's estimate reads its headers.
    let is_small_list =
        |t: &Term| matches!(&t.operand, Operand::Ids(v) if v.len() as u64 <= small());
    let lazy = !exact
        && (expr.positive.iter().any(is_small_list)
            || expr
                .positive
                .iter()
                .filter(|t| !is_any(t))
                .any(|t| approx(&t.operand) <= small()));
    let mut pos: Vec<(Term, u64)> = expr
        .positive
        .into_iter()
        .map(|t| {
            let n = match (lazy, is_any(&t)) {
                (true, true) => u64::MAX,
                (true, false) => approx(&t.operand),
                (false, _) => t.operand.estimate(),
            };
            (t, n)
        })
        .collect();
    pos.sort_by_key(|(_, n)| *n);
    if pos.len() > 2 {
        let is_union = |t: &Term| matches!(t.operand, Operand::AnyOf(_) | Operand::Disjoint(_));
        pos[1..].sort_by_key(|(t, n)| (is_union(t), *n));
    }
    (pos, expr.negative)
}

/// A rough size of an operand (`containers::approx_cardinality`; exact for id lists).
pub(crate) fn approx(op: &Operand<'_>) -> u64 {
    match op {
        Operand::One(b) => approx_cardinality(b),
        Operand::Owned(b) => approx_cardinality(b),
        Operand::AnyOf(v) | Operand::Disjoint(v) => v.iter().map(|b| approx_cardinality(b)).sum(),
        Operand::Ids(v) => v.len() as u64,
    }
}

/// Bitmaps largest first (roughly: the order only decides how soon an id is found).
fn largest_first(bms: &mut [&Bitmap]) {
    bms.sort_by_cached_key(|b| std::cmp::Reverse(approx_cardinality(b)));
}

/// Evaluate `expr`; with `trace`, record every step with its sizes.
///
/// # Examples
///
/// ```
/// use reach::{eval, expr, AudienceSpec, Platform, Registry};
///
/// let mut reg = Registry::new();
/// reg.upsert("a", Platform::Android, None, &["深圳", "vip"], None, None, false).unwrap();
/// reg.upsert("b", Platform::Ios, None, &["深圳"], None, None, false).unwrap();
/// let spec = AudienceSpec { tag: vec!["深圳".into()], tag_not: vec!["vip".into()], ..Default::default() };
/// let mut steps = Vec::new();
/// let result = eval::evaluate(expr::compile(&reg, &spec, None).unwrap(), Some(&mut steps));
/// assert_eq!(result.to_vec(), vec![1]);
/// assert_eq!(steps.last().unwrap().result, 1);
/// ```
///
/// The planner's first choice, by cost (`chunked::ranges`): an audience of several large
/// operands is evaluated chunk by chunk (`chunked`, on all cores; its trace starts with a
/// `chunked` step), any other whole by the plan above.
pub fn evaluate(expr: Expr<'_>, trace: Option<&mut Vec<Step>>) -> Bitmap {
    if let Some(ranges) = chunked::ranges(&expr) {
        return chunked::evaluate(&expr, &ranges, trace);
    }
    evaluate_whole(expr, trace)
}

/// `evaluate` over all keys at once, by the plan of the module doc.
///
/// Unions that the plan will build whole (the running set cannot get small enough to probe
/// them) are built on another core while this one runs the intersections and subtractions.
fn evaluate_whole(expr: Expr<'_>, trace: Option<&mut Vec<Step>>) -> Bitmap {
    let (pos, neg) = plan(expr, trace.is_some());
    let mut pos = pos.into_iter();
    let (first, first_size) = pos
        .next()
        .expect("a compiled audience has a positive operand");
    let (acc, steps) = if first_size <= small() {
        filter_ids(first, first_size, pos.collect(), neg, trace.is_some())
    } else {
        planned(first, first_size, pos.collect(), neg)
    };
    if let Some(trace) = trace {
        trace.extend(
            steps
                .into_iter()
                .map(|(op, operand, operand_size, result)| Step {
                    op,
                    operand,
                    operand_size,
                    result,
                }),
        );
    }
    acc.into_owned()
}

/// Steps as `(op, operand, operand_size, result)`.
type Steps = Vec<(&'static str, String, u64, u64)>;

/// Ids sampled per filter to order the filters of an id list (see `filter_ids`); at most 32,
/// the bits of a mask.
const SAMPLE: usize = 32;
const _: () = assert!(SAMPLE <= 32);

/// The bits of the ids of `sample` (ascending, at most 32) that `kept` (an ascending subset)
/// holds: bit `i` for `sample[i]`.
fn mask_of(sample: &[u32], kept: &[u32]) -> u32 {
    let mut j = 0;
    let mut mask = 0;
    for (i, &x) in sample.iter().enumerate() {
        if kept.get(j) == Some(&x) {
            mask |= 1 << i;
            j += 1;
        }
    }
    mask
}

/// The union of two ascending, distinct id lists, ascending and distinct (one merge pass).
pub(crate) fn merge_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => (out.push(a[i]), i += 1),
            std::cmp::Ordering::Greater => (out.push(b[j]), j += 1),
            std::cmp::Ordering::Equal => (out.push(a[i]), (i, j) = (i + 1, j + 1)),
        };
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Lists at least this long are sorted by `sort_ids`' radix passes (shorter ones by
/// comparisons, where the passes' fixed cost would dominate).
const RADIX_FROM: usize = 256;

/// Sort `ids` ascending and drop repeats. A long list (the devices of 1,000 aliases) is
/// sorted a byte at a time from the lowest (a counting pass and a scatter per byte, for the
/// bytes the largest id has): a few operations per id and byte, no comparison to mispredict
/// (the narrow request's 1,706 alias devices and 1,000 registration-ID devices at 10M: about
/// 7 µs less per request than `sort_unstable`).
pub(crate) fn sort_ids(ids: &mut Vec<u32>) {
    if ids.len() < RADIX_FROM {
        ids.sort_unstable();
    } else {
        let max = ids.iter().copied().max().unwrap_or(0);
        let mut buf = vec![0u32; ids.len()];
        let mut shift = 0;
        while shift < u32::BITS && max >> shift != 0 {
            let mut start = [0usize; 256];
            for &x in ids.iter() {
                start[(x >> shift) as usize & 255] += 1;
            }
            let mut sum = 0;
            for c in start.iter_mut() {
                (*c, sum) = (sum, sum + *c);
            }
            for &x in ids.iter() {
                let d = (x >> shift) as usize & 255;
                buf[start[d]] = x;
                start[d] += 1;
            }
            std::mem::swap(ids, &mut buf);
            shift += 8;
        }
    }
    ids.dedup();
}

/// One membership test applied to an id list.
enum Filter<'a> {
    And(&'a Bitmap),
    AndNot(&'a Bitmap),
    /// In any of the bitmaps (largest first: most ids are found, and stop being tested, early).
    AndAny(Vec<&'a Bitmap>),
}

impl Filter<'_> {
    /// The ids that pass, and how many membership probes that took.
    fn run(&self, mut ids: Vec<u32>) -> (Vec<u32>, usize) {
        let probes = match self {
            Filter::And(b) | Filter::AndNot(b) => {
                let n = ids.len();
                retain_members(&mut ids, b, matches!(self, Filter::And(_)));
                n
            }
            Filter::AndAny(bms) => retain_in_any(&mut ids, bms),
        };
        (ids, probes)
    }
}

/// The plan once the first operand is small: everything else is a filter on its id list.
/// Lists built for the request (aliases, registration IDs) are merged in first; then the
/// bitmap filters run in the order of their measured worth: each is tried on a sample of the
/// ids, and the one that drops the most ids per probe goes first. Why measure: sizes say
/// little about ids already chosen by alias or ID (a device named in a push often has the
/// push's `tag_and` tags), while the sample costs `SAMPLE` probes per filter. Those probes
/// are not lost: the sample's answers are kept, so its ids are tested by no filter again.
fn filter_ids<'r>(
    first: Term<'r>,
    first_size: u64,
    rest: Vec<(Term<'r>, u64)>,
    neg: Vec<Term<'r>>,
    sizes: bool,
) -> (Acc<'r>, Steps) {
    let mut steps = Steps::new();
    let mut ids = match start(first.operand).compact() {
        Acc::Ids(v) => v,
        other => other.into_owned().to_vec(),
    };
    steps.push(("start", first.label, first_size, ids.len() as u64));
    // Sets built for this request are probed like registry bitmaps; they must outlive the
    // filters that borrow them.
    let mut built: Vec<Bitmap> = Vec::new();
    let mut built_labels = Vec::new();
    let mut others = Vec::new();
    for (t, n) in rest {
        match t.operand {
            Operand::Ids(v) => {
                ids = intersect_sorted(ids, &v);
                steps.push(("and", t.label, n, ids.len() as u64));
            }
            Operand::Owned(b) => {
                built.push(b);
                built_labels.push((t.label, n));
            }
            op => others.push((t.label, n, op)),
        }
    }
    let mut filters: Vec<(&'static str, String, u64, Filter)> = built_labels
        .into_iter()
        .zip(&built)
        .map(|((label, n), b)| ("and", label, n, Filter::And(b)))
        .collect();
    for (label, n, op) in others {
        filters.push(match op {
            Operand::One(b) => ("and", label, n, Filter::And(b)),
            Operand::AnyOf(mut v) | Operand::Disjoint(mut v) => {
                largest_first(&mut v);
                ("and_any", label, n, Filter::AndAny(v))
            }
            Operand::Ids(_) | Operand::Owned(_) => unreachable!("applied above"),
        });
    }
    for t in neg {
        // Sizes only for a trace: the filter tests membership and needs none.
        let n = if sizes { t.operand.estimate() } else { 0 };
        if let Operand::One(b) = t.operand {
            filters.push(("andnot", t.label, n, Filter::AndNot(b)));
        }
    }
    // The sample's own answers are kept (bit `i` of a filter's mask: it keeps `sample[i]`), and
    // its ids are left out of the list, so that no filter tests an id twice.
    let mut sample: Vec<u32> = Vec::new();
    let mut masks: Vec<u32> = Vec::new();
    if ids.len() as u64 >= sample_from() && filters.len() > 1 {
        let step = (ids.len() / SAMPLE).max(1);
        sample = ids.iter().step_by(step).take(SAMPLE).copied().collect();
        let mut i = 0;
        ids.retain(|_| {
            let sampled = i % step == 0 && i / step < SAMPLE;
            i += 1;
            !sampled
        });
        let measure = |f: &Filter| {
            let (kept, probes) = f.run(sample.clone());
            // Smoothed share of the sample dropped, per probe made.
            let dropped = (sample.len() - kept.len()) as f64 + 1.0;
            let worth = dropped / (sample.len() as f64 + 2.0) / probes.max(1) as f64;
            (worth, mask_of(&sample, &kept))
        };
        let mut ranked: Vec<((f64, u32), _)> =
            filters.into_iter().map(|f| (measure(&f.3), f)).collect();
        ranked.sort_by(|a, b| b.0 .0.total_cmp(&a.0 .0));
        (masks, filters) = ranked.into_iter().map(|((_, m), f)| (m, f)).unzip();
    }
    let mut left = Vec::with_capacity(filters.len());
    for (_, _, _, f) in &filters {
        if !ids.is_empty() {
            ids = f.run(ids).0;
        }
        left.push(ids.len() as u64);
    }
    // The sample ids that every filter kept rejoin the list.
    let mut passed = if sample.is_empty() { 0 } else { u32::MAX };
    for (left, mask) in left.iter_mut().zip(&masks) {
        passed &= mask;
        *left += u64::from(passed.count_ones());
    }
    let ids = if sample.is_empty() {
        ids
    } else {
        let survivors: Vec<u32> = (0..sample.len())
            .filter(|&i| passed >> i & 1 == 1)
            .map(|i| sample[i])
            .collect();
        merge_sorted(&ids, &survivors)
    };
    for ((op, label, n, _), left) in filters.into_iter().zip(left) {
        steps.push((op, label, n, left));
    }
    (Acc::Ids(ids), steps)
}

/// The length from which an id list's filters are ordered by sampling (`filter_ids`): 128 ids
/// by default (four samples), less when tests move the id-list threshold down (then a list
/// shorter than a sample is sampled whole), so that small registries drive this path too.
fn sample_from() -> u64 {
    (small() / 32).max(2)
}

/// The plan from a large first operand (see the module doc).
fn planned<'r>(
    first: Term<'r>,
    first_size: u64,
    rest: Vec<(Term<'r>, u64)>,
    neg: Vec<Term<'r>>,
) -> (Acc<'r>, Steps) {
    let (singles, unions): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(|(t, _)| !matches!(t.operand, Operand::AnyOf(_) | Operand::Disjoint(_)));
    // The running set never exceeds the first operand, so this predicts the union path.
    let whole = |t: &Term, n: u64| match &t.operand {
        Operand::AnyOf(v) | Operand::Disjoint(v) => {
            v.len() > 1 && first_size.saturating_mul(v.len() as u64) > n
        }
        _ => false,
    };
    let parallel = unions.iter().any(|(t, n)| whole(t, *n));
    let chain = || {
        let mut steps = Vec::new();
        let mut acc = start(first.operand).compact();
        steps.push(("start", first.label, first_size, acc.len()));
        for (t, n) in singles {
            acc = apply(acc, t.operand, n);
            steps.push(("and", t.label, n, acc.len()));
        }
        for t in neg {
            let n = t.operand.estimate();
            if let Operand::One(b) = t.operand {
                acc = acc.andnot(b);
            }
            steps.push(("andnot", t.label, n, acc.len()));
        }
        (acc, steps)
    };
    let build = || {
        unions
            .into_iter()
            .map(|(t, n)| {
                let built = match &t.operand {
                    Operand::AnyOf(v) | Operand::Disjoint(v) if whole(&t, n) => Some(union(v)),
                    _ => None,
                };
                (t, n, built)
            })
            .collect::<Vec<_>>()
    };
    // Waking a second thread costs tens of microseconds: only worth it for a whole union.
    let ((mut acc, mut steps), prebuilt) = if parallel {
        rayon::join(chain, build)
    } else {
        (chain(), build())
    };
    for (t, n, built) in prebuilt {
        acc = match built {
            Some(u) => acc.and(&u),
            None => apply(acc, t.operand, n),
        };
        steps.push(("and_any", t.label, n, acc.len()));
    }
    (acc, steps)
}

/// The size of `expr`'s result. Builds nothing for a single operand or a union of disjoint
/// bitmaps (a broadcast with a platform filter), and no final intersection otherwise.
pub fn count(expr: Expr<'_>) -> u64 {
    if expr.negative.is_empty() && expr.positive.len() == 1 {
        if let Operand::One(_) | Operand::Disjoint(_) | Operand::Owned(_) | Operand::Ids(_) =
            expr.positive[0].operand
        {
            return expr.positive[0].operand.estimate();
        }
    }
    if expr.negative.is_empty() && expr.positive.len() == 2 {
        if let [Term {
            operand: Operand::One(a),
            ..
        }, Term {
            operand: Operand::One(b),
            ..
        }] = expr.positive.as_slice()
        {
            return a.and_cardinality(b);
        }
    }
    if let Some(ranges) = chunked::ranges(&expr) {
        return chunked::count(&expr, &ranges);
    }
    evaluate_whole(expr, None).cardinality()
}

/// The same algebra as plain roaring kernel calls in the request's order, with no planning:
/// the floor the planned evaluation is measured against.
pub fn naive(expr: Expr<'_>) -> Bitmap {
    let mut acc: Option<Bitmap> = None;
    for t in expr.positive {
        let b = match t.operand {
            Operand::One(b) => {
                if let Some(a) = acc.as_mut() {
                    a.and_inplace(b);
                    continue;
                }
                b.clone()
            }
            Operand::AnyOf(v) | Operand::Disjoint(v) => union(&v),
            Operand::Owned(b) => b,
            Operand::Ids(v) => Bitmap::of(&v),
        };
        match acc.as_mut() {
            Some(a) => a.and_inplace(&b),
            None => acc = Some(b),
        }
    }
    let mut acc = acc.expect("a compiled audience has a positive operand");
    let neg: Vec<&Bitmap> = expr
        .negative
        .iter()
        .filter_map(|t| {
            if let Operand::One(b) = t.operand {
                Some(b)
            } else {
                None
            }
        })
        .collect();
    if !neg.is_empty() {
        acc.andnot_inplace(&union(&neg));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{compile, AudienceSpec};
    use crate::registry::{Platform, Registry};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const TAGS: [&str; 4] = ["a", "b", "深圳", "c"];

    /// Held by the tests that set the process-wide path switches (`set_small_threshold`,
    /// `chunked::set_chunking`): the switches never change a result, but a test that checks
    /// the path taken (its explain steps) must not see another test move them meanwhile.
    static SWITCHES: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn switches() -> std::sync::MutexGuard<'static, ()> {
        SWITCHES.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn registry(devices: &[(u8, Vec<usize>, Option<u8>, bool)]) -> Registry {
        let mut r = Registry::new();
        for (i, (p, tags, alias, deleted)) in devices.iter().enumerate() {
            let rid = format!("r{i}");
            let tags: Vec<&str> = tags.iter().map(|&t| TAGS[t]).collect();
            let alias = alias.map(|a| format!("u{a}"));
            let p = Platform::ALL[*p as usize % Platform::ALL.len()];
            r.upsert(&rid, p, None, &tags, alias.as_deref(), None, false)
                .unwrap();
            if *deleted {
                r.delete(&rid);
            }
        }
        r
    }

    /// The semantics of DESIGN.md over plain sets.
    fn model(
        devs: &[(u8, Vec<usize>, Option<u8>, bool)],
        s: &AudienceSpec,
        ps: Option<&[Platform]>,
    ) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for (i, (p, tags, alias, deleted)) in devs.iter().enumerate() {
            let has = |t: &String| tags.iter().any(|&k| TAGS[k] == t);
            let p = Platform::ALL[*p as usize % Platform::ALL.len()];
            let rid = format!("r{i}");
            let ok = !deleted
                && (s.tag.is_empty() || s.tag.iter().any(has))
                && s.tag_and.iter().all(has)
                && !s.tag_not.iter().any(has)
                && (s.alias.is_empty()
                    || alias.is_some_and(|a| s.alias.contains(&format!("u{a}"))))
                && (s.registration_id.is_empty() || s.registration_id.contains(&rid))
                && ps.is_none_or(|ps| ps.contains(&p));
            if ok {
                out.insert(i as u32);
            }
        }
        out
    }

    fn names(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(pool, 0..=pool.len())
            .prop_map(|v| v.into_iter().map(String::from).collect())
    }

    proptest! {
        #[test]
        fn planned_and_naive_agree_with_the_model(
            devs in proptest::collection::vec(
                (0u8..6, proptest::collection::vec(0usize..4, 0..4),
                 proptest::option::of(0u8..5), proptest::bool::weighted(0.1)),
                0..200),
            tag in names(&["a", "b", "深圳", "zz"]),
            tag_and in names(&["a", "c"]),
            tag_not in names(&["b", "c", "zz"]),
            alias in names(&["u0", "u1", "u2", "nobody"]),
            rid in names(&["r0", "r1", "r5", "r50", "r150", "none"]),
            all in any::<bool>(),
            plat in proptest::option::of(proptest::sample::subsequence(Platform::ALL, 1..=3)),
            small_at in prop_oneof![Just(0u64), Just(8), Just(SMALL)],
            chunking in prop_oneof![
                Just((0u64, 0u64)),
                Just((3, 0)),
                Just((chunked::RANGES_PER_CORE_DEFAULT, chunked::MIN_IDS_DEFAULT)),
            ],
        ) {
            let _switches = switches();
            chunked::set_chunking(chunking.0, chunking.1);
            let r = registry(&devs);
            let spec = AudienceSpec { all, tag, tag_and, tag_not, alias, registration_id: rid,
                                      ..Default::default() };
            prop_assume!(!spec.is_empty());
            set_small_threshold(small_at);
            let want = model(&devs, &spec, plat.as_deref());
            let got: BTreeSet<u32> =
                evaluate(compile(&r, &spec, plat.as_deref()).unwrap(), None).iter().collect();
            prop_assert_eq!(&got, &want);
            let naive: BTreeSet<u32> =
                naive(compile(&r, &spec, plat.as_deref()).unwrap()).iter().collect();
            prop_assert_eq!(&naive, &want);
            prop_assert_eq!(count(compile(&r, &spec, plat.as_deref()).unwrap()), want.len() as u64);
            let mut steps = Vec::new();
            evaluate(compile(&r, &spec, plat.as_deref()).unwrap(), Some(&mut steps));
            prop_assert_eq!(steps.last().unwrap().result, want.len() as u64);
        }
    }

    #[test]
    fn sampled_id_lists_keep_the_samples_answers() {
        // An id list long enough to be sampled (a full sample and more ids), several filters
        // that each drop some of it, deleted devices among the IDs.
        let devs: Vec<(u8, Vec<usize>, Option<u8>, bool)> = (0..3000usize)
            .map(|i| {
                let tags = [i % 2 == 0, i % 3 == 0, i % 5 != 0, i % 7 == 0];
                let tags = (0..4).filter(|&t| tags[t]).collect();
                ((i % 6) as u8, tags, Some((i % 5) as u8), i % 11 == 0)
            })
            .collect();
        let r = registry(&devs);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let spec = AudienceSpec {
            tag: names(&["a", "深圳"]),
            tag_and: names(&["深圳"]),
            tag_not: names(&["b", "c"]),
            alias: names(&["u0", "u1", "u2"]),
            registration_id: (0..3000)
                .filter(|i| i % 4 != 3)
                .map(|i| format!("r{i}"))
                .collect(),
            ..Default::default()
        };
        let plat = [Platform::Android, Platform::Ios, Platform::Winphone];
        let want = model(&devs, &spec, Some(&plat));
        assert!(
            want.len() > SAMPLE,
            "the sample and the rest both reach somebody"
        );
        // The id-list path, whatever another test left the switches at.
        let _switches = switches();
        set_small_threshold(SMALL);
        chunked::set_chunking(chunked::RANGES_PER_CORE_DEFAULT, chunked::MIN_IDS_DEFAULT);
        let compiled = || compile(&r, &spec, Some(&plat)).unwrap();
        let got: BTreeSet<u32> = evaluate(compiled(), None).iter().collect();
        assert_eq!(got, want);
        let mut steps = Vec::new();
        evaluate(compiled(), Some(&mut steps));
        assert_eq!(steps.last().unwrap().result, want.len() as u64);
        assert!(steps.windows(2).all(|w| w[1].result <= w[0].result));
    }

    proptest! {
        #[test]
        fn sort_ids_sorts_and_drops_repeats(
            mut ids in prop_oneof![
                proptest::collection::vec(any::<u32>(), 0..600),
                proptest::collection::vec(0u32..2_000, 0..1_200),
                proptest::collection::vec(0u32..300, 250..400),
            ],
        ) {
            let mut want = ids.clone();
            want.sort_unstable();
            want.dedup();
            sort_ids(&mut ids);
            prop_assert_eq!(ids, want);
        }
    }

    #[test]
    fn masks_and_merges() {
        assert_eq!(mask_of(&[2, 5, 9, 12], &[5, 12]), 0b1010);
        assert_eq!(mask_of(&[2, 5], &[]), 0);
        assert_eq!(
            merge_sorted(&[1, 4, 9], &[2, 3, 10]),
            vec![1, 2, 3, 4, 9, 10]
        );
        assert_eq!(merge_sorted(&[], &[7]), vec![7]);
    }

    #[test]
    fn probe_path_equals_union_path() {
        let big: Vec<Bitmap> = (0..5)
            .map(|k| Bitmap::from_range(k * 1000..(k + 3) * 100_000))
            .collect();
        let refs: Vec<&Bitmap> = big.iter().collect();
        let small = Bitmap::of(&[5, 150_000, 299_999, 700_000, 900_001]);
        let probed = and_any(Acc::Owned(small.clone()), &refs, u64::MAX).into_owned();
        let unioned = and_any(Acc::Owned(small.clone()), &refs, 0).into_owned();
        let listed = and_any(Acc::Ids(small.to_vec()), &refs, 0).into_owned();
        assert_eq!(probed, unioned);
        assert_eq!(probed, listed);
        assert_eq!(probed.to_vec(), vec![5, 150_000, 299_999]);
    }
}
