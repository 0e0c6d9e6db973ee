//! Chunk-by-chunk evaluation: a compiled audience evaluated one container key at a time (a key
//! is the high 16 bits of an id, so one key holds 65,536 ids), with the keys cut into ranges
//! evaluated in parallel.
//!
//! For each key, every operand's container of that key is applied to one running set of
//! 65,536 bits (`Chunk`, 8 KiB, in L1 cache): the single positive operands are intersected
//! (bitsets word by word), then the `tag_not` containers removed and each union's containers
//! gathered into a scratch bitset that replaces the running set. The values of an array
//! container are first tested against the running set (`Chunk::members`, no branch and no
//! store per value) and only its members are then set or cleared with CRoaring's
//! `bitset_set_list` / `bitset_clear_list`. The key's result is written once, as an array
//! container (up to 4,096 ids) or a bitset, in the portable roaring format; the parts of all
//! keys become one bitmap in one portable read (a copy of each container, no per-id work).
//! No operand is copied and no intermediate bigger than a container is made; a key where a
//! single operand has no container, or where the running set empties, costs nothing more.
//!
//! Containers are read with `containers` (CRoaring's own structures: croaring-rs has no
//! container-level API); only the bitset kernels that CRoaring exports are called through
//! croaring-sys.
//!
//! `ranges` decides, by cost, whether an audience is evaluated so or whole by `eval`'s plan
//! (benches/README.md, "Chunked evaluation", has the measurements).

use crate::containers::{keys, Container, Containers, Run, BITSET_WORDS};
use crate::eval::{self, Step};
use crate::expr::{Expr, Operand, Term};
use croaring::bitmap::Deserializer;
use croaring::{Bitmap, Portable};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// The most values of an array container (more make a bitset), as in CRoaring.
const ARRAY_MAX: usize = 4096;
/// The portable format's cookie for a bitmap without run containers.
const COOKIE_NO_RUNS: u32 = 12346;

/// The container key of id `x`.
fn key_of(x: u32) -> u16 {
    (x >> 16) as u16
}

/// Where an operand's values of one key come from.
enum Source<'e> {
    /// A bitmap (its `Containers` are read on each thread: they hold raw pointers).
    Bitmap(&'e Bitmap),
    /// A sorted id list (aliases, registration IDs).
    Ids(&'e [u32]),
}

impl<'e> Source<'e> {
    fn of(b: &'e Bitmap) -> Self {
        Source::Bitmap(b)
    }

    /// The values of key `k`, if any; an id list's are copied to `scratch`.
    fn at<'s>(&'s self, k: u16, scratch: &'s mut Vec<u16>) -> Option<Container<'s>> {
        match self {
            Source::Bitmap(b) => {
                let c = Containers::new(b);
                c.keys().binary_search(&k).ok().map(|i| c.get(i))
            }
            Source::Ids(v) => {
                let lo = v.partition_point(|&x| key_of(x) < k);
                let hi = lo + v[lo..].partition_point(|&x| key_of(x) == k);
                if lo == hi {
                    return None;
                }
                scratch.clear();
                scratch.extend(v[lo..hi].iter().map(|&x| x as u16));
                Some(Container::Array(scratch))
            }
        }
    }
}

impl Source<'_> {
    /// Start fetching what `at(k)` will read: with `values`, the start of the container's
    /// values (its header must be cached: fetched for an earlier key), else its header.
    fn prefetch(&self, k: u16, values: bool) {
        if let Source::Bitmap(b) = self {
            let c = Containers::new(b);
            if let Ok(i) = c.keys().binary_search(&k) {
                if !values {
                    c.prefetch(i);
                    return;
                }
                let start = match c.get(i) {
                    Container::Array(a) => a.as_ptr() as *const u8,
                    Container::Bitset(w, _) => w.as_ptr() as *const u8,
                    Container::Run(r) => r.as_ptr() as *const u8,
                };
                for line in 0..PREFETCH_LINES {
                    crate::index::prefetch(start.wrapping_add(64 * line));
                }
            }
        }
    }
}

/// Cache lines of a container's values fetched ahead of its key (`members` fetches the rest
/// of an array ahead as it reads).
const PREFETCH_LINES: usize = 4;

