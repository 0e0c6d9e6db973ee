//! The app channel of a template send, routed through a JPush app's device registry
//! (`app_para`).
//!
//! A UMS app channel's IDs are JPush registration IDs. Routed, an ID goes out only when it is a
//! live device of the app on one of `app_para.platform`'s platforms (none given: every
//! platform); its batches are split by platform and Android vendor as JPush's are; it delivers
//! when its device was online at the send, or (`time_to_live` > 0) came online within
//! `time_to_live` seconds after its stage went out (`delivering`), as JPush pushes do in the
//! emulator.
//!
//! Invariants of `AppDevices`: `pairs` ascend by UMS id and hold exactly the routable IDs, each
//! with its device id; `routable` is the set of their UMS ids; `online` ⊆ `routable`;
//! `arrivals` ascend by time and hold routable ids only.

use super::stages::Members;
use super::UmsRegistry;
use crate::registry::{Platform, Registry};
use crate::route;
use croaring::Bitmap;
use rayon::prelude::*;
use std::borrow::Cow;

/// The IDs of an app channel as devices of one JPush app, under a platform filter.
#[derive(Debug, Clone, Default)]
pub struct AppDevices {
    pairs: Vec<(u32, u32)>,
    /// The UMS ids (interned channel IDs) that are live devices on the platforms.
    pub routable: Bitmap,
    /// The routable ids whose device was online at the send (they deliver).
    pub online: Bitmap,
    /// When routable ids' devices came online: (UMS id, seconds after the send), by time.
    arrivals: Vec<(u32, f64)>,
    /// The send's `app_para.time_to_live` in seconds (0: only `online` delivers).
    ttl: u64,
}

/// The IDs of one JPush delivery group: one platform and, on Android, one vendor channel; a
/// JPush batch whose `ids` are UMS ids (interned channel IDs), ascending.
pub type AppGroup = route::Batch;

impl AppDevices {
    /// Look up the UMS ids `ids` (ascending) in `devices`, keeping the live devices on
    /// `platforms` (`None`: every platform). `map` caches the look-ups between sends (see
    /// `DeviceMap`); pass a fresh one to look every ID up.
    pub fn new(
        ums: &UmsRegistry,
        ids: &[u32],
        devices: &Registry,
        platforms: Option<&[Platform]>,
        map: &mut DeviceMap,
    ) -> Self {
        let found = map.lookup(ums, ids, devices);
        // Many IDs: test them on dense copies of the live devices on the platforms and of the
        // online ones (a pass over the registry's bitmaps, then a bit test per ID); a few: one
        // bitmap search per test.
        let tests = ids.len() as u64;
        let dense = tests >= (devices.capacity() as u64 / 64).max(4096);
        let allowed = dense.then(|| {
            let mut ok = devices.live().clone();
            if let Some(ps) = platforms {
                let mut any = Bitmap::new();
                for &p in ps {
                    any.or_inplace(devices.platform_bitmap(p));
                }
                ok.and_inplace(&any);
            }
            ok
        });
        let allowed = allowed.as_ref().map(|b| Members::new(b, u64::MAX));
        let routable = |d: u32| match &allowed {
            Some(ok) => ok.contains(d),
            None => {
                devices.live().contains(d)
                    && platforms
                        .is_none_or(|ps| ps.iter().any(|&p| devices.platform_bitmap(p).contains(d)))
            }
        };
        let pairs: Vec<(u32, u32)> = ids
            .iter()
            .zip(found)
            .filter(|&(_, d)| d != NO_DEVICE && routable(d))
            .map(|(&i, d)| (i, d))
            .collect();
        let on = Members::new(devices.online_bitmap(), if dense { u64::MAX } else { 0 });
        let online: Vec<u32> = pairs
            .iter()
            .filter(|p| on.contains(p.1))
            .map(|p| p.0)
            .collect();
        let routable: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        AppDevices {
            routable: Bitmap::of(&routable),
            online: Bitmap::of(&online),
            pairs,
            arrivals: Vec::new(),
            ttl: 0,
        }
    }

