//! Send strategies (`rule_id`) and delivery: the stages of a template send.
//!
//! A send strategy is an ordered list of the template's channels, each with a delay (seconds
//! after the previous stage). Stage 1 goes out on the first channel, to the users that channel
//! reaches (its answer in the `Resolution`). Stage k > 1 goes, after its delay, to the users its
//! channel reaches that no earlier stage delivered to, with their IDs on that channel: the
//! resolution's per-channel rules (`user_channel`) over that smaller audience. A send without a
//! strategy, or with custom channel IDs (the seed: "the sending policy does not take effect"),
//! is one stage: every channel at once, all stage 1.
//!
//! Delivery (the emulator's model, decided here from what the caller knows): an ID delivers
//! unless it is on the registry's `undeliverable` list; an app ID routed through a JPush app
//! (`AppDevices`) delivers instead when its device was online at the send, or, with
//! `app_para.time_to_live` > 0, came online at most `time_to_live` seconds after its stage went
//! out (`AppDevices::delivering`; the caller gives when devices came online). A user is
//! *delivered* by a stage when one of its IDs selected on the stage's channel (by the channel
//! type's rule, before any list) was delivered.
//!
//! Time: a later stage k (offset `o_k` seconds after the send) counts an app ID of an earlier
//! stage j as delivered when its device was online at the send, or came online at a time `t`
//! with `o_j <= t <= o_j + time_to_live` and `t < o_k`: a device that comes online after stage
//! k went out did not stop it. A stage's own `delivered` counts everything up to the end of its
//! `time_to_live`, so a user may be delivered by stage j and also sent stage k.
//!
//! Invariants: a stage's `channel(res).reached` is exactly the users it sends to, and each has
//! at least one of its `channel(res).ids`; `delivered ⊆ channel(res).reached`; the users of
//! stage k are disjoint from the users delivered by stages 1..k-1 as seen at `o_k`. A stage
//! that sends a channel's answer as it is (every stage without a strategy, stage 1 with one)
//! refers to it instead of copying it.

use super::app::AppDevices;
use super::resolve::{ChannelResult, Reached, Resolution, SendSpec, Step, Target};
use super::{code, refuse, ChannelType, IdList, UmsRegistry};
use crate::error::Result;
use crate::eval::merge_sorted;
use croaring::Bitmap;
use std::borrow::Cow;
use std::collections::HashMap;

/// One stage of a send: a channel's IDs, when they go out and whom they delivered to.
#[derive(Debug, Clone)]
pub struct Stage {
    /// 1-based.
    pub stage: u32,
    /// Seconds after the previous stage.
    pub delay: u64,
    /// Seconds after the send (the delays of this stage and every earlier one).
    pub offset: u64,
    /// The stage's channel: its index in the resolution's `channels`.
    pub index: usize,
    /// The IDs sent and the users sent to, when they are not the resolution's answer for the
    /// channel as it is (`None`: they are; no copy is made). Read both through `channel`.
    pub sent: Option<ChannelResult>,
    /// How many of the IDs sent delivered.
    pub delivered_ids: u64,
    /// The users this stage delivered to, when not all it sent to (`None`: every one of
    /// `channel(res).reached`; no copy is made). Read through `delivered`.
    pub delivered: Option<Bitmap>,
    /// Counts after each step of the stage (every `channel` is this stage's key).
    pub steps: Vec<Step>,
}

impl Stage {
    /// The IDs sent and the users sent to, `res` being the resolution the stage was made from.
    pub fn channel<'a>(&'a self, res: &'a Resolution) -> &'a ChannelResult {
        self.sent.as_ref().unwrap_or(&res.channels[self.index])
    }

    /// The users this stage delivered to, `res` being the resolution it was made from.
    pub fn delivered<'a>(&'a self, res: &'a Resolution) -> &'a Bitmap {
        self.delivered
            .as_ref()
            .unwrap_or_else(|| self.channel(res).reached.bitmap())
    }

