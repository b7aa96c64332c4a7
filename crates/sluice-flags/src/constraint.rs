//! Constraints, compiled: every operator of the Unleash specification, with its values parsed once
//! (numbers, dates, versions, regexes, CIDR ranges) when the snapshot is built, never per evaluation.

use std::collections::HashSet;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use ipnet::IpNet;
use regex::Regex;

use crate::unleash::Constraint;
use crate::Context;

/// A context field, resolved from its Unleash name once at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    UserId,
    SessionId,
    RemoteAddress,
    Environment,
    AppName,
    CurrentTime,
    Property(Box<str>),
}

impl Field {
    pub(crate) fn parse(name: &str) -> Field {
        match name {
            "userId" => Field::UserId,
            "sessionId" => Field::SessionId,
            "remoteAddress" => Field::RemoteAddress,
            "environment" => Field::Environment,
            "appName" => Field::AppName,
            "currentTime" => Field::CurrentTime,
            other => Field::Property(other.into()),
        }
    }

    #[inline]
    pub(crate) fn get<'c>(&self, ctx: &'c Context) -> Option<&'c str> {
        match self {
            Field::UserId => ctx.user_id.as_deref(),
            Field::SessionId => ctx.session_id.as_deref(),
            Field::RemoteAddress => ctx.remote_address.as_deref(),
            Field::Environment => ctx.environment.as_deref(),
            Field::AppName => ctx.app_name.as_deref(),
            Field::CurrentTime => ctx.current_time.as_deref(),
            Field::Property(name) => ctx.property_value(name),
        }
    }
}

/// A set of strings: a short list is scanned (faster than hashing for a handful), a long one is hashed.
#[derive(Debug, Clone)]
pub(crate) enum Values {
    List(Box<[Box<str>]>),
    Set(HashSet<Box<str>>),
}

impl Values {
    const LIST_MAX: usize = 8;

    pub(crate) fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(values: I) -> Values {
        let list: Vec<Box<str>> = values.into_iter().map(|v| Box::from(v.as_ref())).collect();
        if list.len() <= Self::LIST_MAX {
            Values::List(list.into_boxed_slice())
        } else {
            Values::Set(list.into_iter().collect())
        }
    }

