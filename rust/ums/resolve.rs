//! Resolving a template send: the channel registration IDs of every channel of the template.
//!
//! Per channel `c` (key `k`, type `T`), for user-class targets:
//! 1. audience `A_c`: every live user (broadcast), the live users named (`aud_userid`) or of
//!    the segment, or for tags the union over the tags of the users having the tag bound to `k`,
//!    or, only when nobody has that tag bound to `k`, bound globally;
//! 2. black list: `A_c` minus its users;
//! 3. bound users and their IDs by `T.selection()`: own = IDs bound to `k`; own-else-global =
//!    per user the IDs bound to `k` if any, else the global ones; global = the global ones;
//! 4. black list: minus its IDs; white list: the IDs of its users, plus the other users' IDs
//!    that are in its IDs;
//! 5. duplicates removed; a user is *reached* on `c` when one of its IDs survived.
//!
//! The audience of the send is the union of the `A_c`; the unreachable users are those of the
//! audience that no channel reached. A plain send's caller wants the IDs and the counts: the
//! audience's size is counted when resolving, but the audience itself, the unreachable users
//! and the whole send's counts after them are computed on first use (`Resolution::unreachable`),
//! from what the resolution holds (the distinct `A_c` and each channel's reached users), so
//! they answer for the send as resolved whatever the registry does afterwards. Custom channel IDs (`aud_<type>`) go to every channel of
//! that type as they are, minus a black list's IDs or only a white list's IDs (a list's users
//! do not apply: custom IDs belong to no user).

use super::{code, refuse, Bindings, ChannelType, IdList, Selection, UmsRegistry, GLOBAL};
use crate::chunked;
use crate::containers::BITSET_WORDS;
use crate::error::Result;
use croaring::Bitmap;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Whom a send targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every live user (`/v1/template/broadcast`).
    Broadcast,
    /// `aud_tag`: users with any of these tags (per channel, see the module doc).
    Tags(Vec<String>),
    /// `aud_userid`: these users (unknown ones reach nobody).
    Users(UserNames),
    /// `aud_segment`: the live users of one user segment.
    Segment(String),
    /// `aud_<type>`: channel registration IDs per type, no users involved.
    Custom(Vec<(ChannelType, Vec<String>)>),
}

/// The userids of an `aud_userid` send, packed in one string: one allocation for a
/// 1000-userid send instead of one per userid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNames {
    text: String,
    /// Where each name ends in `text`.
    ends: Vec<usize>,
}

impl UserNames {
    pub fn new<'a, I>(names: I) -> Self
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        let names = names.into_iter();
        let mut out = UserNames {
            text: String::with_capacity(names.clone().map(str::len).sum()),
            ends: Vec::with_capacity(names.size_hint().0),
        };
        for n in names {
            out.text.push_str(n);
            out.ends.push(out.text.len());
        }
        out
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(a, &b)| &self.text[a..b])
            .collect()
    }
}

/// A send as the engine resolves it: the target, the template's channel keys, the lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendSpec {
    pub target: Target,
    pub channels: Vec<String>,
    pub black: Option<u64>,
    pub white: Option<u64>,
}

/// One channel's answer: ascending, distinct interned IDs and the users reached.
#[derive(Debug, Clone)]
pub struct ChannelResult {
    pub key: String,
    pub ty: ChannelType,
    pub ids: Vec<u32>,
    pub reached: Reached,
}

/// The users a channel reached: how many, and the bitmap of them, which a channel resolved by
/// a word walk (`walk`) builds from its words on first use (a plain send never asks for it).
///
/// Invariant: `count` is the size of the bitmap; `words` (when not empty) has exactly the
/// bitmap's bits set (value `v`: bit `v % 64` of word `v / 64`).
#[derive(Debug, Clone)]
pub struct Reached {
    count: u64,
    bitmap: OnceLock<Bitmap>,
    words: Vec<u64>,
}

impl Reached {
    pub fn of(users: Bitmap) -> Self {
        Reached {
            count: users.cardinality(),
            bitmap: OnceLock::from(users),
            words: Vec::new(),
        }
    }

    /// The users of the set bits of `words` (a whole number of containers' words), `count`
    /// of them.
    pub(super) fn of_words(words: Vec<u64>, count: u64) -> Self {
        debug_assert_eq!(chunked::count_ones(&words) as u64, count);
        Reached {
            count,
            bitmap: OnceLock::new(),
            words,
        }
    }

    /// How many users.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Add the users of key `k` to `words`.
    fn or_key(&self, words: &mut [u64; BITSET_WORDS], k: u16) {
        match self.bitmap.get() {
            Some(b) => chunked::or_key(words, b, k),
            None => {
                let at = usize::from(k) * BITSET_WORDS;
                if let Some(w) = self.words.get(at..at + BITSET_WORDS) {
                    for (x, y) in words.iter_mut().zip(w) {
                        *x |= y;
                    }
                }
            }
        }
    }

