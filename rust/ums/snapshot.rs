//! Saving and loading a whole UMS registry to one file, in the frame of `crate::snapshot`
//! (magic, version, length, payload, CRC-32; written atomically by its `write_atomic`).
//!
//! The payload holds every structure of the registry and an opaque `extra` byte string that the
//! caller owns (the Python side keeps templates, send strategies and channel-to-app links there).
//! A file whose frame or checksum is wrong, or whose content does not decode to a consistent
//! registry (ids within their interners, bindings matching their user bitmaps), is refused with
//! `Error::Snapshot` before anything is built from it.

use super::{Bindings, ChannelType, IdList, UmsRegistry};
use crate::error::Result;
use crate::snapshot::{bad, build, frame, unframe, write_atomic, Reader, Writer};
use std::path::Path;

const MAGIC: &[u8; 8] = b"REACHUM\x01";
const VERSION: u32 = 1;

/// Encode a registry and the caller's `extra` bytes.
pub fn encode(reg: &UmsRegistry, extra: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.interner(&reg.users);
    w.bitmap(&reg.live);
    w.interner(&reg.scopes);
    w.interner(&reg.tags);
    w.interner(&reg.ids);
    let mut channels: Vec<_> = reg.channels.iter().collect();
    channels.sort_unstable();
    w.u64(channels.len() as u64);
    for (key, ty) in channels {
        w.bytes(key.as_bytes());
        w.u32(*ty as u32);
    }
    let mut tags: Vec<_> = reg.tag_users.iter().collect();
    tags.sort_unstable_by_key(|(k, _)| **k);
    w.u64(tags.len() as u64);
    for ((t, s), b) in tags {
        w.u32(*t);
        w.u32(*s);
        w.bitmap(b);
    }
    let mut bindings: Vec<_> = reg.bindings.iter().collect();
    bindings.sort_unstable_by_key(|(k, _)| **k);
    w.u64(bindings.len() as u64);
    for ((ty, s), b) in bindings {
        w.u32(*ty as u32);
        w.u32(*s);
        let (bound, first): (Vec<u32>, Vec<u32>) = b.first.pairs().into_iter().unzip();
        w.u32s(&bound);
        w.u32s(&first);
        w.u64(b.multi.cardinality());
        for u in b.multi.iter() {
            w.u32(u);
            w.u32s(b.extras(u));
        }
    }
    let mut segments: Vec<_> = reg.segments.iter().collect();
    segments.sort_unstable_by_key(|(n, _)| n.as_str());
    w.u64(segments.len() as u64);
    for (name, b) in segments {
        w.bytes(name.as_bytes());
        w.bitmap(b);
    }
    let mut lists: Vec<_> = reg.lists.iter().collect();
    lists.sort_unstable_by_key(|(id, _)| **id);
    w.u64(lists.len() as u64);
    for (id, l) in lists {
        w.u64(*id);
        w.bitmap(&l.users);
        w.bitmap(&l.ids);
    }
    w.bitmap(&reg.undeliverable);
    w.bytes(extra);
    frame(MAGIC, VERSION, &w.0)
}

fn channel_type(code: u32) -> Result<ChannelType> {
    ChannelType::ALL
        .get(code as usize)
        .copied()
        .ok_or_else(|| bad(format!("unknown channel type {code}")))
}

/// Decode a registry and its `extra` bytes, refusing anything corrupt or inconsistent.
pub fn decode(data: &[u8]) -> Result<(UmsRegistry, Vec<u8>)> {
    let mut r = Reader(unframe(data, MAGIC, VERSION)?);
    let mut reg = UmsRegistry::new();
    reg.users = build(r.interner()?)?;
    let users = reg.users.len();
    reg.live = r.bitmap(users)?;
    reg.scopes = build(r.interner()?)?;
    reg.tags = build(r.interner()?)?;
    reg.ids = build(r.interner()?)?;
    let (scopes, ids) = (reg.scopes.len() + 1, reg.ids.len());
    for _ in 0..r.u64()? {
        let key = r.str()?.to_owned();
        let ty = channel_type(r.u32()?)?;
        if reg.scope(&key).is_none() {
            return Err(bad("a channel key that is no scope"));
        }
        reg.channels.insert(key, ty);
    }
    for _ in 0..r.u64()? {
        let (t, s) = (r.u32()?, r.u32()?);
        if t as usize >= reg.tags.len() || s as usize >= scopes {
            return Err(bad("a tag binding of an unknown tag or scope"));
        }
        reg.tag_users.insert((t, s), r.bitmap(users)?);
    }
    for _ in 0..r.u64()? {
        let ty = channel_type(r.u32()?)?;
        let s = r.u32()?;
        if s as usize >= scopes {
            return Err(bad("bindings of an unknown scope"));
        }
        reg.bindings.insert((ty, s), bindings(&mut r, users, ids)?);
    }
    for _ in 0..r.u64()? {
        let name = r.str()?.to_owned();
        reg.segments.insert(name, r.bitmap(users)?);
    }
    for _ in 0..r.u64()? {
        let id = r.u64()?;
        let users = r.bitmap(users)?;
        let ids = r.bitmap(ids)?;
        reg.lists.insert(id, IdList { users, ids });
    }
    reg.undeliverable = r.bitmap(ids)?;
    let extra = r.bytes()?.to_vec();
    if !r.0.is_empty() {
        return Err(bad("trailing data"));
    }
    Ok((reg, extra))
}

