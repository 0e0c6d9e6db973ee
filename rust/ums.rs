//! The UMS user registry (Jiguang UMS, seed 000): users, their tags and channel bindings per
//! scope, channels, user segments and black/white lists. `resolve` turns a template send into
//! the channel registration IDs of every channel of the template; `load` is the bulk path.
//!
//! Invariants:
//! - user ids are the `users` interner's ids: dense, never reused. Only `live` users (uploaded,
//!   not deleted) are in any tag bitmap or binding; segments and lists may name users that are
//!   not live (they intern the userid), and are intersected with `live` when used;
//! - a scope is `GLOBAL` (0, the `all` binding) or `1 + id` of a channel key in `scopes`; a
//!   channel key may be used as a scope before (or without) the channel being registered;
//! - channel registration IDs of every type share one interner (`ids`), so a list's `ids`
//!   are one bitmap whatever the channel; an ID string means the same id on every channel;
//! - `Bindings` of one (type, scope): `users` holds exactly the users with at least one ID
//!   there; `first` (a compact `column::Column`, values in user order) the first ID of each
//!   such user; `extra_at` points into `pool` at the further IDs in binding order, present
//!   exactly for the users of `multi`. No ID repeats within one user's IDs of one (type, scope).

mod app;
mod column;
mod load;
mod resolve;
pub mod snapshot;
mod stages;
mod walk;

pub use app::{AppDevices, AppGroup, DeviceMap};
pub use resolve::{ChannelResult, Reached, Resolution, SendSpec, Step, Target, UserNames};
pub use stages::{AppRoutes, Stage};

use crate::error::{Error, Result};
use crate::intern::Interner;
use column::Column;
use croaring::Bitmap;
use std::collections::{BTreeMap, HashMap};

/// "No value" in per-user columns.
pub const NONE: u32 = u32::MAX;
/// The scope of the global (`all`) tags and bindings.
pub const GLOBAL: u32 = 0;
/// The name of the global scope in records and import files.
pub const GLOBAL_NAME: &str = "all";
/// Longest userid, in characters (seed: "no more than 64 characters").
pub const MAX_USERID_CHARS: usize = 64;
/// Longest tag, in UTF-8 bytes (seed: "should not exceed 40 bytes").
pub const MAX_TAG_BYTES: usize = 40;
/// Longest channel key, channel registration ID, segment name, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// UMS codes raised by the engine (the table is in `python/reach/ums.py`).
pub mod code {
    /// option: black_id and white_id together.
    pub const BAD_OPTION: u32 = 1015010;
    /// aud_segment names no user segment.
    pub const UNKNOWN_SEGMENT: u32 = 1015012;
    /// option.black_id / white_id names no list.
    pub const UNKNOWN_LIST: u32 = 1015013;
    /// A template (or rule) channel key that is not a registered channel.
    pub const UNKNOWN_CHANNEL: u32 = 1015015;
    /// rule_id names no send strategy, or one over other channels than the template's.
    pub const UNKNOWN_RULE: u32 = 1015014;
    /// User management: a refused user, tag, binding, channel, segment or list.
    pub const BAD_RECORD: u32 = 1015018;
}

fn refuse(code: u32, message: String) -> Error {
    Error::Invalid { code, message }
}

#[cfg(test)]
thread_local! {
    /// The bytes a test lets the interners take (`fits`): "full" without gigabytes of strings.
    static TEST_ROOM: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

fn bad(message: String) -> Error {
    refuse(code::BAD_RECORD, message)
}

/// A UMS channel type (`aud_<type>` and the `type` of a channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ChannelType {
    App,
    Wechatoa,
    Wechatmp,
    Sms,
    Email,
    AlipayLife,
    DingtalkCc,
    Wechatwk,
    WechatwkLinkedcorp,
}

/// Which binding a channel's IDs come from (the seed's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The IDs bound to this channel's key (app, WeChat, Alipay, WeCom).
    Own,
    /// Per user: the IDs bound to this channel's key, else the global ones (SMS, email).
    OwnElseGlobal,
    /// The globally bound IDs (DingTalk: its IDs are globally unique).
    Global,
}

impl ChannelType {
    /// Every type, in code order.
    pub const ALL: [ChannelType; 9] = [
        ChannelType::App,
        ChannelType::Wechatoa,
        ChannelType::Wechatmp,
        ChannelType::Sms,
        ChannelType::Email,
        ChannelType::AlipayLife,
        ChannelType::DingtalkCc,
        ChannelType::Wechatwk,
        ChannelType::WechatwkLinkedcorp,
    ];