    /// The users (built on first use from the words of a walk).
    pub fn bitmap(&self) -> &Bitmap {
        self.bitmap
            .get_or_init(|| chunked::bitmap_of_words(&self.words))
    }
}

/// A count after one step of the resolution (`channel` is `None` for the whole send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub channel: Option<String>,
    pub step: &'static str,
    /// `"users"` or `"ids"`.
    pub unit: &'static str,
    pub count: u64,
}

/// The answer to a send.
///
/// Invariants: `audience_count` is the size of the union of `audiences` (empty for custom
/// channel IDs), every channel's `reached` is a subset of that union, and a filled
/// `unreachable` is that union minus every channel's `reached` (`route_apps`, which changes
/// `reached`, empties it again).
#[derive(Debug, Clone)]
pub struct Resolution {
    pub channels: Vec<ChannelResult>,
    /// The counts after each step of each channel (then the routing steps of `route_apps`);
    /// the whole send's are `whole_steps`.
    pub steps: Vec<Step>,
    /// The distinct audiences of the channels (one for every target but tags).
    audiences: Vec<Bitmap>,
    audience_count: u64,
    audience: OnceLock<Bitmap>,
    unreachable: OnceLock<Bitmap>,
}

impl Resolution {
    /// A resolution of `channels` over the users of `audiences` (distinct bitmaps).
    fn new(channels: Vec<ChannelResult>, steps: Vec<Step>, audiences: Vec<Bitmap>) -> Self {
        let audience = OnceLock::new();
        let audience_count = match &audiences[..] {
            [] => 0,
            [one] => one.cardinality(),
            [a, b] => a.or_cardinality(b),
            many => {
                let union = Bitmap::fast_or(&many.iter().collect::<Vec<_>>());
                let n = union.cardinality();
                let _ = audience.set(union);
                n
            }
        };
        Resolution {
            channels,
            steps,
            audiences,
            audience_count,
            audience,
            unreachable: OnceLock::new(),
        }
    }

    /// How many users the send targets on some channel (0 for custom channel IDs).
    pub fn audience_count(&self) -> u64 {
        self.audience_count
    }

    /// The users targeted on some channel (empty for custom channel IDs); built on first use.
    pub fn audience(&self) -> &Bitmap {
        self.audience.get_or_init(|| match &self.audiences[..] {
            [one] => one.clone(),
            many => Bitmap::fast_or(&many.iter().collect::<Vec<_>>()),
        })
    }

    /// The users of `audience` that no channel reached; computed on first use, key by key
    /// in parallel from the audiences and the channels' reached users as they are (words or
    /// bitmaps: no bitmap is built for a walked channel).
    pub fn unreachable(&self) -> &Bitmap {
        self.unreachable.get_or_init(|| {
            let keys = self.audiences.iter().filter_map(Bitmap::maximum).max();
            let keys = keys.map_or(0, |m| (m >> 16) as usize + 1);
            chunked::bitmap_by_keys(keys, |k, words| {
                for a in &self.audiences {
                    chunked::or_key(words, a, k);
                }
                let mut reached = [0u64; BITSET_WORDS];
                for c in &self.channels {
                    c.reached.or_key(&mut reached, k);
                }
                for (w, r) in words.iter_mut().zip(reached) {
                    *w &= !r;
                }
            })
        })
    }

    /// How many users some channel reached.
    pub fn reached_count(&self) -> u64 {
        self.audience_count - self.unreachable().cardinality()
    }

    /// The whole send's counts: audience, reached and unreachable users (computes
    /// `unreachable`).
    pub fn whole_steps(&self) -> Vec<Step> {
        let unreachable = self.unreachable().cardinality();
        [
            ("audience", self.audience_count),
            ("reached", self.audience_count - unreachable),
            ("unreachable", unreachable),
        ]
        .map(|(step, count)| Step {
            channel: None,
            step,
            unit: "users",
            count,
        })
        .to_vec()
    }

    /// Every step: the channels' (and routing's), then the whole send's.
    pub fn all_steps(&self) -> Vec<Step> {
        let mut out = self.steps.clone();
        out.extend(self.whole_steps());
        out
    }

    /// Forget `unreachable` after a channel's `reached` changed (`route_apps`).
    pub(super) fn reached_changed(&mut self) {
        self.unreachable = OnceLock::new();
    }
}

/// The list of a send, and whether it is a black (true) or white list.
type List<'a> = Option<(&'a IdList, bool)>;

/// A gather with more ascending runs than this is sorted rather than merged.
const MAX_RUNS: usize = 16;