/// One step of a plan: what it does to the running set of a key.
enum Op<'e> {
    /// Keep the values of one operand (the first step: take them).
    And(Source<'e>),
    /// Remove the values of one operand.
    AndNot(Source<'e>),
    /// Keep the values of any of several operands (the first step: take them).
    AndAny(Vec<Source<'e>>),
}

/// The steps of an audience, in evaluation order: the single positive operands smallest
/// first, then the negative ones, then the unions (each is built in a scratch bitset from all
/// its containers, so it goes last, when the running set of the key may be empty already);
/// a union first only when there is no single operand. Every step carries the label and the
/// size `explain` shows.
struct Plan<'e> {
    ops: Vec<Op<'e>>,
    labels: Vec<(&'static str, String, u64)>,
}

impl Op<'_> {
    fn sources(&self) -> &[Source<'_>] {
        match self {
            Op::And(s) | Op::AndNot(s) => std::slice::from_ref(s),
            Op::AndAny(v) => v,
        }
    }
}

impl<'e> Plan<'e> {
    fn new(expr: &'e Expr<'_>, sized: bool) -> Self {
        let size = |t: &Term| if sized { t.operand.estimate() } else { 0 };
        let is_union = |t: &Term| matches!(t.operand, Operand::AnyOf(_) | Operand::Disjoint(_));
        let mut pos: Vec<&Term> = expr.positive.iter().collect();
        pos.sort_by_cached_key(|t| (is_union(t), eval::approx(&t.operand)));
        let mut ops = Vec::new();
        let mut labels = Vec::new();
        let (unions, singles): (Vec<&Term>, Vec<&Term>) =
            pos.into_iter().partition(|t| is_union(t));
        let mut unions = unions.into_iter().peekable();
        let first_union = if singles.is_empty() {
            unions.next()
        } else {
            None
        };
        for t in first_union.into_iter().chain(singles) {
            ops.push(match &t.operand {
                Operand::One(b) => Op::And(Source::of(b)),
                Operand::Owned(b) => Op::And(Source::of(b)),
                Operand::Ids(v) => Op::And(Source::Ids(v)),
                Operand::AnyOf(v) | Operand::Disjoint(v) => {
                    Op::AndAny(v.iter().map(|b| Source::of(b)).collect())
                }
            });
            labels.push(("and", t.label.clone(), size(t)));
        }
        for t in &expr.negative {
            if let Operand::One(b) = &t.operand {
                ops.push(Op::AndNot(Source::of(b)));
                labels.push(("andnot", t.label.clone(), size(t)));
            }
        }
        for t in unions {
            if let Operand::AnyOf(v) | Operand::Disjoint(v) = &t.operand {
                ops.push(Op::AndAny(v.iter().map(|b| Source::of(b)).collect()));
                labels.push(("and_any", t.label.clone(), size(t)));
            }
        }
        labels[0].0 = "start";
        Plan { ops, labels }
    }
}

/// The running set of one key: bit `v % 64` of word `v / 64` for value `v`.
pub(crate) struct Chunk {
    pub(crate) words: Box<[u64; BITSET_WORDS]>,
}

impl Chunk {
    pub(crate) fn new() -> Self {
        Chunk {
            words: Box::new([0; BITSET_WORDS]),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.words.fill(0);
    }

    fn len(&self) -> usize {
        count_ones(&self.words[..])
    }

    fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Add the values of `c`.
    pub(crate) fn or(&mut self, c: &Container) {
        or_container(&mut self.words, c);
    }

    /// Keep the values of `c` only (`scratch` is overwritten).
    fn and(&mut self, c: &Container, scratch: &mut Chunk, kept: &mut Vec<u16>) {
        match c {
            Container::Bitset(w, _) => {
                for (a, b) in self.words.iter_mut().zip(w.iter()) {
                    *a &= b;
                }
            }
            Container::Array(a) => {
                self.members(a, kept);
                self.clear();
                self.or(&Container::Array(kept));
            }
            Container::Run(_) => {
                scratch.clear();
                scratch.or(c);
                self.and_chunk(scratch);
            }
        }
    }

    /// Keep the values in any of `members`' containers at key `k` (`scratch` is overwritten):
    /// the running set's part of each is added to `scratch`, which becomes the running set.
    fn and_any(
        &mut self,
        members: &[Source],
        k: u16,
        scratch: &mut Chunk,
        ids: &mut Vec<u16>,
        kept: &mut Vec<u16>,
    ) {
        scratch.clear();
        for m in members {
            match m.at(k, ids) {
                Some(Container::Bitset(w, _)) => {
                    for ((o, a), b) in scratch.words.iter_mut().zip(self.words.iter()).zip(w) {
                        *o |= a & b;
                    }
                }
                Some(Container::Array(a)) => {
                    self.members(a, kept);
                    scratch.or(&Container::Array(kept));
                }
                // Added whole: the intersection below keeps the running set's part.
                Some(c @ Container::Run(_)) => scratch.or(&c),
                None => {}
            }
        }
        self.and_chunk(scratch);
    }

    /// The values of `values` in the running set, into `out`.
    ///
    /// Why filter before setting or clearing bits: a bit set or cleared is a load and a store
    /// of its word, and the next value of a sorted list is often in the same word, so each
    /// waits for the store before it. The test here only loads, and writes every value to
    /// `out` but advances past it only if it is a member (no branch, no wait); the few
    /// members then cost a set or clear each, instead of every value of the list.
    fn members(&self, values: &[u16], out: &mut Vec<u16>) {
        out.clear();
        out.reserve(values.len());
        let dst = out.spare_capacity_mut();
        let mut n = 0;
        for (i, block) in values.chunks(BLOCK).enumerate() {
            // The lists are read once, from memory: ask for them well ahead.
            crate::index::prefetch(values.as_ptr().wrapping_add((i + AHEAD) * BLOCK));
            for &v in block {
                // SAFETY: `n` is at most the number of values read before `v`, so below
                // `values.len()`, which `dst` has room for (reserved above). Unchecked: this
                // loop runs for every value of every array operand.
                unsafe { dst.get_unchecked_mut(n) }.write(v);
                n += ((self.words[usize::from(v >> 6)] >> (v & 63)) & 1) as usize;
            }
        }
        // SAFETY: the first `n` slots were written (each slot before `n` moved past it).
        unsafe { out.set_len(n) };
    }

    fn and_chunk(&mut self, other: &Chunk) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a &= b;
        }
    }

    /// Remove the values of `c`.
    fn andnot(&mut self, c: &Container, kept: &mut Vec<u16>) {
        match c {
            Container::Bitset(w, _) => {
                for (a, b) in self.words.iter_mut().zip(w.iter()) {
                    *a &= !b;
                }
            }
            Container::Array(a) => {
                self.members(a, kept);
                // SAFETY: as in `or`; the count it returns is not used.
                unsafe {
                    croaring_sys::bitset_clear_list(
                        self.words.as_mut_ptr(),
                        0,
                        kept.as_ptr(),
                        kept.len() as u64,
                    );
                }
            }
            Container::Run(runs) => {
                for r in runs.iter() {
                    self.set_range(r, false);
                }
            }
        }
    }

    fn set_range(&mut self, r: &Run, on: bool) {
        let (lo, hi) = (
            u32::from(r.value),
            u32::from(r.value) + u32::from(r.length) + 1,
        );
        if on {
            self.set_values(lo, hi);
        } else {
            self.clear_values(lo, hi);
        }
    }

    /// The words of values `lo..hi` (`lo < hi <= 65,536`) with the mask of each.
    fn masks(lo: u32, hi: u32) -> impl Iterator<Item = (usize, u64)> {
        let (first, last) = ((lo / 64) as usize, ((hi - 1) / 64) as usize);
        (first..=last).map(move |i| {
            let from = if i == first { lo % 64 } else { 0 };
            let to = if i == last { (hi - 1) % 64 } else { 63 };
            (i, (u64::MAX >> (63 - to)) & (u64::MAX << from))
        })
    }

    fn set_values(&mut self, lo: u32, hi: u32) {
        if lo < hi {
            for (i, m) in Self::masks(lo, hi) {
                self.words[i] |= m;
            }
        }
    }

    fn clear_values(&mut self, lo: u32, hi: u32) {
        if lo < hi {
            for (i, m) in Self::masks(lo, hi) {
                self.words[i] &= !m;
            }
        }
    }
}

