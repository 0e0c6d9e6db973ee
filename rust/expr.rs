//! Compiling a validated audience into an expression over the registry's bitmaps.
//!
//! Every string of the request is looked up exactly once here; evaluation (`eval`) then works
//! on bitmaps only. The registry invariant that attribute bitmaps hold live devices only lets
//! the compiler leave out the `live` operand whenever an attribute operand is present.

use crate::error::{Error, Result};
use crate::eval;
use crate::registry::{Platform, Registry, Segment, BUCKETS};
use croaring::Bitmap;
use serde::{Deserialize, Serialize};

/// A JPush v3 audience, validated at the edge (limits, characters, at least one type).
/// An empty list means that type is absent. `S` is `String` for a saved audience
/// (`AudienceSpec`) and `&str` for one borrowed for a single request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Audience<S> {
    pub all: bool,
    pub tag: Vec<S>,
    pub tag_and: Vec<S>,
    pub tag_not: Vec<S>,
    pub alias: Vec<S>,
    pub registration_id: Vec<S>,
    pub segment: Vec<S>,
    pub abtest: Vec<S>,
}

/// An audience that owns its strings (saved segments and A/B bases, tests).
pub type AudienceSpec = Audience<String>;

impl AudienceSpec {
    /// The broadcast audience (`"all"`).
    pub fn all() -> Self {
        AudienceSpec {
            all: true,
            ..Self::default()
        }
    }

    /// The same audience with borrowed strings.
    pub fn view(&self) -> Audience<&str> {
        self.map(String::as_str)
    }
}

impl Audience<&str> {
    /// The same audience owning its strings (to be saved).
    pub fn to_owned_spec(&self) -> AudienceSpec {
        self.map(|s| s.to_string())
    }
}

impl<S> Audience<S> {
    /// The same audience with every string mapped by `f`.
    pub fn map<'a, T>(&'a self, f: impl Fn(&'a S) -> T) -> Audience<T> {
        let v = |l: &'a [S]| l.iter().map(&f).collect();
        Audience {
            all: self.all,
            tag: v(&self.tag),
            tag_and: v(&self.tag_and),
            tag_not: v(&self.tag_not),
            alias: v(&self.alias),
            registration_id: v(&self.registration_id),
            segment: v(&self.segment),
            abtest: v(&self.abtest),
        }
    }

    /// Whether no type is present (JPush refuses such an audience with 1003).
    pub fn is_empty(&self) -> bool {
        !self.all
            && [
                &self.tag,
                &self.tag_and,
                &self.tag_not,
                &self.alias,
                &self.registration_id,
                &self.segment,
                &self.abtest,
            ]
            .iter()
            .all(|v| v.is_empty())
    }

    /// Refuse what a saved audience (dynamic segment, A/B base) may not hold: nothing, or a
    /// reference to another segment or A/B test (which could form a cycle).
    pub fn check_saved(&self, what: &str) -> Result<()> {
        if self.is_empty() {
            return Err(Error::invalid(format!("the {what} audience is empty")));
        }
        if !self.segment.is_empty() || !self.abtest.is_empty() {
            return Err(Error::invalid(format!(
                "a {what} audience may not use segment or abtest"
            )));
        }
        Ok(())
    }
}

/// Why an audience value is refused. The rules are those of DESIGN.md ("Semantics"); the
/// Python edge (`reach.jpush`) words the vendor's message for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The empty string (JPush's "null value").
    Empty,
    /// A tag or alias character outside letters, digits, `_`, CJK and `@!#$&*+=.|`.
    Chars,
    /// A tag or alias longer than `NAME_MAX_BYTES`.
    Bytes,
    /// Not 1 to 64 ASCII letters and digits.
    RegistrationId,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Empty => "empty",
            Refusal::Chars => "chars",
            Refusal::Bytes => "bytes",
            Refusal::RegistrationId => "registration_id",
        }
    }
}

/// The rule of an audience array's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Tags and aliases (`check_name`).
    Name,
    /// Registration IDs (`check_registration_id`).
    RegistrationId,
}