    /// The vendor's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            ChannelType::App => "app",
            ChannelType::Wechatoa => "wechatoa",
            ChannelType::Wechatmp => "wechatmp",
            ChannelType::Sms => "sms",
            ChannelType::Email => "email",
            ChannelType::AlipayLife => "alipay_life",
            ChannelType::DingtalkCc => "dingtalk_cc",
            ChannelType::Wechatwk => "wechatwk",
            ChannelType::WechatwkLinkedcorp => "wechatwk_linkedcorp",
        }
    }

    /// The type of a name, or a `BAD_RECORD` refusal.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| bad(format!("unknown channel type {s:?}")))
    }

    /// Where this type's IDs come from when a template channel of this type is resolved.
    pub fn selection(self) -> Selection {
        match self {
            ChannelType::Sms | ChannelType::Email => Selection::OwnElseGlobal,
            ChannelType::DingtalkCc => Selection::Global,
            _ => Selection::Own,
        }
    }
}

/// The seed's special characters of tags and userids.
fn special(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_@!#$&*+=.|¥".contains(c)
}

fn cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2A6DF}')
}

/// A userid as the seed allows it: 1 to 64 letters, digits, `_` or `@!#$&*+=.|¥`.
pub fn check_userid(s: &str) -> Result<()> {
    if s.is_empty() || s.chars().count() > MAX_USERID_CHARS || !s.chars().all(special) {
        return Err(bad(format!(
            "userid {s:?} must be 1 to {MAX_USERID_CHARS} letters, digits, _ or @!#$&*+=.|¥"
        )));
    }
    Ok(())
}

/// A tag as the seed allows it: letters, digits, `_`, Chinese and `@!#$&*+=.|¥`, <= 40 bytes.
pub fn check_tag(s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_TAG_BYTES || !s.chars().all(|c| special(c) || cjk(c)) {
        return Err(bad(format!(
            "tag {s:?} must be 1 to {MAX_TAG_BYTES} UTF-8 bytes of letters, digits, _, Chinese \
             characters or @!#$&*+=.|¥"
        )));
    }
    Ok(())
}

/// A channel key, registration ID or segment name: 1 to 256 bytes.
pub fn check_key(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_KEY_BYTES {
        return Err(bad(format!(
            "{what} {s:?} must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A scope name: `all` or a channel key.
fn check_scope(s: &str) -> Result<()> {
    check_key("channel key", s)
}

/// Cut `bytes` at `offsets` (ascending, `offsets[0]` the start) into UTF-8 strings, for the
/// columnar bulk paths.
pub fn cut<'a>(what: &str, bytes: &'a [u8], offsets: &[u64]) -> Result<Vec<&'a str>> {
    offsets
        .windows(2)
        .map(|w| {
            bytes
                .get(w[0] as usize..w[1] as usize)
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "{what}: offsets {}..{} are not a UTF-8 span",
                        w[0], w[1]
                    ))
                })
        })
        .collect()
}

/// A gather walks a bitset of the selected users once they are at least one in this many
/// of the id space (roaring then holds them as bitsets too); below, it goes user by user.
const DENSE_IDS_PER_USER: u64 = 16;

/// Garbage a `Bindings` pool may hold beyond half its length before it is compacted (small
/// under test, so that the property tests compact).
const POOL_SLACK: usize = if cfg!(test) { 8 } else { 1024 };

/// The channel IDs of one channel type in one scope (see the module invariants).
#[derive(Default, Clone)]
pub struct Bindings {
    pub(crate) users: Bitmap,
    /// The first ID of every user of `users`, in user order.
    pub(crate) first: Column,
    pub(crate) multi: Bitmap,
    /// Per user of `multi`: where its extra IDs begin in `pool` (`pool[at]` is their number,
    /// the IDs follow). Runs of removed or moved users are garbage until `compact`.
    extra_at: Column,
    pool: Vec<u32>,
    garbage: usize,
    /// The least and greatest extra ID ever pooled, and whether an extra ID was pooled not
    /// above every earlier one (as `Column::range` and `Column::unordered`).
    pool_range: Option<(u32, u32)>,
    pool_unordered: bool,
}

impl Bindings {
    /// The users with at least one ID here.
    pub fn users(&self) -> &Bitmap {
        &self.users
    }

    /// The extra IDs of `u` (empty if none).
    pub(crate) fn extras(&self, u: u32) -> &[u32] {
        self.extras_from(self.extra_at.get(u))
    }

    /// Where the extra IDs of each of `users` begin (`NONE`: it has none), for `extras_from`;
    /// looked up together so that their cache misses overlap.
    pub(crate) fn extras_at_many(&self, users: &[u32]) -> Vec<u32> {
        self.extra_at.get_many(users)
    }

    /// The extra IDs beginning at `at` (from `extras_at_many`; `NONE`: none).
    pub(crate) fn extras_from(&self, at: u32) -> &[u32] {
        match at {
            NONE => &[],
            at => {
                let at = at as usize;
                &self.pool[at + 1..at + 1 + self.pool[at] as usize]
            }
        }
    }