/// Add the values of container `c` to the words of one key.
pub(crate) fn or_container(words: &mut [u64; BITSET_WORDS], c: &Container) {
    match c {
        Container::Bitset(w, _) => {
            for (a, b) in words.iter_mut().zip(w.iter()) {
                *a |= b;
            }
        }
        // SAFETY: `words` has `BITSET_WORDS` words, enough for every u16 value.
        Container::Array(a) => unsafe {
            croaring_sys::bitset_set_list(words.as_mut_ptr(), a.as_ptr(), a.len() as u64)
        },
        Container::Run(runs) => {
            for r in runs.iter() {
                let lo = u32::from(r.value);
                for (i, m) in Chunk::masks(lo, lo + u32::from(r.length) + 1) {
                    words[i] |= m;
                }
            }
        }
    }
}

/// Add the values of key `k` of `b` to `words`.
pub(crate) fn or_key(words: &mut [u64; BITSET_WORDS], b: &Bitmap, k: u16) {
    let c = Containers::new(b);
    if let Ok(i) = c.keys().binary_search(&k) {
        or_container(words, &c.get(i));
    }
}

/// Values per cache line of an array container, and how many lines ahead `members` fetches.
const BLOCK: usize = 32;
const AHEAD: usize = 8;

/// The set bits of `words`.
pub(crate) fn count_ones(words: &[u64]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has the instruction.
        return unsafe { ones_popcnt(words) };
    }
    ones(words)
}

