//! Strategies and variants, compiled: the activation check of each built-in Unleash strategy, and the
//! weighted, sticky choice of a variant.

use std::collections::HashMap;

use ipnet::IpNet;

use crate::bucket::{HashPrefix, ROLLOUT_SEED, VARIANT_SEED};
use crate::constraint::{parse_net, CompiledConstraint, Field, Values};
use crate::unleash::{Payload, Strategy, Variant};
use crate::Context;

/// Which context field picks a context's bucket.
#[derive(Debug, Clone)]
pub(crate) enum Stickiness {
    /// userId, then sessionId, then random.
    Default,
    Random,
    Field(Field),
}

impl Stickiness {
    pub(crate) fn parse(name: Option<&str>) -> Stickiness {
        match name.map(str::trim) {
            None | Some("") | Some("default") => Stickiness::Default,
            Some("random") => Stickiness::Random,
            Some(other) => Stickiness::Field(Field::parse(other)),
        }
    }

    /// The value to hash; `None` means "pick at random".
    #[inline]
    fn value<'c>(&self, ctx: &'c Context) -> Option<&'c str> {
        match self {
            Stickiness::Default => ctx.user_id.as_deref().or(ctx.session_id.as_deref()),
            Stickiness::Random => None,
            Stickiness::Field(f) => f.get(ctx),
        }
    }
}

/// The activation check of a strategy, after its constraints and segments.
#[derive(Debug, Clone)]
enum Check {
    Always,
    Never,
    UserIds(Values),
    /// `bucket(groupId:value) <= percent`. A missing field fails, except under `default` stickiness, which
    /// falls back to a random draw as Unleash SDKs do.
    Rollout {
        percent: f64,
        stickiness: Stickiness,
        missing_is_random: bool,
        prefix: HashPrefix,
    },
    Random {
        percent: f64,
    },
    RemoteAddress(Box<[IpNet]>),
}

/// A compiled variant.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledVariant {
    /// The variant's name.
    pub name: Box<str>,
    /// Its payload, if any.
    pub payload: Option<Payload>,
    weight: u32,
}

/// A weighted list of variants with its stickiness and group.
#[derive(Debug, Clone)]
pub(crate) struct VariantSet {
    pub(crate) variants: Box<[CompiledVariant]>,
    total: u32,
    stickiness: Stickiness,
    prefix: HashPrefix,
    overrides: Box<[(Field, Values, usize)]>,
}

impl VariantSet {
    /// `None` when there is no variant, so that "no variants" is one check at evaluation time.
    pub(crate) fn compile(
        variants: &[Variant],
        group_id: &str,
        fallback_stickiness: Option<&str>,
    ) -> Option<VariantSet> {
        if variants.is_empty() {
            return None;
        }
        let stickiness =
            Stickiness::parse(variants[0].stickiness.as_deref().filter(|s| *s != "default").or(fallback_stickiness));
        let mut overrides = Vec::new();
        for (i, v) in variants.iter().enumerate() {
            for o in v.overrides.iter().flatten() {
                overrides.push((Field::parse(&o.context_name), Values::new(&o.values), i));
            }
        }
        Some(VariantSet {
            variants: variants
                .iter()
                .map(|v| CompiledVariant { name: v.name.as_str().into(), payload: v.payload.clone(), weight: v.weight })
                .collect(),
            total: variants.iter().map(|v| v.weight).fold(0u32, u32::saturating_add),
            stickiness,
            prefix: HashPrefix::new(&format!("{group_id}:"), VARIANT_SEED),
            overrides: overrides.into_boxed_slice(),
        })
    }

    /// The variant for this context: a matching override first, then the weighted bucket.
    #[inline]
    pub(crate) fn select(&self, ctx: &Context) -> Option<&CompiledVariant> {
        for (field, values, i) in self.overrides.iter() {
            if field.get(ctx).is_some_and(|v| values.contains(v)) {
                return Some(&self.variants[*i]);
            }
        }
        if self.total == 0 {
            return None;
        }
        let target = match self.stickiness.value(ctx) {
            Some(v) => self.prefix.bucket(v, self.total),
            None => fastrand::u32(1..=self.total),
        };
        let mut acc = 0u32;
        for v in self.variants.iter() {
            acc = acc.saturating_add(v.weight);
            if acc >= target {
                return Some(v);
            }
        }
        None
    }
}

