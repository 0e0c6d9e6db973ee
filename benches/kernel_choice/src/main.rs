//! Kernel choice for reach: `roaring` (roaring-rs, pure Rust) vs `croaring` (CRoaring bindings).
//!
//! Synthetic audience of 10,000,000 device ids (0..10M):
//!   * 10,000 tag bitmaps with Zipf popularity: tag k gets ~0.5*n/(k+1)^0.9 uniform random draws
//!     (duplicates removed, so tag 0 holds ~3.9M distinct ids);
//!   * a platform bitmap (70% of devices are "android");
//!   * a live bitmap (every device but a random 1%).
//!
//! Every timed operation is run once to warm up, then REPS times; we report the median and the
//! minimum wall-clock time (std::time::Instant).  Results of the two crates are cross-checked for
//! equality before anything is timed.  Single-threaded throughout.
//!
//! Usage: ./run.sh            (builds in release with CARGO_TARGET_DIR=/tmp/kernel_choice_target)

use std::hint::black_box;
use std::time::{Duration, Instant};

use croaring::bitmap::Deserializer;
use croaring::{Bitmap, BitmapView, Portable};
use roaring::{MultiOps, RoaringBitmap};

const N: u32 = 10_000_000;
const NTAGS: usize = 10_000;
const REPS: usize = 21; // odd, so the median is a single sample
const REPS_HEAVY: usize = 9; // for whole-catalogue (10k bitmaps) operations

// ---------------------------------------------------------------------------------------------
// RNG: splitmix64, seeded, no dependencies.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (Lemire's multiply-shift, bias negligible for our purposes).
    fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
}

// ---------------------------------------------------------------------------------------------
// Timing

#[derive(Clone, Copy)]
struct Stat {
    median: Duration,
    min: Duration,
}

fn bench<T>(reps: usize, mut f: impl FnMut() -> T) -> Stat {
    black_box(f()); // warm-up
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let r = f();
        let e = t.elapsed();
        black_box(&r);
        drop(r); // dropping the result is not timed
        v.push(e);
    }
    v.sort();
    Stat { median: v[reps / 2], min: v[0] }
}

fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1.0 {
        format!("{:.0} ns", us * 1e3)
    } else if us < 1000.0 {
        format!("{:.1} µs", us)
    } else {
        format!("{:.2} ms", us / 1e3)
    }
}

struct Table {
    rows: Vec<String>,
}

impl Table {
    fn new() -> Self {
        Table { rows: Vec::new() }
    }
    /// A paired row: same operation in both crates.
    fn pair(&mut self, id: &str, case: &str, r: Option<Stat>, c: Option<Stat>, note: &str) {
        let cell = |s: Option<Stat>| match s {
            Some(s) => format!("{} ({})", fmt_d(s.median), fmt_d(s.min)),
            None => "—".to_string(),
        };
        let ratio = match (r, c) {
            (Some(r), Some(c)) => format!("{:.2}", r.median.as_secs_f64() / c.median.as_secs_f64()),
            _ => "—".to_string(),
        };
        let line = format!("| {id} | {case} | {} | {} | {ratio} | {note} |", cell(r), cell(c));
        println!("{line}");
        self.rows.push(line);
    }
}

fn same(r: &RoaringBitmap, c: &Bitmap) -> bool {
    r.len() == c.cardinality() && r.iter().eq(c.iter())
}

fn check(what: &str, r: &RoaringBitmap, c: &Bitmap) {
    assert!(same(r, c), "roaring and croaring disagree on {what}");
    eprintln!("  check ok: {what}: cardinality {}", r.len());
}