impl Rule {
    /// The rule of a name: `"name"` or `"registration_id"`.
    pub fn parse(s: &str) -> Option<Rule> {
        match s {
            "name" => Some(Rule::Name),
            "registration_id" => Some(Rule::RegistrationId),
            _ => None,
        }
    }

    pub fn check(self, s: &str) -> std::result::Result<(), Refusal> {
        match self {
            Rule::Name => check_name(s),
            Rule::RegistrationId => check_registration_id(s),
        }
    }

    /// The refusal of a string that is not UTF-8 (a lone surrogate from JSON): none of its
    /// characters can be allowed ones.
    pub fn not_utf8(self) -> Refusal {
        match self {
            Rule::Name => Refusal::Chars,
            Rule::RegistrationId => Refusal::RegistrationId,
        }
    }
}

/// Longest tag or alias, in UTF-8 bytes.
pub const NAME_MAX_BYTES: usize = 40;
/// Longest registration ID, in characters (all ASCII).
pub const REGISTRATION_ID_MAX: usize = 64;

/// A byte table: `true` for ASCII letters and digits and for the bytes of `extra`.
const fn ascii_table(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// The ASCII bytes allowed in a tag or alias, and in a registration ID.
const NAME_ASCII: [bool; 256] = ascii_table(b"_@!#$&*+=.|");
const RID_ASCII: [bool; 256] = ascii_table(b"");

/// Whether every byte of `s` is allowed by `table`: a table look-up per byte and no branch
/// (hex-like IDs mix digits and letters at random, which defeats branch prediction).
fn all_in(table: &[bool; 256], s: &str) -> bool {
    s.bytes().fold(true, |ok, b| ok & table[b as usize])
}

/// Whether `c` may appear in a tag or alias. "Kanji" is read as the CJK ideograph blocks:
/// URO, Extension A, compatibility ideographs, Extension B.
fn name_char(c: char) -> bool {
    (c.is_ascii() && NAME_ASCII[c as usize])
        || matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}')
        || matches!(c, '\u{20000}'..='\u{2A6DF}')
}

/// Check a tag or alias: non-empty, allowed characters (checked first), at most 40 bytes.
pub fn check_name(s: &str) -> std::result::Result<(), Refusal> {
    if s.is_empty() {
        return Err(Refusal::Empty);
    }
    let allowed = if s.is_ascii() {
        all_in(&NAME_ASCII, s)
    } else {
        s.chars().all(name_char)
    };
    if !allowed {
        return Err(Refusal::Chars);
    }
    if s.len() > NAME_MAX_BYTES {
        return Err(Refusal::Bytes);
    }
    Ok(())
}

/// Check a registration ID: 1 to 64 ASCII letters and digits.
pub fn check_registration_id(s: &str) -> std::result::Result<(), Refusal> {
    if s.is_empty() {
        return Err(Refusal::Empty);
    }
    if s.len() > REGISTRATION_ID_MAX || !all_in(&RID_ASCII, s) {
        return Err(Refusal::RegistrationId);
    }
    Ok(())
}

/// The bitmaps of one operand.
pub enum Operand<'r> {
    /// Devices of this request as a sorted, duplicate-free id list (aliases, registration IDs).
    Ids(Vec<u32>),
    /// One registry bitmap.
    One(&'r Bitmap),
    /// The union of several registry bitmaps.
    AnyOf(Vec<&'r Bitmap>),
    /// The union of pairwise disjoint registry bitmaps (platforms): its size is the sum.
    Disjoint(Vec<&'r Bitmap>),
    /// A set built for this request (aliases, registration IDs, segments, A/B groups).
    Owned(Bitmap),
}

impl Operand<'_> {
    /// An upper bound of the operand's size, exact except for `AnyOf`.
    pub fn estimate(&self) -> u64 {
        match self {
            Operand::One(b) => b.cardinality(),
            Operand::AnyOf(v) | Operand::Disjoint(v) => v.iter().map(|b| b.cardinality()).sum(),
            Operand::Owned(b) => b.cardinality(),
            Operand::Ids(v) => v.len() as u64,
        }
    }
}

/// One operand with what it stands for (for `explain`).
pub struct Term<'r> {
    pub label: String,
    pub operand: Operand<'r>,
}