    /// The same routing with the devices online at the send given (UMS ids) instead of read
    /// from the JPush registry: a send resolved after it went out (the emulator's later
    /// stages) must not count devices that came online since as online at the send.
    pub fn with_online(mut self, online: &Bitmap) -> Self {
        self.online = self.routable.and(online);
        self
    }

    /// The same routing with the times (seconds after the send) at which devices came online
    /// (`events`: UMS ids; those not routable are ignored) and the send's `time_to_live`.
    pub fn with_arrivals(mut self, events: &[(u32, f64)], ttl: u64) -> Self {
        self.arrivals = events
            .iter()
            .copied()
            .filter(|&(i, t)| t.is_finite() && self.routable.contains(i))
            .collect();
        self.arrivals.sort_unstable_by(|a, b| a.1.total_cmp(&b.1));
        self.ttl = ttl;
        self
    }

    /// Whether a stage's delivery depends on when it is looked at (devices came online after
    /// the send and `time_to_live` lets them receive it).
    pub fn has_arrivals(&self) -> bool {
        self.ttl > 0 && !self.arrivals.is_empty()
    }

    /// The routable ids that received a stage sent `at` seconds after the send, as seen just
    /// before `until` seconds after it (`f64::INFINITY`: by the end of its `time_to_live`):
    /// online at the send, or (`time_to_live` > 0) came online at a time `t` with
    /// `at <= t <= at + time_to_live` and `t < until`.
    pub fn delivering(&self, at: f64, until: f64) -> Cow<'_, Bitmap> {
        if !self.has_arrivals() {
            return Cow::Borrowed(&self.online);
        }
        let end = at + self.ttl as f64;
        let late: Vec<u32> = self
            .arrivals
            .iter()
            .skip_while(|&&(_, t)| t < at)
            .take_while(|&&(_, t)| t <= end && t < until)
            .map(|&(i, _)| i)
            .collect();
        if late.is_empty() {
            return Cow::Borrowed(&self.online);
        }
        let mut out = self.online.clone();
        out.add_many(&late);
        Cow::Owned(out)
    }

    /// Split routable UMS ids into JPush's delivery groups (`route::batches` over their
    /// devices, uncapped); ids that are not routable are left out.
    pub fn groups(&self, devices: &Registry, ids: &[u32], apns_production: bool) -> Vec<AppGroup> {
        // `ids` and `pairs` both ascend by UMS id: one merge, no search per id.
        let mut by_device: Vec<(u32, u32)> = Vec::with_capacity(ids.len().min(self.pairs.len()));
        let mut j = 0;
        for &i in ids {
            j += gallop(&self.pairs[j..], |p| p.0 < i);
            match self.pairs.get(j) {
                Some(&(u, d)) if u == i => by_device.push((d, i)),
                _ => {}
            }
        }
        if !by_device.is_sorted() {
            by_device.sort_unstable();
        }
        let bitmap = Bitmap::of(&by_device.iter().map(|p| p.0).collect::<Vec<_>>());
        route::batches(devices, &bitmap, usize::MAX, apns_production)
            .into_iter()
            .map(|b| {
                // A batch's devices ascend and are among `by_device`'s: one forward walk.
                let mut k = 0;
                let mut ids: Vec<u32> = b
                    .ids
                    .iter()
                    .map(|&d| {
                        k += gallop(&by_device[k..], |p| p.0 < d);
                        debug_assert_eq!(by_device[k].0, d, "a batch holds devices of the ids");
                        by_device[k].1
                    })
                    .collect();
                if !ids.is_sorted() {
                    ids.sort_unstable();
                }
                AppGroup { ids, ..b }
            })
            .collect()
    }
}