/// A channel whose audience has at most this many users (and no list) is resolved user by
/// user (`small_channel`) instead of by bitmap intersections.
const SMALL_USERS: u64 = if cfg!(test) { 2 } else { 4096 };

/// Sends whose audience is smaller than this resolve their channels on one thread (the
/// channels are too cheap to pay for waking the others). Low in unit tests, so that their
/// sends take the large path (the Python property tests, on small registries, the other).
const PARALLEL_USERS: u64 = if cfg!(test) { 4 } else { 50_000 };

/// Ascending distinct IDs of a gather. A gather is a few ascending runs when IDs were interned
/// in user order (first IDs, then extras, of each binding): the runs are concatenated when
/// their ranges do not overlap (no copy at all when they are already in order) and merged
/// otherwise, in linear time; anything else is sorted.
pub(super) fn distinct(mut ids: Vec<u32>) -> Vec<u32> {
    let mut starts = vec![0];
    // Blocks without a descent are passed over by a branch-free (vectorised) test.
    const BLOCK: usize = 256;
    let mut at = 1;
    while at < ids.len() {
        let end = (at + BLOCK).min(ids.len());
        let ascending = ids[at - 1..end]
            .windows(2)
            .fold(true, |all, w| all & (w[0] < w[1]));
        if !ascending {
            for i in at..end {
                if ids[i - 1] >= ids[i] {
                    starts.push(i);
                }
            }
            if starts.len() > MAX_RUNS {
                ids.sort_unstable();
                ids.dedup();
                return ids;
            }
        }
        at = end;
    }
    if starts.len() == 1 {
        return ids;
    }
    starts.push(ids.len());
    let mut runs: Vec<&[u32]> = starts.windows(2).map(|w| &ids[w[0]..w[1]]).collect();
    runs.sort_unstable_by_key(|r| r[0]);
    if runs.windows(2).all(|w| w[0][w[0].len() - 1] < w[1][0]) {
        return runs.concat();
    }
    let mut out = runs[0].to_vec();
    for r in &runs[1..] {
        out = merge(&out, r);
    }
    out
}

/// One run of a gather: its ID range, its part, and whether it is the part's extra IDs.
pub(super) type Run = ((u32, u32), usize, bool);

/// The runs of a gather from `bindings` (the first IDs, then the extra IDs, of each; `usize`
/// is the index of the binding) in the order of their ranges, when every run is known to be
/// ascending (`Bindings::run_ranges`) and their ranges are disjoint: gathered in this order,
/// the IDs come out ascending and distinct. An empty run has no range and is left out.
pub(super) fn ordered_runs<'a>(bindings: impl Iterator<Item = &'a Bindings>) -> Option<Vec<Run>> {
    let ranges = bindings
        .map(Bindings::run_ranges)
        .collect::<Option<Vec<_>>>()?;
    let mut runs: Vec<Run> = ranges
        .into_iter()
        .enumerate()
        .flat_map(|(i, [f, e])| [f.map(|r| (r, i, false)), e.map(|r| (r, i, true))])
        .flatten()
        .collect();
    runs.sort_unstable();
    runs.windows(2)
        .all(|w| w[0].0 .1 < w[1].0 .0)
        .then_some(runs)
}

/// The distinct IDs, ascending, of the users of each part in its bindings. When every run
/// of the gather (first IDs and extras of each part) is known to be ascending and their
/// ranges do not overlap, the runs are gathered in the order of their ranges straight into
/// the answer; otherwise `distinct` sorts it out.
fn gather_distinct(parts: &[(&Bindings, Bitmap)], bound: usize) -> Vec<u32> {
    // Room for the extra IDs too (a regrown answer would be copied whole).
    let extras: u64 = parts
        .iter()
        .map(|(b, u)| u.and_cardinality(&b.multi) * 2)
        .sum();
    let mut out = Vec::with_capacity(bound + extras as usize);
    if let Some(runs) = ordered_runs(parts.iter().map(|(b, _)| *b)) {
        for (_, i, extras) in runs {
            let (b, users) = &parts[i];
            if extras {
                b.gather_extras(users, &mut out);
            } else {
                b.gather_first(users, &mut out);
            }
        }
        debug_assert!(out.windows(2).all(|w| w[0] < w[1]));
        return out;
    }
    for (b, users) in parts {
        b.gather(users, &mut out);
    }
    distinct(out)
}