    #[inline]
    pub(crate) fn contains(&self, v: &str) -> bool {
        match self {
            Values::List(list) => list.iter().any(|x| &**x == v),
            Values::Set(set) => set.contains(v),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum StrOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    #[inline]
    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Cmp::Eq => ord == Equal,
            Cmp::Gt => ord == Greater,
            Cmp::Gte => ord != Less,
            Cmp::Lt => ord == Less,
            Cmp::Lte => ord != Greater,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    In(Values),
    NotIn(Values),
    Str {
        op: StrOp,
        values: Box<[Box<str>]>,
        case_insensitive: bool,
    },
    Num(Cmp, f64),
    Date(Cmp, DateTime<Utc>),
    Semver(Cmp, semver::Version),
    Regex(Regex),
    Cidr(Box<[IpNet]>),
    /// An unknown operator or a value that does not parse: never matches, whatever `inverted` says,
    /// as in Unleash's SDKs.
    Never,
}

/// One compiled constraint.
#[derive(Debug, Clone)]
pub(crate) struct CompiledConstraint {
    field: Field,
    inverted: bool,
    op: Op,
}

impl CompiledConstraint {
    pub(crate) fn compile(c: &Constraint) -> CompiledConstraint {
        let values = || c.values.as_deref().unwrap_or(&[]);
        let single = || c.value.as_deref().or_else(|| c.values.as_ref().and_then(|v| v.first().map(String::as_str)));
        let op = match c.operator.as_str() {
            "IN" => Op::In(Values::new(values())),
            "NOT_IN" => Op::NotIn(Values::new(values())),
            "STR_CONTAINS" | "STR_STARTS_WITH" | "STR_ENDS_WITH" => Op::Str {
                op: match c.operator.as_str() {
                    "STR_CONTAINS" => StrOp::Contains,
                    "STR_STARTS_WITH" => StrOp::StartsWith,
                    _ => StrOp::EndsWith,
                },
                values: values()
                    .iter()
                    .map(|v| if c.case_insensitive { v.to_lowercase().into() } else { v.as_str().into() })
                    .collect(),
                case_insensitive: c.case_insensitive,
            },
            op @ ("NUM_EQ" | "NUM_GT" | "NUM_GTE" | "NUM_LT" | "NUM_LTE") => {
                match single().and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| !v.is_nan()) {
                    Some(v) => Op::Num(cmp_of(op), v),
                    None => Op::Never,
                }
            }
            op @ ("DATE_AFTER" | "DATE_BEFORE") => match single().and_then(parse_date) {
                Some(t) => Op::Date(if op == "DATE_AFTER" { Cmp::Gt } else { Cmp::Lt }, t),
                None => Op::Never,
            },
            op @ ("SEMVER_EQ" | "SEMVER_GT" | "SEMVER_GTE" | "SEMVER_LT" | "SEMVER_LTE") => {
                match single().and_then(|v| semver::Version::parse(v).ok()) {
                    Some(v) => Op::Semver(cmp_of(op), v),
                    None => Op::Never,
                }
            }
            "REGEX" => match build_regex(single().unwrap_or(""), c.case_insensitive) {
                Ok(re) => Op::Regex(re),
                Err(_) => Op::Never,
            },
            "IN_CIDR" => Op::Cidr(values().iter().filter_map(|v| parse_net(v)).collect()),
            _ => Op::Never,
        };
        CompiledConstraint { field: Field::parse(&c.context_name), inverted: c.inverted, op }
    }

    /// Does the context satisfy this constraint?
    #[inline]
    pub(crate) fn matches(&self, ctx: &Context) -> bool {
        let value = self.field.get(ctx);
        let hit = match &self.op {
            Op::Never => return false,
            Op::In(set) => value.is_some_and(|v| set.contains(v)),
            Op::NotIn(set) => !value.is_some_and(|v| set.contains(v)),
            Op::Str { op, values, case_insensitive } => match value {
                None => false,
                Some(v) if *case_insensitive => str_match(*op, values, &v.to_lowercase()),
                Some(v) => str_match(*op, values, v),
            },
            Op::Num(cmp, expected) => match value.and_then(|v| v.trim().parse::<f64>().ok()) {
                Some(actual) => actual.partial_cmp(expected).is_some_and(|o| cmp.holds(o)),
                None => false,
            },
            Op::Date(cmp, expected) => {
                let now = match value {
                    Some(v) => parse_date(v),
                    None if self.field == Field::CurrentTime => Some(Utc::now()),
                    None => None,
                };
                now.is_some_and(|t| cmp.holds(t.cmp(expected)))
            }
            Op::Semver(cmp, expected) => {
                value.and_then(|v| semver::Version::parse(v).ok()).is_some_and(|v| cmp.holds(semver_cmp(&v, expected)))
            }
            Op::Regex(re) => value.is_some_and(|v| re.is_match(v)),
            Op::Cidr(nets) => value
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
        };
        hit != self.inverted
    }
}

fn cmp_of(op: &str) -> Cmp {
    match op.rsplit('_').next() {
        Some("GT") => Cmp::Gt,
        Some("GTE") => Cmp::Gte,
        Some("LT") => Cmp::Lt,
        Some("LTE") => Cmp::Lte,
        _ => Cmp::Eq,
    }
}

#[inline]
fn str_match(op: StrOp, values: &[Box<str>], v: &str) -> bool {
    values.iter().any(|x| match op {
        StrOp::Contains => v.contains(&**x),
        StrOp::StartsWith => v.starts_with(&**x),
        StrOp::EndsWith => v.ends_with(&**x),
    })
}

/// SemVer 2.0 precedence: build metadata does not count (the `semver` crate's `Ord` would order by it).
fn semver_cmp(a: &semver::Version, b: &semver::Version) -> std::cmp::Ordering {
    (a.major, a.minor, a.patch).cmp(&(b.major, b.minor, b.patch)).then_with(|| {
        match (a.pre.is_empty(), b.pre.is_empty()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => a.pre.cmp(&b.pre),
        }
    })
}

/// RFC 3339 first; then the looser forms a JavaScript `Date` accepts and SDKs send (no offset means UTC).
pub(crate) fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

/// An address or a CIDR range; a bare address is a /32 (or /128).
pub(crate) fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A REGEX constraint's pattern, compiled as evaluation uses it: a size limit keeps one flag from taking
/// the server's memory. Validation calls this too, so a pattern accepted is a pattern that matches.
pub(crate) fn build_regex(pattern: &str, case_insensitive: bool) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).case_insensitive(case_insensitive).size_limit(1 << 20).build()
}