/// A compiled strategy: constraints (segments' first), the activation check, and its own variants.
#[derive(Debug, Clone)]
pub(crate) struct CompiledStrategy {
    constraints: Box<[CompiledConstraint]>,
    check: Check,
    pub(crate) variants: Option<VariantSet>,
}

impl CompiledStrategy {
    pub(crate) fn compile(
        s: &Strategy,
        feature_name: &str,
        segments: &HashMap<i64, Vec<CompiledConstraint>>,
        hostname: Option<&str>,
    ) -> CompiledStrategy {
        let param = |k: &str| s.parameters.as_ref().and_then(|p| p.get(k)).map(String::as_str);
        let percent = |k: &str| param(k).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(f64::NAN);
        let group_id = param("groupId").unwrap_or(feature_name);
        let prefix = || HashPrefix::new(&format!("{group_id}:"), ROLLOUT_SEED);
        let mut check = match s.name.as_str() {
            "default" => Check::Always,
            "userWithId" => Check::UserIds(Values::new(
                param("userIds").unwrap_or("").split(',').map(str::trim).filter(|v| !v.is_empty()),
            )),
            "gradualRolloutUserId" => Check::Rollout {
                percent: percent("percentage"),
                stickiness: Stickiness::Field(Field::UserId),
                missing_is_random: false,
                prefix: prefix(),
            },
            "gradualRolloutSessionId" => Check::Rollout {
                percent: percent("percentage"),
                stickiness: Stickiness::Field(Field::SessionId),
                missing_is_random: false,
                prefix: prefix(),
            },
            "gradualRolloutRandom" => Check::Random { percent: percent("percentage") },
            "flexibleRollout" => match Stickiness::parse(param("stickiness")) {
                Stickiness::Random => Check::Random { percent: percent("rollout") },
                stickiness => Check::Rollout {
                    percent: percent("rollout"),
                    missing_is_random: matches!(stickiness, Stickiness::Default),
                    stickiness,
                    prefix: prefix(),
                },
            },
            "remoteAddress" => {
                Check::RemoteAddress(param("IPs").unwrap_or("").split(',').filter_map(parse_net).collect())
            }
            "applicationHostname" => {
                let host = hostname.map(str::to_lowercase);
                let listed = param("hostNames")
                    .unwrap_or("")
                    .split(',')
                    .any(|h| host.as_deref() == Some(h.trim().to_lowercase().as_str()));
                if listed {
                    Check::Always
                } else {
                    Check::Never
                }
            }
            _ => Check::Never,
        };
        let mut constraints = Vec::new();
        for id in s.segments.iter().flatten() {
            match segments.get(id) {
                Some(cs) => constraints.extend(cs.iter().cloned()),
                // A strategy that names a segment the state does not carry never matches.
                None => check = Check::Never,
            }
        }
        constraints.extend(s.constraints.iter().flatten().map(CompiledConstraint::compile));
        let variants = VariantSet::compile(s.variants.as_deref().unwrap_or(&[]), group_id, param("stickiness"));
        CompiledStrategy { constraints: constraints.into_boxed_slice(), check, variants }
    }

    /// Does this strategy enable the feature for the context?
    #[inline]
    pub(crate) fn matches(&self, ctx: &Context) -> bool {
        let active = match &self.check {
            Check::Never => return false,
            Check::Always => true,
            Check::UserIds(ids) => ctx.user_id.as_deref().is_some_and(|u| ids.contains(u)),
            Check::Rollout { percent, stickiness, missing_is_random, prefix } => match stickiness.value(ctx) {
                Some(v) => (prefix.bucket(v, 100) as f64) <= *percent,
                None if *missing_is_random => (fastrand::u32(1..=100) as f64) <= *percent,
                None => false,
            },
            Check::Random { percent } => (fastrand::u32(1..=100) as f64) <= *percent,
            Check::RemoteAddress(nets) => ctx
                .remote_address
                .as_deref()
                .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
        };
        active && self.constraints.iter().all(|c| c.matches(ctx))
    }
}