/// A compiled audience: the intersection of `positive`, minus the union of `negative`.
/// `positive` is never empty.
pub struct Expr<'r> {
    pub positive: Vec<Term<'r>>,
    pub negative: Vec<Term<'r>>,
}

fn term<'r>(label: String, operand: Operand<'r>) -> Term<'r> {
    Term { label, operand }
}

fn list<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("{:?}", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", ... ({} in all)", names.len()));
    }
    format!("[{s}]")
}

/// Compile `spec` (and the platform filter; `None` = all platforms) against `reg`.
/// Unknown tags and aliases reach nobody; unknown segments and A/B tests are errors (1003).
pub fn compile<'r, S: AsRef<str>>(
    reg: &'r Registry,
    spec: &Audience<S>,
    platforms: Option<&[Platform]>,
) -> Result<Expr<'r>> {
    if spec.is_empty() {
        return Err(Error::invalid("audience has no target type"));
    }
    let mut positive = Vec::new();
    let mut negative = Vec::new();
    // Static segments are the only operands that may hold deleted devices (see the registry
    // invariants); `live` is needed when nothing else bounds the result.
    let mut static_segments = 0;

    if !spec.tag.is_empty() {
        let bms: Vec<&Bitmap> = spec
            .tag
            .iter()
            .filter_map(|t| reg.tag_bitmap(t.as_ref()))
            .collect();
        positive.push(term(
            format!("tag {}", list(&spec.tag)),
            Operand::AnyOf(bms),
        ));
    }
    for t in &spec.tag_and {
        let t = t.as_ref();
        let op = match reg.tag_bitmap(t) {
            Some(b) => Operand::One(b),
            None => Operand::Owned(Bitmap::new()),
        };
        positive.push(term(format!("tag_and {t:?}"), op));
    }
    for t in &spec.tag_not {
        let t = t.as_ref();
        if let Some(b) = reg.tag_bitmap(t) {
            negative.push(term(format!("tag_not {t:?}"), Operand::One(b)));
        }
    }
    if !spec.alias.is_empty() {
        let keys: Vec<&str> = spec.alias.iter().map(AsRef::as_ref).collect();
        positive.push(term(
            format!("alias {}", list(&spec.alias)),
            Operand::Ids(sorted(reg.aliases_devices(&keys))),
        ));
    }
    if !spec.registration_id.is_empty() {
        let keys: Vec<&str> = spec.registration_id.iter().map(AsRef::as_ref).collect();
        let label = format!("registration_id {}", list(&spec.registration_id));
        positive.push(term(label, Operand::Ids(reg.devices_live(&keys))));
    }
    for s in &spec.segment {
        let s = s.as_ref();
        let operand = match reg.segments.get(s) {
            Some(Segment::Static(b)) => {
                static_segments += 1;
                Operand::One(b)
            }
            Some(Segment::Dynamic(saved)) => {
                Operand::Owned(eval::evaluate(compile(reg, &saved.view(), None)?, None))
            }
            None => return Err(Error::invalid(format!("segment {s:?} does not exist"))),
        };
        positive.push(term(format!("segment {s:?}"), operand));
    }
    for a in &spec.abtest {
        let a = a.as_ref();
        positive.push(term(
            format!("abtest {a:?}"),
            Operand::Owned(abtest_members(reg, a)?),
        ));
    }
    if let Some(ps) = platforms {
        let mut ps = ps.to_vec();
        ps.sort_unstable_by_key(|&p| p as u8);
        ps.dedup();
        if ps.len() < Platform::ALL.len() {
            let names: Vec<&str> = ps.iter().map(|p| p.name()).collect();
            let bms = ps.iter().map(|&p| reg.platform_bitmap(p)).collect();
            positive.push(term(format!("platform {names:?}"), Operand::Disjoint(bms)));
        }
    }
    if positive.len() == static_segments {
        positive.push(term("live devices".into(), Operand::One(reg.live())));
    }
    Ok(Expr { positive, negative })
}

