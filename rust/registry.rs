//! The device registry: interned registration IDs and one roaring bitmap per membership.
//!
//! Invariants:
//! - device ids are the `devices` interner's ids: dense, never reused; a deleted device keeps
//!   its id and string and is only absent from `live`;
//! - every attribute bitmap (platform, vendor, tag, online, mobile) and every alias list holds
//!   live devices only: `delete` removes the device from all of them;
//! - a live device is in exactly one platform bitmap, and in at most one vendor bitmap (only if
//!   it is an Android device); `buckets[b]` holds every device (live or not) whose A/B bucket is b;
//! - the devices of alias `a` are the chain `alias_head[a]`, `alias_next[alias_head[a]]`, ...,
//!   each exactly once, whose last device `d` has `alias_next[d] == END | a`; a device without
//!   an alias has `alias_next[d] == NONE`. So a device's alias is found by walking its chain to
//!   the end (chains are the few devices of one user), and no per-device alias column is kept;
//! - device ids are below `END` and alias ids below `END - 1` (so `END | a` is never `NONE`).

use crate::error::{Error, Result};
use crate::expr::AudienceSpec;
use crate::index::prefetch;
use crate::intern::Interner;
use crate::probe::retain_members;
use crate::rid::{Rid, RidStore};
use croaring::Bitmap;
use std::collections::HashMap;

/// "No value" in per-device `u32` columns.
pub const NONE: u32 = u32::MAX;
/// The flag of `alias_next` that ends an alias chain (the low bits then hold the alias id).
pub const END: u32 = 1 << 31;
/// Number of A/B buckets (a percentage each).
pub const BUCKETS: usize = 100;
/// Longest registration ID, tag, alias or mobile the registry stores, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 256;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($var),+ }
        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The vendor's name of the value.
            pub fn name(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
            /// The value of a name, or an illegal-value error naming `what`.
            pub fn parse(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok($name::$var),)+
                    _ => Err(Error::invalid(format!(
                        "unknown {} {s:?}", stringify!($name).to_lowercase()
                    ))),
                }
            }
            /// The value of a numeric code (its index in `ALL`).
            pub fn from_code(c: u8) -> Option<Self> {
                Self::ALL.get(c as usize).copied()
            }
        }
    };
}

named_enum!(
    /// A device platform (JPush `platform` values and the newer ones).
    Platform {
        Android = "android",
        Ios = "ios",
        Winphone = "winphone",
        Quickapp = "quickapp",
        Web = "web",
        Hmos = "hmos",
    }
);

named_enum!(
    /// An Android vendor channel; a device with none uses the vendor's own long connection.
    Vendor {
        Hms = "hms",
        Honor = "honor",
        Xiaomi = "xiaomi",
        Oppo = "oppo",
        Vivo = "vivo",
        Meizu = "meizu",
        Fcm = "fcm",
    }
);

/// The attributes of one device, as upserted or reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceRecord {
    pub registration_id: String,
    pub platform: Option<Platform>,
    pub vendor: Option<Vendor>,
    pub tags: Vec<String>,
    pub alias: Option<String>,
    pub mobile: Option<String>,
    pub online: bool,
}

/// A named device set: explicit members, or a saved audience evaluated at push time.
#[derive(Clone)]
pub enum Segment {
    Static(Bitmap),
    Dynamic(AudienceSpec),
}

/// An A/B test: a base audience split into groups by bucket ranges `[lo, hi)`.
#[derive(Clone)]
pub struct AbTest {
    pub base: AudienceSpec,
    pub groups: Vec<(String, u8, u8)>,
}

