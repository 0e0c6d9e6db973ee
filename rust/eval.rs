//! Evaluating a compiled audience, planned by cost.
//!
//! The plan: start from the smallest positive operand, intersect the other single operands in
//! ascending size, subtract the `tag_not` bitmaps, and intersect the unions (`tag` OR, platform)
//! last. While the running set is small next to a union, the union is never built: the set is
//! probed against each of the union's bitmaps instead, so a request with 1000 aliases touches
//! only the containers those devices fall in, not the millions of members of its tags.
//! Once the running set is down to a few thousand devices (`SMALL`), it is kept as a sorted
//! id list and every further operand is applied by membership tests, which cost a few
//! nanoseconds per id instead of an allocation and a merge per container.

use crate::chunked;
use crate::expr::{Expr, Operand, Term};
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

/// Membership tests of ascending ids against one bitmap. CRoaring's bulk context remembers
/// the last container, so consecutive ids of one container skip the container search.
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

    /// Keep the ids for which `keep` holds (id lists only).
    fn retain(mut ids: Vec<u32>, keep: impl FnMut(&u32) -> bool) -> Acc<'r> {
        ids.retain(keep);
        Acc::Ids(ids)
    }

    fn and(self, other: &Bitmap) -> Acc<'r> {
        match self {
            Acc::Borrowed(b) => Acc::Owned(b.and(other)),
            Acc::Owned(mut b) => {
                b.and_inplace(other);
                Acc::Owned(b)
            }
            Acc::Ids(v) => {
                let mut p = Probe::new(other);
                Self::retain(v, |&d| p.contains(d))
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
            Acc::Ids(v) => {
                let mut p = Probe::new(other);
                Self::retain(v, |&d| !p.contains(d))
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
    bms.sort_by_cached_key(|b| std::cmp::Reverse(b.cardinality()));
    if let Acc::Ids(v) = acc {
        let mut probes: Vec<Probe> = bms.into_iter().map(Probe::new).collect();
        return Acc::retain(v, |&d| probes.iter_mut().any(|p| p.contains(d)));
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
        Operand::AnyOf(v) | Operand::Disjoint(v) => and_any(acc, &v, size),
    }
}

/// Order the positive terms: smallest first, then the single operands, then the unions.
fn plan(expr: Expr<'_>) -> (Vec<(Term<'_>, u64)>, Vec<Term<'_>>) {
    let mut pos: Vec<(Term, u64)> = expr
        .positive
        .into_iter()
        .map(|t| (t.operand.estimate(), t))
        .map(|(n, t)| (t, n))
        .collect();
    pos.sort_by_key(|(_, n)| *n);
    if pos.len() > 2 {
        let is_union = |t: &Term| matches!(t.operand, Operand::AnyOf(_) | Operand::Disjoint(_));
        pos[1..].sort_by_key(|(t, n)| (is_union(t), *n));
    }
    (pos, expr.negative)
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
/// When chunking is on (`chunked::set_chunking`, off by default), a large audience is
/// evaluated range of keys by range of keys on all cores, except when traced.
pub fn evaluate(expr: Expr<'_>, trace: Option<&mut Vec<Step>>) -> Bitmap {
    if trace.is_none() {
        if let Some(ranges) = chunked::ranges(&expr) {
            return chunked::evaluate(&expr, &ranges);
        }
    }
    evaluate_whole(expr, trace)
}

/// `evaluate` over all keys at once.
///
/// Unions that the plan will build whole (the running set cannot get small enough to probe
/// them) are built on another core while this one runs the intersections and subtractions.
pub(crate) fn evaluate_whole(expr: Expr<'_>, trace: Option<&mut Vec<Step>>) -> Bitmap {
    let (pos, neg) = plan(expr);
    let mut pos = pos.into_iter();
    let (first, first_size) = pos
        .next()
        .expect("a compiled audience has a positive operand");
    let (singles, unions): (Vec<_>, Vec<_>) =
        pos.partition(|(t, _)| !matches!(t.operand, Operand::AnyOf(_) | Operand::Disjoint(_)));
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

/// The size of `expr`'s result. Builds nothing for a single operand or a union of disjoint
/// bitmaps (a broadcast with a platform filter), and no final intersection otherwise.
pub fn count(expr: Expr<'_>) -> u64 {
    if expr.negative.is_empty() && expr.positive.len() == 1 {
        if let Operand::One(_) | Operand::Disjoint(_) | Operand::Owned(_) = expr.positive[0].operand
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
    evaluate(expr, None).cardinality()
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
        ) {
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
