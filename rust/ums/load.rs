//! Bulk import of `users.jsonl` (DESIGN.md import format):
//! `{"userid", "tags"?: {"all" | "<channel_key>": [tags]}, "bindings"?: {"all" | "<channel_key>":
//! {"<type>": [IDs]}}}`, one user a line, blank lines skipped.
//!
//! All or nothing in two passes: every line is parsed and checked first (in parallel, nothing
//! kept), then parsed again and applied batch by batch, so that memory stays bounded by one
//! batch at 10M lines. A repeated userid is an upsert: the last line wins.

use super::{ChannelType, UmsRegistry, UserRecord};
use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Lines parsed together on the worker threads, and applied together.
const BATCH: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    userid: String,
    #[serde(default)]
    tags: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    bindings: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// One line as a checked record; an error names the line (1-based).
fn parse(number: usize, line: &[u8]) -> Result<UserRecord> {
    let fail = |message: String| Error::Load {
        line: number,
        message,
    };
    let l: Line = serde_json::from_slice(line).map_err(|e| {
        let m = e.to_string();
        fail(
            m.rfind(" at line ")
                .map_or(m.clone(), |i| m[..i].to_owned()),
        )
    })?;
    let mut bindings = BTreeMap::new();
    for (scope, types) in l.bindings {
        let mut out = BTreeMap::new();
        for (ty, ids) in types {
            let ty = ChannelType::parse(&ty).map_err(|e| fail(message(e)))?;
            out.insert(ty, ids);
        }
        bindings.insert(scope, out);
    }
    let record = UserRecord {
        userid: l.userid,
        tags: l.tags,
        bindings,
    };
    record.check().map_err(|e| fail(message(e)))?;
    Ok(record)
}

fn message(e: Error) -> String {
    match e {
        Error::Invalid { message, .. } => message,
        other => other.to_string(),
    }
}

/// The non-blank lines of `data` with their 1-based numbers.
fn numbered(data: &[u8]) -> Vec<(usize, &[u8])> {
    data.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
        .map(|(i, l)| (i + 1, l))
        .collect()
}

impl UmsRegistry {
    /// Load `users.jsonl` bytes; the number of users loaded. A refused file changes nothing
    /// and its error names the first bad line.
    pub fn load_users_jsonl(&mut self, data: &[u8]) -> Result<usize> {
        let lines = numbered(data);
        let bytes: usize = lines
            .par_chunks(BATCH)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|&(n, l)| parse(n, l).map(|r| r.bytes()))
                    .sum::<Result<usize>>()
            })
            .collect::<Result<Vec<usize>>>()?
            .into_iter()
            .sum();
        if !self.fits(bytes) {
            return Err(Error::Load {
                line: lines.last().map_or(0, |l| l.0),
                message: "the UMS registry is full".into(),
            });
        }
        for chunk in lines.chunks(BATCH) {
            let records: Vec<UserRecord> = chunk
                .par_iter()
                .map(|&(n, l)| parse(n, l))
                .collect::<Result<_>>()?;
            for r in &records {
                self.apply_user(r);
            }
        }
        Ok(lines.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_all_or_nothing() {
        let mut reg = UmsRegistry::new();
        let good = br#"{"userid": "u1", "tags": {"all": ["vip"], "app1": ["new"]}, "bindings": {"app1": {"app": ["r1"]}, "all": {"sms": ["139"]}}}

{"userid": "u2"}"#;
        assert_eq!(reg.load_users_jsonl(good).unwrap(), 2);
        let u1 = reg.user("u1").unwrap();
        assert_eq!(u1.tags["app1"], vec!["new".to_string()]);
        assert_eq!(
            u1.bindings["all"][&ChannelType::Sms],
            vec!["139".to_string()]
        );
        let bad = b"{\"userid\": \"u3\"}\n{\"userid\": \"u4\", \"bindings\": {\"all\": {\"fax\": [\"1\"]}}}\n";
        match reg.load_users_jsonl(bad).unwrap_err() {
            Error::Load { line, message } => {
                assert_eq!(line, 2);
                assert!(message.contains("fax"), "{message}");
            }
            e => panic!("{e}"),
        }
        assert_eq!(reg.user("u3"), None);
        assert!(matches!(
            reg.load_users_jsonl(b"{\"userid\": \"u5\", \"x\": 1}"),
            Err(Error::Load { line: 1, .. })
        ));
        assert_eq!(reg.len(), 2);
    }
}