    /// How many users this stage delivered to (`delivered`, without building a bitmap when
    /// it delivered to every user it sent to).
    pub fn delivered_count(&self, res: &Resolution) -> u64 {
        self.delivered
            .as_ref()
            .map_or_else(|| self.channel(res).reached.count(), Bitmap::cardinality)
    }
}

/// The app channels of a send routed through JPush apps, by channel key.
pub type AppRoutes = HashMap<String, AppDevices>;

impl UmsRegistry {
    /// The channel registration IDs that never deliver (the emulator's `undeliverable` list).
    pub fn undeliverable(&self) -> &Bitmap {
        &self.undeliverable
    }

    /// The interned id of a channel registration ID, if it was ever interned.
    pub fn channel_id_of(&self, id: &str) -> Option<u32> {
        self.ids.lookup(id)
    }

    /// Add IDs to the undeliverable list and remove others (`remove` wins for an ID in both).
    /// Every ID is checked before anything changes.
    pub fn set_undeliverable(&mut self, add: &[&str], remove: &[&str]) -> Result<()> {
        add.iter()
            .chain(remove)
            .try_for_each(|i| super::check_key("channel registration ID", i))?;
        if !self.ids.fits(add.iter().map(|i| i.len()).sum()) {
            return Err(super::bad("the UMS registry is full".into()));
        }
        for i in add {
            let id = self.ids.intern(i).0;
            self.undeliverable.add(id);
        }
        for i in remove {
            if let Some(id) = self.ids.lookup(i) {
                self.undeliverable.remove(id);
            }
        }
        Ok(())
    }

    /// The black or white list of a send (already checked to exist by `resolve`).
    fn send_list(&self, spec: &SendSpec) -> Option<(&IdList, bool)> {
        let black = spec
            .black
            .and_then(|b| self.lists.get(&b))
            .map(|l| (l, true));
        black.or_else(|| {
            spec.white
                .and_then(|w| self.lists.get(&w))
                .map(|l| (l, false))
        })
    }

    /// The users of `users` with one of their IDs selected on channel `key` (by the channel
    /// type's rule, `select`) in `ids`. Users with one ID are tested on the dense first-ID
    /// column in blocks; only users with several IDs are looked at one by one. Each binding's
    /// users come out ascending (singles, then the several-ID ones, merged), so the answer is
    /// built without a sort; a large test runs on a dense copy of `ids` (`Members`).
    pub fn users_with_ids(
        &self,
        key: &str,
        ty: ChannelType,
        users: &Bitmap,
        ids: &Bitmap,
    ) -> Bitmap {
        self.users_with_ids_where(key, ty, users, ids, true)
    }

    /// `users_with_ids` with the test `set.contains(id) == keep_in`: with `keep_in` false, the
    /// users with one of their selected IDs outside `set`.
    pub fn users_with_ids_where(
        &self,
        key: &str,
        ty: ChannelType,
        users: &Bitmap,
        set: &Bitmap,
        keep_in: bool,
    ) -> Bitmap {
        let members = Members::new(set, users.cardinality());
        let ids = Probe { members, keep_in };
        let mut out = Bitmap::new();
        let mut buf = [0u32; 1024];
        for (b, part) in self.select(key, ty, users) {
            let single = part.andnot(&b.multi);
            let mut singles = Vec::new();
            let mut it = single.iter();
            loop {
                let n = it.next_many(&mut buf);
                if n == 0 {
                    break;
                }
                // One column lookup for the block: the users' cache misses overlap.
                let firsts = b.first.get_many(&buf[..n]);
                singles.extend(
                    buf[..n]
                        .iter()
                        .zip(firsts)
                        .filter(|&(_, f)| ids.contains(f))
                        .map(|(&u, _)| u),
                );
            }
            let several: Vec<u32> = if b.multi.is_empty() {
                Vec::new()
            } else {
                part.and(&b.multi)
                    .iter()
                    .filter(|&u| {
                        ids.contains(b.first.get(u)) || b.extras(u).iter().any(|&i| ids.contains(i))
                    })
                    .collect()
            };
            let part_out = if several.is_empty() {
                Bitmap::of(&singles)
            } else {
                Bitmap::of(&merge_sorted(&singles, &several))
            };
            if out.is_empty() {
                out = part_out;
            } else {
                out.or_inplace(&part_out);
            }
        }
        out
    }