fn ones(words: &[u64]) -> usize {
    words.iter().map(|w| w.count_ones() as usize).sum()
}

/// `ones` with the `popcnt` instruction (the default x86-64 target counts bits without it,
/// several instructions a word).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn ones_popcnt(words: &[u64]) -> usize {
    ones(words)
}

/// The containers of the result of some keys, in the portable format's pieces.
#[derive(Default)]
struct Part {
    /// `(key, cardinality - 1)` of each container: the format's descriptive header.
    header: Vec<(u16, u16)>,
    /// The containers one after the other: arrays as little-endian u16, bitsets as
    /// little-endian u64 words.
    data: Vec<u8>,
    /// The result's size after every step (`Plan::labels`), when traced.
    sizes: Vec<u64>,
}

impl Part {
    /// Append the `BITSET_WORDS` words of a key, which hold `n` values, as the container of
    /// key `k` (nothing if empty).
    fn push(&mut self, k: u16, words: &[u64], n: usize, values: &mut Vec<u16>) {
        assert_eq!(words.len(), BITSET_WORDS);
        if n == 0 {
            return;
        }
        self.header.push((k, (n - 1) as u16));
        if n > ARRAY_MAX {
            // Into place, word by word (a copy once compiled for a little-endian target).
            let at = self.data.len();
            self.data.resize(at + BITSET_WORDS * 8, 0);
            for (b, w) in self.data[at..].chunks_exact_mut(8).zip(words) {
                b.copy_from_slice(&w.to_le_bytes());
            }
        } else {
            values.resize(n, 0);
            // SAFETY: `words` holds `BITSET_WORDS` words with `n` bits set; `values` has room
            // for `n` values.
            let got = unsafe {
                croaring_sys::bitset_extract_setbits_uint16(
                    words.as_ptr(),
                    BITSET_WORDS,
                    values.as_mut_ptr(),
                    0,
                )
            };
            debug_assert_eq!(got, n);
            let at = self.data.len();
            self.data.resize(at + 2 * n, 0);
            for (b, v) in self.data[at..].chunks_exact_mut(2).zip(values.iter()) {
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Evaluate `plan` over the keys `range`; with `emit`, write the result's containers, and
/// with `trace`, count the running set after every step. Returns the part and its size.
fn run(plan: &Plan, range: Range<u32>, emit: bool, trace: bool) -> (Part, u64) {
    let mut part = Part {
        sizes: vec![0; if trace { plan.ops.len() } else { 0 }],
        ..Part::default()
    };
    let (mut acc, mut scratch) = (Chunk::new(), Chunk::new());
    let (mut ids, mut values, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    let mut total = 0u64;
    for k in range {
        // The containers are scattered in memory and read once: while this key is evaluated,
        // fetch the values of the next key's containers and the headers of the one after.
        for s in plan.ops.iter().flat_map(Op::sources) {
            if k + 2 <= u32::from(u16::MAX) {
                s.prefetch((k + 2) as u16, false);
            }
            if k < u32::from(u16::MAX) {
                s.prefetch((k + 1) as u16, true);
            }
        }
        let k = k as u16;
        acc.clear();
        for (i, op) in plan.ops.iter().enumerate() {
            let first = i == 0;
            match op {
                Op::And(s) => match s.at(k, &mut ids) {
                    Some(c) if first => acc.or(&c),
                    Some(c) => acc.and(&c, &mut scratch, &mut kept),
                    None => acc.clear(),
                },
                Op::AndNot(s) => {
                    if let Some(c) = s.at(k, &mut ids) {
                        acc.andnot(&c, &mut kept);
                    }
                }
                Op::AndAny(members) if first => union_into(members, k, &mut acc, &mut ids),
                Op::AndAny(members) => acc.and_any(members, k, &mut scratch, &mut ids, &mut kept),
            }
            // Later steps cannot add to an empty set (their sizes stay 0).
            if acc.is_empty() {
                break;
            }
            if trace {
                part.sizes[i] += acc.len() as u64;
            }
        }
        let n = acc.len();
        total += n as u64;
        if emit {
            part.push(k, &acc.words[..], n, &mut values);
        }
    }
    (part, total)
}

/// `out |= ` every container of `members` at key `k`.
fn union_into(members: &[Source], k: u16, out: &mut Chunk, ids: &mut Vec<u16>) {
    for m in members {
        if let Some(c) = m.at(k, ids) {
            out.or(&c);
        }
    }
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

/// Ranges of keys per core. Several per core even out the cores (keys differ in work, and a
/// core may be taken by other work), while a range of a few keys costs little more than its
/// keys (two scratch bitsets and a part of the result).
pub const RANGES_PER_CORE_DEFAULT: u64 = 8;
/// Below a quarter million ids in its smallest positive operand, an audience is evaluated
/// whole (the id-list path of `eval` probes a few thousand ids instead of reading every
/// container of the other operands).
pub const MIN_IDS_DEFAULT: u64 = 1 << 18;
/// The fewest keys (containers of 65,536 ids) a range spans.
const MIN_KEYS: u32 = 4;
/// The fewest positive bitmaps worth a chunked evaluation (see `ranges`).
const MIN_POSITIVE_BITMAPS: usize = 3;

/// Set the chunking: `ranges_per_core` ranges of keys per core (0 turns chunking off) for
/// audiences whose smallest positive operand has at least `min_ids` ids. `min_ids == 0`
/// evaluates every audience chunk by chunk, one key per range at the least, whether it pays or
/// not (for tests).
pub fn set_chunking(ranges_per_core: u64, min_ids: u64) {
    RANGES_PER_CORE.store(ranges_per_core, Ordering::Relaxed);
    MIN_IDS.store(min_ids, Ordering::Relaxed);
}

/// The key ranges to evaluate `expr` over chunk by chunk, or `None` when it is better
/// evaluated whole by `eval`'s plan.
///
/// By cost: both ways read the same containers, but chunk by chunk nothing bigger than a
/// container is allocated, written or read back, and the keys run on all cores, for the price
/// of an 8 KiB running set per key and of writing the result twice (its containers, then the
/// bitmap made of them). That pays wherever intermediates bigger than the result would be
/// made whole: several large positive operands (`MIN_POSITIVE_BITMAPS` bitmaps or more: a
/// union to build, intersections that shrink). Whole evaluation stays for
/// * one or two positive bitmaps (a broadcast with a platform filter; one tag minus others):
///   whole, the result is borrowed from the registry or made by one kernel call, and further
///   operands apply to it in place, so there is no intermediate to save;
/// * a small positive operand (under `MIN_IDS_DEFAULT` ids: aliases, registration IDs, rare
///   tags): `eval` probes its few ids instead of reading every container of the others.
pub fn ranges(expr: &Expr<'_>) -> Option<Vec<Range<u32>>> {
    let per_core = RANGES_PER_CORE.load(Ordering::Relaxed) as usize;
    let min_ids = MIN_IDS.load(Ordering::Relaxed);
    let forced = min_ids == 0;
    if per_core == 0 {
        return None;
    }
    let positive_bitmaps: usize = expr
        .positive
        .iter()
        .map(|t| match &t.operand {
            Operand::AnyOf(v) | Operand::Disjoint(v) => v.len(),
            Operand::One(_) | Operand::Owned(_) | Operand::Ids(_) => 1,
        })
        .sum();
    if !forced {
        if positive_bitmaps < MIN_POSITIVE_BITMAPS {
            return None;
        }
        let smallest = expr
            .positive
            .iter()
            .map(|t| eval::approx(&t.operand))
            .min()?;
        if smallest < min_ids {
            return None;
        }
    }
    let span = span(expr);
    let keys = span.len() as u32;
    let min_keys = if forced { 1 } else { MIN_KEYS };
    let n = (per_core * rayon::current_num_threads())
        .min((keys / min_keys) as usize)
        .max(1) as u32;
    let step = keys.div_ceil(n).max(1);
    Some(
        (0..n)
            .map(|i| span.start + i * step..(span.start + (i + 1) * step).min(span.end))
            .filter(|r| !r.is_empty())
            .collect(),
    )
}

/// The parts of `ranges` (in parallel) and their total size.
fn parts<'e>(
    expr: &'e Expr<'_>,
    ranges: &[Range<u32>],
    emit: bool,
    trace: bool,
) -> (Vec<Part>, u64, Plan<'e>) {
    let plan = Plan::new(expr, trace);
    let done: Vec<(Part, u64)> = ranges
        .par_iter()
        .map(|r| run(&plan, r.clone(), emit, trace))
        .collect();
    let total = done.iter().map(|(_, n)| n).sum();
    (done.into_iter().map(|(p, _)| p).collect(), total, plan)
}

/// Evaluate `expr` key by key over `ranges` (ascending and disjoint, covering every key the
/// result can have), the ranges in parallel; with `trace`, record a first step `chunked`
/// (operand: the keys and ranges) and then every step of the plan with the size of the
/// running set after it, summed over the keys.
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
/// assert_eq!(chunked::evaluate(&e, &[0..1], None).to_vec(), vec![1]);
/// assert_eq!(eval::naive(e).to_vec(), vec![1]);
/// ```
pub fn evaluate(expr: &Expr<'_>, ranges: &[Range<u32>], trace: Option<&mut Vec<Step>>) -> Bitmap {
    let (parts, total, plan) = parts(expr, ranges, true, trace.is_some());
    if let Some(trace) = trace {
        let keys: u32 = ranges.iter().map(|r| r.len() as u32).sum();
        trace.push(Step {
            op: "chunked",
            operand: format!("{keys} keys of 65536 ids in {} ranges", ranges.len()),
            operand_size: u64::from(keys),
            result: total,
        });
        let mut sizes = vec![0u64; plan.labels.len()];
        for p in &parts {
            for (s, n) in sizes.iter_mut().zip(&p.sizes) {
                *s += n;
            }
        }
        trace.extend(
            plan.labels
                .iter()
                .zip(sizes)
                .map(|((op, label, n), result)| Step {
                    op,
                    operand: label.clone(),
                    operand_size: *n,
                    result,
                }),
        );
    }
    join(&parts)
}

/// The size of `expr`'s result, evaluated as `evaluate` does but without writing it.
pub fn count(expr: &Expr<'_>, ranges: &[Range<u32>]) -> u64 {
    parts(expr, ranges, false, false).1
}

/// The bitmap of the set bits of `words` (value `v` is bit `v % 64` of word `v / 64`; a
/// multiple of `BITSET_WORDS` words).
pub(crate) fn bitmap_of_words(words: &[u64]) -> Bitmap {
    assert_eq!(words.len() % BITSET_WORDS, 0, "whole keys");
    bitmap_by_keys(words.len() / BITSET_WORDS, |k, out| {
        let at = usize::from(k) * BITSET_WORDS;
        out.copy_from_slice(&words[at..at + BITSET_WORDS]);
    })
}

/// The bitmap whose values of key `k` (for `k < keys`) are the set bits `fill(k, words)` leaves
/// in `words` (cleared before each call). Keys are filled in parallel, in ranges, and their
/// containers written in the portable format, which CRoaring reads in one call (no per-value
/// work for the dense keys).
pub(crate) fn bitmap_by_keys(
    keys: usize,
    fill: impl Fn(u16, &mut [u64; BITSET_WORDS]) + Sync,
) -> Bitmap {
    assert!(keys <= 1 << 16, "32-bit values");
    const KEYS_PER_TASK: usize = 16;
    let parts: Vec<Part> = (0..keys.div_ceil(KEYS_PER_TASK))
        .into_par_iter()
        .map(|t| {
            let (mut part, mut chunk, mut values) = (Part::default(), Chunk::new(), Vec::new());
            for k in t * KEYS_PER_TASK..((t + 1) * KEYS_PER_TASK).min(keys) {
                chunk.clear();
                fill(k as u16, &mut chunk.words);
                part.push(k as u16, &chunk.words[..], chunk.len(), &mut values);
            }
            part
        })
        .collect();
    join(&parts)
}

/// One bitmap from the parts of ascending ranges: their containers in the portable format
/// (a header of keys and sizes, the offsets, the containers), read by CRoaring in one call.
fn join(parts: &[Part]) -> Bitmap {
    let n: usize = parts.iter().map(|p| p.header.len()).sum();
    if n == 0 {
        return Bitmap::new();
    }
    let data: usize = parts.iter().map(|p| p.data.len()).sum();
    let head = 8 + 8 * n;
    let mut buf = Vec::with_capacity(head + data);
    buf.extend_from_slice(&COOKIE_NO_RUNS.to_le_bytes());
    buf.extend_from_slice(&(n as u32).to_le_bytes());
    for p in parts {
        for (k, c) in &p.header {
            buf.extend_from_slice(&k.to_le_bytes());
            buf.extend_from_slice(&c.to_le_bytes());
        }
    }
    let mut offset = head;
    for p in parts {
        for (_, c) in &p.header {
            buf.extend_from_slice(&(offset as u32).to_le_bytes());
            let card = usize::from(*c) + 1;
            offset += if card > ARRAY_MAX {
                BITSET_WORDS * 8
            } else {
                2 * card
            };
        }
    }
    for p in parts {
        buf.extend_from_slice(&p.data);
    }
    debug_assert_eq!(buf.len(), offset);
    let out = {
        // SAFETY: `buf` is a whole portable bitmap: keys ascending (ranges ascending, keys
        // ascending within each), each container of the size its header says, an array when
        // at most `ARRAY_MAX` values (ascending: extracted from a bitset), else a bitset.
        unsafe { Portable::try_deserialize_unchecked(&buf) }
    };
    debug_assert!(out.internal_validate().is_ok());
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn bitmap_of_words_reads_back_the_bits() {
        let mut words = vec![0u64; 3 * BITSET_WORDS];
        let mut want = Vec::new();
        // key 0: a few values (an array); key 1: none; key 2: over 4,096 (a bitset).
        for v in [0u32, 63, 64, 65_535] {
            want.push(v);
        }
        want.extend((0..6_000).map(|i| 2 * 65_536 + 3 * i));
        for &v in &want {
            words[v as usize / 64] |= 1 << (v % 64);
        }
        let b = bitmap_of_words(&words);
        assert_eq!(b.to_vec(), want);
        assert!(b.internal_validate().is_ok());
        assert!(bitmap_of_words(&[]).is_empty());
    }

    use super::*;
    use proptest::prelude::*;

    /// Ids spread over 16 keys: dense runs, sparse spreads and bitsets; run containers too.
    fn bitmap() -> impl Strategy<Value = Bitmap> {
        (
            proptest::collection::vec((0u32..16, 0u32..65_536, 1u32..6000), 0..12),
            any::<bool>(),
        )
            .prop_map(|(runs, optimize)| {
                let mut b = Bitmap::new();
                for (key, at, len) in runs {
                    let lo = (key << 16) + at;
                    if len > 4000 {
                        b.add_range(lo..(lo + len * 8).min((key + 1) << 16));
                    } else {
                        let step = if len > 2000 { 3 } else { 37 };
                        b.add_many(
                            &(0..len)
                                .map(|i| lo.wrapping_add(i * step))
                                .collect::<Vec<_>>(),
                        );
                    }
                }
                if optimize {
                    b.run_optimize();
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
        fn chunks_agree_with_the_kernels(
            singles in proptest::collection::vec(bitmap(), 0..4),
            any in proptest::collection::vec(bitmap(), 0..5),
            not in proptest::collection::vec(bitmap(), 0..4),
            ids in proptest::option::of(proptest::collection::btree_set(0u32..16 << 16, 0..300)),
            cuts in 1u32..20,
        ) {
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
            prop_assume!(!build().positive.is_empty());
            let want = eval::naive(build());
            let e = build();
            let span = span(&e);
            let step = span.len().div_ceil(cuts as usize).max(1) as u32;
            let ranges: Vec<Range<u32>> = (span.start..span.end)
                .step_by(step as usize)
                .map(|k| k..(k + step).min(span.end))
                .collect();
            let mut steps = Vec::new();
            let got = evaluate(&e, &ranges, Some(&mut steps));
            prop_assert!(got.internal_validate().is_ok());
            prop_assert_eq!(got.to_vec(), want.to_vec());
            prop_assert_eq!(evaluate(&e, &ranges, None), want.clone());
            prop_assert_eq!(count(&e, &ranges), want.cardinality());
            prop_assert_eq!(steps[0].op, "chunked");
            prop_assert_eq!(steps[0].result, want.cardinality());
            prop_assert_eq!(steps.last().unwrap().result, want.cardinality());
            prop_assert_eq!(steps.len(), 1 + e.positive.len() + e.negative.len());
            let covered: u64 = ranges.iter().map(|r| want.range_cardinality(r.start << 16..r.end << 16)).sum();
            prop_assert_eq!(covered, want.cardinality(), "the span holds the whole result");
        }
    }

    #[test]
    fn a_chunk_sets_and_clears_ranges_across_words() {
        let mut c = Chunk::new();
        c.set_values(3, 200);
        c.clear_values(64, 128);
        c.set_values(65_500, 65_536);
        assert_eq!(c.len(), (200 - 3 - 64) + 36);
        assert_eq!(c.words[0], u64::MAX << 3);
        assert_eq!(c.words[1], 0);
        assert_eq!(c.words[3], (1 << 8) - 1);
        assert_eq!(c.words[BITSET_WORDS - 1] >> 63, 1);
    }

    #[test]
    fn a_join_of_nothing_is_empty() {
        assert!(join(&[]).is_empty());
        assert!(join(&[Part::default(), Part::default()]).is_empty());
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use std::time::Instant;

    /// Not a test: times the wide benchmark request's shape over 10M random ids, chunk by
    /// chunk on one range and on `ranges`' split, and the bare kernel calls (`cargo test
    /// --release --no-default-features -- --ignored --nocapture wide_shape`).
    #[test]
    #[ignore]
    fn wide_shape() {
        let n = 10_000_000u32;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut bitmap = |p: f64| {
            let cut = (p * u64::MAX as f64) as u64;
            let ids: Vec<u32> = (0..n)
                .filter(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state < cut
                })
                .collect();
            Bitmap::of(&ids)
        };
        let share = |k: f64| 0.5 / (k + 1.0).powf(0.9);
        let and: Vec<Bitmap> = vec![bitmap(share(0.0)), bitmap(share(1.0)), bitmap(0.7)];
        let any: Vec<Bitmap> = (10..30).map(|k| bitmap(share(k as f64))).collect();
        let not: Vec<Bitmap> = (50..70).map(|k| bitmap(share(k as f64))).collect();
        let build = || Expr {
            positive: and
                .iter()
                .map(|b| Term {
                    label: String::new(),
                    operand: Operand::One(b),
                })
                .chain(std::iter::once(Term {
                    label: String::new(),
                    operand: Operand::AnyOf(any.iter().collect()),
                }))
                .collect(),
            negative: not
                .iter()
                .map(|b| Term {
                    label: String::new(),
                    operand: Operand::One(b),
                })
                .collect(),
        };
        let e = build();
        let all = vec![span(&e)];
        let split = ranges(&e).unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            let one = evaluate(&e, &all, None);
            let t1 = t.elapsed();
            let t = Instant::now();
            let par = evaluate(&e, &split, None);
            let t2 = t.elapsed();
            let t = Instant::now();
            let floor = eval::naive(build());
            let t3 = t.elapsed();
            assert_eq!(one, floor);
            assert_eq!(par, floor);
            eprintln!(
                "result {} one range {t1:?}, {} ranges {t2:?}, floor {t3:?}",
                floor.cardinality(),
                split.len()
            );
        }
    }
}
