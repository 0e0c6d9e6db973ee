//! The app channel of a template send, routed through a JPush app's device registry
//! (`app_para`).
//!
//! A UMS app channel's IDs are JPush registration IDs. Routed, an ID goes out only when it is a
//! live device of the app on one of `app_para.platform`'s platforms (none given: every
//! platform); its batches are split by platform and Android vendor as JPush's are; it delivers
//! when its device is online.
//!
//! Invariants of `AppDevices`: `pairs` ascend by UMS id and hold exactly the routable IDs, each
//! with its device id; `routable` is the set of their UMS ids; `online` ⊆ `routable`.

use super::UmsRegistry;
use crate::registry::{Platform, Registry, Vendor};
use crate::route;
use croaring::Bitmap;

/// The IDs of an app channel as devices of one JPush app, under a platform filter.
#[derive(Debug, Clone, Default)]
pub struct AppDevices {
    pairs: Vec<(u32, u32)>,
    /// The UMS ids (interned channel IDs) that are live devices on the platforms.
    pub routable: Bitmap,
    /// The routable ids whose device is online (they deliver).
    pub online: Bitmap,
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
        }
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
    }
}