/// The registry of one app.
///
/// # Examples
///
/// ```
/// use reach::{AudienceSpec, Platform, Registry, Vendor};
///
/// let mut reg = Registry::new();
/// reg.upsert("rid1", Platform::Android, Some(Vendor::Xiaomi), &["深圳", "vip"], Some("u1"), None, true)
///     .unwrap();
/// reg.upsert("rid2", Platform::Ios, None, &["深圳"], Some("u1"), None, false).unwrap();
/// assert_eq!(reg.alias_devices("u1"), vec![0, 1]);
/// assert!(reg.delete("rid1"));
/// assert_eq!(reg.len(), 1);
/// ```
#[derive(Clone)]
pub struct Registry {
    pub(crate) devices: RidStore,
    pub(crate) live: Bitmap,
    pub(crate) online: Bitmap,
    pub(crate) platforms: Vec<Bitmap>,
    pub(crate) vendors: Vec<Bitmap>,
    pub(crate) buckets: Vec<Bitmap>,
    pub(crate) tags: Interner,
    pub(crate) tag_bitmaps: Vec<Bitmap>,
    pub(crate) aliases: Interner,
    /// First device of each alias (`NONE` if the alias has none now).
    pub(crate) alias_head: Vec<u32>,
    /// Per device: the next device of the same alias, `END | alias` for the last, or `NONE`
    /// (see the module invariants): 4 bytes a device for both directions.
    pub(crate) alias_next: Vec<u32>,
    pub(crate) mobiles: HashMap<u32, Box<str>>,
    pub(crate) has_mobile: Bitmap,
    pub(crate) segments: HashMap<String, Segment>,
    pub(crate) abtests: HashMap<String, AbTest>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// The stable A/B bucket of a registration ID: FNV-1a (64-bit) of its UTF-8 bytes, mod 100.
pub fn bucket_of(registration_id: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in registration_id.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % BUCKETS as u64) as usize
}