    /// Bind ID `id` to user `u` (after its other IDs here); a repeated ID is ignored.
    pub fn add(&mut self, u: u32, id: u32) {
        let first = self.first.get(u);
        if first == NONE {
            self.first.set(u, id);
            self.users.add(u);
            return;
        }
        if first == id || self.extras(u).contains(&id) {
            return;
        }
        self.note_extra(id);
        let at = self.extra_at.get(u);
        if at == NONE {
            self.extra_at.set(u, self.pool.len() as u32);
            self.pool.extend([1, id]);
            self.multi.add(u);
            return;
        }
        let at = at as usize;
        let n = self.pool[at] as usize;
        if at + 1 + n == self.pool.len() {
            // The last run grows in place (the bulk loads bind a user's IDs together).
            self.pool.push(id);
            self.pool[at] += 1;
        } else {
            self.extra_at.set(u, self.pool.len() as u32);
            self.pool.push(n as u32 + 1);
            self.pool.extend_from_within(at + 1..at + 1 + n);
            self.pool.push(id);
            self.garbage += n + 1;
            self.compact();
        }
    }

    /// Remove every ID of `u`.
    pub fn clear(&mut self, u: u32) {
        self.first.remove(u);
        self.users.remove(u);
        let n = self.extras(u).len();
        if n > 0 {
            self.extra_at.remove(u);
            self.multi.remove(u);
            self.garbage += n + 1;
            self.compact();
        }
    }

    /// Rewrite `pool` without garbage once garbage is most of it.
    fn compact(&mut self) {
        if self.garbage <= POOL_SLACK + self.pool.len() / 2 {
            return;
        }
        let mut pool = Vec::with_capacity(self.pool.len() - self.garbage);
        let mut at = Column::default();
        for (u, a) in self.extra_at.pairs() {
            let a = a as usize;
            at.set(u, pool.len() as u32);
            pool.extend_from_slice(&self.pool[a..a + 1 + self.pool[a] as usize]);
        }
        (self.pool, self.extra_at, self.garbage) = (pool, at, 0);
        (self.pool_range, self.pool_unordered) = (None, false);
        for (_, a) in self.extra_at.pairs() {
            let a = a as usize;
            for i in a + 1..a + 1 + self.pool[a] as usize {
                self.note_extra(self.pool[i]);
            }
        }
    }

    fn note_extra(&mut self, id: u32) {
        if self.pool_range.is_some_and(|(_, hi)| id <= hi) {
            self.pool_unordered = true;
        }
        self.pool_range = Some(
            self.pool_range
                .map_or((id, id), |(lo, hi)| (lo.min(id), hi.max(id))),
        );
    }

    /// The ranges of the two runs a gather emits (first IDs, then extra IDs) when each run
    /// is strictly ascending whatever the users (`None` when not known to be); an empty run
    /// has no range. Then disjoint runs need no `resolve::distinct`, only an order.
    pub(crate) fn run_ranges(&self) -> Option<[Option<(u32, u32)>; 2]> {
        let extras = !self.multi.is_empty();
        let ascending = self.first.ascending()
            && (!extras || (self.extra_at.ascending() && !self.pool_unordered));
        ascending.then(|| [self.first.range(), self.pool_range.filter(|_| extras)])
    }

    /// The IDs of `u`, in binding order (empty if none).
    pub fn ids_of(&self, u: u32) -> Vec<u32> {
        let mut out = Vec::new();
        match self.first.get(u) {
            NONE => return out,
            f => out.push(f),
        }
        out.extend_from_slice(self.extras(u));
        out
    }

    /// Append the IDs of every user of `users` (which must be a subset of `self.users`) to
    /// `out`: first IDs in ascending user order, then the extra IDs in ascending user order.
    /// Not deduplicated. Each of the two runs is ascending when the IDs were interned in
    /// user order (as the bulk loads do), which `resolve::distinct` turns into a merge.
    pub fn gather(&self, users: &Bitmap, out: &mut Vec<u32>) {
        self.gather_first(users, out);
        self.gather_extras(users, out);
    }

    /// The first IDs of `users` (a subset of `self.users`), in user order.
    pub(crate) fn gather_first(&self, users: &Bitmap, out: &mut Vec<u32>) {
        let n = users.cardinality();
        out.reserve(n as usize);
        let mut buf = [0u32; 1024];
        // Dense selections walk the bitset word by word (no per-user iterator or rank lookup
        // of a whole word); sparse ones go user by user (a bitset would be mostly zeros).
        let dense = users
            .maximum()
            .is_some_and(|m| n * DENSE_IDS_PER_USER > u64::from(m));
        let bits = (dense && self.first.all_slotted())
            .then(|| users.to_bitset())
            .flatten();
        match bits {
            Some(bits) => {
                let (start, n) = (out.len(), n as usize);
                self.first
                    .gather_bits(bits.as_slice(), &mut out.spare_capacity_mut()[..n]);
                // SAFETY: `gather_bits` wrote all `n` places after `start` (it asserts so).
                unsafe { out.set_len(start + n) };
            }
            None => {
                let mut it = users.iter();
                loop {
                    let n = it.next_many(&mut buf);
                    if n == 0 {
                        break;
                    }
                    self.first.gather(&buf[..n], out);
                }
            }
        }
    }

