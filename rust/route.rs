//! Splitting a resolution into delivery batches.
//!
//! Invariant: the batches partition the resolution; each batch holds devices of one platform
//! and, for Android, one vendor channel (or none); no batch is larger than the cap; ids in a
//! batch ascend.

use crate::registry::{Platform, Registry, Vendor};
use croaring::Bitmap;

/// One delivery batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub platform: Platform,
    pub vendor: Option<Vendor>,
    /// The APNs environment, for iOS batches only.
    pub apns_production: Option<bool>,
    pub ids: Vec<u32>,
}

/// Split `result` (live devices of `reg`) into batches of at most `max_size` ids.
pub fn batches(
    reg: &Registry,
    result: &Bitmap,
    max_size: usize,
    apns_production: bool,
) -> Vec<Batch> {
    let max_size = max_size.max(1);
    let mut out = Vec::new();
    let mut emit = |platform: Platform, vendor: Option<Vendor>, part: Bitmap| {
        let apns = (platform == Platform::Ios).then_some(apns_production);
        for chunk in part.to_vec().chunks(max_size) {
            out.push(Batch {
                platform,
                vendor,
                apns_production: apns,
                ids: chunk.to_vec(),
            });
        }
    };
    for &p in Platform::ALL {
        let mut part = result.and(reg.platform_bitmap(p));
        if part.is_empty() {
            continue;
        }
        if p == Platform::Android {
            for &v in Vendor::ALL {
                let by_vendor = part.and(reg.vendor_bitmap(v));
                if !by_vendor.is_empty() {
                    part.andnot_inplace(&by_vendor);
                    emit(p, Some(v), by_vendor);
                }
            }
            if part.is_empty() {
                continue;
            }
        }
        emit(p, None, part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_by_platform_and_vendor() {
        let mut r = Registry::new();
        for i in 0..10 {
            let v = [None, Some(Vendor::Hms), Some(Vendor::Xiaomi)][i % 3];
            r.upsert(
                &format!("a{i}"),
                Platform::Android,
                v,
                &[],
                None,
                None,
                false,
            )
            .unwrap();
        }
        r.upsert("i", Platform::Ios, None, &[], None, None, false)
            .unwrap();
        let all = r.live().clone();
        let b = batches(&r, &all, 2, false);
        let total: usize = b.iter().map(|b| b.ids.len()).sum();
        assert_eq!(total, 11);
        assert!(b.iter().all(|b| b.ids.len() <= 2));
        let ios: Vec<_> = b.iter().filter(|b| b.platform == Platform::Ios).collect();
        assert_eq!(ios.len(), 1);
        assert_eq!(ios[0].apns_production, Some(false));
        assert!(b
            .iter()
            .filter(|b| b.vendor == Some(Vendor::Hms))
            .all(|b| b.ids.iter().all(|&d| d % 3 == 1)));
    }
}