/// Refuse an empty or over-long key.
pub(crate) fn check_key(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if s.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(format!(
            "{what} {s:?} is longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            devices: RidStore::new(),
            live: Bitmap::new(),
            online: Bitmap::new(),
            platforms: Platform::ALL.iter().map(|_| Bitmap::new()).collect(),
            vendors: Vendor::ALL.iter().map(|_| Bitmap::new()).collect(),
            buckets: (0..BUCKETS).map(|_| Bitmap::new()).collect(),
            tags: Interner::new(),
            tag_bitmaps: Vec::new(),
            aliases: Interner::new(),
            alias_head: Vec::new(),
            alias_next: Vec::new(),
            mobiles: HashMap::new(),
            has_mobile: Bitmap::new(),
            segments: HashMap::new(),
            abtests: HashMap::new(),
        }
    }

    /// Number of live devices.
    pub fn len(&self) -> u64 {
        self.live.cardinality()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Number of device ids ever assigned (live or deleted).
    pub fn capacity(&self) -> usize {
        self.devices.len()
    }

    /// The live devices.
    pub fn live(&self) -> &Bitmap {
        &self.live
    }

    /// The id of a live device.
    pub fn device_id(&self, registration_id: &str) -> Option<u32> {
        self.devices
            .lookup(registration_id)
            .filter(|&d| self.live.contains(d))
    }

    /// The registration ID of a device id (live or deleted).
    pub fn registration_id(&self, id: u32) -> Rid<'_> {
        self.devices.get(id)
    }

    /// The live device of `registration_id`, or an illegal-value error.
    fn live_device(&self, registration_id: &str) -> Result<u32> {
        self.device_id(registration_id)
            .ok_or_else(|| Error::invalid(format!("unknown registration_id {registration_id:?}")))
    }

    pub fn platform_bitmap(&self, p: Platform) -> &Bitmap {
        &self.platforms[p as usize]
    }

    pub fn vendor_bitmap(&self, v: Vendor) -> &Bitmap {
        &self.vendors[v as usize]
    }

    /// The live devices that are online now.
    pub fn online_bitmap(&self) -> &Bitmap {
        &self.online
    }

    /// The live devices that have a mobile number.
    pub fn mobile_bitmap(&self) -> &Bitmap {
        &self.has_mobile
    }

    pub fn tag_bitmap(&self, tag: &str) -> Option<&Bitmap> {
        self.tags.lookup(tag).map(|t| &self.tag_bitmaps[t as usize])
    }

    /// The names of tags that some live device holds.
    pub fn tag_names(&self) -> Vec<&str> {
        (0..self.tags.len() as u32)
            .filter(|&t| !self.tag_bitmaps[t as usize].is_empty())
            .map(|t| self.tags.get(t))
            .collect()
    }

    /// The live devices of an alias, ascending.
    pub fn alias_devices(&self, alias: &str) -> Vec<u32> {
        let mut out = self.aliases_devices(&[alias]);
        out.sort_unstable();
        out
    }

    /// The devices of many aliases (unknown ones have none), unsorted. The look-ups are
    /// batched (`Interner::lookup_many`) and the chains walked one link of every chain at a
    /// time, each link fetched for all chains before any is read (every link is a cache miss
    /// in a per-device column).
    pub(crate) fn aliases_devices(&self, aliases: &[&str]) -> Vec<u32> {
        let found: Vec<u32> = self
            .aliases
            .lookup_many(aliases)
            .into_iter()
            .flatten()
            .collect();
        for &a in &found {
            prefetch(&self.alias_head[a as usize]);
        }
        let mut frontier: Vec<u32> = found
            .iter()
            .map(|&a| self.alias_head[a as usize])
            .filter(|&d| d != NONE)
            .collect();
        let mut out = Vec::with_capacity(found.len() * 2);
        while !frontier.is_empty() {
            for &d in &frontier {
                prefetch(&self.alias_next[d as usize]);
            }
            out.extend_from_slice(&frontier);
            frontier.retain_mut(|d| {
                *d = self.alias_next[*d as usize];
                *d & END == 0
            });
        }
        out
    }

    /// The live devices of many registration IDs (unknown or deleted ones are left out),
    /// ascending and distinct; the look-ups are batched (`RidStore::lookup_many`).
    pub(crate) fn devices_live(&self, registration_ids: &[&str]) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .devices
            .lookup_many(registration_ids)
            .into_iter()
            .flatten()
            .collect();
        crate::eval::sort_ids(&mut ids);
        retain_members(&mut ids, &self.live, true);
        ids
    }

    /// Per device: its alias id, or `NONE` (the chains inverted, for snapshots). The chains
    /// are walked a batch of aliases at a time, a link of every chain of the batch at once, so
    /// that the random reads of different chains overlap.
    pub(crate) fn alias_column(&self) -> Vec<u32> {
        const BATCH: usize = 4096;
        let mut col = vec![NONE; self.alias_next.len()];
        for start in (0..self.alias_head.len()).step_by(BATCH) {
            let end = (start + BATCH).min(self.alias_head.len());
            let mut frontier: Vec<(u32, u32)> = (start..end)
                .map(|a| (self.alias_head[a], a as u32))
                .filter(|&(d, _)| d != NONE)
                .collect();
            while !frontier.is_empty() {
                for &(d, _) in &frontier {
                    prefetch(&self.alias_next[d as usize]);
                    prefetch(&col[d as usize]);
                }
                frontier.retain_mut(|(d, a)| {
                    col[*d as usize] = *a;
                    *d = self.alias_next[*d as usize];
                    *d & END == 0
                });
            }
        }
        col
    }

    /// The alias id of device `d`, if it has one: the end of its chain.
    pub(crate) fn alias_of(&self, d: u32) -> Option<u32> {
        let mut x = self.alias_next[d as usize];
        if x == NONE {
            return None;
        }
        while x & END == 0 {
            x = self.alias_next[x as usize];
        }
        Some(x & !END)
    }

    /// The attributes of a live device.
    pub fn device(&self, registration_id: &str) -> Option<DeviceRecord> {
        let d = self.device_id(registration_id)?;
        let platform = Platform::ALL
            .iter()
            .copied()
            .find(|&p| self.platforms[p as usize].contains(d));
        let vendor = Vendor::ALL
            .iter()
            .copied()
            .find(|&v| self.vendors[v as usize].contains(d));
        let mut tags: Vec<String> = self
            .tag_bitmaps
            .iter()
            .enumerate()
            .filter(|(_, b)| b.contains(d))
            .map(|(t, _)| self.tags.get(t as u32).to_owned())
            .collect();
        tags.sort_unstable();
        let a = self.alias_of(d);
        Some(DeviceRecord {
            registration_id: registration_id.to_owned(),
            platform,
            vendor,
            tags,
            alias: a.map(|a| self.aliases.get(a).to_owned()),
            mobile: self.mobiles.get(&d).map(|m| m.to_string()),
            online: self.online.contains(d),
        })
    }

    /// Whether `n` more devices (with `bytes` of registration IDs, each with a new alias at
    /// worst) fit the id spaces of the module invariants.
    pub(crate) fn fits(&self, n: usize, bytes: usize) -> bool {
        self.devices.fits(bytes)
            && self.devices.len() + n < END as usize
            && self.aliases.len() + n < (END - 1) as usize
    }

    /// After a bulk load or a snapshot load: trim the per-device and per-alias tables to size
    /// (they grow by doubling; at 10M devices this gives back ~6 bytes per device).
    pub(crate) fn settle(&mut self) {
        self.devices.shrink_to_fit();
        self.aliases.shrink_to_fit();
        self.alias_head.shrink_to_fit();
        self.alias_next.shrink_to_fit();
    }

    /// Intern a registration ID, growing the per-device columns for a new id.
    pub(crate) fn intern_device(&mut self, registration_id: &str) -> u32 {
        let (d, new) = self.devices.intern(registration_id);
        if new {
            self.alias_next.push(NONE);
            self.buckets[bucket_of(registration_id)].add(d);
        }
        d
    }

    /// The id of a tag, interned if new.
    pub(crate) fn intern_tag(&mut self, tag: &str) -> u32 {
        let (t, new) = self.tags.intern(tag);
        if new {
            self.tag_bitmaps.push(Bitmap::new());
        }
        t
    }

    fn intern_alias(&mut self, alias: &str) -> u32 {
        let (a, new) = self.aliases.intern(alias);
        if new {
            self.alias_head.push(NONE);
        }
        a
    }

    /// Check a whole record before anything changes.
    pub(crate) fn check_record(
        registration_id: &str,
        platform: Platform,
        vendor: Option<Vendor>,
        tags: &[&str],
        alias: Option<&str>,
        mobile: Option<&str>,
    ) -> Result<()> {
        check_key("registration_id", registration_id)?;
        if vendor.is_some() && platform != Platform::Android {
            return Err(Error::invalid(format!(
                "vendor channel given for a {} device; vendors are Android only",
                platform.name()
            )));
        }
        for t in tags {
            check_key("tag", t)?;
        }
        if let Some(a) = alias {
            check_key("alias", a)?;
        }
        if let Some(m) = mobile {
            check_key("mobile", m)?;
        }
        Ok(())
    }

    /// Insert or replace a device: afterwards its attributes are exactly the given ones
    /// (a deleted device comes back). Idempotent. Returns the device id.
    #[allow(clippy::too_many_arguments)]
    pub fn upsert(
        &mut self,
        registration_id: &str,
        platform: Platform,
        vendor: Option<Vendor>,
        tags: &[&str],
        alias: Option<&str>,
        mobile: Option<&str>,
        online: bool,
    ) -> Result<u32> {
        Self::check_record(registration_id, platform, vendor, tags, alias, mobile)?;
        if !self.fits(1, registration_id.len()) {
            return Err(Error::invalid("registry is full"));
        }
        let d = self.intern_device(registration_id);
        let tag_ids: Vec<u32> = tags.iter().map(|t| self.intern_tag(t)).collect();
        self.replace(d, platform, vendor, &tag_ids, alias, mobile, online);
        Ok(d)
    }

    /// Make device `d` live with exactly these (already checked) attributes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replace(
        &mut self,
        d: u32,
        platform: Platform,
        vendor: Option<Vendor>,
        tag_ids: &[u32],
        alias: Option<&str>,
        mobile: Option<&str>,
        online: bool,
    ) {
        self.clear_memberships(d);
        self.live.add(d);
        self.platforms[platform as usize].add(d);
        if let Some(v) = vendor {
            self.vendors[v as usize].add(d);
        }
        for &t in tag_ids {
            self.tag_bitmaps[t as usize].add(d);
        }
        if let Some(a) = alias {
            self.attach_alias(d, a);
        }
        if let Some(m) = mobile {
            self.mobiles.insert(d, m.into());
            self.has_mobile.add(d);
        }
        if online {
            self.online.add(d);
        }
    }

    /// Remove `d` from every attribute (not from `live` or its bucket).
    fn clear_memberships(&mut self, d: u32) {
        for b in self.platforms.iter_mut().chain(self.vendors.iter_mut()) {
            b.remove(d);
        }
        // Why a scan: no per-device tag list is kept (it would cost ~4 bytes per membership);
        // full replaces and deletes are rare next to tag adds/removes, which need no scan.
        for b in &mut self.tag_bitmaps {
            b.remove(d);
        }
        self.detach_alias(d);
        if self.mobiles.remove(&d).is_some() {
            self.has_mobile.remove(d);
        }
        self.online.remove(d);
    }

    pub(crate) fn attach_alias(&mut self, d: u32, alias: &str) {
        let a = self.intern_alias(alias);
        self.attach_alias_id(d, a);
    }

    /// Bind device `d` (which has no alias now) to interned alias `a`.
    pub(crate) fn attach_alias_id(&mut self, d: u32, a: u32) {
        let head = std::mem::replace(&mut self.alias_head[a as usize], d);
        self.alias_next[d as usize] = if head == NONE { END | a } else { head };
    }

    fn detach_alias(&mut self, d: u32) {
        let Some(a) = self.alias_of(d) else {
            return;
        };
        let next = std::mem::replace(&mut self.alias_next[d as usize], NONE);
        if self.alias_head[a as usize] == d {
            self.alias_head[a as usize] = if next & END != 0 { NONE } else { next };
            return;
        }
        // Chains are short (the devices of one user), so a walk is cheap.
        let mut prev = self.alias_head[a as usize];
        while self.alias_next[prev as usize] != d {
            prev = self.alias_next[prev as usize];
        }
        self.alias_next[prev as usize] = next;
    }

    /// Delete a device; returns whether it was live.
    pub fn delete(&mut self, registration_id: &str) -> bool {
        let Some(d) = self.device_id(registration_id) else {
            return false;
        };
        self.clear_memberships(d);
        self.live.remove(d);
        true
    }

    pub fn add_tags(&mut self, registration_id: &str, tags: &[&str]) -> Result<()> {
        let d = self.live_device(registration_id)?;
        for t in tags {
            check_key("tag", t)?;
        }
        for t in tags {
            let t = self.intern_tag(t);
            self.tag_bitmaps[t as usize].add(d);
        }
        Ok(())
    }

    pub fn remove_tags(&mut self, registration_id: &str, tags: &[&str]) -> Result<()> {
        let d = self.live_device(registration_id)?;
        for t in tags {
            if let Some(t) = self.tags.lookup(t) {
                self.tag_bitmaps[t as usize].remove(d);
            }
        }
        Ok(())
    }

    /// Set (`Some`) or clear (`None`) the alias of a device.
    pub fn set_alias(&mut self, registration_id: &str, alias: Option<&str>) -> Result<()> {
        let d = self.live_device(registration_id)?;
        if let Some(a) = alias {
            check_key("alias", a)?;
        }
        self.detach_alias(d);
        if let Some(a) = alias {
            self.attach_alias(d, a);
        }
        Ok(())
    }

    pub fn set_mobile(&mut self, registration_id: &str, mobile: Option<&str>) -> Result<()> {
        let d = self.live_device(registration_id)?;
        match mobile {
            Some(m) => {
                check_key("mobile", m)?;
                self.mobiles.insert(d, m.into());
                self.has_mobile.add(d);
            }
            None => {
                self.mobiles.remove(&d);
                self.has_mobile.remove(d);
            }
        }
        Ok(())
    }

    pub fn set_online(&mut self, registration_id: &str, online: bool) -> Result<()> {
        let d = self.live_device(registration_id)?;
        if online {
            self.online.add(d);
        } else {
            self.online.remove(d);
        }
        Ok(())
    }

    /// Replace the members of a tag (live devices only are kept).
    pub fn set_tag_members(&mut self, tag: &str, members: &Bitmap) -> Result<()> {
        check_key("tag", tag)?;
        let t = self.intern_tag(tag);
        self.tag_bitmaps[t as usize] = members.and(&self.live);
        Ok(())
    }

    /// Define (or redefine) a static segment.
    /// Ids that were never assigned are dropped (they could never become devices).
    pub fn add_static_segment(&mut self, name: &str, mut members: Bitmap) -> Result<u64> {
        check_key("segment", name)?;
        members.remove_range(self.devices.len() as u32..);
        let n = members.and_cardinality(&self.live);
        self.segments
            .insert(name.to_owned(), Segment::Static(members));
        Ok(n)
    }

    /// Define (or redefine) a dynamic segment: a saved audience, evaluated at push time.
    pub fn add_dynamic_segment(&mut self, name: &str, audience: AudienceSpec) -> Result<()> {
        check_key("segment", name)?;
        audience.check_saved("segment")?;
        self.segments
            .insert(name.to_owned(), Segment::Dynamic(audience));
        Ok(())
    }

    /// Define (or redefine) an A/B test: named groups with percentages summing to <= 100.
    pub fn add_abtest(
        &mut self,
        name: &str,
        base: AudienceSpec,
        groups: &[(String, u32)],
    ) -> Result<()> {
        check_key("abtest", name)?;
        base.check_saved("abtest")?;
        if groups.is_empty() {
            return Err(Error::invalid("an A/B test needs at least one group"));
        }
        let mut lo = 0u32;
        let mut out = Vec::with_capacity(groups.len());
        for (g, pct) in groups {
            check_key("abtest group", g)?;
            if g.contains(':') || out.iter().any(|(o, _, _)| o == g) {
                return Err(Error::invalid(format!(
                    "bad or repeated A/B group name {g:?}"
                )));
            }
            let hi = lo + pct;
            if *pct == 0 || hi > BUCKETS as u32 {
                return Err(Error::invalid(
                    "A/B group percentages must be > 0 and sum to <= 100",
                ));
            }
            out.push((g.clone(), lo as u8, hi as u8));
            lo = hi;
        }
        self.abtests
            .insert(name.to_owned(), AbTest { base, groups: out });
        Ok(())
    }

    /// Heap bytes per structure (approximate for hash maps).
    pub fn memory_usage(&self) -> Vec<(&'static str, usize)> {
        let bm = |b: &Bitmap| b.get_serialized_size_in_bytes::<croaring::Portable>();
        let bms = |v: &[Bitmap]| v.iter().map(bm).sum::<usize>();
        let mobiles: usize = self.mobiles.values().map(|m| m.len() + 16 + 8).sum();
        let mut parts = vec![
            ("registration_ids", self.devices.memory_usage()),
            ("live", bm(&self.live) + bm(&self.online)),
            ("platforms", bms(&self.platforms) + bms(&self.vendors)),
            ("buckets", bms(&self.buckets)),
            ("tags", bms(&self.tag_bitmaps) + self.tags.memory_usage()),
            (
                "aliases",
                self.aliases.memory_usage()
                    + self.alias_head.capacity() * 4
                    + self.alias_next.capacity() * 4,
            ),
            ("mobiles", mobiles + bm(&self.has_mobile)),
        ];
        let total = parts.iter().map(|p| p.1).sum();
        parts.push(("total", total));
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        let mut r = Registry::new();
        r.upsert(
            "a",
            Platform::Android,
            Some(Vendor::Hms),
            &["x", "深圳"],
            Some("u1"),
            None,
            true,
        )
        .unwrap();
        r.upsert(
            "b",
            Platform::Ios,
            None,
            &["x"],
            Some("u1"),
            Some("13800000000"),
            false,
        )
        .unwrap();
        r
    }

    #[test]
    fn upsert_replaces_everything() {
        let mut r = reg();
        r.upsert("a", Platform::Ios, None, &["y"], None, None, false)
            .unwrap();
        let d = r.device("a").unwrap();
        assert_eq!(d.platform, Some(Platform::Ios));
        assert_eq!(d.vendor, None);
        assert_eq!(d.tags, vec!["y".to_string()]);
        assert_eq!(d.alias, None);
        assert!(!r.platform_bitmap(Platform::Android).contains(0));
        assert_eq!(r.alias_devices("u1"), vec![1]);
    }

    #[test]
    fn delete_clears_memberships_and_keeps_the_id() {
        let mut r = reg();
        assert!(r.delete("a"));
        assert!(!r.delete("a"));
        assert_eq!(r.device("a"), None);
        assert_eq!(r.tag_bitmap("x").unwrap().to_vec(), vec![1]);
        assert_eq!(r.alias_devices("u1"), vec![1]);
        let d = r
            .upsert("a", Platform::Web, None, &[], None, None, false)
            .unwrap();
        assert_eq!(d, 0);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn shared_alias_survives_head_removal() {
        let mut r = reg();
        r.upsert("c", Platform::Ios, None, &[], Some("u1"), None, false)
            .unwrap();
        assert_eq!(r.alias_devices("u1"), vec![0, 1, 2]);
        r.set_alias("a", None).unwrap();
        assert_eq!(r.alias_devices("u1"), vec![1, 2]);
        r.set_alias("c", Some("u2")).unwrap();
        assert_eq!(r.alias_devices("u1"), vec![1]);
        assert_eq!(r.alias_devices("u2"), vec![2]);
    }

    #[test]
    fn alias_column_inverts_the_chains() {
        let mut r = reg();
        r.upsert("c", Platform::Ios, None, &[], Some("u2"), None, false)
            .unwrap();
        r.upsert("d", Platform::Ios, None, &[], Some("u1"), None, false)
            .unwrap();
        r.set_alias("b", Some("u2")).unwrap();
        let col = r.alias_column();
        for d in 0..r.capacity() as u32 {
            assert_eq!(col[d as usize], r.alias_of(d).unwrap_or(NONE));
        }
        assert_eq!(r.alias_devices("u2"), vec![1, 2]);
    }

    #[test]
    fn refusals_change_nothing() {
        let mut r = reg();
        let before = r.device("a");
        assert!(r
            .upsert(
                "a",
                Platform::Ios,
                Some(Vendor::Hms),
                &[],
                None,
                None,
                false
            )
            .is_err());
        assert!(r
            .upsert("", Platform::Ios, None, &[], None, None, false)
            .is_err());
        assert!(r.add_tags("a", &["ok", ""]).is_err());
        assert!(r.add_tags("nope", &["t"]).is_err());
        assert_eq!(r.device("a"), before);
        assert_eq!(r.capacity(), 2);
    }

    #[test]
    fn buckets_are_stable_fnv() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(bucket_of("a"), (0xaf63_dc4c_8601_ec8c_u64 % 100) as usize);
    }
}