/// One `Bindings`, checked: the bound users ascend and are known, every ID is known, further
/// IDs belong to bound users; `users` and `multi` are rebuilt by `Bindings::add`.
fn bindings(r: &mut Reader<'_>, users: usize, ids: usize) -> Result<Bindings> {
    let (bound, first) = (r.u32s()?, r.u32s()?);
    let known_id = |i: &u32| (*i as usize) < ids;
    if bound.len() != first.len()
        || !bound.windows(2).all(|w| w[0] < w[1])
        || bound.last().is_some_and(|&u| u as usize >= users)
        || !first.iter().all(known_id)
    {
        return Err(bad("a binding of an unknown user or ID"));
    }
    let mut b = Bindings::default();
    for (&u, &id) in bound.iter().zip(&first) {
        b.add(u, id);
    }
    for _ in 0..r.u64()? {
        let u = r.u32()?;
        let more = r.u32s()?;
        if !b.users.contains(u) || more.is_empty() || !more.iter().all(known_id) {
            return Err(bad("further IDs of a user without a first one"));
        }
        for id in more {
            b.add(u, id);
        }
    }
    Ok(b)
}

/// Save `reg` and `extra` to `path` atomically.
pub fn save(reg: &UmsRegistry, extra: &[u8], path: &Path) -> Result<()> {
    write_atomic(path, &encode(reg, extra))
}

/// Load a registry and its `extra` bytes from `path`.
pub fn load(path: &Path) -> Result<(UmsRegistry, Vec<u8>)> {
    decode(&std::fs::read(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::ums::tests::user;
    use ChannelType::*;

    fn sample() -> UmsRegistry {
        let mut r = UmsRegistry::new();
        r.add_channel("app1", App).unwrap();
        r.add_channel("sms1", Sms).unwrap();
        r.upsert_user(&user(
            "u0",
            &[("all", &["vip"]), ("app1", &["新"])],
            &[("app1", App, &["a0", "a0b"]), ("all", Sms, &["p0"])],
        ))
        .unwrap();
        r.upsert_user(&user(
            "u1",
            &[("sms1", &["vip"])],
            &[("sms1", Sms, &["p1"])],
        ))
        .unwrap();
        r.upsert_user(&user("u2", &[], &[])).unwrap();
        r.delete_user("u2");
        r.add_segment("s", &["u0", "ghost"]).unwrap();
        r.add_list(7, &["u1"], &["p0"]).unwrap();
        r.set_undeliverable(&["p1"], &[]).unwrap();
        r
    }

    #[test]
    fn round_trip_is_exact() {
        let r = sample();
        let data = encode(&r, b"{\"templates\": []}");
        let (s, extra) = decode(&data).unwrap();
        assert_eq!(extra, b"{\"templates\": []}");
        assert_eq!(encode(&s, &extra), data);
        for u in ["u0", "u1", "u2", "ghost"] {
            assert_eq!(s.user(u), r.user(u));
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.undeliverable().to_vec(), r.undeliverable().to_vec());
        assert_eq!(s.channels(), r.channels());
    }

    #[test]
    fn every_corruption_is_refused() {
        let data = encode(&sample(), b"x");
        for cut in [0, 7, 20, data.len() / 2, data.len() - 1] {
            assert!(
                matches!(decode(&data[..cut]), Err(Error::Snapshot(_))),
                "cut at {cut}"
            );
        }
        for i in (0..data.len()).step_by(5) {
            let mut d = data.clone();
            d[i] ^= 0x5a;
            assert!(matches!(decode(&d), Err(Error::Snapshot(_))), "flip at {i}");
        }
        let core = crate::snapshot::encode(&crate::registry::Registry::new());
        assert!(matches!(decode(&core), Err(Error::Snapshot(_))));
    }

    #[test]
    fn save_is_atomic_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ums.snap");
        save(&sample(), b"", &p).unwrap();
        save(&sample(), b"e", &p).unwrap();
        let (r, extra) = load(&p).unwrap();
        assert_eq!((r.len(), extra), (2, b"e".to_vec()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