    /// Route the app channels of `res` through their JPush apps: IDs that are not routable are
    /// dropped, the users left without an ID are no longer reached on that channel, and the
    /// send's `reached`/`unreachable` follow (on their next use).
    pub fn route_apps(&self, res: &mut Resolution, apps: &AppRoutes) {
        let mut routed = Vec::new();
        for c in &mut res.channels {
            let Some(app) = apps.get(&c.key).filter(|_| c.ty == ChannelType::App) else {
                continue;
            };
            let kept = merge(&c.ids, &app.routable, true).unwrap_or_default();
            if kept.len() != c.ids.len() && !c.reached.is_empty() {
                let users = c.reached.bitmap();
                c.reached =
                    Reached::of(self.users_with_ids(&c.key, c.ty, users, &Bitmap::of(&kept)));
            }
            c.ids = kept;
            for (step, unit, count) in [
                ("routed", "ids", c.ids.len() as u64),
                ("routed_reached", "users", c.reached.count()),
            ] {
                routed.push(Step {
                    channel: Some(c.key.clone()),
                    step,
                    unit,
                    count,
                });
            }
        }
        if routed.is_empty() {
            return;
        }
        res.steps.extend(routed);
        res.reached_changed();
    }

    /// The IDs of `ids` (on channel `key` of type `ty`; ascending) that deliver (see the
    /// module doc) when sent `at` seconds after the send, as seen just before `until`, as a
    /// bitmap when some do not (`None`: every one delivers).
    fn undelivered(
        &self,
        (key, ty, ids): (&str, ChannelType, &[u32]),
        apps: &AppRoutes,
        at: f64,
        until: f64,
    ) -> Option<Bitmap> {
        let delivering = match apps.get(key).filter(|_| ty == ChannelType::App) {
            Some(app) => merge(ids, &app.delivering(at, until), true)?,
            None => merge(ids, &self.undeliverable, false)?,
        };
        (delivering.len() != ids.len()).then(|| Bitmap::of(&delivering))
    }