    /// The extra IDs of `users` (a subset of `self.users`), in user order.
    pub(crate) fn gather_extras(&self, users: &Bitmap, out: &mut Vec<u32>) {
        let mut buf = [0u32; 1024];
        if !self.multi.is_empty() {
            let multi = users.and(&self.multi);
            let mut it = multi.iter();
            loop {
                let n = it.next_many(&mut buf);
                if n == 0 {
                    break;
                }
                for &u in &buf[..n] {
                    out.extend_from_slice(self.extras(u));
                }
            }
        }
    }

    fn memory_usage(&self) -> usize {
        size(&self.users)
            + self.first.memory_usage()
            + size(&self.multi)
            + self.extra_at.memory_usage()
            + self.pool.capacity() * 4
    }
}

fn size(b: &Bitmap) -> usize {
    b.get_serialized_size_in_bytes::<croaring::Portable>()
}

/// A black or white list: users and channel IDs.
#[derive(Default, Clone)]
pub struct IdList {
    pub users: Bitmap,
    pub ids: Bitmap,
}

/// One user as uploaded: tags and bindings per scope (`all` or a channel key).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserRecord {
    pub userid: String,
    /// scope -> tags (sorted when reported).
    pub tags: BTreeMap<String, Vec<String>>,
    /// scope -> channel type -> IDs (in binding order).
    pub bindings: BTreeMap<String, BTreeMap<ChannelType, Vec<String>>>,
}

impl UserRecord {
    /// Check every field before anything changes.
    pub fn check(&self) -> Result<()> {
        check_userid(&self.userid)?;
        for (scope, tags) in &self.tags {
            check_scope(scope)?;
            tags.iter().try_for_each(|t| check_tag(t))?;
        }
        for (scope, types) in &self.bindings {
            check_scope(scope)?;
            for ids in types.values() {
                ids.iter()
                    .try_for_each(|id| check_key("channel registration ID", id))?;
            }
        }
        Ok(())
    }

    /// Upper bound of the bytes this record adds to the interners.
    fn bytes(&self) -> usize {
        let tags: usize = self
            .tags
            .iter()
            .flat_map(|(s, t)| t.iter().chain([s]))
            .map(String::len)
            .sum();
        let ids: usize = self
            .bindings
            .iter()
            .map(|(s, ts)| s.len() + ts.values().flatten().map(String::len).sum::<usize>())
            .sum();
        self.userid.len() + tags + ids
    }
}

/// The UMS registry of one account.
///
/// # Examples
///
/// ```
/// use reach::ums::{ChannelType, SendSpec, Target, UmsRegistry, UserRecord};
///
/// let mut reg = UmsRegistry::new();
/// reg.add_channel("sms1", ChannelType::Sms).unwrap();
/// let mut user = UserRecord { userid: "u1".into(), ..Default::default() };
/// user.tags.insert("all".into(), vec!["vip".into()]);
/// user.bindings.insert("all".into(), [(ChannelType::Sms, vec!["13800000000".into()])].into());
/// reg.upsert_user(&user).unwrap();
/// let spec = SendSpec {
///     target: Target::Tags(vec!["vip".into()]),
///     channels: vec!["sms1".into()],
///     black: None,
///     white: None,
/// };
/// let res = reg.resolve(&spec).unwrap();
/// assert_eq!(reg.channel_id(res.channels[0].ids[0]), "13800000000");
/// assert!(res.unreachable().is_empty());
/// ```
#[derive(Default, Clone)]
pub struct UmsRegistry {
    pub(crate) users: Interner,
    pub(crate) live: Bitmap,
    pub(crate) scopes: Interner,
    pub(crate) channels: HashMap<String, ChannelType>,
    pub(crate) tags: Interner,
    pub(crate) tag_users: HashMap<(u32, u32), Bitmap>,
    pub(crate) ids: Interner,
    pub(crate) bindings: HashMap<(ChannelType, u32), Bindings>,
    pub(crate) segments: HashMap<String, Bitmap>,
    pub(crate) lists: HashMap<u64, IdList>,
    /// Channel registration IDs that never deliver (the emulator's delivery model, `stages`).
    pub(crate) undeliverable: Bitmap,
}