fn sorted(mut ids: Vec<u32>) -> Vec<u32> {
    eval::sort_ids(&mut ids);
    ids
}

/// The devices of A/B test `name` (`"test"` = every group, `"test:group"` = one group):
/// the base audience, now, within the group's buckets.
fn abtest_members(reg: &Registry, name: &str) -> Result<Bitmap> {
    let (test, group) = match name.split_once(':') {
        Some((t, g)) => (t, Some(g)),
        None => (name, None),
    };
    let ab = reg
        .abtests
        .get(test)
        .ok_or_else(|| Error::invalid(format!("abtest {test:?} does not exist")))?;
    let mut buckets: Vec<&Bitmap> = Vec::with_capacity(BUCKETS);
    for (g, lo, hi) in &ab.groups {
        if group.is_none_or(|want| want == g) {
            buckets.extend(&reg.buckets[*lo as usize..*hi as usize]);
        }
    }
    if buckets.is_empty() {
        return Err(Error::invalid(format!(
            "abtest {test:?} has no group {:?}",
            group
        )));
    }
    let mut base = eval::evaluate(compile(reg, &ab.base.view(), None)?, None);
    base.and_inplace(&Bitmap::fast_or(&buckets));
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Vendor;

    #[test]
    fn unknown_names() {
        let mut r = Registry::new();
        r.upsert(
            "a",
            Platform::Android,
            Some(Vendor::Oppo),
            &["x"],
            None,
            None,
            false,
        )
        .unwrap();
        let spec = AudienceSpec {
            segment: vec!["nope".into()],
            ..Default::default()
        };
        assert!(compile(&r, &spec, None).is_err());
        let spec = AudienceSpec {
            abtest: vec!["nope".into()],
            ..Default::default()
        };
        assert!(compile(&r, &spec, None).is_err());
        assert!(compile(&r, &AudienceSpec::default(), None).is_err());
        let spec = AudienceSpec {
            tag_not: vec!["x".into()],
            ..Default::default()
        };
        let e = compile(&r, &spec, None).unwrap();
        assert_eq!(
            e.positive.len(),
            1,
            "tag_not alone is taken from the live devices"
        );
    }

    #[test]
    fn value_rules() {
        assert_eq!(check_name("深圳_vip@!#$&*+=.|9"), Ok(()));
        assert_eq!(check_name("𠀀"), Ok(()));
        assert_eq!(check_name(""), Err(Refusal::Empty));
        assert_eq!(check_name("a-b"), Err(Refusal::Chars));
        assert_eq!(check_name("é"), Err(Refusal::Chars));
        assert_eq!(check_name(&"a".repeat(40)), Ok(()));
        assert_eq!(check_name(&"a".repeat(41)), Err(Refusal::Bytes));
        assert_eq!(check_name(&"深".repeat(14)), Err(Refusal::Bytes));
        assert_eq!(check_registration_id("1a0018970aa"), Ok(()));
        assert_eq!(check_registration_id(&"A".repeat(64)), Ok(()));
        assert_eq!(
            check_registration_id(&"A".repeat(65)),
            Err(Refusal::RegistrationId)
        );
        assert_eq!(check_registration_id("a_b"), Err(Refusal::RegistrationId));
        assert_eq!(check_registration_id("١"), Err(Refusal::RegistrationId));
        assert_eq!(check_registration_id(""), Err(Refusal::Empty));
    }

    #[test]
    fn saved_audiences_may_not_nest() {
        let spec = AudienceSpec {
            segment: vec!["s".into()],
            ..Default::default()
        };
        assert!(spec.check_saved("segment").is_err());
        assert!(AudienceSpec::all().check_saved("segment").is_ok());
    }
}