    /// The app channel routing of a stage whose delivery grows with time (devices came online
    /// after the send, within `time_to_live`), if it is one.
    fn timed<'a>(
        &self,
        st: &Stage,
        res: &Resolution,
        apps: &'a AppRoutes,
    ) -> Option<&'a AppDevices> {
        let c = st.channel(res);
        apps.get(&c.key)
            .filter(|a| c.ty == ChannelType::App && a.has_arrivals())
    }

    /// The users stage `st` delivered to as seen just before `until` seconds after the send.
    fn delivered_until<'a>(
        &self,
        st: &'a Stage,
        res: &'a Resolution,
        apps: &AppRoutes,
        until: f64,
    ) -> Cow<'a, Bitmap> {
        if self.timed(st, res, apps).is_none() {
            return Cow::Borrowed(st.delivered(res));
        }
        let c = st.channel(res);
        match self.undelivered((&c.key, c.ty, &c.ids), apps, st.offset as f64, until) {
            None => Cow::Borrowed(c.reached.bitmap()),
            Some(ids) => Cow::Owned(self.users_with_ids(&c.key, c.ty, c.reached.bitmap(), &ids)),
        }
    }

    /// A stage sending `sent`, or channel `index` of `res` as it is, with its delivery.
    /// `listed`: whether the send has a black or white list.
    fn stage(
        &self,
        (stage, delay, offset): (u32, u64, u64),
        (res, index, listed): (&Resolution, usize, bool),
        sent: Option<ChannelResult>,
        apps: &AppRoutes,
    ) -> Stage {
        let candidates = res.channels[index].reached.count();
        let channel = sent.as_ref().unwrap_or(&res.channels[index]);
        let out = (channel.key.as_str(), channel.ty, channel.ids.as_slice());
        let routed = channel.ty == ChannelType::App && apps.contains_key(&channel.key);
        let (delivered_ids, delivered) = if !listed && !routed {
            // Without a list every selected ID of a user sent to was sent, so a user delivered
            // when one of its selected IDs is not undeliverable: tested on that (usually
            // smaller) list, without building the set of the IDs that delivered.
            let bad = merge(&channel.ids, &self.undeliverable, true).map_or(0, |v| v.len());
            if bad == 0 {
                (channel.ids.len() as u64, None)
            } else {
                let users = self.users_with_ids_where(
                    &channel.key,
                    channel.ty,
                    channel.reached.bitmap(),
                    &self.undeliverable,
                    false,
                );
                ((channel.ids.len() - bad) as u64, Some(users))
            }
        } else {
            match self.undelivered(out, apps, offset as f64, f64::INFINITY) {
                // every ID delivered: so did every user (each has one)
                None => (channel.ids.len() as u64, None),
                Some(ids) => {
                    let users = self.users_with_ids(
                        &channel.key,
                        channel.ty,
                        channel.reached.bitmap(),
                        &ids,
                    );
                    (ids.cardinality(), Some(users))
                }
            }
        };
        let delivered_users = delivered
            .as_ref()
            .map_or(channel.reached.count(), Bitmap::cardinality);
        let steps = [
            ("candidates", "users", candidates),
            ("users", "users", channel.reached.count()),
            ("ids", "ids", channel.ids.len() as u64),
            ("delivered_ids", "ids", delivered_ids),
            ("delivered", "users", delivered_users),
        ]
        .map(|(step, unit, count)| Step {
            channel: Some(channel.key.clone()),
            step,
            unit,
            count,
        })
        .to_vec();
        Stage {
            stage,
            delay,
            offset,
            index,
            sent,
            delivered_ids,
            delivered,
            steps,
        }
    }

    /// The stages of a resolved send (`res` from `resolve(spec)`, app channels routed by
    /// `route_apps(apps)` if any). `rule`: the send strategy's (channel key, delay) stages;
    /// it must name channels of the send (else 1015014). See the module doc.
    pub fn stages(
        &self,
        spec: &SendSpec,
        res: &Resolution,
        rule: Option<&[(String, u64)]>,
        apps: &AppRoutes,
    ) -> Result<Vec<Stage>> {
        let rule = rule.filter(|_| !matches!(spec.target, Target::Custom(_)));
        let listed = spec.black.is_some() || spec.white.is_some();
        let Some(rule) = rule else {
            return Ok((0..res.channels.len())
                .map(|i| self.stage((1, 0, 0), (res, i, listed), None, apps))
                .collect());
        };
        let mut out: Vec<Stage> = Vec::with_capacity(rule.len());
        // Users delivered by earlier stages whenever looked at, and the earlier stages whose
        // deliveries depend on when a later stage goes out (see the module doc).
        let mut fixed = Bitmap::new();
        let mut timed: Vec<usize> = Vec::new();
        let mut offset = 0u64;
        for (n, (key, delay)) in rule.iter().enumerate() {
            let index = res
                .channels
                .iter()
                .position(|c| &c.key == key)
                .ok_or_else(|| {
                    refuse(
                        code::UNKNOWN_RULE,
                        format!("send strategy stage {key:?} is not a channel of the template"),
                    )
                })?;
            let c = &res.channels[index];
            offset = offset.saturating_add(*delay);
            let mut done = Cow::Borrowed(&fixed);
            for &j in &timed {
                let d = self.delivered_until(&out[j], res, apps, offset as f64);
                done.to_mut().or_inplace(&d);
            }
            let users = c.reached.bitmap().andnot(&done);
            let sent = if users.cardinality() == c.reached.count() {
                None
            } else {
                let (mut ch, _) = self.user_channel(key, c.ty, &users, self.send_list(spec));
                if let Some(app) = apps.get(key).filter(|_| c.ty == ChannelType::App) {
                    ch.ids = merge(&ch.ids, &app.routable, true).unwrap_or_default();
                }
                debug_assert_eq!(ch.reached.count(), users.cardinality());
                ch.reached = Reached::of(users);
                Some(ch)
            };
            let at = (n as u32 + 1, *delay, offset);
            let stage = self.stage(at, (res, index, listed), sent, apps);
            if self.timed(&stage, res, apps).is_some() {
                timed.push(out.len());
            } else {
                fixed.or_inplace(stage.delivered(res));
            }
            out.push(stage);
        }
        Ok(out)
    }
}