/// The union of two ascending distinct slices, ascending and distinct.
fn merge(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        out.push(x.min(y));
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Whether the walk over `a`'s words (`walk`) pays: `a` holds at least one user in
/// `DENSE_IDS_PER_USER` of its id range (so most of its words hold one).
fn dense(a: &Bitmap) -> bool {
    a.maximum()
        .is_some_and(|m| a.cardinality() * super::DENSE_IDS_PER_USER > u64::from(m))
}

/// The users of `users` (each bound in `b`) with at least one ID passing `keep`.
fn users_keeping(b: &Bindings, users: &Bitmap, keep: impl Fn(u32) -> bool) -> Bitmap {
    let kept: Vec<u32> = users
        .iter()
        .filter(|&u| b.ids_of(u).into_iter().any(&keep))
        .collect();
    Bitmap::of(&kept)
}

impl UmsRegistry {
    /// Intern the custom channel IDs of a send, so that `resolve` finds them all (a send may
    /// name IDs no user was ever bound to). At most 1000 per type, as the request model checks.
    pub fn prepare(&mut self, spec: &SendSpec) -> Result<()> {
        if let Target::Custom(per_type) = &spec.target {
            for (_, ids) in per_type {
                ids.iter()
                    .try_for_each(|i| super::check_key("channel registration ID", i))?;
                for i in ids {
                    self.ids.intern(i);
                }
            }
        }
        Ok(())
    }

    fn list(&self, id: Option<u64>) -> Result<Option<&IdList>> {
        id.map(|l| {
            self.lists
                .get(&l)
                .ok_or_else(|| refuse(code::UNKNOWN_LIST, format!("list {l} does not exist")))
        })
        .transpose()
    }

    /// Resolve a send (see the module doc). Channels are resolved in parallel, unless the
    /// send is small (`PARALLEL_USERS`).
    pub fn resolve(&self, spec: &SendSpec) -> Result<Resolution> {
        let mut types = Vec::with_capacity(spec.channels.len());
        for k in &spec.channels {
            let ty = self.channel(k).ok_or_else(|| {
                refuse(
                    code::UNKNOWN_CHANNEL,
                    format!("channel {k:?} does not exist"),
                )
            })?;
            types.push(ty);
        }
        if spec.black.is_some() && spec.white.is_some() {
            return Err(refuse(
                code::BAD_OPTION,
                "black_id and white_id may not be given together".into(),
            ));
        }
        let list = match (self.list(spec.black)?, self.list(spec.white)?) {
            (Some(b), _) => Some((b, true)),
            (_, Some(w)) => Some((w, false)),
            _ => None,
        };
        let base = match &spec.target {
            Target::Broadcast => Some(self.live.clone()),
            Target::Users(names) => {
                let names = names.names();
                let mut ids: Vec<u32> = self
                    .users
                    .lookup_many(&names)
                    .into_iter()
                    .flatten()
                    .collect();
                ids.sort_unstable();
                // One intersection walks the containers once, where a `contains` per user
                // would search the container keys each time.
                let mut users = Bitmap::of(&ids);
                users.and_inplace(&self.live);
                Some(users)
            }
            Target::Segment(name) => Some(
                self.segments
                    .get(name)
                    .ok_or_else(|| {
                        refuse(
                            code::UNKNOWN_SEGMENT,
                            format!("segment {name:?} does not exist"),
                        )
                    })?
                    .and(&self.live),
            ),
            Target::Tags(_) | Target::Custom(_) => None,
        };
        // Per channel its audience: the base one, or the tags' own (borrowed when one bitmap).
        let audiences: Vec<Option<Cow<Bitmap>>> = spec
            .channels
            .iter()
            .map(|k| match (&spec.target, &base) {
                (Target::Tags(tags), _) => Some(self.tag_audience(tags, k)),
                (_, Some(b)) => Some(Cow::Borrowed(b)),
                _ => None,
            })
            .collect();
        let users: u64 = audiences.iter().flatten().map(|a| a.cardinality()).sum();
        let one = |i: usize| {
            let (k, ty) = (&spec.channels[i], types[i]);
            match (&audiences[i], &spec.target) {
                (None, Target::Custom(per_type)) => self.custom_channel(k, ty, per_type, list),
                (Some(a), _) => self.user_channel(k, ty, a, list),
                (None, _) => unreachable!("a user-class target has an audience per channel"),
            }
        };
        let n = spec.channels.len();
        let resolve_all = || -> Vec<(ChannelResult, Vec<Step>)> {
            if users < PARALLEL_USERS {
                return (0..n).map(one).collect();
            }
            // The largest channels first, each to the next free thread: channels differ a lot
            // in cost (a send's app and SMS channels may be most of it), and an even split of
            // the list leaves one thread idle while the other finishes a large one.
            let cost = |i: usize| {
                audiences[i]
                    .as_ref()
                    .map_or(0.0, |a| self.channel_cost(&spec.channels[i], types[i], a))
            };
            let mut order: Vec<(f64, usize)> = (0..n).map(|i| (cost(i), i)).collect();
            order.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
            let next = AtomicUsize::new(0);
            let done: Vec<OnceLock<(ChannelResult, Vec<Step>)>> =
                (0..n).map(|_| OnceLock::new()).collect();
            (0..rayon::current_num_threads())
                .into_par_iter()
                .with_max_len(1)
                .for_each(|_| {
                    while let Some(&(_, i)) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let _ = done[i].set(one(i));
                    }
                });
            done.into_iter()
                .map(|d| d.into_inner().expect("every channel is resolved"))
                .collect()
        };
        // The distinct audiences, owned by the resolution (for its audience and unreachable
        // users on demand): tag bitmaps are copied while the channels resolve.
        let (per_channel, copies) = if let Target::Tags(_) = spec.target {
            let mut distinct: Vec<&Bitmap> = Vec::new();
            for a in audiences.iter().flatten() {
                if !distinct.iter().any(|d| std::ptr::eq(*d, a.as_ref())) {
                    distinct.push(a.as_ref());
                }
            }
            let copy = || distinct.iter().map(|&b| b.clone()).collect();
            if users >= PARALLEL_USERS {
                rayon::join(resolve_all, copy)
            } else {
                (resolve_all(), copy())
            }
        } else {
            (resolve_all(), Vec::new())
        };
        let audiences = match spec.target {
            Target::Tags(_) => copies,
            Target::Custom(_) => Vec::new(),
            _ => base.into_iter().collect(),
        };
        let mut channels = Vec::with_capacity(per_channel.len());
        let mut steps = Vec::new();
        for (r, s) in per_channel {
            channels.push(r);
            steps.extend(s);
        }
        Ok(Resolution::new(channels, steps, audiences))
    }

    /// The users of the tags on channel `key`: per tag the users with it bound to `key`, or
    /// the global binding when nobody has it bound to `key`.
    fn tag_audience(&self, tags: &[String], key: &str) -> Cow<'_, Bitmap> {
        let scope = self.scope(key);
        let parts: Vec<&Bitmap> = tags
            .iter()
            .filter_map(|t| {
                let t = self.tags.lookup(t)?;
                let own = scope
                    .and_then(|s| self.tag_users.get(&(t, s)))
                    .filter(|b| !b.is_empty());
                own.or_else(|| self.tag_users.get(&(t, GLOBAL)))
            })
            .collect();
        match parts[..] {
            [one] => Cow::Borrowed(one),
            _ => Cow::Owned(Bitmap::fast_or(&parts)),
        }
    }

    /// A rough cost of resolving channel `key` over audience `a`, to start the costly
    /// channels first: per binding read, the users of `a` expected bound there (as if
    /// independent of `a`), extra IDs four times (a lookup each), and the words of `a`'s range.
    fn channel_cost(&self, key: &str, ty: ChannelType, a: &Bitmap) -> f64 {
        let own = self.scope(key).and_then(|s| self.bindings.get(&(ty, s)));
        let global = self.bindings.get(&(ty, GLOBAL));
        let read = match ty.selection() {
            Selection::Own => [own, None],
            Selection::Global => [global, None],
            Selection::OwnElseGlobal => [own, global],
        };
        let range = f64::from(a.maximum().unwrap_or(0)) + 1.0;
        let share = a.cardinality() as f64 / range;
        let bound: f64 = read
            .into_iter()
            .flatten()
            .map(|b| (b.users.cardinality() + 4 * b.multi.cardinality()) as f64)
            .sum();
        share * bound + range / 64.0
    }

    /// The bindings a channel's IDs come from, each with the users of `a` taken from it.
    pub(super) fn select<'a>(
        &'a self,
        key: &str,
        ty: ChannelType,
        a: &Bitmap,
    ) -> Vec<(&'a Bindings, Bitmap)> {
        let own = self.scope(key).and_then(|s| self.bindings.get(&(ty, s)));
        let global = self.bindings.get(&(ty, GLOBAL));
        match ty.selection() {
            Selection::Own => own.map(|b| vec![(b, a.and(&b.users))]).unwrap_or_default(),
            Selection::Global => global
                .map(|b| vec![(b, a.and(&b.users))])
                .unwrap_or_default(),
            Selection::OwnElseGlobal => {
                let mut out = Vec::new();
                let mut rest = a.clone();
                if let Some(b) = own {
                    out.push((b, a.and(&b.users)));
                    rest.andnot_inplace(&b.users);
                }
                if let Some(b) = global {
                    out.push((b, rest.and(&b.users)));
                }
                out
            }
        }
    }

    /// Steps 3 and 5 of the module doc for a small audience and no list, user by user: each
    /// user's binding by `ty.selection()`, its IDs, and whether it is reached (no bitmap
    /// intersections, which would cost a container walk per binding for a few users).
    /// Returns the distinct IDs, the users reached and how many users are bound.
    fn small_channel(&self, key: &str, ty: ChannelType, a: &Bitmap) -> (Vec<u32>, Bitmap, u64) {
        let own = self.scope(key).and_then(|s| self.bindings.get(&(ty, s)));
        let global = self.bindings.get(&(ty, GLOBAL));
        let (first, then) = match ty.selection() {
            Selection::Own => (own, None),
            Selection::Global => (global, None),
            Selection::OwnElseGlobal => (own, global),
        };
        // Column by column over all the users (independent lookups: their cache misses overlap).
        let users = a.to_vec();
        let firsts = |b: Option<&Bindings>| -> Vec<u32> {
            b.map_or_else(
                || vec![super::NONE; users.len()],
                |b| b.first.get_many(&users),
            )
        };
        let (f1, f2) = (firsts(first), firsts(then));
        // The same for where the users' extra IDs begin, in bindings that have any.
        let extras_at = |b: Option<&Bindings>| {
            b.filter(|b| !b.multi.is_empty())
                .map(|b| b.extras_at_many(&users))
        };
        let (e1, e2) = (extras_at(first), extras_at(then));
        let (mut ids, mut reached) = (Vec::new(), Vec::new());
        for (i, &u) in users.iter().enumerate() {
            let (b, id, extras) = if f1[i] != super::NONE {
                (first, f1[i], &e1)
            } else {
                (then, f2[i], &e2)
            };
            if let (Some(b), true) = (b, id != super::NONE) {
                ids.push(id);
                if let Some(at) = extras {
                    ids.extend_from_slice(b.extras_from(at[i]));
                }
                reached.push(u);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let n = reached.len() as u64;
        (ids, Bitmap::of(&reached), n)
    }

    /// One channel of a user-class send, over its audience `a` (also used by `stages`: a
    /// later stage is this over the users that earlier stages did not deliver to).
    pub(super) fn user_channel(
        &self,
        key: &str,
        ty: ChannelType,
        a: &Bitmap,
        list: List,
    ) -> (ChannelResult, Vec<Step>) {
        let mut steps = Vec::new();
        let mut step = |step: &'static str, unit: &'static str, count: u64| {
            steps.push(Step {
                channel: Some(key.to_owned()),
                step,
                unit,
                count,
            })
        };
        step("audience", "users", a.cardinality());
        let plain = list.is_none();
        let walked = (plain && dense(a))
            .then(|| self.walk_channel(key, ty, a))
            .flatten();
        let (ids, reached) = if let Some((ids, reached, bound)) = walked {
            step("bound", "users", bound);
            step("ids", "ids", ids.len() as u64);
            (ids, reached)
        } else if plain && a.cardinality() <= SMALL_USERS {
            let (ids, reached, bound) = self.small_channel(key, ty, a);
            step("bound", "users", bound);
            step("ids", "ids", ids.len() as u64);
            (ids, Reached::of(reached))
        } else {
            let (ids, reached) = self.bitmap_channel(key, ty, a, list, &mut step);
            (ids, Reached::of(reached))
        };
        step("reached", "users", reached.count());
        let result = ChannelResult {
            key: key.to_owned(),
            ty,
            ids,
            reached,
        };
        (result, steps)
    }

    /// Steps 3 to 5 of the module doc over bitmaps (any audience, any list): the distinct IDs
    /// and the users reached; every count after a step goes to `step`.
    pub(super) fn bitmap_channel(
        &self,
        key: &str,
        ty: ChannelType,
        a: &Bitmap,
        list: List,
        step: &mut impl FnMut(&'static str, &'static str, u64),
    ) -> (Vec<u32>, Bitmap) {
        let filtered;
        let a = match list {
            Some((l, true)) => {
                filtered = a.andnot(&l.users);
                step("black_list_users", "users", filtered.cardinality());
                &filtered
            }
            _ => a,
        };
        let parts = self.select(key, ty, a);
        let bound: u64 = parts.iter().map(|(_, u)| u.cardinality()).sum();
        step("bound", "users", bound);
        let all = gather_distinct(&parts, bound as usize);
        step("ids", "ids", all.len() as u64);
        match list {
            None => (all, union(parts.iter().map(|(_, u)| u))),
            Some((l, true)) if l.ids.is_empty() => (all, union(parts.iter().map(|(_, u)| u))),
            Some((l, true)) => {
                let ids: Vec<u32> = all.into_iter().filter(|&i| !l.ids.contains(i)).collect();
                step("black_list_ids", "ids", ids.len() as u64);
                let reached = union(
                    parts
                        .iter()
                        .map(|(b, u)| users_keeping(b, u, |i| !l.ids.contains(i)))
                        .collect::<Vec<_>>()
                        .iter(),
                );
                (ids, reached)
            }
            Some((l, false)) => {
                let mut ids = Vec::new();
                let mut reached = Bitmap::new();
                for (b, users) in &parts {
                    let listed = users.and(&l.users);
                    b.gather(&listed, &mut ids);
                    reached.or_inplace(&listed);
                    if !l.ids.is_empty() {
                        let rest = users.andnot(&l.users);
                        let mut more = Vec::new();
                        b.gather(&rest, &mut more);
                        ids.extend(more.into_iter().filter(|&i| l.ids.contains(i)));
                        reached.or_inplace(&users_keeping(b, &rest, |i| l.ids.contains(i)));
                    }
                }
                let ids = distinct(ids);
                step("white_list", "ids", ids.len() as u64);
                (ids, reached)
            }
        }
    }

    /// One channel of a custom-ID send: the IDs given for its type, through the list's IDs.
    fn custom_channel(
        &self,
        key: &str,
        ty: ChannelType,
        per_type: &[(ChannelType, Vec<String>)],
        list: List,
    ) -> (ChannelResult, Vec<Step>) {
        let given: Vec<u32> = per_type
            .iter()
            .filter(|(t, _)| *t == ty)
            .flat_map(|(_, ids)| ids.iter().filter_map(|i| self.ids.lookup(i)))
            .collect();
        let given = distinct(given);
        let mut steps = vec![Step {
            channel: Some(key.to_owned()),
            step: "ids",
            unit: "ids",
            count: given.len() as u64,
        }];
        let ids: Vec<u32> = match list {
            None => given,
            Some((l, black)) => {
                let ids: Vec<u32> = given
                    .into_iter()
                    .filter(|&i| l.ids.contains(i) != black)
                    .collect();
                steps.push(Step {
                    channel: Some(key.to_owned()),
                    step: if black {
                        "black_list_ids"
                    } else {
                        "white_list"
                    },
                    unit: "ids",
                    count: ids.len() as u64,
                });
                ids
            }
        };
        let result = ChannelResult {
            key: key.to_owned(),
            ty,
            ids,
            reached: Reached::of(Bitmap::new()),
        };
        (result, steps)
    }
}

fn union<'a>(bitmaps: impl Iterator<Item = &'a Bitmap>) -> Bitmap {
    let v: Vec<&Bitmap> = bitmaps.collect();
    Bitmap::fast_or(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::ums::tests::{drawn_registry, drawn_user, user, DRAWN_CHANNELS};
    use ChannelType::*;

    /// u0: tag t on app1, app ID on app1, phone on sms1 and globally, DingTalk globally;
    /// u1: tag t globally, app ID globally only, phone globally; u2: tag t globally, nothing bound.
    fn reg() -> UmsRegistry {
        let mut r = UmsRegistry::new();
        for (k, ty) in [("app1", App), ("sms1", Sms), ("ding", DingtalkCc)] {
            r.add_channel(k, ty).unwrap();
        }
        r.upsert_user(&user(
            "u0",
            &[("app1", &["t"])],
            &[
                ("app1", App, &["a0"]),
                ("sms1", Sms, &["p0own"]),
                ("all", Sms, &["p0"]),
                ("all", DingtalkCc, &["d0"]),
            ],
        ))
        .unwrap();
        r.upsert_user(&user(
            "u1",
            &[("all", &["t"])],
            &[("all", App, &["a1"]), ("all", Sms, &["p1"])],
        ))
        .unwrap();
        r.upsert_user(&user("u2", &[("all", &["t"])], &[])).unwrap();
        r
    }

    fn send(target: Target, black: Option<u64>, white: Option<u64>) -> SendSpec {
        let channels = ["app1", "sms1", "ding"].map(String::from).to_vec();
        SendSpec {
            target,
            channels,
            black,
            white,
        }
    }

    fn strings(r: &UmsRegistry, res: &Resolution) -> Vec<Vec<String>> {
        let ids = |c: &ChannelResult| c.ids.iter().map(|&i| r.channel_id(i).to_owned()).collect();
        res.channels.iter().map(ids).collect()
    }

    #[test]
    fn distinct_concatenates_merges_or_sorts() {
        assert_eq!(distinct(vec![]), Vec::<u32>::new());
        assert_eq!(distinct(vec![1, 2, 5]), [1, 2, 5]);
        // Disjoint runs out of order: concatenated in order.
        assert_eq!(distinct(vec![7, 8, 1, 2, 4, 5]), [1, 2, 4, 5, 7, 8]);
        // Overlapping runs with shared IDs: merged.
        assert_eq!(distinct(vec![1, 4, 9, 2, 4, 10, 4]), [1, 2, 4, 9, 10]);
        // More runs than MAX_RUNS: sorted.
        let many: Vec<u32> = (0..100).rev().chain(0..3).collect();
        assert_eq!(distinct(many), (0..100).collect::<Vec<_>>());
        assert_eq!(merge(&[1, 3], &[2, 3, 4]), [1, 2, 3, 4]);
    }

    proptest::proptest! {
        /// `distinct` is sort + dedup, whatever the runs.
        #[test]
        fn distinct_is_sort_dedup(
            runs in proptest::collection::vec(proptest::collection::vec(0u32..200, 0..40), 0..24)
        ) {
            let ids: Vec<u32> = runs.into_iter().flat_map(|mut r| { r.sort_unstable(); r }).collect();
            let mut want = ids.clone();
            want.sort_unstable();
            want.dedup();
            proptest::prop_assert_eq!(distinct(ids), want);
        }
    }

    proptest::proptest! {
        /// The user-by-user path of small audiences gives what the bitmap path gives.
        #[test]
        fn small_channels_match_the_bitmap_path(
            users in proptest::collection::vec(
                (0usize..30, proptest::collection::vec((0usize..4, 0usize..3, 0u32..12), 0..5)),
                1..60,
            ),
            audience in proptest::collection::vec(0u32..30, 3..30),
        ) {
            let mut r = drawn_registry();
            // Upserts in any order, some repeated: columns go late, slots are reused.
            for (u, binds) in &users {
                r.upsert_user(&drawn_user(&format!("u{u}"), binds, 3)).unwrap();
            }
            let mut a: Vec<u32> = audience.into_iter().filter(|&u| r.live.contains(u)).collect();
            a.sort_unstable();
            a.dedup();
            proptest::prop_assume!(a.len() as u64 > SMALL_USERS);
            let a = Bitmap::of(&a);
            for (k, ty) in DRAWN_CHANNELS {
                let (big, _) = r.user_channel(k, ty, &a, None);
                let (ids, reached, bound) = r.small_channel(k, ty, &a);
                proptest::prop_assert_eq!(&big.ids, &ids);
                proptest::prop_assert_eq!(big.reached.bitmap().to_vec(), reached.to_vec());
                proptest::prop_assert_eq!(bound, reached.cardinality());
            }
        }
    }

    #[test]
    fn per_channel_selection_follows_the_seed() {
        let r = reg();
        // app1 has its own binding of t (u0 only); sms1 and ding fall back to the global t.
        let res = r
            .resolve(&send(Target::Tags(vec!["t".into()]), None, None))
            .unwrap();
        assert_eq!(strings(&r, &res), [vec!["a0"], vec!["p1"], vec![]]);
        // The audience joins app1's own `t` (u0) and the global one (u1, u2) of the others.
        assert_eq!(res.audience().to_vec(), vec![0, 1, 2]);
        assert_eq!(res.unreachable().to_vec(), vec![2]);
        let res = r.resolve(&send(Target::Broadcast, None, None)).unwrap();
        assert_eq!(
            strings(&r, &res),
            [vec!["a0"], vec!["p0own", "p1"], vec!["d0"]]
        );
        let last = res.all_steps().pop().unwrap();
        assert_eq!((last.step, last.count), ("unreachable", 1));
    }

    #[test]
    fn lists_filter_users_and_ids() {
        let mut r = reg();
        r.add_list(1, &["u1"], &["p0own"]).unwrap();
        let res = r.resolve(&send(Target::Broadcast, Some(1), None)).unwrap();
        assert_eq!(strings(&r, &res), [vec!["a0"], vec![], vec!["d0"]]);
        let res = r.resolve(&send(Target::Broadcast, None, Some(1))).unwrap();
        assert_eq!(strings(&r, &res), [vec![], vec!["p0own", "p1"], vec![]]);
        assert_eq!(res.unreachable().to_vec(), vec![2]);
    }

    #[test]
    fn custom_ids_and_refusals() {
        let mut r = reg();
        let spec = send(
            Target::Custom(vec![(Sms, vec!["x".into(), "p1".into(), "x".into()])]),
            None,
            None,
        );
        r.prepare(&spec).unwrap();
        let res = r.resolve(&spec).unwrap();
        assert_eq!(strings(&r, &res), [vec![], vec!["p1", "x"], vec![]]);
        assert!(res.audience().is_empty());
        let code = |spec: &SendSpec| match r.resolve(spec) {
            Err(Error::Invalid { code, .. }) => code,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert_eq!(
            code(&send(Target::Segment("s".into()), None, None)),
            code::UNKNOWN_SEGMENT
        );
        assert_eq!(
            code(&send(Target::Broadcast, Some(9), None)),
            code::UNKNOWN_LIST
        );
        assert_eq!(
            code(&send(Target::Broadcast, Some(9), Some(9))),
            code::BAD_OPTION
        );
        let mut s = send(Target::Broadcast, None, None);
        s.channels.push("nope".into());
        assert_eq!(code(&s), code::UNKNOWN_CHANNEL);
    }
}