/// How many leading items of `items` satisfy `before` (a prefix predicate: true, then false),
/// by galloping: O(log k) for an answer k, so a forward walk over an ascending list is
/// linear in the steps taken, not in the list.
fn gallop<T>(items: &[T], before: impl Fn(&T) -> bool) -> usize {
    let mut hi = 1;
    while hi <= items.len() && before(&items[hi - 1]) {
        hi *= 2;
    }
    let lo = hi / 2;
    let hi = hi.min(items.len());
    lo + items[lo..hi].partition_point(&before)
}

/// IDs looked up per task when a send finds many not looked up yet (a cold map).
const LOOKUP_SLICE: usize = if cfg!(test) { 2 } else { 16_384 };

/// A JPush device id that no UMS channel ID has.
pub const NO_DEVICE: u32 = u32::MAX;
/// Not looked up yet.
const UNKNOWN: u32 = u32::MAX - 1;

/// The JPush device of UMS channel IDs, looked up once per ID and kept between sends, for one
/// UMS registry and one JPush registry (the caller keeps one per pair).
///
/// Why no UMS-side invalidation is needed: both registries intern strings append-only, so a
/// UMS id's string never changes and a string's device id never changes once interned; what
/// does change (bindings on the UMS side; live, platform, online on the JPush side) is read
/// fresh at every send, never cached. The only stale entries can be `NO_DEVICE` ones, when
/// the JPush registry interns new registration IDs: `seen` (its interned count when the map
/// was last brought up to date) detects that, and those entries are looked up again.
///
/// Invariants: `dev[k]` is the device of UMS id `first + k` in the JPush registry as it was
/// with `seen` interned IDs, `NO_DEVICE` when it had none, or `UNKNOWN`.
#[derive(Debug, Default, Clone)]
pub struct DeviceMap {
    seen: usize,
    first: u32,
    dev: Vec<u32>,
}