/// Membership in a bitmap, on a dense copy (one bit per value up to its largest) when many
/// tests will be made: a bit test instead of a container search per test.
pub(super) enum Members<'a> {
    Sparse(&'a Bitmap),
    Dense(croaring::Bitset),
}

impl<'a> Members<'a> {
    /// `tests`: about how many tests will be made. The dense copy costs a pass over
    /// `max / 64` words, worth it when the tests are at least that many.
    pub(super) fn new(set: &'a Bitmap, tests: u64) -> Self {
        let words = set.maximum().map_or(0, |m| m as u64 / 64 + 1);
        match (tests >= words.max(4096))
            .then(|| set.to_bitset())
            .flatten()
        {
            Some(b) => Members::Dense(b),
            None => Members::Sparse(set),
        }
    }

    pub(super) fn contains(&self, v: u32) -> bool {
        match self {
            Members::Sparse(b) => b.contains(v),
            Members::Dense(b) => b.get(v as usize),
        }
    }
}

/// A membership test, or its negation.
struct Probe<'a> {
    members: Members<'a>,
    keep_in: bool,
}

impl Probe<'_> {
    fn contains(&self, v: u32) -> bool {
        self.members.contains(v) == self.keep_in
    }
}

/// The IDs of `ids` (ascending) that are in `set` (`keep_in`) or not in it, by merging with
/// the part of `set` within their range when that part is no larger than `ids` (IDs of other
/// channels are interned in other ranges, so usually it is empty), else by probing each ID. `None` when it keeps all of them
/// for certain (no IDs, or none of them in `set` when keeping those not in it).
fn merge(ids: &[u32], set: &Bitmap, keep_in: bool) -> Option<Vec<u32>> {
    let (Some(&lo), Some(&hi)) = (ids.first(), ids.last()) else {
        return None;
    };
    let within = set.range_cardinality(lo..=hi);
    if within == 0 {
        // none of `set` in their range: keep all (for certain) or none
        return if keep_in { Some(Vec::new()) } else { None };
    }
    if within > ids.len() as u64 {
        // Few IDs spread over a crowded range (a small send): probing each is cheaper.
        return Some(
            ids.iter()
                .copied()
                .filter(|&i| set.contains(i) == keep_in)
                .collect(),
        );
    }
    let part = set.and(&Bitmap::from_range(lo..=hi)).to_vec();
    let mut out = Vec::with_capacity(if keep_in { part.len() } else { ids.len() });
    let mut j = 0;
    for &i in ids {
        while j < part.len() && part[j] < i {
            j += 1;
        }
        if (j < part.len() && part[j] == i) == keep_in {
            out.push(i);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ums::tests::user;
    use crate::ums::Target;
    use ChannelType::*;

    /// u0: app a0, phone p0; u1: app a1 (undeliverable), phone p1; u2: phone p2 only;
    /// u3: app a3 only. Everyone has tag t.
    fn reg() -> UmsRegistry {
        let mut r = UmsRegistry::new();
        r.add_channel("app1", App).unwrap();
        r.add_channel("sms1", Sms).unwrap();
        type Binds<'a> = &'a [(&'a str, ChannelType, &'a [&'a str])];
        let users: [(&str, Binds); 4] = [
            ("u0", &[("app1", App, &["a0"]), ("all", Sms, &["p0"])]),
            ("u1", &[("app1", App, &["a1"]), ("all", Sms, &["p1"])]),
            ("u2", &[("all", Sms, &["p2"])]),
            ("u3", &[("app1", App, &["a3"])]),
        ];
        for (u, binds) in users {
            r.upsert_user(&user(u, &[("all", &["t"])], binds)).unwrap();
        }
        r.set_undeliverable(&["a1", "zz"], &["zz"]).unwrap();
        r
    }

    fn spec() -> SendSpec {
        SendSpec {
            target: Target::Tags(vec!["t".into()]),
            channels: vec!["app1".into(), "sms1".into()],
            black: None,
            white: None,
        }
    }

    fn strings(r: &UmsRegistry, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| r.channel_id(i).to_owned()).collect()
    }

    #[test]
    fn later_stages_go_to_the_undelivered() {
        let r = reg();
        assert_eq!(strings(&r, &r.undeliverable().to_vec()), vec!["a1"]);
        let res = r.resolve(&spec()).unwrap();
        let rule = [("app1".to_string(), 0), ("sms1".to_string(), 60)];
        let apps = AppRoutes::new();
        let st = r.stages(&spec(), &res, Some(&rule), &apps).unwrap();
        assert_eq!(
            strings(&r, &st[0].channel(&res).ids),
            vec!["a0", "a1", "a3"]
        );
        assert_eq!(st[0].delivered(&res).to_vec(), vec![0, 3]);
        // stage 2: u1 (app undeliverable) and u2 (no app ID), not u0 (delivered)
        assert_eq!(strings(&r, &st[1].channel(&res).ids), vec!["p1", "p2"]);
        assert_eq!((st[1].stage, st[1].delay, st[1].offset), (2, 60, 60));
        assert_eq!(st[1].delivered(&res).to_vec(), vec![1, 2]);
        let steps: Vec<(&str, u64)> = st[1].steps.iter().map(|s| (s.step, s.count)).collect();
        assert_eq!(
            steps,
            [
                ("candidates", 3),
                ("users", 2),
                ("ids", 2),
                ("delivered_ids", 2),
                ("delivered", 2)
            ]
        );
        // no strategy: one stage per channel, all at once
        let st = r.stages(&spec(), &res, None, &apps).unwrap();
        assert_eq!(st.iter().map(|s| s.stage).collect::<Vec<_>>(), vec![1, 1]);
        assert_eq!(
            strings(&r, &st[1].channel(&res).ids),
            vec!["p0", "p1", "p2"]
        );
        let bad = [("nope".to_string(), 0)];
        assert!(r.stages(&spec(), &res, Some(&bad), &apps).is_err());
    }

    #[test]
    fn routed_app_ids_deliver_when_online() {
        use crate::registry::{Platform, Registry};
        let r = reg();
        let mut dev = Registry::new();
        dev.upsert("a0", Platform::Android, None, &[], None, None, false)
            .unwrap();
        dev.upsert("a1", Platform::Ios, None, &[], None, None, true)
            .unwrap();
        let mut res = r.resolve(&spec()).unwrap();
        let app = &res.channels[0];
        let apps: AppRoutes = [(
            "app1".to_string(),
            AppDevices::new(&r, &app.ids, &dev, None, &mut crate::ums::DeviceMap::new()),
        )]
        .into();
        r.route_apps(&mut res, &apps);
        // a3 is no device: u3 is no longer reached on app1 and nothing else reaches it
        assert_eq!(strings(&r, &res.channels[0].ids), vec!["a0", "a1"]);
        assert_eq!(res.unreachable().to_vec(), vec![3]);
        let last = res.all_steps().pop().unwrap();
        assert_eq!((last.step, last.count), ("unreachable", 1));
        let rule = [("app1".to_string(), 0), ("sms1".to_string(), 5)];
        let st = r.stages(&spec(), &res, Some(&rule), &apps).unwrap();
        // a1 is online (routing wins over the undeliverable list); a0 is offline
        assert_eq!(st[0].delivered(&res).to_vec(), vec![1]);
        assert_eq!(strings(&r, &st[1].channel(&res).ids), vec!["p0", "p2"]);

        // a0 (id 0) comes online 3 s after the send: before stage 2 goes out (5 s), so u0 is
        // delivered and not retried, when time_to_live lets it receive the push
        let a0 = r.ids.lookup("a0").unwrap();
        let timed = |ttl: u64, at: f64| -> AppRoutes {
            let app = apps["app1"].clone().with_arrivals(&[(a0, at)], ttl);
            [("app1".to_string(), app)].into()
        };
        let st = r
            .stages(&spec(), &res, Some(&rule), &timed(60, 3.0))
            .unwrap();
        assert_eq!(st[0].delivered(&res).to_vec(), vec![0, 1]);
        assert_eq!(strings(&r, &st[1].channel(&res).ids), vec!["p2"]);
        // time_to_live 0: only devices online at the send count
        let st = r
            .stages(&spec(), &res, Some(&rule), &timed(0, 3.0))
            .unwrap();
        assert_eq!(strings(&r, &st[1].channel(&res).ids), vec!["p0", "p2"]);
        // after stage 2 went out: stage 1 delivered u0 (within ttl), stage 2 was still sent
        let st = r
            .stages(&spec(), &res, Some(&rule), &timed(60, 7.0))
            .unwrap();
        assert_eq!(st[0].delivered(&res).to_vec(), vec![0, 1]);
        assert_eq!(strings(&r, &st[1].channel(&res).ids), vec!["p0", "p2"]);
        // came online after time_to_live: not delivered
        let st = r
            .stages(&spec(), &res, Some(&rule), &timed(2, 3.0))
            .unwrap();
        assert_eq!(st[0].delivered(&res).to_vec(), vec![1]);
        assert_eq!(strings(&r, &st[1].channel(&res).ids), vec!["p0", "p2"]);
    }

    /// Large enough for the dense paths (`Members`, ≥ 4096 tests): the answers are the ones a
    /// user-by-user check gives.
    #[test]
    fn dense_membership_matches_user_by_user() {
        let mut r = UmsRegistry::new();
        r.add_channel("sms1", Sms).unwrap();
        let n = 6000;
        for u in 0..n {
            let own: Vec<String> = (0..1 + u % 3).map(|k| format!("o{u}-{k}")).collect();
            let own: Vec<&str> = own.iter().map(String::as_str).collect();
            let glob = [format!("g{u}")];
            let glob: Vec<&str> = glob.iter().map(String::as_str).collect();
            let binds: Vec<(&str, ChannelType, &[&str])> = if u % 5 == 0 {
                vec![("all", Sms, &glob)] // global only: the second part of OwnElseGlobal
            } else {
                vec![("sms1", Sms, &own), ("all", Sms, &glob)]
            };
            r.upsert_user(&user(&format!("u{u}"), &[], &binds)).unwrap();
        }
        let users = Bitmap::from_range(0..n);
        // every 7th ID string delivers
        let ids: Vec<u32> = (0..r.ids.len() as u32).filter(|i| i % 7 == 0).collect();
        let set = Bitmap::of(&ids);
        assert!(matches!(
            Members::new(&set, users.cardinality()),
            Members::Dense(_)
        ));
        // The users whose chosen SMS IDs include one in `set` (`inside`) or one outside it.
        let model = |inside: bool| -> Vec<u32> {
            (0..n)
                .filter(|&u| {
                    let rec = r.user(&format!("u{u}")).unwrap();
                    let own = rec.bindings.get("sms1").and_then(|b| b.get(&Sms));
                    let chosen = own.or_else(|| rec.bindings["all"].get(&Sms)).unwrap();
                    chosen
                        .iter()
                        .any(|s| set.contains(r.ids.lookup(s).unwrap()) == inside)
                })
                .collect()
        };
        let got = r.users_with_ids("sms1", Sms, &users, &set);
        assert_eq!(got.to_vec(), model(true));
        let outside = r.users_with_ids_where("sms1", Sms, &users, &set, false);
        let want = model(false);
        assert_eq!(outside.to_vec(), want);
        let sparse = Members::new(&set, 0);
        assert!(matches!(sparse, Members::Sparse(_)));
        for v in 0..r.ids.len() as u32 + 70 {
            assert_eq!(sparse.contains(v), set.contains(v));
            assert_eq!(Members::new(&set, u64::MAX).contains(v), set.contains(v));
        }
        assert_eq!(merge_sorted(&[1, 3, 5], &[2, 3, 9]), vec![1, 2, 3, 5, 9]);
    }
}
