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

use super::UmsRegistry;
use crate::registry::{Platform, Registry, Vendor};
use crate::route;
use croaring::Bitmap;
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

/// The IDs of one JPush delivery group: one platform and, on Android, one vendor channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppGroup {
    pub platform: Platform,
    pub vendor: Option<Vendor>,
    /// The APNs environment, for iOS only.
    pub apns_production: Option<bool>,
    /// UMS ids, ascending.
    pub ids: Vec<u32>,
}

impl AppDevices {
    /// Look up the UMS ids `ids` (ascending) in `devices`, keeping the live devices on
    /// `platforms` (`None`: every platform).
    pub fn new(
        ums: &UmsRegistry,
        ids: &[u32],
        devices: &Registry,
        platforms: Option<&[Platform]>,
    ) -> Self {
        let on_platform = |d: u32| {
            platforms.is_none_or(|ps| ps.iter().any(|&p| devices.platform_bitmap(p).contains(d)))
        };
        // One batched lookup (hashes first, then prefetched probes) instead of one per ID.
        let names: Vec<&str> = ids.iter().map(|&i| ums.channel_id(i)).collect();
        let found = devices.devices.lookup_many(&names);
        let pairs: Vec<(u32, u32)> = ids
            .iter()
            .zip(found)
            .filter_map(|(&i, d)| d.map(|d| (i, d)))
            .filter(|&(_, d)| devices.live().contains(d) && on_platform(d))
            .collect();
        let online: Vec<u32> = pairs
            .iter()
            .filter(|p| devices.online_bitmap().contains(p.1))
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

    /// The device of a routable UMS id.
    pub fn device(&self, id: u32) -> Option<u32> {
        let i = self.pairs.binary_search_by_key(&id, |p| p.0).ok()?;
        Some(self.pairs[i].1)
    }

    /// Split routable UMS ids into JPush's delivery groups (`route::batches` over their
    /// devices, uncapped); ids that are not routable are left out.
    pub fn groups(&self, devices: &Registry, ids: &[u32], apns_production: bool) -> Vec<AppGroup> {
        let mut by_device: Vec<(u32, u32)> = ids
            .iter()
            .filter_map(|&i| self.device(i).map(|d| (d, i)))
            .collect();
        by_device.sort_unstable();
        let bitmap = Bitmap::of(&by_device.iter().map(|p| p.0).collect::<Vec<_>>());
        let back = |d: u32| {
            let i = by_device
                .binary_search_by_key(&d, |p| p.0)
                .expect("a batch holds devices of the ids");
            by_device[i].1
        };
        route::batches(devices, &bitmap, usize::MAX, apns_production)
            .into_iter()
            .map(|b| {
                let mut ids: Vec<u32> = b.ids.iter().map(|&d| back(d)).collect();
                ids.sort_unstable();
                AppGroup {
                    platform: b.platform,
                    vendor: b.vendor,
                    apns_production: b.apns_production,
                    ids,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let all = AppDevices::new(&ums, &ids, &dev, None);
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
        let ios = AppDevices::new(&ums, &ids, &dev, Some(&[Platform::Ios]));
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
}