impl DeviceMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// The device of each of `ids` (ascending UMS ids) in `devices`, `NO_DEVICE` for none
    /// (deleted devices included: the caller checks liveness).
    pub fn lookup(&mut self, ums: &UmsRegistry, ids: &[u32], devices: &Registry) -> Vec<u32> {
        self.catch_up(ums, devices);
        let (Some(&lo), Some(&hi)) = (ids.first(), ids.last()) else {
            return Vec::new();
        };
        self.cover(lo, hi);
        let first = self.first;
        let mut out: Vec<u32> = ids
            .iter()
            .map(|&i| self.dev[(i - first) as usize])
            .collect();
        let missing: Vec<usize> = (0..ids.len()).filter(|&k| out[k] == UNKNOWN).collect();
        if !missing.is_empty() {
            // Batched lookups (hashes first, then prefetched probes) instead of one per ID, in
            // slices on all cores when many (a first send looks up every ID of its channel).
            let names: Vec<&str> = missing
                .par_iter()
                .with_min_len(LOOKUP_SLICE)
                .map(|&k| ums.channel_id(ids[k]))
                .collect();
            let found: Vec<Option<u32>> = names
                .par_chunks(LOOKUP_SLICE)
                .flat_map_iter(|slice| devices.devices.lookup_many(slice))
                .collect();
            for (&k, d) in missing.iter().zip(found) {
                debug_assert!(
                    d.is_none_or(|d| d < UNKNOWN),
                    "device ids stay below the markers"
                );
                let d = d.unwrap_or(NO_DEVICE);
                out[k] = d;
                self.dev[(ids[k] - first) as usize] = d;
            }
        }
        out
    }

    /// Bring `NO_DEVICE` entries up to date with the registration IDs `devices` interned since
    /// `seen`: those IDs are looked up on the UMS side when they are fewer than the entries,
    /// else every `NO_DEVICE` entry is forgotten (looked up again when asked for).
    fn catch_up(&mut self, ums: &UmsRegistry, devices: &Registry) {
        let now = devices.capacity();
        if now < self.seen {
            *self = Self::default(); // another registry: interning never shrinks one
        }
        if now == self.seen {
            return;
        }
        if now - self.seen < self.dev.len() {
            for d in self.seen as u32..now as u32 {
                let Some(u) = ums.channel_id_of(&devices.registration_id(d)) else {
                    continue;
                };
                let at = u.wrapping_sub(self.first) as usize;
                if self.dev.get(at) == Some(&NO_DEVICE) {
                    self.dev[at] = d;
                }
            }
        } else {
            for d in self.dev.iter_mut().filter(|d| **d == NO_DEVICE) {
                *d = UNKNOWN;
            }
        }
        self.seen = now;
    }

    /// Extend the map to cover UMS ids `lo..=hi`.
    fn cover(&mut self, lo: u32, hi: u32) {
        if self.dev.is_empty() {
            self.first = lo;
        }
        if lo < self.first {
            let grow = (self.first - lo) as usize;
            self.dev.splice(0..0, std::iter::repeat_n(UNKNOWN, grow));
            self.first = lo;
        }
        let end = (hi - self.first) as usize + 1;
        if end > self.dev.len() {
            self.dev.resize(end, UNKNOWN);
        }
    }

    /// Bytes held.
    pub fn memory_usage(&self) -> usize {
        self.dev.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Vendor;
    use crate::ums::tests::user;
    use crate::ums::ChannelType;

    #[test]
    fn routes_live_devices_on_the_platforms() {
        let mut ums = UmsRegistry::new();
        ums.add_channel("app1", ChannelType::App).unwrap();
        ums.upsert_user(&user(
            "u",
            &[],
            &[(
                "app1",
                ChannelType::App,
                &["r-and", "r-ios", "r-gone", "r-none"],
            )],
        ))
        .unwrap();
        let mut dev = Registry::new();
        dev.upsert(
            "r-and",
            Platform::Android,
            Some(Vendor::Xiaomi),
            &[],
            None,
            None,
            true,
        )
        .unwrap();
        dev.upsert("r-ios", Platform::Ios, None, &[], None, None, false)
            .unwrap();
        dev.upsert("r-gone", Platform::Ios, None, &[], None, None, true)
            .unwrap();
        dev.delete("r-gone");
        let ids: Vec<u32> = (0..4).collect();
        let mut map = DeviceMap::new();
        let all = AppDevices::new(&ums, &ids, &dev, None, &mut map);
        assert_eq!(all.routable.to_vec(), vec![0, 1]);
        assert_eq!(all.online.to_vec(), vec![0]);
        let groups = all.groups(&dev, &ids, false);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].platform, groups[0].vendor, &groups[0].ids),
            (Platform::Android, Some(Vendor::Xiaomi), &vec![0])
        );
        assert_eq!(
            (
                groups[1].platform,
                groups[1].apns_production,
                &groups[1].ids
            ),
            (Platform::Ios, Some(false), &vec![1])
        );
        let ios = AppDevices::new(&ums, &ids, &dev, Some(&[Platform::Ios]), &mut map);
        assert_eq!(ios.routable.to_vec(), vec![1]);
        assert!(ios.online.is_empty());

        // r-ios (1) comes online 30 s after the send; 3 is not routable, so it is ignored
        let late = all.clone().with_arrivals(&[(1, 30.0), (3, 1.0)], 60);
        assert!(late.has_arrivals());
        assert_eq!(late.delivering(0.0, f64::INFINITY).to_vec(), vec![0, 1]);
        assert_eq!(late.delivering(0.0, 30.0).to_vec(), vec![0]); // before it came online
        assert_eq!(late.delivering(0.0, 30.5).to_vec(), vec![0, 1]);
        assert_eq!(late.delivering(31.0, f64::INFINITY).to_vec(), vec![0]); // sent after
        let short = all.clone().with_arrivals(&[(1, 30.0)], 20);
        assert_eq!(short.delivering(0.0, f64::INFINITY).to_vec(), vec![0]); // after its ttl
        let none = all.clone().with_arrivals(&[(1, 30.0)], 0);
        assert!(!none.has_arrivals());
        assert_eq!(none.delivering(0.0, f64::INFINITY).to_vec(), vec![0]);
        let given = all.with_online(&Bitmap::of(&[1, 3]));
        assert_eq!(given.online.to_vec(), vec![1]);
    }

    /// Many IDs (the dense path: bit tests on copies of the registry's bitmaps) route as a
    /// device-by-device check does.
    #[test]
    fn many_ids_route_like_one_by_one() {
        let mut ums = UmsRegistry::new();
        let mut dev = Registry::new();
        let n = 9000u32;
        let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        ums.set_undeliverable(&refs, &[]).unwrap(); // interns them: UMS ids 0..n
        for i in (0..n).filter(|i| i % 4 != 3) {
            let p = [Platform::Android, Platform::Ios, Platform::Web][i as usize % 3];
            dev.upsert(&names[i as usize], p, None, &[], None, None, i % 5 == 0)
                .unwrap();
        }
        for i in (0..n).step_by(11) {
            dev.delete(&names[i as usize]);
        }
        let ids: Vec<u32> = (0..n).collect();
        for platforms in [None, Some(&[Platform::Ios, Platform::Web][..])] {
            let app = AppDevices::new(&ums, &ids, &dev, platforms, &mut DeviceMap::new());
            let (mut routable, mut online) = (Vec::new(), Vec::new());
            for &i in &ids {
                let Some(d) = dev.device_id(&names[i as usize]) else {
                    continue;
                };
                let on = platforms
                    .is_none_or(|ps| ps.iter().any(|&p| dev.platform_bitmap(p).contains(d)));
                if on {
                    routable.push(i);
                    if dev.online_bitmap().contains(d) {
                        online.push(i);
                    }
                }
            }
            assert_eq!(app.routable.to_vec(), routable);
            assert_eq!(app.online.to_vec(), online);
            let grouped: usize = app
                .groups(&dev, &ids, true)
                .iter()
                .map(|g| g.ids.len())
                .sum();
            assert_eq!(grouped, routable.len());
        }
    }

    /// What the cached map answers is always what a fresh look-up answers, whatever was
    /// interned or deleted on either side between two sends.
    mod cached {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Intern UMS channel ID `n` (marks it undeliverable: any interning will do).
            Ums(u8),
            /// Register JPush device `n`, or delete it.
            Device(u8, bool),
            /// Look up these UMS ids (taken modulo how many are interned).
            Lookup(Vec<u16>),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..40).prop_map(Op::Ums),
                ((0u8..40), any::<bool>()).prop_map(|(n, d)| Op::Device(n, d)),
                proptest::collection::vec(any::<u16>(), 0..12).prop_map(Op::Lookup),
            ]
        }

        proptest! {
            #[test]
            fn matches_a_fresh_lookup(ops in proptest::collection::vec(op(), 1..60)) {
                let mut ums = UmsRegistry::new();
                let mut dev = Registry::new();
                let mut map = DeviceMap::new();
                for op in ops {
                    match op {
                        Op::Ums(n) => ums.set_undeliverable(&[&format!("r{n}")], &[]).unwrap(),
                        Op::Device(n, false) => {
                            let rid = format!("r{n}");
                            dev.upsert(&rid, Platform::Android, None, &[], None, None, false)
                                .unwrap();
                        }
                        Op::Device(n, true) => {
                            dev.delete(&format!("r{n}"));
                        }
                        Op::Lookup(picks) => {
                            let len = ums.ids.len() as u32;
                            if len == 0 {
                                continue;
                            }
                            let mut ids: Vec<u32> = picks.iter().map(|&p| p as u32 % len).collect();
                            ids.sort_unstable();
                            ids.dedup();
                            let want = DeviceMap::new().lookup(&ums, &ids, &dev);
                            let fresh: Vec<u32> = ids
                                .iter()
                                .map(|&i| dev.devices.lookup(ums.channel_id(i)).unwrap_or(NO_DEVICE))
                                .collect();
                            prop_assert_eq!(&want, &fresh);
                            prop_assert_eq!(map.lookup(&ums, &ids, &dev), want);
                        }
                    }
                }
            }
        }
    }
}