fn build_both(sorted: &[u32]) -> (RoaringBitmap, Bitmap) {
    let r = RoaringBitmap::from_sorted_iter(sorted.iter().copied()).expect("sorted input");
    let c = Bitmap::of(sorted);
    (r, c)
}

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026);
    let mut rng = Rng(seed);

    // -----------------------------------------------------------------------------------------
    // Data
    eprintln!("generating data (seed {seed:#x}) ...");
    let t0 = Instant::now();
    let mut buf: Vec<u32> = Vec::new();
    let mut tags_r: Vec<RoaringBitmap> = Vec::with_capacity(NTAGS);
    let mut tags_c: Vec<Bitmap> = Vec::with_capacity(NTAGS);
    let mut draws: u64 = 0;
    for k in 0..NTAGS {
        let m = (0.5 * N as f64 / ((k + 1) as f64).powf(0.9)).round() as usize;
        draws += m as u64;
        buf.clear();
        buf.extend((0..m).map(|_| rng.below(N)));
        buf.sort_unstable();
        buf.dedup();
        let (r, c) = build_both(&buf);
        tags_r.push(r);
        tags_c.push(c);
    }
    buf.clear();
    buf.extend((0..N).filter(|_| rng.below(100) < 70));
    let (mut plat_r, mut plat_c) = build_both(&buf);
    buf.clear();
    buf.extend((0..N).filter(|_| rng.below(100) != 0));
    let (mut live_r, mut live_c) = build_both(&buf);
    let total_members: u64 = tags_r.iter().map(|b| b.len()).sum();
    eprintln!(
        "  {NTAGS} tags: {draws} draws, {total_members} distinct memberships; tag0={} tag5={} tag24={} tag9999={}; platform={} live={}; {:.1}s",
        tags_r[0].len(),
        tags_r[5].len(),
        tags_r[24].len(),
        tags_r[NTAGS - 1].len(),
        plat_r.len(),
        live_r.len(),
        t0.elapsed().as_secs_f64()
    );

    let mut t = Table::new();
    println!();
    println!("| # | case | roaring median (min) | croaring median (min) | roaring/croaring | note |");
    println!("|---|---|---|---|---|---|");

    // -----------------------------------------------------------------------------------------
    // (9) Memory of the 10k tag bitmaps (portable serialized size), before and after run
    // optimisation.  Measured first because the optimised bitmaps are then used for all ops.
    let ser_r_before: usize = tags_r.iter().map(|b| b.serialized_size()).sum();
    let ser_c_before: usize = tags_c.iter().map(|b| b.get_serialized_size_in_bytes::<Portable>()).sum();
    let t_opt = Instant::now();
    for b in tags_r.iter_mut() {
        b.optimize();
    }
    let opt_r = t_opt.elapsed();
    let t_opt = Instant::now();
    for b in tags_c.iter_mut() {
        b.run_optimize();
    }
    let opt_c = t_opt.elapsed();
    plat_r.optimize();
    live_r.optimize();
    plat_c.run_optimize();
    live_c.run_optimize();
    let ser_r_after: usize = tags_r.iter().map(|b| b.serialized_size()).sum();
    let ser_c_after: usize = tags_c.iter().map(|b| b.get_serialized_size_in_bytes::<Portable>()).sum();
    let (mut ra, mut rb, mut rr) = (0u64, 0u64, 0u64);
    for b in &tags_r {
        let s = b.statistics();
        ra += s.n_array_containers as u64;
        rb += s.n_bitset_containers as u64;
        rr += s.n_run_containers as u64;
    }
    let (mut ca, mut cb, mut cr) = (0u64, 0u64, 0u64);
    for b in &tags_c {
        let s = b.statistics();
        ca += s.n_array_containers as u64;
        cb += s.n_bitset_containers as u64;
        cr += s.n_run_containers as u64;
    }
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let live_sz_r = live_r.serialized_size();
    let live_sz_c = live_c.get_serialized_size_in_bytes::<Portable>();
    let plat_sz_r = plat_r.serialized_size();
    let plat_sz_c = plat_c.get_serialized_size_in_bytes::<Portable>();

    // -----------------------------------------------------------------------------------------
    // (1) 20-way union of tags ranked 5..25
    let u_r = tags_r[5..25].iter().union();
    let refs_c: Vec<&Bitmap> = tags_c[5..25].iter().collect();
    let u_c = Bitmap::fast_or(&refs_c);
    check("union 5..25", &u_r, &u_c);
    let r = bench(REPS, || tags_r[5..25].iter().union());
    let c = bench(REPS, || Bitmap::fast_or(&refs_c));
    t.pair("1", "20-way OR, tags 5..25: `MultiOps::union()` vs `Bitmap::fast_or`", Some(r), Some(c),
        &format!("result {} ids", u_r.len()));
    let c2 = bench(REPS, || Bitmap::fast_or_heap(&refs_c));
    t.pair("1b", "20-way OR: croaring `fast_or_heap`", None, Some(c2), "");
    let r = bench(REPS, || {
        let mut a = tags_r[5].clone();
        for b in &tags_r[6..25] {
            a |= b;
        }
        a
    });
    let c = bench(REPS, || {
        let mut a = tags_c[5].clone();
        for b in &tags_c[6..25] {
            a.or_inplace(b);
        }
        a
    });
    t.pair("1c", "20-way OR, naive clone + `\\|=` / `or_inplace` fold", Some(r), Some(c), "");

    // -----------------------------------------------------------------------------------------
    // (2) 5-way intersection of the top tags 0..5
    let i_r = tags_r[0..5].iter().intersection();
    let mut i_c = tags_c[4].and(&tags_c[3]);
    for b in tags_c[0..3].iter().rev() {
        i_c.and_inplace(b);
    }
    check("and 0..5", &i_r, &i_c);
    let r = bench(REPS, || tags_r[0..5].iter().intersection());
    t.pair("2", "5-way AND, top tags 0..5: `MultiOps::intersection()`", Some(r), None,
        &format!("result {} ids", i_r.len()));
    let r = bench(REPS, || {
        let mut a = &tags_r[0] & &tags_r[1];
        for b in &tags_r[2..5] {
            a &= b;
        }
        a
    });
    let c = bench(REPS, || {
        let mut a = tags_c[0].and(&tags_c[1]);
        for b in &tags_c[2..5] {
            a.and_inplace(b);
        }
        a
    });
    t.pair("2b", "5-way AND, largest first (`&` then `&=` / `and` then `and_inplace`)", Some(r), Some(c), "");
    let r = bench(REPS, || {
        let mut a = &tags_r[4] & &tags_r[3];
        for b in tags_r[0..3].iter().rev() {
            a &= b;
        }
        a
    });
    let c = bench(REPS, || {
        let mut a = tags_c[4].and(&tags_c[3]);
        for b in tags_c[0..3].iter().rev() {
            a.and_inplace(b);
        }
        a
    });
    t.pair("2c", "5-way AND, smallest first", Some(r), Some(c), "");

    // -----------------------------------------------------------------------------------------
    // (3) Wide case: OR(tags 5..25) AND tag3 AND tag4 ANDNOT OR(tags 25..45) AND platform AND live
    let exc_c: Vec<&Bitmap> = tags_c[25..45].iter().collect();
    let wide_naive_r = || {
        let mut r = tags_r[5..25].iter().union();
        r &= &tags_r[3];
        r &= &tags_r[4];
        let ex = tags_r[25..45].iter().union();
        r -= &ex;
        r &= &plat_r;
        r &= &live_r;
        r
    };
    let wide_naive_c = || {
        let mut r = Bitmap::fast_or(&refs_c);
        r.and_inplace(&tags_c[3]);
        r.and_inplace(&tags_c[4]);
        let ex = Bitmap::fast_or(&exc_c);
        r.andnot_inplace(&ex);
        r.and_inplace(&plat_c);
        r.and_inplace(&live_c);
        r
    };
    // smallest first, but still materialising the two 20-way unions
    let wide_sfm_r = || {
        let mut r = &tags_r[4] & &tags_r[3];
        r &= &plat_r;
        r &= &live_r;
        r &= &tags_r[5..25].iter().union();
        r -= &tags_r[25..45].iter().union();
        r
    };
    let wide_sfm_c = || {
        let mut r = tags_c[4].and(&tags_c[3]);
        r.and_inplace(&plat_c);
        r.and_inplace(&live_c);
        r.and_inplace(&Bitmap::fast_or(&refs_c));
        r.andnot_inplace(&Bitmap::fast_or(&exc_c));
        r
    };
    // smallest first, never materialising a big union: the small running result is ANDed with
    // each include tag and the pieces ORed; exclude tags are subtracted one by one.
    let wide_sfd_r = || {
        let mut r = &tags_r[4] & &tags_r[3];
        r &= &plat_r;
        r &= &live_r;
        let mut r = tags_r[5..25].iter().map(|b| &r & b).union();
        for b in &tags_r[25..45] {
            r -= b;
        }
        r
    };
    let wide_sfd_c = || {
        let mut r = tags_c[4].and(&tags_c[3]);
        r.and_inplace(&plat_c);
        r.and_inplace(&live_c);
        let parts: Vec<Bitmap> = tags_c[5..25].iter().map(|b| r.and(b)).collect();
        let prefs: Vec<&Bitmap> = parts.iter().collect();
        let mut r = Bitmap::fast_or(&prefs);
        for b in &tags_c[25..45] {
            r.andnot_inplace(b);
        }
        r
    };
    let w = wide_naive_r();
    check("wide naive", &w, &wide_naive_c());
    check("wide smallest-first materialised (roaring vs croaring naive)", &wide_sfm_r(), &wide_naive_c());
    check("wide smallest-first materialised", &wide_sfm_r(), &wide_sfm_c());
    check("wide smallest-first distributed", &wide_sfd_r(), &wide_sfd_c());
    check("wide sfd vs naive", &wide_sfd_r(), &wide_naive_c());
    let wide_note = format!("result {} ids", w.len());
    let r = bench(REPS, wide_naive_r);
    let c = bench(REPS, wide_naive_c);
    t.pair("3a", "wide, naive: OR20 → AND t3 → AND t4 → ANDNOT OR20 → AND platform → AND live", Some(r), Some(c), &wide_note);
    let r = bench(REPS, wide_sfm_r);
    let c = bench(REPS, wide_sfm_c);
    t.pair("3b", "wide, smallest first: t4∧t3∧platform∧live, then ∧OR20, ∖OR20 (unions materialised)", Some(r), Some(c), "");
    let r = bench(REPS, wide_sfd_r);
    let c = bench(REPS, wide_sfd_c);
    t.pair("3c", "wide, smallest first, distributed: OR of (small ∧ tagᵢ), then ∖ tagⱼ one by one", Some(r), Some(c), "");

    // -----------------------------------------------------------------------------------------
    // (4) intersection cardinality of platform and live
    let n_r = plat_r.intersection_len(&live_r);
    let n_c = plat_c.and_cardinality(&live_c);
    assert_eq!(n_r, n_c);
    let r = bench(REPS, || plat_r.intersection_len(&live_r));
    let c = bench(REPS, || plat_c.and_cardinality(&live_c));
    t.pair("4", "\\|platform ∧ live\\|: `intersection_len` vs `and_cardinality`", Some(r), Some(c), &format!("= {n_r}"));

    // -----------------------------------------------------------------------------------------
    // (5) export a ~5M-element result to Vec<u32>
    let e_r = &tags_r[0] | &tags_r[1];
    let e_c = tags_c[0].or(&tags_c[1]);
    check("export source (tag0 ∨ tag1)", &e_r, &e_c);
    assert_eq!(e_r.iter().collect::<Vec<u32>>(), e_c.to_vec());
    let r = bench(REPS, || e_r.iter().collect::<Vec<u32>>());
    let c = bench(REPS, || e_c.to_vec());
    t.pair("5", "export to Vec<u32>: `iter().collect()` vs `to_vec()`", Some(r), Some(c), &format!("{} ids", e_r.len()));
    // roaring's batch iterator (`Iter::next_many`, new in 0.12): 4096-id chunks appended to a
    // Vec::with_capacity(len) (same allocation pattern as croaring's `to_vec`)
    let export_many_r = || {
        let mut v = Vec::with_capacity(e_r.len() as usize);
        let mut chunk = [0u32; 4096];
        let mut it = e_r.iter();
        loop {
            let got = it.next_many(&mut chunk);
            if got.is_empty() {
                break;
            }
            v.extend_from_slice(got);
        }
        v
    };
    assert_eq!(export_many_r(), e_c.to_vec());
    let r = bench(REPS, export_many_r);
    t.pair("5b", "export: roaring `Iter::next_many` (4096-id chunks) into `Vec::with_capacity` vs `to_vec()`", Some(r), Some(c), "");
    let c = bench(REPS, || e_c.iter().collect::<Vec<u32>>());
    t.pair("5c", "export: croaring `iter().collect()`", None, Some(c), "");

    // -----------------------------------------------------------------------------------------
    // (6) small bitmap (2,000 random ids) ANDed with 60 large bitmaps
    buf.clear();
    buf.extend((0..2000).map(|_| rng.below(N)));
    buf.sort_unstable();
    buf.dedup();
    let (small_r, small_c) = build_both(&buf);
    let large_r: Vec<&RoaringBitmap> =
        [&plat_r, &live_r].into_iter().chain(tags_r[0..58].iter()).collect();
    let large_c: Vec<&Bitmap> = [&plat_c, &live_c].into_iter().chain(tags_c[0..58].iter()).collect();
    let s_r: u64 = large_r.iter().map(|b| (&small_r & *b).len()).sum();
    let s_c: u64 = large_c.iter().map(|b| small_c.and(b).cardinality()).sum();
    assert_eq!(s_r, s_c);
    let r = bench(REPS, || large_r.iter().map(|b| (&small_r & *b).len()).sum::<u64>());
    let c = bench(REPS, || large_c.iter().map(|b| small_c.and(b).cardinality()).sum::<u64>());
    t.pair("6", "small (2k ids) ∧ each of 60 large bitmaps, 60 materialised results", Some(r), Some(c),
        &format!("Σ result = {s_r}"));
    let r = bench(REPS, || {
        let mut a = small_r.clone();
        for b in &large_r {
            a &= *b;
        }
        a
    });
    let c = bench(REPS, || {
        let mut a = small_c.clone();
        for b in &large_c {
            a.and_inplace(b);
        }
        a
    });
    t.pair("6b", "small (2k ids) ∧= 60 large bitmaps in sequence (platform, live, tags 0..58)", Some(r), Some(c), "");

    // -----------------------------------------------------------------------------------------
    // (7) build from 5M sorted u32
    buf.clear();
    buf.extend((0..N).filter(|_| rng.below(2) == 0));
    let sorted = std::mem::take(&mut buf);
    {
        let (r, c) = build_both(&sorted);
        check("build from sorted", &r, &c);
    }
    let r = bench(REPS, || RoaringBitmap::from_sorted_iter(sorted.iter().copied()).unwrap());
    let c = bench(REPS, || Bitmap::of(&sorted));
    t.pair("7", "build from sorted u32: `from_sorted_iter` vs `Bitmap::of` (add_many)", Some(r), Some(c),
        &format!("{} ids", sorted.len()));
    let r = bench(REPS, || sorted.iter().copied().collect::<RoaringBitmap>());
    let c = bench(REPS, || sorted.iter().copied().collect::<Bitmap>());
    t.pair("7b", "build from sorted u32 via `FromIterator` (collect)", Some(r), Some(c), "");

    // -----------------------------------------------------------------------------------------
    // (8) portable serialisation
    let ser_r = |b: &RoaringBitmap| {
        let mut v = Vec::with_capacity(b.serialized_size());
        b.serialize_into(&mut v).unwrap();
        v
    };
    let bytes_r = ser_r(&plat_r);
    let bytes_c = plat_c.serialize::<Portable>();
    let identical_plat = bytes_r == bytes_c;
    let identical_live = ser_r(&live_r) == live_c.serialize::<Portable>();
    // cross-compatibility both ways
    check("roaring bytes -> croaring", &plat_r, &Bitmap::try_deserialize::<Portable>(&bytes_r).unwrap());
    check("croaring bytes -> roaring", &RoaringBitmap::deserialize_from(&bytes_c[..]).unwrap(), &plat_c);
    check(
        "live: croaring bytes -> roaring (run containers)",
        &RoaringBitmap::deserialize_from(&live_c.serialize::<Portable>()[..]).unwrap(),
        &live_c,
    );
    let sz_note = format!("platform, {} B", bytes_r.len());
    let r = bench(REPS, || ser_r(&plat_r));
    let c = bench(REPS, || plat_c.serialize::<Portable>());
    t.pair("8a", "serialize platform (7M ids): `serialize_into(Vec)` vs `serialize::<Portable>`", Some(r), Some(c), &sz_note);
    let r = bench(REPS, || RoaringBitmap::deserialize_from(&bytes_r[..]).unwrap());
    let c = bench(REPS, || Bitmap::try_deserialize::<Portable>(&bytes_c).unwrap());
    t.pair("8b", "deserialize platform, validated: `deserialize_from` vs `try_deserialize::<Portable>`", Some(r), Some(c), "");
    let r = bench(REPS, || RoaringBitmap::deserialize_unchecked_from(&bytes_r[..]).unwrap());
    let c = bench(REPS, || unsafe { <Portable as Deserializer>::try_deserialize_unchecked(&bytes_c) });
    t.pair("8c", "deserialize platform, unchecked", Some(r), Some(c), "");
    let c = bench(REPS, || unsafe { BitmapView::deserialize::<Portable>(&bytes_c) }.cardinality());
    t.pair("8d", "croaring zero-copy `BitmapView::deserialize::<Portable>` (+ cardinality)", None, Some(c), "no roaring equivalent");

    // whole catalogue: 10k tags into one buffer and back
    let sizes: Vec<usize> = tags_r.iter().map(|b| b.serialized_size()).collect();
    let total: usize = sizes.iter().sum();
    let mut offs = Vec::with_capacity(NTAGS + 1);
    offs.push(0usize);
    for s in &sizes {
        offs.push(offs.last().unwrap() + s);
    }
    let cat_ser_r = || {
        let mut v = Vec::with_capacity(total);
        for b in &tags_r {
            b.serialize_into(&mut v).unwrap();
        }
        v
    };
    let cat_ser_c = || {
        let mut v = Vec::with_capacity(total);
        for b in &tags_c {
            let _ = b.serialize_into_vec::<Portable>(&mut v);
        }
        v
    };
    let cat_r = cat_ser_r();
    let cat_c = cat_ser_c();
    assert_eq!(cat_r.len(), total);
    assert_eq!(cat_c.len(), total);
    let identical_cat = cat_r == cat_c;
    let r = bench(REPS_HEAVY, cat_ser_r);
    let c = bench(REPS_HEAVY, cat_ser_c);
    t.pair("8e", "serialize all 10k tags into one buffer", Some(r), Some(c), &format!("{:.1} MiB", mib(total)));
    let r = bench(REPS_HEAVY, || {
        offs.windows(2)
            .map(|w| RoaringBitmap::deserialize_from(&cat_r[w[0]..w[1]]).unwrap())
            .collect::<Vec<_>>()
    });
    let c = bench(REPS_HEAVY, || {
        offs.windows(2)
            .map(|w| Bitmap::try_deserialize::<Portable>(&cat_c[w[0]..w[1]]).unwrap())
            .collect::<Vec<_>>()
    });
    t.pair("8f", "deserialize all 10k tags, validated", Some(r), Some(c), "");

    // -----------------------------------------------------------------------------------------
    // (9) memory (printed last, measured at the start)
    let cell = |b: usize| format!("{:.2} MiB ({b} B)", mib(b));
    println!("| 9a | Σ serialized size, 10k tags, as built | {} | {} | — | |", cell(ser_r_before), cell(ser_c_before));
    println!(
        "| 9b | Σ serialized size, 10k tags, after `optimize()` / `run_optimize()` | {} | {} | — | optimize took {} / {} |",
        cell(ser_r_after),
        cell(ser_c_after),
        fmt_d(opt_r),
        fmt_d(opt_c)
    );
    println!(
        "| 9c | containers in the 10k tags (array / bitset / run) | {ra} / {rb} / {rr} | {ca} / {cb} / {cr} | — | |"
    );
    println!(
        "| 9d | platform / live serialized size after optimize | {} / {} B | {} / {} B | — | |",
        plat_sz_r, live_sz_r, plat_sz_c, live_sz_c
    );
    println!();
    println!(
        "portable bytes identical between crates: platform={identical_plat} live={identical_live} 10k-tag catalogue={identical_cat}"
    );
    println!("total wall time {:.1}s", t0.elapsed().as_secs_f64());
}