impl UmsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live users.
    pub fn len(&self) -> u64 {
        self.live.cardinality()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The live users.
    pub fn live(&self) -> &Bitmap {
        &self.live
    }

    /// Number of user ids ever assigned (live or not).
    pub fn user_capacity(&self) -> usize {
        self.users.len()
    }

    /// Number of channel registration IDs ever interned.
    pub fn id_capacity(&self) -> usize {
        self.ids.len()
    }

    /// The id of a live user.
    pub fn user_id(&self, userid: &str) -> Option<u32> {
        self.users.lookup(userid).filter(|&u| self.live.contains(u))
    }

    /// The userid of a user id (live or not).
    pub fn userid(&self, u: u32) -> &str {
        self.users.get(u)
    }

    /// The string of an interned channel registration ID.
    pub fn channel_id(&self, id: u32) -> &str {
        self.ids.get(id)
    }

    /// The scope id of a scope name, if it was ever used.
    pub fn scope(&self, name: &str) -> Option<u32> {
        if name == GLOBAL_NAME {
            Some(GLOBAL)
        } else {
            self.scopes.lookup(name).map(|s| s + 1)
        }
    }

    fn scope_name(&self, s: u32) -> &str {
        if s == GLOBAL {
            GLOBAL_NAME
        } else {
            self.scopes.get(s - 1)
        }
    }

    pub(crate) fn intern_scope(&mut self, name: &str) -> u32 {
        if name == GLOBAL_NAME {
            GLOBAL
        } else {
            self.scopes.intern(name).0 + 1
        }
    }

    /// The type of a registered channel.
    pub fn channel(&self, key: &str) -> Option<ChannelType> {
        self.channels.get(key).copied()
    }

    /// Every registered channel, by key.
    pub fn channels(&self) -> &HashMap<String, ChannelType> {
        &self.channels
    }

    /// Register (or re-type) a channel. `all` is reserved for the global scope.
    pub fn add_channel(&mut self, key: &str, ty: ChannelType) -> Result<()> {
        check_key("channel key", key)?;
        if key == GLOBAL_NAME {
            return Err(bad(format!(
                "{GLOBAL_NAME:?} is the global scope, not a channel key"
            )));
        }
        self.intern_scope(key);
        self.channels.insert(key.to_owned(), ty);
        Ok(())
    }

    /// The users of a tag in a scope (`None` if nobody ever had it there).
    pub fn tag_users(&self, tag: &str, scope: &str) -> Option<&Bitmap> {
        let t = self.tags.lookup(tag)?;
        self.tag_users.get(&(t, self.scope(scope)?))
    }

    /// The bindings of a channel type in a scope.
    pub fn bindings(&self, ty: ChannelType, scope: &str) -> Option<&Bindings> {
        self.bindings.get(&(ty, self.scope(scope)?))
    }

    fn fits(&self, bytes: usize) -> bool {
        #[cfg(test)]
        if bytes > TEST_ROOM.get() {
            return false;
        }
        self.users.fits(bytes)
            && self.ids.fits(bytes)
            && self.tags.fits(bytes)
            && self.scopes.fits(bytes)
    }

    /// Intern a userid (not making it live).
    pub(crate) fn intern_user(&mut self, userid: &str) -> u32 {
        self.users.intern(userid).0
    }

    /// Insert or replace a user: afterwards its tags and bindings are exactly the record's
    /// (a deleted user comes back). Returns its id. A refusal changes nothing.
    pub fn upsert_user(&mut self, user: &UserRecord) -> Result<u32> {
        Ok(self.upsert_users(std::slice::from_ref(user))?[0])
    }

    /// `upsert_user` of several users, all or nothing: every record is checked, and the
    /// interners must have room for all of them together, before anything changes (a
    /// refusal of the second record leaves the first unapplied). Returns their ids, in order.
    pub fn upsert_users(&mut self, users: &[UserRecord]) -> Result<Vec<u32>> {
        for (i, user) in users.iter().enumerate() {
            user.check().map_err(|e| match e {
                Error::Invalid { code, message } if users.len() > 1 => {
                    refuse(code, format!("users[{i}] ({:?}): {message}", user.userid))
                }
                e => e,
            })?;
        }
        if !self.fits(users.iter().map(UserRecord::bytes).sum()) {
            return Err(bad("the UMS registry is full".into()));
        }
        Ok(users.iter().map(|u| self.apply_user(u)).collect())
    }

    /// `upsert_user` of an already checked record.
    pub(crate) fn apply_user(&mut self, user: &UserRecord) -> u32 {
        let u = self.intern_user(&user.userid);
        if self.live.contains(u) {
            self.clear_user(u);
        }
        self.live.add(u);
        for (scope, tags) in &user.tags {
            let s = self.intern_scope(scope);
            for t in tags {
                let t = self.tags.intern(t).0;
                self.tag_users.entry((t, s)).or_default().add(u);
            }
        }
        for (scope, types) in &user.bindings {
            let s = self.intern_scope(scope);
            for (&ty, ids) in types {
                for id in ids {
                    let id = self.ids.intern(id).0;
                    self.bindings.entry((ty, s)).or_default().add(u, id);
                }
            }
        }
        u
    }

    /// Remove `u` from every tag and binding (not from `live`).
    fn clear_user(&mut self, u: u32) {
        // Why a scan: no per-user membership list is kept (it would cost bytes per membership
        // at 10M users); replacing or deleting a user is rare next to resolving.
        for b in self.tag_users.values_mut() {
            b.remove(u);
        }
        for b in self.bindings.values_mut() {
            b.clear(u);
        }
    }

    /// Delete a user; whether it was live. Its id stays (ids are never reused).
    pub fn delete_user(&mut self, userid: &str) -> bool {
        let Some(u) = self.user_id(userid) else {
            return false;
        };
        self.clear_user(u);
        self.live.remove(u);
        true
    }

    /// A live user's record: tags sorted per scope, IDs in binding order.
    pub fn user(&self, userid: &str) -> Option<UserRecord> {
        let u = self.user_id(userid)?;
        let mut out = UserRecord {
            userid: userid.to_owned(),
            ..Default::default()
        };
        for (&(t, s), b) in &self.tag_users {
            if b.contains(u) {
                let tags = out.tags.entry(self.scope_name(s).to_owned()).or_default();
                tags.push(self.tags.get(t).to_owned());
            }
        }
        out.tags.values_mut().for_each(|t| t.sort_unstable());
        for (&(ty, s), b) in &self.bindings {
            let ids = b.ids_of(u);
            if !ids.is_empty() {
                let scope = out
                    .bindings
                    .entry(self.scope_name(s).to_owned())
                    .or_default();
                scope.insert(
                    ty,
                    ids.iter().map(|&i| self.ids.get(i).to_owned()).collect(),
                );
            }
        }
        Some(out)
    }

    /// Intern userids that must all be valid (segments and lists); a bitmap of their ids.
    fn user_set(&mut self, userids: &[&str]) -> Result<Bitmap> {
        userids.iter().try_for_each(|u| check_userid(u))?;
        let mut ids: Vec<u32> = userids.iter().map(|u| self.intern_user(u)).collect();
        ids.sort_unstable();
        Ok(Bitmap::of(&ids))
    }

    /// Define (or redefine) a static user segment; how many of its users are live.
    pub fn add_segment(&mut self, name: &str, userids: &[&str]) -> Result<u64> {
        check_key("segment", name)?;
        let members = self.user_set(userids)?;
        let n = members.and_cardinality(&self.live);
        self.segments.insert(name.to_owned(), members);
        Ok(n)
    }

    /// Define (or redefine) a black/white list of userids and channel registration IDs.
    pub fn add_list(&mut self, list_id: u64, userids: &[&str], ids: &[&str]) -> Result<()> {
        ids.iter()
            .try_for_each(|i| check_key("channel registration ID", i))?;
        let users = self.user_set(userids)?;
        let mut idv: Vec<u32> = ids.iter().map(|i| self.ids.intern(i).0).collect();
        idv.sort_unstable();
        self.lists.insert(
            list_id,
            IdList {
                users,
                ids: Bitmap::of(&idv),
            },
        );
        Ok(())
    }

    /// Bulk: intern and make live `userids` (existing users keep their tags and bindings).
    pub fn add_users(&mut self, userids: &[&str]) -> Result<Vec<u32>> {
        userids.iter().try_for_each(|u| check_userid(u))?;
        let bytes = userids.iter().map(|u| u.len()).sum();
        if !self.users.fits(bytes) {
            return Err(bad("the UMS registry is full".into()));
        }
        self.users.reserve(userids.len(), bytes);
        let ids: Vec<u32> = userids.iter().map(|u| self.intern_user(u)).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        self.live.add_many(&sorted);
        Ok(ids)
    }

    /// Bulk: add the live users of `members` to a tag in a scope.
    pub fn add_tag_users(&mut self, tag: &str, scope: &str, members: &Bitmap) -> Result<()> {
        check_tag(tag)?;
        check_scope(scope)?;
        let s = self.intern_scope(scope);
        let t = self.tags.intern(tag).0;
        self.tag_users
            .entry((t, s))
            .or_default()
            .or_inplace(&members.and(&self.live));
        Ok(())
    }

    /// Bulk: bind `ids[i]` to live user `users[i]` for channel type `ty` in a scope.
    pub fn bind_many(
        &mut self,
        ty: ChannelType,
        scope: &str,
        users: &[u32],
        ids: &[&str],
    ) -> Result<()> {
        check_scope(scope)?;
        if users.len() != ids.len() {
            return Err(bad("users and ids differ in length".into()));
        }
        if let Some(&u) = users.iter().find(|&&u| !self.live.contains(u)) {
            return Err(bad(format!("user id {u} is not a live user")));
        }
        ids.iter()
            .try_for_each(|i| check_key("channel registration ID", i))?;
        let bytes = ids.iter().map(|i| i.len()).sum();
        if !self.ids.fits(bytes) {
            return Err(bad("the UMS registry is full".into()));
        }
        self.ids.reserve(ids.len(), bytes);
        let s = self.intern_scope(scope);
        let mut b = self.bindings.remove(&(ty, s)).unwrap_or_default();
        for (&u, id) in users.iter().zip(ids) {
            b.add(u, self.ids.intern(id).0);
        }
        self.bindings.insert((ty, s), b);
        Ok(())
    }

    /// Heap bytes per structure (approximate for hash maps).
    pub fn memory_usage(&self) -> Vec<(&'static str, usize)> {
        let tags: usize = self.tag_users.values().map(|b| size(b) + 16).sum();
        let bindings: usize = self.bindings.values().map(Bindings::memory_usage).sum();
        let mut parts = vec![
            ("userids", self.users.memory_usage() + size(&self.live)),
            ("tags", tags + self.tags.memory_usage()),
            ("channel_ids", self.ids.memory_usage()),
            ("bindings", bindings),
            ("segments", self.segments.values().map(size).sum()),
            (
                "lists",
                self.lists
                    .values()
                    .map(|l| size(&l.users) + size(&l.ids))
                    .sum(),
            ),
            ("undeliverable", size(&self.undeliverable)),
        ];
        let total = parts.iter().map(|p| p.1).sum();
        parts.push(("total", total));
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn user(
        userid: &str,
        tags: &[(&str, &[&str])],
        binds: &[(&str, ChannelType, &[&str])],
    ) -> UserRecord {
        let mut r = UserRecord {
            userid: userid.into(),
            ..Default::default()
        };
        for (s, ts) in tags {
            r.tags
                .insert((*s).into(), ts.iter().map(|t| t.to_string()).collect());
        }
        for (s, ty, ids) in binds {
            r.bindings
                .entry((*s).into())
                .or_default()
                .insert(*ty, ids.iter().map(|i| i.to_string()).collect());
        }
        r
    }

    /// The channels of the path-equality property tests: one per selection rule.
    pub(super) const DRAWN_CHANNELS: [(&str, ChannelType); 3] = [
        ("app1", ChannelType::App),
        ("sms1", ChannelType::Sms),
        ("ding", ChannelType::DingtalkCc),
    ];

    /// A registry with `DRAWN_CHANNELS` and no users.
    pub(super) fn drawn_registry() -> UmsRegistry {
        let mut r = UmsRegistry::new();
        for (k, ty) in DRAWN_CHANNELS {
            r.add_channel(k, ty).unwrap();
        }
        r
    }

    /// A user drawn by a property test: per `(scope, type, id)` (indexes into the scopes
    /// `all` and `DRAWN_CHANNELS`' keys, and into their types) the IDs `i{id}` and
    /// `j{id % shared}` (shared by several users).
    pub(super) fn drawn_user(
        userid: &str,
        binds: &[(usize, usize, u32)],
        shared: u32,
    ) -> UserRecord {
        let mut rec = user(userid, &[], &[]);
        for &(s, t, id) in binds {
            let scope = ["all", "app1", "sms1", "ding"][s];
            rec.bindings
                .entry(scope.into())
                .or_default()
                .entry(DRAWN_CHANNELS[t].1)
                .or_default()
                .extend([format!("i{id}"), format!("j{}", id % shared)]);
        }
        rec
    }

    #[test]
    fn upsert_replaces_and_reports() {
        let mut reg = UmsRegistry::new();
        let a = user(
            "u1",
            &[("all", &["vip"]), ("app1", &["new"])],
            &[("app1", ChannelType::App, &["r1", "r2", "r1"])],
        );
        assert_eq!(reg.upsert_user(&a).unwrap(), 0);
        let got = reg.user("u1").unwrap();
        assert_eq!(got.tags["all"], vec!["vip".to_string()]);
        assert_eq!(
            got.bindings["app1"][&ChannelType::App],
            vec!["r1".to_string(), "r2".to_string()]
        );
        let b = user("u1", &[("all", &["x"])], &[]);
        reg.upsert_user(&b).unwrap();
        assert_eq!(reg.user("u1").unwrap(), b);
        assert!(reg
            .bindings(ChannelType::App, "app1")
            .unwrap()
            .users()
            .is_empty());
        assert!(reg.tag_users("vip", "all").unwrap().is_empty());
    }

    #[test]
    fn delete_keeps_the_id_and_clears_memberships() {
        let mut reg = UmsRegistry::new();
        reg.upsert_user(&user(
            "u1",
            &[("all", &["t"])],
            &[("all", ChannelType::Sms, &["p"])],
        ))
        .unwrap();
        assert!(reg.delete_user("u1"));
        assert!(!reg.delete_user("u1"));
        assert_eq!(reg.user("u1"), None);
        assert!(reg.tag_users("t", "all").unwrap().is_empty());
        assert_eq!(reg.upsert_user(&user("u1", &[], &[])).unwrap(), 0);
    }

    #[test]
    fn refusals_change_nothing() {
        let mut reg = UmsRegistry::new();
        let long = "x".repeat(65);
        for bad in [
            user(&long, &[], &[]),
            user("u-1", &[], &[]),
            user("u1", &[("all", &["a b"])], &[]),
            user("u1", &[("all", &[&"标".repeat(14)])], &[]),
            user("u1", &[], &[("all", ChannelType::Sms, &[""])]),
        ] {
            let e = reg.upsert_user(&bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Invalid {
                        code: code::BAD_RECORD,
                        ..
                    }
                ),
                "{e}"
            );
        }
        assert_eq!(reg.user_capacity(), 0);
        assert!(reg.add_channel("all", ChannelType::Sms).is_err());
        assert!(ChannelType::parse("fax").is_err());
        assert_eq!(
            ChannelType::parse("alipay_life").unwrap(),
            ChannelType::AlipayLife
        );
    }

    #[test]
    fn a_batch_of_users_is_all_or_nothing() {
        let mut reg = UmsRegistry::new();
        let a = user(
            "u1",
            &[("all", &["vip"])],
            &[("all", ChannelType::Sms, &["139"])],
        );
        let b = user("u2", &[], &[("all", ChannelType::Sms, &["138"])]);
        let bad = user("u 3", &[], &[]);
        // A bad second record: the first is not applied either, and the refusal names it.
        let e = reg.upsert_users(&[a.clone(), bad]).unwrap_err();
        assert!(e.to_string().contains(r#"users[1] ("u 3")"#), "{e}");
        assert_eq!((reg.len(), reg.user("u1")), (0, None));
        // Room for each record alone but not for both together: "full", nothing applied.
        TEST_ROOM.set(a.bytes().max(b.bytes()));
        let e = reg.upsert_users(&[a.clone(), b.clone()]).unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
        assert_eq!((reg.len(), reg.user("u1")), (0, None));
        assert_eq!(reg.upsert_users(std::slice::from_ref(&a)).unwrap(), vec![0]);
        TEST_ROOM.set(usize::MAX);
        assert_eq!(
            reg.upsert_users(&[a.clone(), b.clone()]).unwrap(),
            vec![0, 1]
        );
        assert_eq!((reg.user("u1"), reg.user("u2")), (Some(a), Some(b)));
    }

    #[test]
    fn bindings_keep_first_and_extras() {
        let mut b = Bindings::default();
        b.add(3, 10);
        b.add(3, 11);
        b.add(3, 10);
        b.add(1, 12);
        assert_eq!(b.ids_of(3), vec![10, 11]);
        let mut out = Vec::new();
        b.gather(&Bitmap::of(&[1, 3]), &mut out);
        assert_eq!(out, vec![12, 10, 11]);
        b.clear(3);
        assert_eq!(b.ids_of(3), Vec::<u32>::new());
        assert!(b.multi.is_empty());
    }

    proptest::proptest! {
        /// Bindings against a map of user -> IDs in binding order, through adds (in any user
        /// order, so that columns go late and pools get garbage) and clears.
        #[test]
        fn bindings_behave_like_a_map(
            ops in proptest::collection::vec((0u32..300, 0u32..40, 0u8..8), 0..2500)
        ) {
            let mut b = Bindings::default();
            let mut m: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for (u, id, op) in ops {
                if op == 0 {
                    b.clear(u);
                    m.remove(&u);
                } else {
                    b.add(u, id);
                    let ids = m.entry(u).or_default();
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            for u in 0..310 {
                proptest::prop_assert_eq!(b.ids_of(u), m.get(&u).cloned().unwrap_or_default());
            }
            let users: Vec<u32> = m.keys().copied().collect();
            proptest::prop_assert_eq!(b.users().to_vec(), users.clone());
            let multi: Vec<u32> = m.iter().filter(|(_, v)| v.len() > 1).map(|(&u, _)| u).collect();
            proptest::prop_assert_eq!(b.multi.to_vec(), multi);
            let mut got = Vec::new();
            b.gather(&Bitmap::of(&users), &mut got);
            let mut want: Vec<u32> = m.values().map(|v| v[0]).collect();
            want.extend(m.values().flat_map(|v| v[1..].iter().copied()));
            proptest::prop_assert_eq!(got, want);
        }
    }
}
